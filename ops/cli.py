"""opsctl's entry point: wires the click group to each package's commands. A plain `opsctl health`
(monitoring runs it every minute) is served by ops.probes.health without importing click, and
leaves without the interpreter's teardown. `from ops.cli import cli` gives the click group."""

from __future__ import annotations

import functools
import os
import sys

# Each package's click commands (its command module's COMMANDS), imported only to build the group.
_PACKAGES = ("ops.probes.command", "ops.lint.command", "ops.report.command", "ops.eval.command",
             "ops.runtime.command", "ops.install.command")


@functools.lru_cache(maxsize=1)
def _group():
    import importlib

    import click

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    def cli() -> None:
        """Operate an optillm-proxy (OptiLLM 0.3.12) deployment."""

    for name in _PACKAGES:
        for command in importlib.import_module(name).COMMANDS:
            cli.add_command(command)
    return cli


def __getattr__(name: str):
    if name == "cli":
        return _group()
    raise AttributeError(name)


def main() -> None:
    if sys.argv[1:2] == ["health"]:
        from ops.probes.health import fast_main

        code = fast_main(sys.argv[2:])
        if code is not None:
            # A probe holds nothing to finalize (its socket is closed, its line printed with
            # flush=True), and tearing down every imported module is a real share of a
            # once-a-minute probe's cost.
            os._exit(code)
    _group()()


if __name__ == "__main__":
    main()
