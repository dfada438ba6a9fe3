"""How a command's failure reaches the operator: one line on stderr and a documented exit code,
never a traceback. Every opsctl command declares its mapping with `exits`; `Fail` says "stop here
with this code and line" from anywhere inside; `require_root` is the one root check."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import click


class Fail(Exception):
    """Stop the command: `opsctl <name>: <message>` on stderr, exit `code`. `details` are for an
    `exits(also=...)` hook (what a --json object adds)."""

    def __init__(self, code: int, message: str, **details) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


@dataclass(frozen=True)
class On:
    """A failure `exits` maps: exception type (or "module:Name", imported only when something
    fails, for a command whose module is costly to import), exit code, and what follows
    `opsctl <name>: `.

    `suffix` is appended to str(exc); `message`, when set, replaces it; `usage` appends the
    command's `(see opsctl <command> --help)`."""

    kind: type[BaseException] | str
    code: int
    suffix: str = ""
    message: str | None = None
    usage: bool = False


def exits(name: str, *on: On, internal: int = 1, hint: str = "", also=None):
    """Decorate a click callback: `Fail` and each `On` become `opsctl <name>: ...` and their code;
    any other Exception is an internal error with exit `internal` (`hint` says what to check).
    click's own exits and usage errors pass through untouched. `also(code, text, exc, kwargs)`,
    when given, runs first with the callback's arguments (a command's --json says it on stdout)."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
                raise
            except BaseException as exc:
                code, text = _mapped(exc, on, internal, hint)
                if also is not None:
                    also(code, text, exc, kwargs)
                click.echo(f"opsctl {name}: {text}", err=True)
                raise click.exceptions.Exit(code) from None

        return wrapper

    return decorate


def _resolve(kind: type[BaseException] | str) -> type[BaseException]:
    if isinstance(kind, str):
        import importlib

        module, _, name = kind.partition(":")
        return getattr(importlib.import_module(module), name)
    return kind


def _mapped(exc: BaseException, on: tuple[On, ...], internal: int, hint: str) -> tuple[int, str]:
    """(exit code, line) for `exc`; re-raises what is not an Exception and not mapped."""
    if isinstance(exc, Fail):
        return exc.code, str(exc)
    for rule in on:
        if isinstance(exc, _resolve(rule.kind)):
            text = rule.message if rule.message is not None else f"{exc}{rule.suffix}"
            if rule.usage:
                text += f" (see opsctl {click.get_current_context().command.name} --help)"
            return rule.code, text
    if not isinstance(exc, Exception):
        raise exc
    return internal, f"internal error: {type(exc).__name__}: {exc}{' ' + hint if hint else ''}"


def require_root(why: str, command: str, code: int = 2) -> None:
    """The one root check: `must run as root (<why>): sudo opsctl <command>`."""
    if os.geteuid() != 0:
        raise Fail(code, f"must run as root ({why}): sudo opsctl {command}")


class UsageExit3(click.Command):
    """Monitoring contract: a usage error exits 3 (click's default is 2)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        wants_json = "--json" in args  # click consumes `args` while parsing
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            self.report_usage_error(exc.format_message(), wants_json)
            raise click.exceptions.Exit(3) from None

    def report_usage_error(self, message: str, as_json: bool) -> None:
        click.echo(f"opsctl {self.name}: {message} (see opsctl {self.name} --help)", err=True)
