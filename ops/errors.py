"""How a command's failure reaches the operator: one line on stderr and a documented exit code,
never a traceback. Every opsctl command declares its mapping with `exits`; `Fail` says "stop here
with this code and line" from anywhere inside; `require_root` is the one root check."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import click


class Fail(Exception):
    """Stop the command: `opsctl <name>: <message>` on stderr, exit `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


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


def exits(name: str, *on: On, internal: int = 1, hint: str = ""):
    """Decorate a click callback: `Fail` and each `On` become `opsctl <name>: ...` and their code;
    any other Exception is an internal error with exit `internal` (`hint` says what to check).
    click's own exits and usage errors pass through untouched."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
                raise
            except Fail as exc:
                _stop(name, exc.code, str(exc))
            except BaseException as exc:
                for rule in on:
                    if isinstance(exc, _resolve(rule.kind)):
                        text = rule.message if rule.message is not None else f"{exc}{rule.suffix}"
                        if rule.usage:
                            text += f" (see opsctl {click.get_current_context().command.name} --help)"
                        _stop(name, rule.code, text)
                if not isinstance(exc, Exception):
                    raise
                _stop(name, internal, f"internal error: {type(exc).__name__}: {exc}{' ' + hint if hint else ''}")

        return wrapper

    return decorate


def _resolve(kind: type[BaseException] | str) -> type[BaseException]:
    if isinstance(kind, str):
        import importlib

        module, _, name = kind.partition(":")
        return getattr(importlib.import_module(module), name)
    return kind


def _stop(name: str, code: int, text: str):
    click.echo(f"opsctl {name}: {text}", err=True)
    raise click.exceptions.Exit(code) from None


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
