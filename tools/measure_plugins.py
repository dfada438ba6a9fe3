"""Measure which bundled optillm plugins each runtime profile can import; optionally record it.

    uv run python tools/measure_plugins.py --lean-venv DIR --full-venv DIR          # print table
    uv run python tools/measure_plugins.py --lean-venv DIR --full-venv DIR --write  # update
        the "profiles" lists in launcher/plugins.json (nothing else in that file is touched)

A plugin "imports" in a venv when, in a fresh interpreter of that venv that has imported
optillm.server, loading its file the way stock `load_plugins()` does
(spec_from_file_location + exec_module) raises nothing and yields SLUG and run, AND every module
of its own package (optillm/plugins/<name>/*.py) imports too: some plugins (longcepo) import
their package only on the first request, so a load-time check alone would let a profile enable
a plugin whose every request then fails (longcepo needs transformers). One process per
plugin, so one plugin's imports cannot make another one look importable. HOME and the working
directory are throwaway dirs (some plugins create files there at import).

Exit codes: 0 ok, 2 bad input (missing venv or plugins.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGINS_JSON = REPO / "launcher" / "plugins.json"
EXIT_BAD_INPUT = 2

# Runs inside the runtime venv: prints "ok" or the error, on the last line.
_IMPORT_ONE = r"""
import glob, importlib, importlib.util, os, sys
import optillm.server
plugin_dir = os.path.join(os.path.dirname(optillm.server.__file__), "plugins")
name = sys.argv[1]
where = name
try:
    spec = importlib.util.spec_from_file_location(name, os.path.join(plugin_dir, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = "ok" if hasattr(module, "SLUG") and hasattr(module, "run") else "no SLUG/run"
    package = name[:-len("_plugin")] if name.endswith("_plugin") else name
    for path in sorted(glob.glob(os.path.join(plugin_dir, package, "*.py"))):
        where = f"optillm.plugins.{package}.{os.path.basename(path)[:-3]}"
        importlib.import_module(where.removesuffix(".__init__"))
except BaseException as exc:
    result = f"{where}: {type(exc).__name__}: {exc}"
print("\nRESULT " + result.replace("\n", " "))
"""


def plugin_import_error(venv: Path, module: str) -> str | None:
    """None if the plugin module imports in this venv, else the error (one line)."""
    with tempfile.TemporaryDirectory(prefix="plugin-import-") as home:
        proc = subprocess.run(
            [str(venv / "bin" / "python"), "-I", "-c", _IMPORT_ONE, module],
            cwd=home, capture_output=True, text=True,
            env={"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8"},
        )
    results = [line[len("RESULT "):] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not results:
        return f"interpreter exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
    return None if results[-1] == "ok" else results[-1]


def measure(venvs: dict[str, Path], modules: list[str]) -> dict[str, dict[str, str | None]]:
    """{module: {profile: None if importable else error}}"""
    return {m: {profile: plugin_import_error(venv, m) for profile, venv in venvs.items()} for m in modules}


def load_table(path: Path = PLUGINS_JSON) -> dict:
    return json.loads(path.read_text())


def write_profiles(table: dict, measured: dict, profiles: list[str], path: Path = PLUGINS_JSON) -> None:
    for entry in table["plugins"].values():
        errors = measured[entry["module"]]
        entry["profiles"] = [p for p in profiles if errors[p] is None]
    path.write_text(json.dumps(table, indent=2) + "\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lean-venv", type=Path, required=True)
    parser.add_argument("--full-venv", type=Path, required=True)
    parser.add_argument("--write", action="store_true", help="update the profiles lists in launcher/plugins.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    venvs = {"lean": args.lean_venv, "full": args.full_venv}
    for profile, venv in venvs.items():
        if not (venv / "bin" / "python").exists():
            print(f"measure_plugins: {venv} has no bin/python: pass the {profile} runtime venv", file=sys.stderr)
            return EXIT_BAD_INPUT
    if not PLUGINS_JSON.exists():
        print(f"measure_plugins: {PLUGINS_JSON} is missing (the launcher owns it)", file=sys.stderr)
        return EXIT_BAD_INPUT
    table = load_table()
    measured = measure(venvs, sorted(e["module"] for e in table["plugins"].values()))
    for slug, entry in sorted(table["plugins"].items()):
        cells = [f"{p}={'yes' if measured[entry['module']][p] is None else 'NO'}" for p in venvs]
        notes = "; ".join(f"{p}: {e}" for p, e in measured[entry["module"]].items() if e)
        print(f"{slug:16} {' '.join(cells)}  {notes}")
    if args.write:
        write_profiles(table, measured, list(venvs))
        print(f"updated the profiles lists in {PLUGINS_JSON}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
