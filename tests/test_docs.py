"""The docs stay honest: every command they show exists with the flags they show, the regions
mirroring code are what tools/gen_docs.py renders from it (the layout, lint rules, request-path
tables, metrics, every --help, test markers), every relative link and #anchor resolves inside the
repository, and the LiteLLM example they point to is the file the chain and box tests run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from ops.cli import cli
from ops.lint.rules import RULES
from tools import gen_docs
from tests.prerequisites import require_tool
from tests.printed_commands import DOCS as DOC_NAMES

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / name for name in DOC_NAMES]


def authored(doc: Path) -> str:
    """The text an author wrote: generated regions (verbatim --help, tables) are gen_docs' to check."""
    return gen_docs.REGION.sub("", doc.read_text())


def _command_lines(text: str, program: str) -> list[str]:
    """Every line (in code blocks or inline code) that runs `program`, from it to the end."""
    found = []
    for chunk in re.findall(r"```[a-z]*\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", text):
        for line in chunk.splitlines():
            line = line.split(" #", 1)[0]
            match = re.search(rf"(?:^|\s|/){re.escape(program)}(\s.*|$)", line)
            if match:
                found.append(match.group(1).strip())
    return found


def _flags(params: list[click.Parameter]) -> set[str]:
    return {opt for p in params for opt in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])
            if opt.startswith("-")}


def _resolve(args: list[str]) -> tuple[click.Command, list[str]]:
    command: click.Command = cli
    path = []
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        name = args.pop(0)
        assert name in command.commands, f"`opsctl {' '.join(path + [name])}` is shown but does not exist"
        command = command.commands[name]
        path.append(name)
    return command, args


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_opsctl_command_and_flag_shown_exists(doc):
    for line in _command_lines(authored(doc), "opsctl"):
        args = [a for a in shlex.split(line.replace("[", " ").replace("]", " ").replace("|", " "))]
        command, rest = _resolve(args)
        known = _flags(command.params) | {"-h", "--help"}
        for arg in rest:
            flag = arg.split("=", 1)[0]
            if flag.startswith("--") or re.fullmatch(r"-[a-zA-Z]", flag):
                assert flag in known, f"{doc.name}: `opsctl ... {flag}` is shown but {command.name} has no such flag"


def test_the_runbook_shows_opsctl_commands():
    assert _command_lines(authored(REPO / "RUNBOOK.md"), "opsctl"), "RUNBOOK.md shows no opsctl command"


def test_every_install_flag_shown_exists():
    help_text = subprocess.run([str(REPO / "install.sh"), "--help"], capture_output=True, text=True,
                               check=True).stdout
    documented = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-h)\b", help_text))
    shown = 0
    for doc in DOCS:
        for line in _command_lines(authored(doc), "install.sh"):
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line):
                shown += 1
                assert flag in documented, f"{doc.name}: `install.sh {flag}` is shown but install.sh has no such flag"
    assert shown, "the docs show no install.sh flag at all"


def test_generated_regions_are_what_the_code_renders():
    """Drift fails here (fast tier, so CI): regenerate with the command in the message."""
    stale = [doc for doc, (current, generated) in gen_docs.regenerate().items() if current != generated]
    assert not stale, (f"{', '.join(stale)}: generated regions are stale; run "
                       "`uv run --frozen python tools/gen_docs.py` and commit the result")


def test_the_generator_sees_drift_an_unknown_region_and_a_lost_marker(tmp_path):
    for doc in gen_docs.DOCS:
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / doc).write_text((REPO / doc).read_text())
    rules = tmp_path / "docs/reference/lint-rules.md"
    text = rules.read_text()
    rules.write_text(text.replace("| `key-sk-prefix` | error |", "| `key-sk-prefix` | warning |"))
    current, generated = gen_docs.regenerate(tmp_path)["docs/reference/lint-rules.md"]
    assert current != generated and generated == text
    rules.write_text(text.replace("generated: lint-rules", "generated: lint-rulez"))
    with pytest.raises(gen_docs.DocProblem, match="unknown generated region 'lint-rulez'"):
        gen_docs.regenerate(tmp_path)
    rules.write_text(text.replace("<!-- END generated: lint-rules -->\n", ""))
    with pytest.raises(gen_docs.DocProblem, match="without its partner"):
        gen_docs.regenerate(tmp_path)
    rules.write_text(text)
    runbook = tmp_path / "RUNBOOK.md"
    runbook.write_text(runbook.read_text().replace("`127.0.0.1:4020`", "`127.0.0.1:4021`", 1))
    current, generated = gen_docs.regenerate(tmp_path)["RUNBOOK.md"]
    assert current != generated and "`127.0.0.1:4020`" in generated, "the layout table is not checked"


def test_gen_docs_check_exits_0_when_current():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "gen_docs.py"), "--check"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr


def test_every_lint_rule_has_a_cause_and_a_fix_for_the_troubleshooting_table():
    from ops.lint.docs import fix
    from ops.lint.engine import summary

    assert [r.ID for r in RULES if not summary(r).endswith(".") or not fix(r)] == []


def test_the_litellm_doc_points_to_the_example_the_chain_and_box_tests_run():
    from tests.fixtures.litellm import CONFIG

    path = CONFIG.relative_to(REPO).as_posix()
    assert path == "etc/litellm/config.example.yaml"
    text = (REPO / "docs" / "litellm.md").read_text()
    assert f"[`{path}`](../{path})" in text and f"opsctl lint --litellm-config {path}" in text


def test_readme_names_the_ci_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci and "sudo scripts/test.sh" in readme
    assert "sudo ./install.sh" in readme


def _markdown_files() -> list[Path]:
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "*.md"], capture_output=True, text=True).stdout
    files = {REPO / line for line in listed.splitlines()} | set(DOCS) | set((REPO / "docs").rglob("*.md"))
    return sorted(p for p in files if p.exists())


def _anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", gen_docs.ANY_MARKER.sub("", doc.read_text()), re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("doc", _markdown_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves_inside_the_repository(doc):
    """A link (or a shown relative path) to a file outside the checkout breaks for everyone else:
    the project's own notes live in docs/. Anchors into Markdown files must name a heading."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    links = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]
    links += re.findall(r"`(\.\./[^`\s]+)`", text)
    for link in links:
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        assert path.is_relative_to(REPO), f"{doc.name} links {link}, outside the repository"
        assert path.exists(), f"{doc.name} links {link}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{doc.name} links {link}: {path.name} has no such heading"


def _install_summary() -> str:
    """What install.sh prints as its summary after a healthy install on a systemd host (ops.install.summary)."""
    from ops.install.options import parse
    from ops.install.run import Run
    from ops.install.summary import summary

    return summary(Run(parse([], environ={}), profile="lean", runtime_name="lean-x", service_state="healthy",
                       has_systemd=True))


def _summary_command_lines(summary: str, program: str) -> list[str]:
    """The summary's commands, one per `;`-separated part (`cmd; cmd (note)`)."""
    parts = [re.sub(r"\s\(.*", "", part) for line in summary.splitlines() for part in line.split(";")]
    return _command_lines("```\n" + "\n".join(parts) + "\n```", program)


def test_every_opsctl_command_install_summary_prints_runs_as_printed(monkeypatch, tmp_path):
    """install.sh's `next:` commands exist with those flags, and none is a usage error when run
    as printed (with no proxy listening: the probes fail, but not for their arguments)."""
    import httpx

    import ops.probes.client
    from ops.from_launcher.layout import Layout
    from ops.probes.http_probe import Refused
    from tests.probe_helpers import raising, run_cli, use_fetch, use_transport

    monkeypatch.setattr(ops.probes.client, "DEFAULT", Layout(tmp_path / "root"))
    monkeypatch.delenv("OPSCTL_API_KEY", raising=False)
    use_transport(monkeypatch, raising(httpx.ConnectError("[Errno 111] Connection refused")))
    use_fetch(monkeypatch, raising(Refused("connection refused")))
    lines = _summary_command_lines(_install_summary(), "opsctl")
    assert {line.split()[0] for line in lines} >= {"health", "smoke", "lint"}, lines
    for line in lines:
        args = shlex.split(line)
        command, rest = _resolve(list(args))
        known = _flags(command.params) | {"-h", "--help"}
        for arg in rest:
            if arg.startswith("-"):
                assert arg.split("=", 1)[0] in known, f"install.sh prints `opsctl {line}`: {command.name} has no {arg}"
        result = run_cli(*args)
        usage = ("Usage:" in result.output or "Try 'opsctl" in result.output
                 or re.search(r"see opsctl [a-z ]+--help\)", result.output))
        assert not usage, f"install.sh prints `opsctl {line}`, a usage error:\n{result.output}"


def test_every_install_flag_install_summary_prints_exists():
    help_text = subprocess.run([str(REPO / "install.sh"), "--help"], capture_output=True, text=True,
                               check=True).stdout
    documented = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-h)\b", help_text))
    summary = _install_summary()
    flags = [flag for line in _summary_command_lines(summary, "install.sh")
             for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line)]
    assert "--uninstall" in flags, summary
    for flag in flags:
        assert flag in documented, f"install.sh's summary shows `install.sh {flag}`, which --help does not list"


def _all_commands(group: click.Group = cli, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*path, name))


def test_no_help_names_a_python_constant_instead_of_its_value():
    """`--help` shows defaults as values (`[default: 2]`), never as `ops.from_launcher.layout.KEEP_RUNTIMES`."""
    from click.testing import CliRunner

    from ops.from_launcher.layout import KEEP_RUNTIMES

    for path in _all_commands():
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert not re.search(r"\bops\.[a-z_]+\.[A-Z_]+", result.output), (path, result.output)
    prune = CliRunner().invoke(cli, ["runtime", "prune", "--help"]).output
    assert re.search(rf"--keep .*\[default: {KEEP_RUNTIMES}[;\]]", " ".join(prune.split())), prune


def test_runbook_testinfra_commands_are_the_one_ci_runs_and_need_no_uv():
    """The deployed-host suite is run on a host as printed: no uv on PATH, a read-only checkout.
    The RUNBOOK prints tests/testinfra/run.sh, the box test runs that same command."""
    from ops.from_launcher.layout import DEFAULT
    from tests.test_box_testinfra import RUNBOOK_COMMAND

    runbook = (REPO / "RUNBOOK.md").read_text()
    lines = [line.split(" #", 1)[0].strip() for block in re.findall(r"```sh\n(.*?)```", runbook, re.S)
             for line in block.splitlines() if "tests/testinfra" in line]
    assert lines, "the RUNBOOK shows no testinfra command"
    for line in lines:
        assert "uv run" not in line and re.search(r"(^|\s)tests/testinfra/run\.sh (--ansible-inventory=\S+ )?--hosts=\S+$", line), line
    assert any(line.endswith(RUNBOOK_COMMAND) for line in lines), (RUNBOOK_COMMAND, lines)
    script = REPO / "tests" / "testinfra" / "run.sh"
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "-s", str(script)], capture_output=True,
                             text=True).stdout
    assert tracked.startswith("100755 "), f"{script} is not committed executable: {tracked!r}"
    assert f"INSTALLED_UV={DEFAULT.tools}/uv/bin/uv\n" in script.read_text()
    shown = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--hosts=local://" in shown.stdout and "Exit codes" in shown.stdout
    bare = subprocess.run([str(script)], capture_output=True, text=True)
    assert bare.returncode == 2 and "no --hosts" in bare.stderr


def test_ci_runs_the_fast_tier_as_nobody_offline_and_the_scripts_are_shellcheck_clean():
    """README promises the fast tier needs no root and no network: scripts/test.sh (CI) runs it so."""
    test_sh = (REPO / "scripts" / "test.sh").read_text()
    main = test_sh[test_sh.index("\nmain() {"):]
    assert '"${REPO}/scripts/test-fast-unprivileged.sh"' in test_sh and "    run_fast_tier_unprivileged\n" in main
    proc = subprocess.run([require_tool("shellcheck", "shellcheck"), *map(str, sorted((REPO / "scripts").glob("*.sh")))],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_readme_supported_systems_table_says_what_the_locks_hold():
    """One row per supported Python; its lean/full columns are what locks/py<X.Y>/ holds."""
    from tools import derive_locks

    section = (REPO / "README.md").read_text().split("## Supported systems", 1)[1].split("\n## ", 1)[0]
    rows = {cells[2]: cells for cells in ([c.strip() for c in line.split("|")] for line in section.splitlines()
                                          if line.startswith("| ") and not line.startswith("| system"))}
    table = derive_locks.pythons_table(derive_locks.existing_files())
    assert set(rows) == set(table), "a row per Python in locks/py*/"
    for python, entry in table.items():
        for column, profile in ((4, "lean"), (5, "full")):
            assert rows[python][column] == ("yes" if profile in entry["profiles"] else "no"), (python, profile)


def test_docs_code_md_names_every_top_level_entry_of_ops():
    """docs/code.md's table and ops/'s top level: packages, cli.py and shared modules only."""
    listed = set(re.findall(r"^\| `ops/([a-z_]+(?:/|\.py))`", (REPO / "docs" / "code.md").read_text(), re.M))
    present = {p.name + "/" if p.is_dir() else p.name for p in (REPO / "ops").iterdir()
               if p.name not in ("__init__.py", "__pycache__")}
    assert listed == present
    assert all((REPO / "ops" / name / "__init__.py").is_file() for name in present if name.endswith("/"))

