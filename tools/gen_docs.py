"""Regenerate the parts of the docs (DOCS) that mirror code, from the code.

    uv run --frozen python tools/gen_docs.py            # rewrite the generated regions
    uv run --frozen python tools/gen_docs.py --check    # exit 1 and show the drift, write nothing

A generated region is delimited in the Markdown by

    <!-- BEGIN generated: NAME (tools/gen_docs.py) -->
    ...
    <!-- END generated: NAME -->

and everything between the two lines is replaced by what REGIONS[NAME] renders; nothing outside
a region is touched. To change a region's text, change the code it comes from (a lint rule's
docstring, a click option's help, launcher/optillm_proxy_launcher/policy.RULES, routes.ROUTES and
routes.REFUSED or settings.BOUNDS, layout.env, the metrics the launcher registers, install.sh's
usage and steps, pyproject.toml's markers), then run this. A region may appear in more than one
document; each copy renders the same.
tests/test_docs.py runs --check's logic in the fast tier, so CI fails on drift.

Exit codes: 0 up to date (or rewritten), 1 --check found drift, 2 a document names an unknown
region, has an unclosed one, or lacks a region this script renders.
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "RUNBOOK.md", "docs/request-path.md", "docs/monitoring.md", "docs/testing.md",
        "docs/reference/cli.md", "docs/reference/lint-rules.md", "docs/serving.md")
# --help is rendered at a fixed width, so the text does not depend on the terminal it runs in:
# the width click uses in any terminal of 80 columns or more (its default max_content_width 80,
# minus 2), so the reference reads as `opsctl COMMAND --help` prints.
HELP_WIDTH = 78

REGION = re.compile(
    r"^<!-- BEGIN generated: (?P<name>[a-z0-9-]+) \(tools/gen_docs\.py\) -->\n"
    r"(?P<body>.*?)"
    r"^<!-- END generated: (?P=name) -->$",
    re.S | re.M)
ANY_MARKER = re.compile(r"^<!-- (BEGIN|END) generated: .*$", re.M)


class DocProblem(Exception):
    """A document whose regions cannot be regenerated; str() is the one line to print."""


# --- what each region says ------------------------------------------------------------------


def lint_rules() -> str:
    from ops.lint.docs import table

    return table()


def policy_rules() -> str:
    from optillm_proxy_launcher.policy import RULES

    rows = [f"| `{rule}` | {text} |" for rule, text in RULES.items()]
    return "\n".join(["| rule | what it refuses |", "|---|---|", *rows]) + "\n"


def request_routes() -> str:
    """What reaches optillm's views (routes.ROUTES) and what every other request gets (routes.REFUSED)."""
    from optillm_proxy_launcher.routes import REFUSED, ROUTES, STATUS

    served = [f"| `{r.method}` | `{r.path}` | {f'optillm `{r.endpoint}`' if r.endpoint else 'the launcher'} | "
              f"{cell(r.what)} |" for r in ROUTES]
    refused = [f"| {cell(request)} | {cell(method)} | {STATUS[rule]} | `{rule}` |" for request, method, rule in REFUSED]
    return "\n".join(["| method | path | answered by | what |", "|---|---|---|---|", *served, "",
                      "| request | method | HTTP | rule |", "|---|---|---|---|", *refused]) + "\n"


def request_bounds(which: str = "REQUEST_BOUNDS") -> str:
    from optillm_proxy_launcher import settings

    rows = []
    for b in getattr(settings, which):
        default = int(b.default) if float(b.default).is_integer() else b.default
        rows.append(f"| `{b.name}` | {default} | {b.range} | {b.why} |")
    return "\n".join(["| setting | default | range | why |", "|---|---|---|---|", *rows]) + "\n"


# What runs where, for the RUNBOOK's first table: each row a template over layout.env's keys.
LAYOUT_ROWS = (
    ("service", "`${SERVICE}.service`, user `${SERVICE_USER}`, on `${LISTEN_HOST}:${LISTEN_PORT}` only; "
                "`${SOCKET_UNIT}` holds the port (restarts queue, never refuse)"),
    ("upstream", "LiteLLM at `${UPSTREAM_URL}`: clients call it; it sends `<strategy>-${BASE_MODEL}` to the "
                 "proxy, which calls it back for `${BASE_MODEL}` only"),
    ("optillm", "stock ${OPTILLM_VERSION}; profiles `${PROFILES}` (default `${DEFAULT_PROFILE}`)"),
    ("runtimes", "`${RUNTIMES_DIR}/<version>-<profile>-<lock sha12>/`; `${CURRENT_LINK}` serves, "
                 "`${PREVIOUS_LINK}` is the rollback target"),
    ("env file", "`${ENV_FILE}` (root 0600): plugins, approaches, request bounds; no secret"),
    ("proxy key", "`${KEY_FILE}` (root 0600): what LiteLLM presents to the proxy (`LoadCredential=api-key`)"),
    ("LiteLLM key", "`${UPSTREAM_KEY_FILE}` (root 0600): the LiteLLM virtual key the proxy presents "
                    "(`LoadCredential=upstream-key`)"),
    ("provider file", "`${PROVIDER_FILE}` (root 0644; loopback only)"),
    ("units", "`${UNIT_FILE}`, `${SOCKET_FILE}`; your drop-ins in `${DROPIN_DIR}/`"),
    ("tools", "`${TOOLS_DIR}/` (uv, opsctl's venv), `${OPSCTL_LINK}`"),
    ("uninstall", "`${UNINSTALL_SCRIPT}` (no checkout needed)"),
)


def layout_table() -> str:
    from string import Template

    from optillm_proxy_launcher.layout import FACTS

    rows = []
    for what, where in LAYOUT_ROWS:
        try:
            rows.append(f"| {what} | {Template(where).substitute(FACTS)} |")
        except KeyError as exc:
            raise DocProblem(f"layout table: layout.env has no key {exc}") from None
    return "\n".join(["| what | where |", "|---|---|", *rows]) + "\n"


def metrics_table() -> str:
    """Every metric the launcher registers, from a Metrics built on a registry of its own."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import MetricWrapperBase

    from optillm_proxy_launcher.metrics import Metrics

    metrics = Metrics(registry=CollectorRegistry())
    rows = []
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        name = metric._name + ("_total" if metric._type == "counter" else "")
        labels = ", ".join(f"`{label}`" for label in metric._labelnames) or "-"
        rows.append(f"| `{name}` | {metric._type} | {labels} | {cell(metric._documentation)} |")
    return "\n".join(["| metric | type | labels | what it counts |", "|---|---|---|---|", *rows]) + "\n"


def server_options() -> str:
    """What serving.py passes to waitress, with the settings it comes from."""
    from optillm_proxy_launcher import serving, settings

    request = settings.RequestSettings(**{**_default_request(), "approaches": frozenset()})
    rows = [f"| `{name}` | `{value!r}` |" for name, value in serving.server_options(request).items()]
    return "\n".join(["| waitress adjustment | value with the default settings |", "|---|---|", *rows]) + "\n"


def _default_request() -> dict:
    from optillm_proxy_launcher import settings

    values = {b.name: b.parse({}) for b in settings.BOUNDS}
    return dict(upstream_timeout=values["UPSTREAM_TIMEOUT_SECONDS"], upstream_retries=int(values["UPSTREAM_RETRIES"]),
                deadline=values["REQUEST_DEADLINE_SECONDS"], max_request_bytes=int(values["MAX_REQUEST_BYTES"]),
                max_n=int(values["MAX_N"]), drain=values["DRAIN_SECONDS"], threads=int(values["SERVER_THREADS"]),
                connection_limit=int(values["CONNECTION_LIMIT"]), client_timeout=int(values["CLIENT_TIMEOUT_SECONDS"]),
                admit_body_bytes=int(values["ADMIT_BODY_BYTES"]))


def _commands(group, ctx, path=()):
    """(path, command, context) of every opsctl command, groups before their subcommands."""
    import click

    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        sub = click.Context(command, info_name=name, parent=ctx, **command.context_settings)
        yield (*path, name), command, sub
        if isinstance(command, click.Group):
            yield from _commands(command, sub, (*path, name))


def opsctl_help() -> str:
    import click

    from ops.cli import cli

    root = click.Context(cli, info_name="opsctl", terminal_width=HELP_WIDTH, max_content_width=HELP_WIDTH,
                         **cli.context_settings)
    parts = ["```text", cli.get_help(root), "```"]
    for path, command, ctx in _commands(cli, root):
        parts += ["", f"#### `opsctl {' '.join(path)}`", "", "```text", command.get_help(ctx), "```"]
    return "\n".join(parts) + "\n"


def install_help() -> str:
    proc = subprocess.run(["bash", str(REPO / "install.sh"), "--help"], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    if proc.returncode != 0:
        raise DocProblem(f"./install.sh --help exited {proc.returncode}: {proc.stderr.strip()[:200]}")
    return "```text\n" + proc.stdout.rstrip("\n") + "\n```\n"


def cell(text: str) -> str:
    """text inside a Markdown table cell: a `|` would end the cell."""
    return text.replace("|", r"\|")


# Sourcing install.sh defines its values and runs nothing; each hint is then expanded as the
# double-quoted string it is in the script.
EXPAND_HINTS = r"""source "$1"; while IFS= read -r raw; do eval "printf '%s\n' \"${raw}\""; done"""


def install_steps() -> str:
    """The steps a plain `./install.sh` runs, in order: the bootstrap's (main()'s own level, each
    function's `step NAME HINT`, the hint expanded by bash from install.sh's own values, as on-error
    prints it), then opsctl install's (ops.install.main.INSTALL_STEPS, each step's Run.step call)."""
    text = (REPO / "install.sh").read_text()
    bodies = dict(re.findall(r"^([a-z_]+)\(\) \{\n(.*?)^\}", text, re.S | re.M))
    calls = re.findall(r"^  ([a-z_]+)(?: \"\$@\")?$", bodies["main"], re.M)  # main's own level: not the branches
    steps = []
    for function in (c for c in calls if c in bodies):
        found = re.search(r'^\s*step "([^"]+)" "([^"]*)"$', bodies[function], re.M)
        if found:
            # A step another function repeats (the Python check before the packages) is listed once, last.
            steps = [step for step in steps if step[1] != found.group(1)] + [(function, found.group(1), found.group(2))]
        elif re.search(r"^\s*step ", bodies[function], re.M):
            raise DocProblem(f"install.sh: {function}'s step line is not `step \"NAME\" \"HINT\"` on one line")
    proc = subprocess.run(["bash", "-c", EXPAND_HINTS, "gen_docs", str(REPO / "install.sh")],
                          input="".join(f"{hint}\n" for _, _, hint in steps),
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    hints = proc.stdout.splitlines()
    if proc.returncode != 0 or len(hints) != len(steps):
        raise DocProblem(f"install.sh's step hints did not expand: {proc.stderr.strip()[:200]}")
    named = [(function, name, hint) for (function, name, _), hint in zip(steps, hints)] + opsctl_install_steps()
    rows = [f"| {n} | `{name}` | `{function}` | {cell(hint)} |" for n, (function, name, hint) in enumerate(named, start=1)]
    return "\n".join(["| # | step | function | if it fails, what to do |", "|---|---|---|---|", *rows]) + "\n"


class _Named(Exception):
    pass


def opsctl_install_steps() -> list[tuple[str, str, str]]:
    """(function, step, hint) of each opsctl install step: every step names itself before it looks
    at anything, so a Run that stops at the name runs nothing else."""
    from ops.from_launcher.layout import DEFAULT_PROFILE
    from ops.install.main import INSTALL_STEPS
    from ops.install.options import parse
    from ops.install.run import Run

    class Naming(Run):
        def step(self, name: str, hint: str) -> None:
            raise _Named(name, hint)

    found = []
    for function in INSTALL_STEPS:
        run = Naming(parse([f"--toolkit={REPO}"], environ={}), profile=DEFAULT_PROFILE)
        try:
            function(run)
        except _Named as named:
            found.append((function.__name__, *named.args))
        else:
            raise DocProblem(f"ops.install: {function.__name__} names no step (Run.step)")
    return found


def pytest_markers() -> str:
    markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    rows = []
    for marker in markers:
        name, _, what = marker.partition(":")
        rows.append(f"| `{name.strip()}` | {what.strip()} |")
    return "\n".join(["| marker | the test needs |", "|---|---|", *rows]) + "\n"


REGIONS: dict[str, Callable[[], str]] = {
    "layout": layout_table,
    "metrics": metrics_table,
    "lint-rules": lint_rules,
    "policy-rules": policy_rules,
    "request-routes": request_routes,
    "request-bounds": request_bounds,
    "serving-bounds": lambda: request_bounds("SERVING_BOUNDS"),
    "server-options": server_options,
    "opsctl-help": opsctl_help,
    "install-help": install_help,
    "install-steps": install_steps,
    "test-markers": pytest_markers,
}


# --- rewriting ------------------------------------------------------------------------------


def render(name: str, text: str, cache: dict[str, str]) -> tuple[str, set[str]]:
    """text with every region re-rendered, and the names of the regions it holds."""
    found: set[str] = set()
    markers = ANY_MARKER.findall(text)

    def replace(match: re.Match) -> str:
        region = match.group("name")
        if region not in REGIONS:
            raise DocProblem(f"{name}: unknown generated region {region!r} (known: {', '.join(REGIONS)})")
        found.add(region)
        if region not in cache:
            cache[region] = REGIONS[region]()
        head = match.group(0).split("\n", 1)[0]
        return f"{head}\n{cache[region]}<!-- END generated: {region} -->"

    result = REGION.sub(replace, text)
    if len(markers) != 2 * len(REGION.findall(text)):
        raise DocProblem(f"{name}: a BEGIN/END generated marker without its partner (each region: "
                         "'<!-- BEGIN generated: NAME (tools/gen_docs.py) -->' ... '<!-- END generated: NAME -->')")
    return result, found


def regenerate(root: Path = REPO) -> dict[str, tuple[str, str]]:
    """{document: (current text, generated text)} for every document; raises DocProblem."""
    cache: dict[str, str] = {}
    out, used = {}, set()
    for doc in DOCS:
        current = (root / doc).read_text()
        generated, found = render(doc, current, cache)
        out[doc] = (current, generated)
        used |= found
    unused = sorted(set(REGIONS) - used)
    if unused:
        raise DocProblem(f"no document holds the generated region(s) {', '.join(unused)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="show drift and exit 1; write nothing")
    args = parser.parse_args(argv)
    try:
        docs = regenerate()
    except DocProblem as exc:
        print(f"gen_docs.py: {exc}", file=sys.stderr)
        return 2
    stale = [doc for doc, (current, generated) in docs.items() if current != generated]
    if args.check:
        for doc in stale:
            current, generated = docs[doc]
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), generated.splitlines(True),
                                                       f"{doc} (as committed)", f"{doc} (from the code)"))
        if stale:
            print(f"gen_docs.py: {', '.join(stale)} differ from the code: run "
                  "`uv run --frozen python tools/gen_docs.py` and commit the result", file=sys.stderr)
            return 1
        return 0
    for doc in stale:
        (REPO / doc).write_text(docs[doc][1])
        print(f"gen_docs.py: rewrote the generated regions of {doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
