"""Variables the service gets: the env file and the unit's Environment= lines."""

from __future__ import annotations

from ops.lint.readers.unitfile import environment_assignments


def configured_variables(ctx):
    """(path, line, name) for every variable set for the service."""
    if ctx.env is not None:
        for a in ctx.env.assignments:
            yield str(ctx.inputs.env_file), a.line, a.key
    if ctx.unit is not None:
        for d in ctx.unit.effective("Service", "Environment"):
            for name, _ in environment_assignments(d.value) or ():
                yield d.path, d.line, name
