"""`opsctl lint` behind its click command (ops/lint/command.py): build the inputs, run, print, choose the exit code."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ops.lint import engine
from ops.lint.context import Context, Inputs
from ops.lint.ignore import apply as apply_ignores
from ops.lint.ignore import resolve as resolve_ignores
from ops.lint.rules import RULES


def list_rules() -> str:
    width = max(len(r.ID) for r in RULES)
    return "".join(f"{r.ID:<{width}}  {r.SEVERITY:<7}  {engine.summary(r)}\n" for r in RULES)


def explain(rule_id: str) -> str:
    rule = engine.rule_by_id(rule_id)
    if rule is None:
        raise click.BadParameter(f"no rule {rule_id!r}; `opsctl lint --list-rules` lists them",
                                 param_hint="--explain")
    return engine.explain(rule)


def lint(*, unit: Path | None, socket: Path | None, env_file: Path | None, key_file: Path | None,
         upstream_key_file: Path | None, proxy_config: Path | None, litellm_config: Path | None,
         venv: Path | None, strict: bool, as_json: bool, ignore: tuple[str, ...] = (),
         config: Path | None = None) -> int:
    """Raises ignore.IgnoreProblem (exit 2) for an --ignore or config file it cannot honour."""
    ignored, config_read = resolve_ignores(ignore, config)
    inputs = Inputs.defaults(unit=unit, socket=socket, env_file=env_file, key_file=key_file,
                             upstream_key_file=upstream_key_file, proxy_config=proxy_config,
                             litellm_config=litellm_config, venv=venv)
    ctx = Context(inputs)
    findings, dropped = apply_ignores(engine.run(ctx), ignored)
    print(engine.profile_line(ctx), file=sys.stderr)
    if ignored:
        print(f"info: ignored rule(s) {', '.join(sorted(ignored))} ({dropped} finding(s) not shown"
              f"{'; from ' + config_read if config_read else ''})", file=sys.stderr)
    sys.stdout.write(engine.render_json(findings) if as_json else engine.render_text(findings))
    return engine.exit_code(findings, strict)
