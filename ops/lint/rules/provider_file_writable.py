"""The provider file, or its .optillm directory, is writable by someone other than root.

Why: whoever can write the provider file decides where the proxy plugin sends prompts and
the LiteLLM key (${OPENAI_API_KEY}, set in-process by the launcher). install.sh makes both
root-owned (file 0644, directory 0755) inside the service user's home, so not even the service
can redirect itself.

Fails:
    -rw-rw-rw- root root /var/lib/optillm-proxy/.optillm/proxy_config.yaml
    drwxr-xr-x optillm-proxy ... /var/lib/optillm-proxy/.optillm

Passes:
    -rw-r--r-- root root .../proxy_config.yaml in a root-owned 0755 .optillm/

Fix: chown root:root and chmod 0644 the file, chown root:root and chmod 0755 the directory
(or re-run install.sh).
"""

import os
import stat

from ops.lint.finding import ERROR, Problem

ID = "provider-file-writable"
SEVERITY = ERROR


def check(ctx):
    path = ctx.inputs.proxy_config
    for target in (path, path.parent):
        try:
            st = os.stat(target)
        except OSError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022:
            yield Problem(str(target), 0, f"mode {mode:04o} lets group/others write it; "
                                          f"chmod go-w {target}")
        # Ownership is only meaningful on the deployed box, where lint runs as root.
        if os.geteuid() == 0 and st.st_uid != 0:
            yield Problem(str(target), 0, f"owned by uid {st.st_uid}, not root: its owner can "
                                          f"redirect the proxy; chown root:root {target}")
