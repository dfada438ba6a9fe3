#!/usr/bin/env python3
"""Memory while a reload overlaps two launchers, and how long the handoff takes.

Starts the launcher from a runtime (--venv) on a socket systemd-socket-activate holds, with a
recording upstream (tools/fake_upstream.py); holds one request in flight, runs the reload helper
(as ExecReload= would, with the same environment) and prints each launcher's resident memory
(VmRSS, VmHWM) while the old one drains, their sum, and the helper's wall time. Run by hand:

    uv run python bench/reload_overlap.py --venv /var/cache/optillm-proxy-ops/runtimes/lean-py3.11-* [--plugins all]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "launcher")]
KEY = "opx-bench-reload-key-0123456789abcdef"


def memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            fields[line.split(":")[0]] = int(line.split()[1]) // 1024
    return fields


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, model: str = "jerry-xl", timeout: float = 300) -> int:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "What is 6*7?"}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", required=True, type=Path, help="a built runtime (its bin/python runs the launcher)")
    parser.add_argument("--plugins", default="none", help="PROXY_PLUGINS for the launcher (none, all, a list)")
    args = parser.parse_args()
    from optillm_proxy_launcher import reload
    from tools.fake_upstream import make_server

    upstream = make_server()
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    state = upstream.RequestHandlerClass.state
    tmp = Path(tempfile.mkdtemp(prefix="reload-bench-"))
    creds, run_dir = tmp / "creds", tmp / "run"
    creds.mkdir(mode=0o700)
    run_dir.mkdir(mode=0o700)
    for name, value in (("api-key", KEY), ("upstream-key", "bench-upstream-key")):
        (creds / name).write_text(value + "\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "LANG": "C.UTF-8", "CREDENTIALS_DIRECTORY": str(creds),
           "RUNTIME_DIRECTORY": str(run_dir), "PROXY_PLUGINS": args.plugins}
    port = free_port()
    argv = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", *[f"-E{k}" for k in env],
            str(args.venv / "bin" / "python"), "-I", str(REPO / "launcher" / "optillm-proxy-launcher.py"),
            "--host", "127.0.0.1", "--port", str(port), "--base-url",
            f"http://127.0.0.1:{upstream.server_address[1]}/v1", "--model", "jerry-xl"]
    log = open(tmp / "launcher.log", "wb")
    proc = subprocess.Popen(argv, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    new_pid = None
    try:
        time.sleep(0.5)
        assert post(port) == 200, "the launcher did not answer"
        print(f"started: plugins={args.plugins}, old launcher PID {proc.pid}: {memory(proc.pid)} MiB")
        state.delay_seconds = 600.0
        held = threading.Thread(target=post, args=(port,), daemon=True)
        held.start()
        while not state.calls[1:]:
            time.sleep(0.05)
        state.delay_seconds = 0.0
        keys = {"api-key": creds / "api-key", "upstream-key": creds / "upstream-key"}
        out = StringIO()
        start = time.monotonic()
        with redirect_stdout(out):
            code = reload.helper_main({**env, "MAINPID": str(proc.pid)}, {k: str(v) for k, v in keys.items()})
        took = time.monotonic() - start
        found = re.search(r"PID (\d+) serves", out.getvalue())
        if code != 0 or not found:
            print(out.getvalue(), file=sys.stderr)
            return 1
        new_pid = int(found.group(1))
        assert post(port) == 200
        old, new = memory(proc.pid), memory(new_pid)
        print(f"reload helper: exit {code} in {took:.2f} s (a new launcher started, checked and switched)")
        print(f"during the drain: old VmRSS {old['VmRSS']} MiB (VmHWM {old['VmHWM']}), new VmRSS {new['VmRSS']} MiB "
              f"(VmHWM {new['VmHWM']}); sum {old['VmRSS'] + new['VmRSS']} MiB, "
              f"peak sum {old['VmHWM'] + new['VmHWM']} MiB")
        state.release.set()
        held.join(60)
        return 0
    finally:
        for pid in (new_pid, proc.pid):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        proc.wait(10)
        upstream.shutdown()


if __name__ == "__main__":
    sys.exit(main())
