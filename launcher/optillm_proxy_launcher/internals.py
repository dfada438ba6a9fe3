"""What an optillm tree says about the things the patch points rely on, read from its files.

One reader per kind of dependency, each from a directory holding `optillm/` (an installed
site-packages, or an unpacked wheel), never by importing it: the launcher at start, opsctl lint,
the upgrade's validation and tools/audit_optillm.py all read the same way (patches.py holds what
each must be). Stdlib only.

A dependency is written `KIND:NAME`:
  server.py:NAME   a top-level function of optillm/server.py (its source text, decorators
                   excluded) or a top-level assignment to NAME (the whole statement's text)
  plugins:SLUG     the bundled plugin files and the SLUG each defines (optillm/plugins/*.py)
  openai:NAME      the parameter names of openai's chat Completions.create (what
                   main.request_fields() derives the accepted request fields from)
  dist:NAME        the installed version of the distribution NAME
Each reads to a fingerprint string (a sha256, or a version for dist:), None when the thing is
gone from a tree that has its package, or ABSENT when the tree does not hold that package at all
(an unpacked optillm wheel has no openai).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import re
from pathlib import Path

ABSENT = "absent"

# openai-python's chat Completions resource (openai>=1.55: a package; before: a module).
OPENAI_COMPLETIONS = ("openai/resources/chat/completions/completions.py", "openai/resources/chat/completions.py")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def top_level(source: str | ast.Module, text: str | None = None) -> dict[str, str]:
    """Name -> source text of every top-level function and assignment (the last one of a name);
    `source` the module's text, or its parsed tree with `text`."""
    tree, text = (ast.parse(source), source) if isinstance(source, str) else (source, text)
    nodes: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nodes[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            nodes.update((t.id, node) for t in targets if isinstance(t, ast.Name))
    lines = text.splitlines(keepends=True)
    return {name: _segment(lines, node) for name, node in nodes.items()}


def _segment(lines: list[str], node: ast.AST) -> str:
    """ast.get_source_segment's text, from lines split once (it splits the whole source per call)."""
    first, last = node.lineno - 1, node.end_lineno - 1
    if first == last:
        return lines[first].encode()[node.col_offset:node.end_col_offset].decode()
    head = lines[first].encode()[node.col_offset:].decode()
    tail = lines[last].encode()[:node.end_col_offset].decode()
    return "".join([head, *lines[first + 1:last], tail])


def bound_names(source: str | ast.Module) -> set[str]:
    """Every name bound at the top level: functions, classes, assignments, imports."""
    names: set[str] = set()
    for node in (ast.parse(source) if isinstance(source, str) else source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def server_source(tree: Path) -> str | None:
    try:
        return (tree / "optillm" / "server.py").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


# A plugin's `SLUG = "name"` line, as every bundled plugin writes it (another form reads as no
# SLUG, which changes the fingerprint: refused, never passed).
_SLUG = re.compile(r"""^SLUG\s*=\s*(['"])([^'"\n]*)\1\s*(?:#.*)?$""", re.MULTILINE)


def plugin_slugs(tree: Path) -> dict[str, str]:
    """Plugin module (file stem) -> the SLUG it assigns at the top level, for optillm/plugins/*.py."""
    found = {}
    for path in sorted((tree / "optillm" / "plugins").glob("*.py")):
        try:
            match = _SLUG.search(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
        if match:
            found[path.stem] = match.group(2)
    return found


def completions_create_parameters(tree: Path) -> list[str] | None:
    """Parameter names (self excluded) of openai's sync chat Completions.create: the definition
    that is not an @overload (what inspect.signature sees through its decorators), or None."""
    for rel in OPENAI_COMPLETIONS:
        path = tree / rel
        if path.is_file():
            break
    else:
        return None
    module = ast.parse(path.read_text(encoding="utf-8"))
    for cls in module.body:
        if isinstance(cls, ast.ClassDef) and cls.name == "Completions":
            for node in reversed(cls.body):
                if (isinstance(node, ast.FunctionDef) and node.name == "create"
                        and not any(getattr(d, "id", getattr(d, "attr", None)) == "overload" for d in node.decorator_list)):
                    args = node.args
                    every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
                    every += [a for a in (args.vararg, args.kwarg) if a is not None]
                    return [a.arg for a in every if a.arg != "self"]
    return None


def dist_version(tree: Path, name: str) -> str | None:
    """The version of the distribution `name` installed in `tree` (its NAME-VERSION.dist-info)."""
    def canonical(text: str) -> str:
        return re.sub(r"[-_.]+", "-", text).lower()

    for info in tree.glob("*.dist-info"):
        if canonical(info.name[:-len(".dist-info")].rpartition("-")[0]) != canonical(name):
            continue
        version = importlib.metadata.PathDistribution(info).version
        if version:
            return version
    return None


def has_package(tree: Path, package: str) -> bool:
    return (tree / package).is_dir() or any(tree.glob(f"{package}-*.dist-info"))


def read(tree: Path, dependencies) -> dict[str, str | None]:
    """Fingerprint of each dependency in `tree` (see the module docstring)."""
    source = server_source(tree)
    try:
        server = top_level(source) if source is not None else None
    except SyntaxError:
        server = {}
    slugs = None
    found: dict[str, str | None] = {}
    for dep in dependencies:
        kind, _, name = dep.partition(":")
        if kind == "server.py":
            text = None if server is None else server.get(name)
            found[dep] = ABSENT if server is None else (sha256(text) if text is not None else None)
        elif kind == "plugins":
            slugs = plugin_slugs(tree) if slugs is None else slugs
            found[dep] = (ABSENT if server is None
                          else sha256("".join(f"{module}={slug}\n" for module, slug in sorted(slugs.items()))))
        elif kind == "openai":
            params = completions_create_parameters(tree)
            found[dep] = (sha256("".join(f"{p}\n" for p in sorted(params))) if params is not None
                          else ABSENT if not has_package(tree, "openai") else None)
        elif kind == "dist":
            version = dist_version(tree, name)
            found[dep] = version if version is not None else (ABSENT if not has_package(tree, name) else None)
        else:
            raise ValueError(f"unknown dependency kind in {dep!r}")
    return found
