#!/usr/bin/env python3
"""ExecReload= of the optillm-proxy unit (run as root, `+`): `systemctl reload optillm-proxy`.

Hands the configuration systemd re-read (the env file) and the key files to the running launcher
over its control socket; exit 0 once a new launcher serves it, 1 when it is refused (the running one
serves on unchanged), 2 when no launcher answers. optillm_proxy_launcher/reload.py explains the steps.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from optillm_proxy_launcher.reload import helper_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(helper_main())
