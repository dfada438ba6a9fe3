"""Variables the service gets: the env file and the unit's Environment= lines."""

from __future__ import annotations

from ops.lint.readers.unitfile import environment_assignments


def configured_variables(ctx):
    """(path, line, name) for every variable set for the service."""
    for path, line, name, _ in configured_values(ctx):
        yield path, line, name


def configured_values(ctx):
    """(path, line, name, value) for every variable set for the service."""
    if ctx.env is not None:
        for a in ctx.env.assignments:
            yield str(ctx.inputs.env_file), a.line, a.key, a.value
    if ctx.unit is not None:
        for d in ctx.unit.effective("Service", "Environment"):
            for name, value in environment_assignments(d.value) or ():
                yield d.path, d.line, name, value


def environment_refusals(ctx, wanted):
    """(path, line, message) for each variable `wanted(name)` selects that the launcher's own
    settings.check_environment refuses, checked alone (one finding per line)."""
    from ops.from_launcher import settings

    from ops.lint.rules._launcher import refusal

    for path, line, name, value in configured_values(ctx):
        if wanted(name):
            message = refusal(settings.check_environment, {name: value})
            if message:
                yield path, line, message
