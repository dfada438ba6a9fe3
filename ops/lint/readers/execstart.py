"""What optillm 0.3.12 will see on its command line, from a unit's ExecStart=.

Two forms are understood: the deployed one (`<python> [-I ...] <launcher.py> <optillm flags>`,
the launcher handing its argv to optillm) and a plain `optillm <flags>`. Flags are resolved the
way argparse resolves them (`--flag value`, `--flag=value`, unique prefixes, `--base_url` alias)
so `--appr proxy` is caught like `--approach proxy`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ops.from_launcher import settings

from ops.lint.readers.unitfile import split_words

_CEPO_FIELDS = (
    "bestofn_n bestofn_temperature bestofn_max_tokens bestofn_rating_type planning_n planning_m "
    "planning_temperature_step1 planning_temperature_step2 planning_temperature_direct_resp "
    "planning_temperature_step3 planning_temperature_step4 planning_max_tokens_step1 "
    "planning_max_tokens_step2 planning_max_tokens_direct_resp planning_max_tokens_step3 "
    "planning_max_tokens_step4 use_plan_diversity use_reasoning_fallback num_of_retries "
    "rating_model print_output config_file"
).split()

# optillm 0.3.12's long options (server.py parse_args), canonical name first.
_VALUED = {
    "--optillm-api-key": "--optillm-api-key", "--approach": "--approach",
    "--mcts-simulations": "--mcts-simulations", "--mcts-exploration": "--mcts-exploration",
    "--mcts-depth": "--mcts-depth", "--model": "--model", "--rstar-max-depth": "--rstar-max-depth",
    "--rstar-num-rollouts": "--rstar-num-rollouts", "--rstar-c": "--rstar-c", "--n": "--n",
    "--host": "--host", "--port": "--port", "--log": "--log", "--plugins-dir": "--plugins-dir",
    "--conversation-log-dir": "--conversation-log-dir", "--best-of-n": "--best-of-n",
    "--best_of_n": "--best-of-n", "--base-url": "--base-url", "--base_url": "--base-url",
    "--ssl-cert-path": "--ssl-cert-path", "--batch-size": "--batch-size",
    "--batch-wait-ms": "--batch-wait-ms",
    **{f"--cepo_{f}": f"--cepo_{f}" for f in _CEPO_FIELDS},
}
_SWITCHES = {
    s: s for s in ("--return-full-response", "--launch-gui", "--log-conversations",
                   "--ssl-verify", "--no-ssl-verify", "--batch-mode", "--version", "--help")
}
_KNOWN = {**_VALUED, **_SWITCHES}
_PYTHON = re.compile(r"python(\d+(\.\d+)?)?\Z")
# Interpreter options that take a value as the next word.
_PY_OPTS_WITH_ARG = {"-W", "-X", "-c", "-m", "--check-hash-based-pycs"}


@dataclass
class OptillmCommand:
    program: str  # the executable as written
    form: str  # "launcher", "optillm-module", "optillm" or "unknown"
    script: str | None = None  # launcher path in the launcher form
    flags: dict[str, str | None] = field(default_factory=dict)  # canonical flag -> last value
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # every (flag, value)
    error: str | None = None  # quoting broken
    launcher_plugins: str | None = None  # the launcher's own --plugins (overrides PROXY_PLUGINS)
    # optillm's argv (in the launcher form as the launcher checks it: its own options taken out
    # by its own code), and the launcher's refusal of its own options, if any.
    args: list[str] = field(default_factory=list)
    launcher_error: str | None = None


def _resolve(option: str) -> str | None:
    if option in _KNOWN:
        return _KNOWN[option]
    matches = {canon for name, canon in _KNOWN.items() if name.startswith(option)}
    return matches.pop() if len(matches) == 1 else None


def parse_optillm_args(args: list[str], cmd: OptillmCommand) -> None:
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if not word.startswith("--") or word == "--":
            continue
        name, eq, inline = word.partition("=")
        canon = _resolve(name)
        if canon in _SWITCHES:
            value = None
        elif eq:
            value = inline
        elif i < len(args) and (canon in _VALUED or not args[i].startswith("-")):
            value = args[i]
            i += 1
        else:
            value = None
        flag = canon or name
        cmd.seen.append((flag, value))
        cmd.flags[flag] = value


def parse_exec_start(value: str) -> OptillmCommand:
    words = split_words(value)
    if words is None:
        return OptillmCommand(program="", form="unknown", error="unbalanced quotes")
    # Leading special-executable prefixes (@ - : + !) change how systemd runs it, not what.
    if words:
        words[0] = words[0].lstrip("@-:+!")
    if not words or not words[0]:
        return OptillmCommand(program="", form="unknown", error="empty command")
    program = words[0]
    name = PurePosixPath(program).name
    cmd = OptillmCommand(program=program, form="unknown")
    if name == "optillm":
        cmd.form, cmd.args = "optillm", words[1:]
        parse_optillm_args(cmd.args, cmd)
    elif _PYTHON.match(name):
        i = 1
        while i < len(words) and words[i].startswith("-"):
            opt = words[i]
            if opt == "-m" and i + 1 < len(words):
                if words[i + 1] == "optillm":
                    cmd.form, cmd.args = "optillm-module", words[i + 2:]
                    parse_optillm_args(cmd.args, cmd)
                return cmd
            i += 2 if opt in _PY_OPTS_WITH_ARG else 1
        if i < len(words):
            cmd.form, cmd.script = "launcher", words[i]
            try:
                cmd.launcher_plugins, cmd.args = settings.take_option(words[i + 1:], "--plugins")
            except settings.ConfigRefused as exc:
                cmd.launcher_error, cmd.args = str(exc), [w for w in words[i + 1:] if w != "--plugins"]
            parse_optillm_args(cmd.args, cmd)
    return cmd
