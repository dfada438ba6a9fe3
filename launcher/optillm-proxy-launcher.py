#!/usr/bin/env python3
"""Entry point of the optillm-proxy unit: `python -I libexec/optillm-proxy-launcher.py <optillm flags>`.

The launcher is the package beside this file (optillm_proxy_launcher/, root-owned like the rest of
the runtime); `python -I` does not put a script's directory on sys.path, so this file does.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from optillm_proxy_launcher.main import main  # noqa: E402

if __name__ == "__main__":
    main()
