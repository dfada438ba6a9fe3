"""What another optillm release changes for this toolkit: its patch points, and what a client can ask of it.

    uv run python tools/audit_optillm.py 0.4.0                  # fetch that release's wheel, audit it
    uv run python tools/audit_optillm.py 0.3.12 --from SITE     # an unpacked wheel, a runtime or its site-packages
    uv run python tools/audit_optillm.py 0.4.0 --from DIR --baseline SITE   # offline, both sides given
    uv run python tools/audit_optillm.py 0.3.12 --from RUNTIME --table      # print a FINGERPRINTS entry

Prints, as Markdown on stdout:
  - each patch point of optillm_proxy_launcher/patches.py: unchanged, changed (which dependency,
    with a short unified diff of the function against the pinned release's) or gone, compared
    with patches.FINGERPRINTS for the pinned version (layout.env OPTILLM_VERSION) by the
    launcher's own compare();
  - compared with the pinned release: the in-band knobs the chat route reads (request body fields,
    message tags, the model-name syntax of parse_combined_approach/parse_conversation), every
    Flask route and its methods, every core approach (known_approaches) and plugin SLUG added or
    removed: what the request policy (policy.py) would have to learn before a pin moves.
The wheel is fetched with pip (`pip download --no-deps --only-binary=:all:`, from the index pip
is configured with) into a temporary directory, and its sha256 is printed. The pinned release's
source (for the diffs and the knob comparison) is fetched the same way unless --baseline gives it.
openai and werkzeug are not in optillm's wheel: their dependencies are checked only in a runtime.

Exit codes: 0 every patch point unchanged, 1 at least one changed or gone, 2 bad input (a
version that is not one, a path without optillm, a fetch that failed), with one line on stderr.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "launcher"))

from optillm_proxy_launcher import internals, patches  # noqa: E402

EXIT_MATCH, EXIT_DIFFERS, EXIT_BAD_INPUT = 0, 1, 2
VERSION = re.compile(r"\d+(\.\d+)*([a-z]+\d*)?(\.post\d+)?(\.dev\d+)?")
DIFF_LINES = 40
# Names a body field is read from: the parsed body in server.py's chat route, and the per-request
# config it becomes (every key not handled explicitly), which approaches and plugins read.
BODY_NAMES = {"server.py": {"data", "request_config", "mcts_config"}}
CONFIG_NAMES = {"request_config"}
MODEL_SYNTAX_FUNCTIONS = ("parse_combined_approach", "parse_conversation")


class BadInput(Exception):
    """str() is the one line printed before exit 2."""


# --- getting a tree ------------------------------------------------------------------------------

@dataclass
class Source:
    tree: Path  # the directory holding optillm/
    version: str
    origin: str  # what was read, for the report


def find_tree(path: Path) -> Path:
    """The directory holding optillm/: PATH itself, a runtime's site-packages, or a wheel to unpack."""
    if (path / "optillm" / "server.py").is_file():
        return path
    for candidate in sorted(path.glob("lib/python3*/site-packages")) + [path / "site-packages"]:
        if (candidate / "optillm" / "server.py").is_file():
            return candidate
    raise BadInput(f"{path} holds no optillm/server.py: give an unpacked wheel, a runtime or its site-packages")


def local(path: Path, version: str | None) -> Source:
    if not path.exists():
        raise BadInput(f"{path} does not exist: give an unpacked optillm wheel, a runtime or its site-packages")
    tree = find_tree(path)
    found = internals.dist_version(tree, "optillm")
    if found is None:
        raise BadInput(f"{tree} has no optillm-*.dist-info: cannot tell which optillm it is")
    if version is not None and found != version:
        raise BadInput(f"{tree} holds optillm {found}, not {version}: name the version it holds")
    return Source(tree, found, f"`{path}`")


def pip_command(workdir: Path) -> list[str]:
    """pip as the ordinary client: this interpreter's, else a throwaway venv's (ensurepip, no index)."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    venv = workdir / "pip-venv"
    python = shutil.which("python3") or sys.executable
    proc = subprocess.run([python, "-m", "venv", str(venv)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BadInput(f"no pip to fetch the wheel with ({_last(proc.stderr)}): install python3-venv or pip")
    return [str(venv / "bin" / "python"), "-m", "pip"]


def _last(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def fetch(version: str, workdir: Path) -> Source:
    """optillm==VERSION's wheel from the configured index, unpacked; origin names it and its sha256."""
    download = workdir / f"download-{version}"
    proc = subprocess.run([*pip_command(workdir), "download", "--no-deps", "--only-binary=:all:",
                           "--disable-pip-version-check", "--no-input", "--quiet", "-d", str(download),
                           f"optillm=={version}"], capture_output=True, text=True, timeout=600)
    wheels = sorted(download.glob("optillm-*.whl")) if download.is_dir() else []
    if proc.returncode != 0 or len(wheels) != 1:
        raise BadInput(f"could not fetch the optillm {version} wheel: {_last(proc.stderr)}")
    wheel = wheels[0]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    tree = workdir / f"unpacked-{version}"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tree)
    found = internals.dist_version(tree, "optillm")
    if found != version:
        raise BadInput(f"the fetched wheel {wheel.name} is optillm {found}, not {version}")
    return Source(tree, version, f"`{wheel.name}` (sha256 `{digest}`)")


# --- what a tree says ----------------------------------------------------------------------------

@dataclass
class Facts:
    body_fields: dict[str, set[str]] = field(default_factory=dict)  # field -> where read
    tags: dict[str, set[str]] = field(default_factory=dict)  # <tag> -> where written
    model_syntax: dict[str, set[str]] = field(default_factory=dict)  # constant -> function
    routes: dict[str, str] = field(default_factory=dict)  # "METHODS path" -> view function
    approaches: list[str] = field(default_factory=list)
    plugins: dict[str, str] = field(default_factory=dict)  # SLUG -> module


def _functions(module: ast.Module):
    """(qualified name, node) of every function, nested ones included."""
    def walk(node, scope):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = ".".join([*scope, child.name])
                if not isinstance(child, ast.ClassDef):
                    yield name, child
                yield from walk(child, [*scope, child.name])
    yield from walk(module, [])


def _string(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def read_facts(tree: Path) -> Facts:
    facts = Facts()
    package = tree / "optillm"
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        try:
            source = path.read_text(encoding="utf-8")
            module = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError):
            continue
        names = BODY_NAMES.get(rel, CONFIG_NAMES)
        for function, node in [("<module>", module), *_functions(module)]:
            where = f"{rel}:{function}"
            for sub in ast.walk(node):
                key = None
                if (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "get"
                        and isinstance(sub.func.value, ast.Name) and sub.func.value.id in names and sub.args):
                    key = _string(sub.args[0])
                elif isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name) and sub.value.id in names \
                        and isinstance(sub.ctx, ast.Load):
                    key = _string(sub.slice)
                elif isinstance(sub, ast.Compare) and len(sub.ops) == 1 and isinstance(sub.ops[0], ast.In) \
                        and isinstance(sub.comparators[0], ast.Name) and sub.comparators[0].id in names:
                    key = _string(sub.left)
                if key is not None and function != "<module>":
                    facts.body_fields.setdefault(key, set()).add(where)
                text = _string(sub)
                if text is not None and function != "<module>":
                    for tag in re.findall(r"</?(optillm[\w-]*)>", text):
                        facts.tags.setdefault(f"<{tag}>", set()).add(where)
                    if rel == "server.py" and function in MODEL_SYNTAX_FUNCTIONS and text.strip() == text \
                            and len(text) <= 12 and "<" not in text:
                        facts.model_syntax.setdefault(repr(text), set()).add(function)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for decorator in node.decorator_list:
                    route = _route(decorator)
                    if route:
                        facts.routes[route] = f"{rel}:{function}"
        if rel == "server.py":
            for stmt in module.body:
                if isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == "known_approaches" for t in stmt.targets):
                    try:
                        facts.approaches = [str(a) for a in ast.literal_eval(stmt.value)]
                    except ValueError:
                        facts.approaches = ["<not a literal list>"]
    facts.plugins = {slug: module for module, slug in internals.plugin_slugs(tree).items()}
    return facts


def _route(decorator) -> str | None:
    """'POST /v1/chat/completions' for @app.route(path, methods=[...]) or @app.post(path)."""
    if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute) and decorator.args):
        return None
    path = _string(decorator.args[0])
    verb = decorator.func.attr
    if path is None or verb not in {"route", "get", "post", "put", "delete", "patch"}:
        return None
    if verb != "route":
        return f"{verb.upper()} {path}"
    methods = ["GET"]
    for keyword in decorator.keywords:
        if keyword.arg == "methods" and isinstance(keyword.value, (ast.List, ast.Tuple)):
            methods = [m for m in (_string(e) for e in keyword.value.elts) if m]
    return f"{','.join(sorted(methods))} {path}"


# --- the report ----------------------------------------------------------------------------------

def function_text(tree: Path, name: str) -> str | None:
    source = internals.server_source(tree)
    if source is None:
        return None
    try:
        return internals.top_level(source).get(name)
    except SyntaxError:
        return None


def short_diff(old: str, new: str, name: str, old_label: str, new_label: str) -> list[str]:
    if [line.rstrip() for line in old.splitlines()] == [line.rstrip() for line in new.splitlines()]:
        return ["whitespace only (trailing spaces on blank or code lines): the fingerprint differs, the code does not"]
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"{old_label} {name}",
                                      f"{new_label} {name}", n=1, lineterm=""))
    # Trailing-whitespace noise kept out: compare stripped lines, show the real changes.
    stripped = list(difflib.unified_diff([line.rstrip() for line in old.splitlines()],
                                         [line.rstrip() for line in new.splitlines()],
                                         f"{old_label} {name}", f"{new_label} {name}", n=1, lineterm=""))
    lines = stripped if len(stripped) < len(lines) else lines
    if len(lines) > DIFF_LINES:
        lines = lines[:DIFF_LINES] + [f"... ({len(lines) - DIFF_LINES} more diff lines)"]
    return ["```diff", *lines, "```"]


def point_section(source: Source, baseline: Source | None, pinned: str) -> tuple[list[str], bool]:
    verdicts = patches.compare(source.tree, pinned, strict=False)
    out = ["## Patch points", "",
           f"Each point of `launcher/optillm_proxy_launcher/patches.py` against its {pinned} fingerprints "
           "(patches.FINGERPRINTS, compared by the launcher's own `compare()`).", "",
           "| point | verdict | dependencies that differ | not in this source |", "|---|---|---|---|"]
    for v in verdicts:
        out.append(f"| `{v.point}` | {v.status} | {', '.join(f'`{d}`' for d in v.differing) or '-'} "
                   f"| {', '.join(f'`{d}`' for d in v.unchecked) or '-'} |")
    differing = list(dict.fromkeys(d for v in verdicts for d in v.differing))
    if differing:
        out += ["", "### What differs", ""]
        slugs_old = internals.plugin_slugs(baseline.tree) if baseline else None
        for dep in differing:
            kind, _, name = dep.partition(":")
            out.append(f"- `{dep}`")
            if kind == "server.py":
                new = function_text(source.tree, name)
                old = function_text(baseline.tree, name) if baseline else None
                if new is None:
                    out.append("  gone from server.py")
                elif old is None:
                    out.append(f"  (no {pinned} source to diff against: give --baseline)")
                else:
                    out += ["", *("  " + line for line in short_diff(old, new, name, pinned, source.version)), ""]
            elif kind == "plugins" and slugs_old is not None:
                new_slugs = internals.plugin_slugs(source.tree)
                for module in sorted(set(new_slugs) | set(slugs_old)):
                    if new_slugs.get(module) != slugs_old.get(module):
                        was, now = slugs_old.get(module), new_slugs.get(module)
                        change = (f"added, SLUG {now!r}" if was is None else f"gone (was SLUG {was!r})" if now is None
                                  else f"SLUG {was!r} -> {now!r}")
                        out.append(f"  - `plugins/{module}.py`: {change}")
            else:
                out.append("  (read from the runtime: see the launcher's refusal or `opsctl lint --venv`)")
    unchecked = list(dict.fromkeys(d for v in verdicts for d in v.unchecked))
    if unchecked:
        out += ["", f"Not in this source, checked against a runtime built from the lock: "
                    f"{', '.join(f'`{d}`' for d in unchecked)} (openai and werkzeug come from the lock, not optillm's wheel)."]
    return out, all(v.status == patches.UNCHANGED for v in verdicts)


def _changes(old: dict | list, new: dict | list) -> tuple[list[str], list[str]]:
    return sorted(set(new) - set(old)), sorted(set(old) - set(new))


def _where(places: set[str]) -> str:
    shown = sorted(places)
    return ", ".join(f"`{p}`" for p in shown[:3]) + (f" (+{len(shown) - 3})" if len(shown) > 3 else "")


def knob_section(new: Facts, old: Facts, new_version: str, old_version: str) -> list[str]:
    out = ["## What a client can ask of it", "",
           f"Compared with {old_version}: `+` added in {new_version}, `-` gone from it, `~` in both but read "
           "or written elsewhere, nothing: the same in both.", ""]

    def table(title: str, new_map: dict, old_map: dict, describe) -> None:
        added, removed = _changes(old_map, new_map)
        out.extend([f"### {title}", "", f"{len(new_map)} in {new_version}; {len(added)} added, {len(removed)} removed.", ""])
        for key in sorted(set(new_map) | set(old_map)):
            moved = key in new_map and key in old_map and new_map[key] != old_map[key]
            mark = "+ " if key in added else "- " if key in removed else "~ " if moved else ""
            line = f"- {mark}`{key}`: {describe(new_map.get(key, old_map.get(key)))}"
            out.append(line + (f" (in {old_version}: {describe(old_map[key])})" if moved else ""))
        out.append("")

    table("Request body fields the chat route and the approaches read", new.body_fields, old.body_fields, _where)
    table("Message tags", new.tags, old.tags, _where)
    table(f"Model-name syntax ({', '.join(MODEL_SYNTAX_FUNCTIONS)} constants)", new.model_syntax, old.model_syntax,
          lambda places: ", ".join(sorted(places)))
    table("Flask routes (methods and path, from the decorators)", new.routes, old.routes, lambda where: f"`{where}`")
    table("Core approaches (server.py known_approaches)", dict.fromkeys(new.approaches, "core"),
          dict.fromkeys(old.approaches, "core"), lambda _: "core")
    table("Plugin approaches (the SLUG of each plugins/*.py)", new.plugins, old.plugins,
          lambda module: f"`plugins/{module}.py`")
    return out


def report(source: Source, baseline: Source | None, pinned: str, command: str) -> tuple[str, int]:
    out = [f"# optillm {source.version}: audit against the pinned {pinned}", "",
           f"Generated by `{command}`; do not edit (re-run it).", "",
           f"- audited: optillm {source.version}, {source.origin}",
           f"- compared with: optillm {pinned}, "
           + (baseline.origin if baseline else "its fingerprints only (no source given: no diffs, no knob comparison)"),
           ""]
    points, unchanged = point_section(source, baseline, pinned)
    out += points + [""]
    if baseline is not None:
        out += knob_section(read_facts(source.tree), read_facts(baseline.tree), source.version, pinned)
    verdict = ("every patch point unchanged: exit 0" if unchanged
               else "at least one patch point differs: the launcher refuses this release (exit 78); exit 1")
    out += ["## Verdict", "", verdict, ""]
    return "\n".join(out).rstrip() + "\n", EXIT_MATCH if unchanged else EXIT_DIFFERS


def table_entry(source: Source) -> str:
    found = internals.read(source.tree, patches.dependencies())
    lines = [f'    "{source.version}": {{']
    lines += [f'        "{dep}": "{value}",' for dep, value in sorted(found.items())]
    return "\n".join([*lines, "    },"]) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tools/audit_optillm.py", description=__doc__.splitlines()[0])
    parser.add_argument("version", help="the optillm release to audit, e.g. 0.4.0")
    parser.add_argument("--from", dest="source", type=Path,
                        help="read it from this directory (an unpacked wheel, a runtime or its site-packages) instead of fetching")
    parser.add_argument("--baseline", type=Path,
                        help=f"the pinned optillm ({patches.OPTILLM_VERSION}) from this directory instead of fetching it")
    parser.add_argument("--table", action="store_true", help="print the FINGERPRINTS entry of the source and exit")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    args = parse_args(argv)
    if not VERSION.fullmatch(args.version):
        raise BadInput(f"{args.version!r} is not a release version (like {patches.OPTILLM_VERSION})")
    pinned = patches.OPTILLM_VERSION
    with tempfile.TemporaryDirectory(prefix="audit-optillm-") as tmp:
        workdir = Path(tmp)
        source = local(args.source, args.version) if args.source else fetch(args.version, workdir)
        if args.table:
            sys.stdout.write(table_entry(source))
            return EXIT_MATCH
        if args.baseline:
            baseline = local(args.baseline, pinned)
        elif source.version == pinned:
            baseline = source
        elif args.source:
            raise BadInput(f"no optillm {pinned} source to compare with offline: give --baseline PATH")
        else:
            baseline = fetch(pinned, workdir)
        shown = ["uv run python tools/audit_optillm.py", args.version]
        if args.source:
            shown += ["--from", str(args.source)]
        if args.baseline:
            shown += ["--baseline", str(args.baseline)]
        text, code = report(source, baseline, pinned, " ".join(shown))
    sys.stdout.write(text)
    return code


def main() -> None:
    try:
        code = run(sys.argv[1:])
    except BadInput as exc:
        print(f"audit_optillm: {exc}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    except subprocess.TimeoutExpired as exc:
        print(f"audit_optillm: {exc.cmd[0]} timed out: check the package index access", file=sys.stderr)
        code = EXIT_BAD_INPUT
    raise SystemExit(code)


if __name__ == "__main__":
    main()
