"""The env file, the key file or the upstream key file is readable by group or others.

Why: the key file holds the proxy key, the upstream key file the LiteLLM key (and with it the
LiteLLM budget). The env file holds no secret any more, but install.sh keeps it 0600 too: one
from an earlier install may still carry OPENAI_API_KEY until install.sh moves it. A
group/world-readable secret is readable by every local user or service in that group.

Fails:
    -rw-r--r-- root root /etc/optillm-proxy/api-key
    -rw-r----- root adm  /etc/optillm-proxy/upstream-key

Passes:
    -rw------- root root /etc/optillm-proxy/api-key
    -rw------- root root /etc/optillm-proxy/upstream-key

Fix: chmod 0600 /etc/optillm-proxy/env /etc/optillm-proxy/api-key /etc/optillm-proxy/upstream-key
(systemd reads them as root: LoadCredential= and EnvironmentFile= need no other access), and
rotate a key that may have been read.
"""

import os
import stat

from ops.lint.finding import ERROR, Problem

ID = "secret-file-mode"
SEVERITY = ERROR


def check(ctx):
    for path in (ctx.inputs.env_file, ctx.inputs.key_file, ctx.inputs.upstream_key_file):
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
