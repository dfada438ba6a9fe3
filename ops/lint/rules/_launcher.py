"""Lint's side of the launcher's refusals: the rules call the launcher's own checks
(optillm_proxy_launcher.settings, .patches) and report the message it would print before exiting
78, after REFUSES. One implementation of each check: a lint error and an exit 78 agree by
construction (tests/lint/test_refusals.py runs both on the same files)."""

from __future__ import annotations

from ops.from_launcher import settings

from ops.lint.rules._command import optillm_command

REFUSES = "the launcher refuses to start (exit 78): "


def refusal(check, *args) -> str | None:
    """REFUSES + the launcher's message when `check(*args)` refuses, else None."""
    try:
        check(*args)
    except settings.ConfigRefused as exc:
        return REFUSES + str(exc)
    return None


def stated(check, *args) -> str | None:
    """The launcher's message without REFUSES: for a plain `optillm` ExecStart, where no launcher
    runs but the fact the check states still holds."""
    try:
        check(*args)
    except settings.ConfigRefused as exc:
        return str(exc)
    return None


def command_refusal(ctx, check, *args):
    """(directive, message) when `check(optillm argv, *args)` refuses the ExecStart's command line:
    REFUSES + the message for the launcher form, the message alone for a plain optillm."""
    es = optillm_command(ctx)
    if es is None:
        return None
    message = (refusal if es.command.form == "launcher" else stated)(check, es.command.args, *args)
    return (es.directive, message) if message else None
