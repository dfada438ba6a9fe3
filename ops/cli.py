"""opsctl's entry point. A plain `opsctl health` (monitoring runs it every minute) is served by
ops.health without importing click, and leaves without the interpreter's teardown; everything
else goes through the click commands in ops/commands.py. `from ops.cli import cli` still gives
the click group."""

from __future__ import annotations

import os
import sys


def __getattr__(name: str):
    if name == "cli":
        from ops.commands import cli

        return cli
    raise AttributeError(name)


def main() -> None:
    if sys.argv[1:2] == ["health"]:
        from ops.health import fast_main

        code = fast_main(sys.argv[2:])
        if code is not None:
            # A probe holds nothing to finalize (its socket is closed, its line printed with
            # flush=True), and tearing down every imported module is a real share of a
            # once-a-minute probe's cost.
            os._exit(code)
    from ops.commands import cli

    cli()
