"""ops.errors: the one mapping from a command's failures to a line on stderr and an exit code."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from ops.errors import Fail, On, UsageExit3, exits, require_root


class Known(Exception):
    pass


class Usage(Exception):
    pass


def command(raise_: BaseException | None, **decorator):
    @click.command("thing", cls=UsageExit3)
    @click.option("--n", type=int, default=0)
    @exits("thing", On(Usage, 3, usage=True), On(Known, 2, suffix="; try again"),
           On(KeyboardInterrupt, 130, message="interrupted"), **decorator)
    def thing(n):
        if raise_ is not None:
            raise raise_
        click.echo("done")
        raise click.exceptions.Exit(5)

    return thing


@pytest.mark.parametrize("raised, code, line", [
    (Usage("bad --n"), 3, "opsctl thing: bad --n (see opsctl thing --help)"),
    (Known("gone"), 2, "opsctl thing: gone; try again"),
    (KeyboardInterrupt(), 130, "opsctl thing: interrupted"),
    (Fail(4, "stopped here"), 4, "opsctl thing: stopped here"),
    (ValueError("surprise"), 1, "opsctl thing: internal error: ValueError: surprise"),
])
def test_each_failure_is_one_line_and_its_code(raised, code, line):
    result = CliRunner().invoke(command(raised), [])
    assert (result.exit_code, result.stderr.strip(), result.stdout) == (code, line, "")
    assert "Traceback" not in result.output


def test_internal_error_code_and_hint_are_the_commands():
    result = CliRunner().invoke(command(ValueError("x"), internal=2, hint="(check: opsctl health)"), [])
    assert (result.exit_code, result.stderr.strip()) == (2, "opsctl thing: internal error: ValueError: x (check: opsctl health)")


def test_clicks_own_exits_and_usage_errors_pass_through():
    assert CliRunner().invoke(command(None), []).exit_code == 5
    result = CliRunner().invoke(command(None), ["--n", "many"])
    assert result.exit_code == 3 and result.stderr.startswith("opsctl thing: Invalid value for '--n'")


def test_a_type_named_by_module_is_imported_only_to_match():
    @click.command("lazy")
    @exits("lazy", On("tests.test_errors:Known", 2))
    def lazy():
        raise Known("named lazily")

    result = CliRunner().invoke(lazy, [])
    assert (result.exit_code, result.stderr.strip()) == (2, "opsctl lazy: named lazily")


def test_require_root_says_why_and_the_sudo_command(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(Fail) as failed:
        require_root("it restarts the service", "runtime rollback")
    assert (failed.value.code, str(failed.value)) == (2, "must run as root (it restarts the service): sudo opsctl runtime rollback")
    monkeypatch.setattr("os.geteuid", lambda: 0)
    require_root("it restarts the service", "runtime rollback")


def test_also_sees_every_failure_with_the_callbacks_arguments():
    seen = []

    @click.command("j")
    @click.option("--json", "as_json", is_flag=True)
    @click.option("--boom", is_flag=True)
    @exits("j", internal=2, also=lambda code, text, exc, kwargs: seen.append(
        (code, text, getattr(exc, "details", None), kwargs["as_json"])))
    def j(as_json, boom):
        if boom:
            raise ValueError("boom")
        raise Fail(3, "switched back", changed=True)

    assert CliRunner().invoke(j, ["--json"]).exit_code == 3
    assert CliRunner().invoke(j, ["--boom"]).exit_code == 2
    assert seen == [(3, "switched back", {"changed": True}, True),
                    (2, "internal error: ValueError: boom", None, False)]
