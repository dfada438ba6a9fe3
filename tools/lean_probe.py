"""Measure what core optillm needs: run it for real, then list the distributions it imported.

Runs INSIDE a runtime venv (stdlib + optillm only; never imports `ops`):

    VENV/bin/python tools/lean_probe.py FAKE_UPSTREAM_PY > probe.json

It starts the recording upstream (FAKE_UPSTREAM_PY, the stdlib-only tools/fake_upstream.py, loaded
by path) and the real `optillm.server.main()` in this process with plugin loading replaced by a
no-op, sends one chat completion per core approach (`<approach>-jerry-xl`), and prints JSON:
  {"approaches": {approach: {"status", "calls", "models"}},
   "other_paths": {"models"|"stream-none"|"stream-moa"|"upstream-500": HTTP status},
   "distributions": [names owning a file of an imported module],
   "marker_environment": {PEP 508 values of this interpreter}}
Plugins are skipped because the lean profile is defined as "core optillm": plugin needs are
measured separately (tools/measure_plugins.py).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

BASE_MODEL = "jerry-xl"
QUESTION = "What is 2+2?"
PROBE_KEY = "lean-probe-key-not-secret"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_upstream(fake_upstream_py: str):
    spec = importlib.util.spec_from_file_location("fake_upstream", fake_upstream_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = module.make_server("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def http_json(url: str, body: dict | None = None, key: str | None = None, timeout: float = 600):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode(errors="replace")[:500]}


def start_optillm(upstream: str) -> tuple[str, list[str]]:
    import optillm.server as server

    # Plugins are not part of the core: skip them exactly where stock main() loads them.
    server.load_plugins = lambda: None
    port = free_port()
    sys.argv = ["optillm", "--host", "127.0.0.1", "--port", str(port), "--base-url",
                f"{upstream}/v1", "--model", BASE_MODEL, "--optillm-api-key", PROBE_KEY]
    threading.Thread(target=server.main, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if http_json(f"{url}/health", timeout=2)[0] == 200:
                return url, list(server.known_approaches)
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("optillm did not answer /health within 120 s")


def run_approaches(url: str, upstream: str, approaches: list[str]) -> dict:
    results = {}
    for approach in approaches:
        http_json(f"{upstream}/_reset", {})
        status, _ = http_json(f"{url}/v1/chat/completions", {
            "model": f"{approach}-{BASE_MODEL}",
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 50,
        }, key=PROBE_KEY)
        calls = [c for c in http_json(f"{upstream}/_calls")[1] if c["path"].endswith("/chat/completions")]
        results[approach] = {"status": status, "calls": len(calls),
                             "models": sorted({c["model"] for c in calls})}
    return results


def run_other_paths(url: str, upstream: str) -> dict:
    """What an operator's traffic also does: list models, stream, and meet a failing upstream.

    Run after the approaches so that their call counts stay clean; only the imports matter here.
    """
    results = {"models": http_json(f"{url}/v1/models", key=PROBE_KEY)[0]}
    for approach in ("none", "moa"):
        req = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps({
            "model": f"{approach}-{BASE_MODEL}", "stream": True, "max_tokens": 50,
            "messages": [{"role": "user", "content": QUESTION}]}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {PROBE_KEY}"})
        with urllib.request.urlopen(req, timeout=600) as resp:
            resp.read()
            results[f"stream-{approach}"] = resp.status
    http_json(f"{upstream}/_status", {"status": 500})
    results["upstream-500"] = http_json(f"{url}/v1/chat/completions", {
        "model": BASE_MODEL, "messages": [{"role": "user", "content": QUESTION}]}, key=PROBE_KEY)[0]
    http_json(f"{upstream}/_reset", {})
    return results


def file_owners() -> dict[str, str]:
    """Real path of every file a distribution's RECORD lists -> that distribution's name.

    File ownership, not top-level names: namespace packages (google.*, nvidia.*) are shared
    by many distributions, and only the files say which one an import really used.
    """
    owners = {}
    for dist in importlib.metadata.distributions():
        for f in dist.files or ():
            owners[os.path.realpath(dist.locate_file(f))] = canonical(dist.metadata["Name"])
    return owners


def imported_distributions() -> list[str]:
    owners = file_owners()
    found = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path:
            owner = owners.get(os.path.realpath(path))
            if owner:
                found.add(owner)
    return sorted(found)


def marker_environment() -> dict[str, str]:
    info = sys.implementation
    version = f"{info.version.major}.{info.version.minor}.{info.version.micro}"
    return {
        "implementation_name": info.name,
        "implementation_version": version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: lean_probe.py PATH/TO/fake_upstream.py")
    # optillm and werkzeug print to stdout too: keep the real stdout for the report only.
    report_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    upstream = start_upstream(sys.argv[1])
    url, approaches = start_optillm(upstream)
    results = run_approaches(url, upstream, approaches)
    other = run_other_paths(url, upstream)
    report = {"approaches": results, "other_paths": other, "distributions": imported_distributions(),
              "marker_environment": marker_environment()}
    report_out.write(json.dumps(report, indent=1, sort_keys=True) + "\n")
    report_out.flush()
    # The server thread never returns; leave without waiting for it.
    os._exit(0)


if __name__ == "__main__":
    main()
