"""`python -m tests.box serve --state FILE [-- INSTALL.SH ARGS]`: a booted box for scripts (bench/).

Boots a box from the cached base, runs the real install.sh in it, writes FILE (JSON: root, pid1,
install seconds, ...) and keeps the box up until SIGTERM/SIGINT, then tears it down (powered off,
leftovers killed, copy removed). The caller provides the upstream on 127.0.0.1:4000 and holds
nothing else; exit 1 with one line on stderr if the box cannot be built or installed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import threading
from pathlib import Path

from tests.box.base import base_rootfs
from tests.box.errors import BoxError
from tests.box.install import install, seed_upstream_key
from tests.box.machine import Box
from tests.box.service import wait_healthy

REPO = Path(__file__).resolve().parents[2]


def serve(state_file: Path, install_args: list[str]) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    box = None
    try:
        base, built = base_rootfs()
        box = Box.from_base(base, REPO)
        boot_s = box.boot()
        # The caller's upstream on :4000 checks no key; the service needs one to start.
        seed_upstream_key(box, "opx-" + secrets.token_urlsafe(32))
        install_s = install(box, *install_args)
        healthy_s = wait_healthy(box, timeout=180)
        state_file.write_text(json.dumps({
            "root": str(box.root), "pid1": box.pid1, "base_build_s": round(built, 1),
            "copy_s": round(box.timings["copy"], 1), "boot_s": round(boot_s, 1),
            "install_s": round(install_s, 1), "healthy_after_install_s": round(healthy_s, 1),
        }) + "\n")
        while not stop.wait(1):
            if box.nspawn.poll() is not None:
                print(f"tests.box: the box exited ({box.nspawn.returncode})", file=sys.stderr)
                return 1
        return 0
    except BoxError as exc:
        print(f"tests.box: {exc}", file=sys.stderr)
        return 1
    finally:
        if box is not None:
            box.destroy()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.box")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="boot, install, write --state, stay up until SIGTERM")
    serve_p.add_argument("--state", required=True, type=Path)
    serve_p.add_argument("install_args", nargs="*", help="arguments for install.sh (after --)")
    args = parser.parse_args(argv)
    return serve(args.state, args.install_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
