"""The runtime manifest's one reader (optillm_proxy_launcher.manifest), as a module and from a shell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from optillm_proxy_launcher import manifest

SCRIPT = Path(manifest.__file__)


def write(runtime: Path, text: str) -> None:
    runtime.mkdir(exist_ok=True)
    manifest.path_of(runtime).write_text(text)


def test_reads_the_fields(tmp_path):
    fields = {"profile": "lean", "optillm_version": "0.3.12", "lock_sha256": "0" * 64, "lock_file": "libexec/lean.txt"}
    write(tmp_path, json.dumps(fields))
    assert manifest.read(manifest.path_of(tmp_path)) == fields


@pytest.mark.parametrize("text, reason, missing", [
    (None, "file not found", True),
    ("{profile: lean", "invalid JSON", False),
    ('["lean"]', "expected a JSON object", False),
])
def test_problems_say_why(tmp_path, text, reason, missing):
    if text is not None:
        write(tmp_path, text)
    with pytest.raises(manifest.ManifestProblem) as problem:
        manifest.read(manifest.path_of(tmp_path))
    assert reason in str(problem.value) and problem.value.missing is missing


def shell(*args: str) -> subprocess.CompletedProcess:
    # -S as well: without site-packages this python, like a runtime's, cannot import the package
    # (a runtime carries it in libexec/, not in site-packages), so the script finds it itself.
    return subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=30)


def test_shell_prints_one_field(tmp_path):
    write(tmp_path, '{"profile": "full", "optillm_version": "0.3.12"}')
    done = shell(str(tmp_path), "profile")
    assert (done.returncode, done.stdout, done.stderr) == (0, "full\n", "")


@pytest.mark.parametrize("args, code, needle", [
    (["{rt}", "lock_file"], 1, "no lock_file"),
    (["{rt}/absent", "profile"], 1, "file not found"),
    (["{rt}", "colour"], 2, "usage: manifest.py RUNTIME_DIR"),
])
def test_shell_failures_are_one_line(tmp_path, args, code, needle):
    write(tmp_path, '{"profile": "full"}')
    done = shell(*[a.replace("{rt}", str(tmp_path)) for a in args])
    assert done.returncode == code and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert needle in line
