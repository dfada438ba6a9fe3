"""A run's state and the one place a dry run is told apart from a real one.

Each step names itself and what an operator should do if it fails (`Run.step`); `Run.apply`
runs an action and records it as a change, or in a dry run records `would: ...` and runs nothing.
A failure stops the run at its step: `StepFailed` (a refusal with its own message and exit code)
or any other exception (the step, the reason and the fix; exit 1).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ops.from_launcher.layout import Layout
from ops.install import options


class StepFailed(Exception):
    """A refusal: str() is the one line after `install.sh: `, `code` the exit code."""

    def __init__(self, message: str, code: int = options.EXIT_STEP_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Run:
    opts: options.Options
    out: object = sys.stdout  # progress lines (stderr with --json)
    step_name: str = "start"
    hint: str = ""
    changes: list[str] = field(default_factory=list)
    restart_reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profile: str = ""
    lock_file: Path | None = None
    lock_shown: str = ""
    lock_sha: str = ""
    runtime_name: str = ""
    kept_runtime: bool = False
    has_systemd: bool = False
    upstream_key_missing: bool = False
    health: str = ""
    service_state: str = ""
    reloaded: bool = False  # the change was applied by `systemctl reload` (a new launcher took over)

    def __post_init__(self) -> None:
        self.layout: Layout = self.opts.layout
        self.repo: Path = self.opts.checkout
        self.root: str = self.opts.root
        self.dry_run: bool = self.opts.dry_run
        # Installing for real: not staged under --root, not a dry run.
        self.real: bool = not self.root and not self.dry_run

    def step(self, name: str, hint: str) -> None:
        self.step_name, self.hint = name, hint

    def report(self, text: str) -> None:
        print(f"==> {self.step_name}: {text}", file=self.out, flush=True)

    def apply(self, todo: str, done: str, action: Callable[[], object]) -> None:
        if self.dry_run:
            self.changes.append(f"would: {todo}")
            self.report(f"would {todo}")
            return
        action()
        if done:
            self.changes.append(done)
            self.report(done)

    def failure(self, exc: BaseException) -> int:
        """The step that failed, why, and what to do; exit 1 (a StepFailed: its line and code)."""
        if isinstance(exc, StepFailed):
            return options.fail(str(exc), exc.code)
        print(f'install.sh: step "{self.step_name}" failed: {reason(exc)}.', file=sys.stderr)
        if self.hint:
            print(f"install.sh: what to do: {self.hint}", file=sys.stderr)
        print("install.sh: nothing half-built is made current; fix the cause and re-run install.sh.", file=sys.stderr)
        return options.EXIT_STEP_FAILED


def reason(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        cmd = exc.cmd if isinstance(exc.cmd, str) else " ".join(str(c) for c in exc.cmd)
        tail = (exc.stderr or "").strip().splitlines()[-1:] if isinstance(exc.stderr, str) else []
        return f"{cmd} exited {exc.returncode}" + (f" ({tail[0]})" if tail else "")
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ") if exc.strerror else str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc.reason})"
    return f"{type(exc).__name__}: {exc}"


def sh(*cmd: str | Path, **kwargs) -> subprocess.CompletedProcess:
    """A command of a step: its output goes where progress goes; a non-zero exit fails the step."""
    return subprocess.run([str(c) for c in cmd], check=True, **kwargs)
