"""What ops takes from the launcher, and the one place ops imports it from. Stdlib only (a test
holds it to that): opsctl's venv has none of the service's dependencies.

- layout: layout.env's facts (ports, paths, the optillm version, approaches) as deployed paths
- plugins: the plugin table (launcher/plugins.json)
- settings: every configuration check the launcher refuses to start on (lint calls them)
- manifest: the reader of a runtime's manifest
- records: the per-request record schema (report reads the records back)
- patches, internals: the patch points, verified against an optillm tree (lint, runtime validation)
- reload: the reload helper's words (ops/runtime/service.py reads a refusal from the journal)

layout and plugins are modules here; the others are the launcher's own modules, imported on first
use (`from ops.from_launcher import settings`), so a plain `opsctl health` pays for none of them.
"""

from __future__ import annotations

LAUNCHER_MODULES = ("settings", "manifest", "records", "patches", "internals", "reload")


def __getattr__(name: str):
    if name in LAUNCHER_MODULES:
        import importlib

        module = importlib.import_module(f"optillm_proxy_launcher.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
