"""The env file or the key file is readable by group or others.

Why: the env file holds OPENAI_API_KEY (the LiteLLM key), the key file the proxy key. A
group/world-readable secret is readable by every local user or service in that group.

Fails:
    -rw-r--r-- root root /etc/optillm-proxy/api-key

Passes:
    -rw------- root root /etc/optillm-proxy/api-key

Fix: chmod 0600 /etc/optillm-proxy/env /etc/optillm-proxy/api-key (systemd reads them as
root: LoadCredential= and EnvironmentFile= need no other access), and rotate the key if it
may have been read.
"""

import os
import stat

from ops.lint.finding import ERROR, Problem

ID = "secret-file-mode"
SEVERITY = ERROR


def check(ctx):
    for path in (ctx.inputs.env_file, ctx.inputs.key_file):
        try:
            st = os.stat(path)
        except OSError:
            continue  # file-missing / file-unreadable report it
        if not stat.S_ISREG(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o066:
            yield Problem(str(path), 0, f"mode {mode:04o} lets group/others read or write a "
                                        f"secret; run: chmod 0600 {path}")
