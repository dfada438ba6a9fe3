"""install.sh, staged with --root: the documented layout and modes, idempotency, --dry-run,
operator files kept byte for byte, the generated key, uninstall, shellcheck, and the staged FULL
runtime really serving (real optillm 0.3.12 through the staged launcher, all 16 plugins).

One full staging per session (uv hardlinks the 8 GB venv from its cache; bytecode is compiled
for real), reused by every test; tests that change it work on a copy (runtimes hardlinked).
install.sh runs from a snapshot of the checkout taken on first use, so edits made to the
working tree while the tests run cannot show up as "changes" between two runs.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ops.from_launcher.layout import OPTILLM_VERSION, UPSTREAM_URL, Layout
from tests.fixtures.runtime import launcher_credentials, python_version
from tests.prerequisites import require_root, require_tool

CHECKOUT = Path(__file__).resolve().parents[1]
SNAPSHOT_PARTS = ("install.sh", "uninstall.sh.in", "locks", "launcher", "systemd", "etc", "ops")


@functools.cache
def _snapshot_checkout() -> Path:
    """Taken once, on first use; removed at exit."""
    import atexit
    import tempfile

    dest = Path(tempfile.mkdtemp(prefix="install-checkout-"))
    atexit.register(shutil.rmtree, dest, True)
    for part in SNAPSHOT_PARTS:
        src = CHECKOUT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / part)
    return dest


class _InSnapshot(os.PathLike):
    """A path in the snapshot that takes it only when used: importing (collecting) this module
    copies nothing, so `pytest -m fast` and a run of another file pay nothing for it."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __fspath__(self) -> str:
        return str(_snapshot_checkout().joinpath(*self.parts))

    __str__ = __fspath__

    def __truediv__(self, other) -> Path:
        return _snapshot_checkout().joinpath(*self.parts) / other


REPO = _InSnapshot()
INSTALL_SH = _InSnapshot("install.sh")
PROFILE = "full"
KEY_PATTERN = re.compile(r"^opx-[A-Za-z0-9_-]{43}$")
NO_CHANGE_LINE = "changed:   nothing (no change; nothing restarted)"


@dataclass
class Run:
    returncode: int
    output: str


def run_install(*args: str, env_extra: dict | None = None) -> Run:
    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.run([str(INSTALL_SH), *args], cwd="/", env=env, capture_output=True, text=True)
    return Run(proc.returncode, proc.stdout + proc.stderr)


def stage(root: Path, *extra: str) -> Run:
    return run_install("--root", str(root), "--profile", PROFILE, *extra)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, mode, size, mtime and link target."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            result[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, link)
    return result


def lock_path(profile: str) -> Path:
    """The lock install.sh picks on this host (its python3's locks/py<X.Y>/), in the snapshot."""
    return REPO / "locks" / f"py{python_version()}" / f"{profile}.txt"


def lock_sha() -> str:
    return hashlib.sha256(lock_path(PROFILE).read_bytes()).hexdigest()


def runtime_name() -> str:
    return f"{OPTILLM_VERSION}-{PROFILE}-{lock_sha()[:12]}"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@dataclass
class Staged:
    root: Path
    layout: Layout
    first: Run
    second: Run
    snapshot_after_first: dict
    snapshot_after_second: dict


@pytest.fixture(scope="session")
def staged(tmp_path_factory) -> Staged:
    if not shutil.which("uv"):
        pytest.fail("uv 0.13.9 is not on PATH: run the README's test command (scripts/test.sh)")
    root = tmp_path_factory.mktemp("install-root")
    try:
        first = stage(root)
        if first.returncode != 0:
            pytest.fail(f"install.sh --root {root} --profile {PROFILE} failed ({first.returncode}):\n{first.output}")
        after_first = snapshot(root)
        second = stage(root)
        after_second = snapshot(root)
        yield Staged(root, Layout(root), first, second, after_first, after_second)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def staged_copy(staged, tmp_path) -> Layout:
    """A hardlinked copy of the staged root, for tests that change or remove things."""
    copy = tmp_path / "root"
    copy.mkdir()
    for top in staged.root.iterdir():
        if top.name != "opt":
            subprocess.run(["cp", "-a", str(top), str(copy)], check=True)
    prefix = Layout(copy).prefix
    prefix.mkdir(parents=True)
    for entry in staged.layout.prefix.iterdir():
        # Runtimes and tools are never written by these tests: hardlinks keep the copy cheap.
        flags = "-al" if entry.name in ("runtimes", "tools") else "-a"
        subprocess.run(["cp", flags, str(entry), str(prefix)], check=True)
    yield Layout(copy)
    shutil.rmtree(copy, ignore_errors=True)


# --- layout ------------------------------------------------------------------------------------


def test_staged_layout_has_documented_paths_and_modes(staged):
    lay = staged.layout
    runtime = lay.runtimes / runtime_name()
    expected = {
        lay.prefix: 0o755,
        lay.runtimes: 0o755,
        runtime: 0o755,
        lay.tools: 0o755,
        lay.tools / "opsctl": 0o755,
        lay.tools / "opsctl" / "bin" / "opsctl": 0o755,
        lay.install_state: 0o600,
        lay.uninstall_script: 0o755,
        lay.launcher(runtime): 0o644,
        lay.runtime_manifest(runtime): 0o644,
        runtime / "libexec" / "plugins.json": 0o644,
        runtime / "libexec" / f"{PROFILE}.txt": 0o644,
        lay.conf_dir: 0o755,
        lay.env_file: 0o600,
        lay.key_file: 0o600,
        lay.state_dir: 0o700,
        lay.provider_file.parent: 0o755,
        lay.provider_file.parent / "logs": 0o755,
        lay.provider_file: 0o644,
        lay.unit_file: 0o644,
        lay.sysusers_file: 0o644,
        lay.tmpfiles_file: 0o644,
    }
    wrong = {str(p.relative_to(staged.root)): (oct(mode(p)) if p.exists() else "missing", oct(m))
             for p, m in expected.items() if not p.exists() or mode(p) != m}
    assert wrong == {}, "path: (actual, expected)"

    assert os.readlink(lay.current) == f"runtimes/{runtime_name()}"
    assert lay.current.resolve() == runtime
    assert not lay.previous.exists() and not lay.previous.is_symlink()
    assert (lay.current / "bin" / "python").exists()
    assert os.readlink(lay.opsctl_link) == "../../../opt/optillm-proxy/tools/opsctl/bin/opsctl"
    assert lay.opsctl_link.resolve() == (lay.tools / "opsctl" / "bin" / "opsctl")
    assert not lay.dropin_dir.exists()


def test_staged_files_come_from_the_repo(staged):
    lay = staged.layout
    runtime = lay.current.resolve()
    shipped = [p for p in (REPO / "launcher").rglob("*") if p.suffix in (".py", ".json", ".env") and "__pycache__" not in p.parts]
    assert REPO / "launcher" / "optillm_proxy_launcher" / "layout.env" in shipped, "the launcher reads its layout.env"
    assert any(p.parent.name == "optillm_proxy_launcher" for p in shipped), "the launcher package is shipped"
    for src in shipped:
        rel = src.relative_to(REPO / "launcher")
        assert (runtime / "libexec" / rel).read_bytes() == src.read_bytes(), rel
    # Compiled at install: the service cannot write the root-owned runtime.
    assert list((runtime / "libexec" / "optillm_proxy_launcher" / "__pycache__").glob("main.*.pyc"))
    assert (runtime / "libexec" / f"{PROFILE}.txt").read_bytes() == lock_path(PROFILE).read_bytes()
    assert json.loads(lay.runtime_manifest().read_text()) == {
        "profile": PROFILE, "optillm_version": OPTILLM_VERSION, "lock_sha256": lock_sha(),
        "lock_file": f"libexec/{PROFILE}.txt", "lock_source": str(lock_path(PROFILE).relative_to(REPO)),
        "python": python_version()}
    # The unit's paths go through this link, whatever the host's Python (spl's BindPaths=).
    assert (lay.site_packages(runtime) / "optillm" / "plugins" / "spl").is_dir()
    assert not os.readlink(lay.site_packages(runtime)).startswith("/"), "relative: the runtime stays relocatable"
    assert lay.env_file.read_bytes() == (REPO / "etc" / "optillm-proxy" / "env.example").read_bytes()
    assert lay.unit_file.read_bytes() == (REPO / "systemd" / "optillm-proxy.service").read_bytes()
    providers = yaml.safe_load(lay.provider_file.read_text())["providers"]
    assert [p["base_url"] for p in providers] == [UPSTREAM_URL]
    assert providers[0]["api_key"] == "${OPENAI_API_KEY}"


def test_staged_runtime_and_tools_are_not_group_or_world_writable(staged):
    writable = []
    for top in (staged.layout.runtimes, staged.layout.tools):
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if not path.is_symlink() and mode(path) & 0o022:
                    writable.append(str(path))
    assert writable == []
    leftovers = [p.name for p in [*staged.layout.runtimes.iterdir(), *staged.layout.tools.iterdir()]
                 if "partial" in p.name or "install-tmp" in p.name]
    assert leftovers == []


def test_staged_opsctl_runs_from_its_link(staged):
    proc = subprocess.run([str(staged.layout.opsctl_link), "--help"], capture_output=True, text=True, env={})
    assert proc.returncode == 0, proc.stderr
    assert "Usage: opsctl" in proc.stdout


def test_first_run_reports_every_step_and_the_summary(staged):
    out = staged.first.output
    for step in ("check system", "debian packages", "check python", "service user", "directories", "uv", "runtime",
                 "launcher", "current runtime", "opsctl", "provider file", "env file", "key file",
                 "unit", "uninstall script", "change detection", "service"):
        assert f"==> {step}: " in out, step
    assert f"built runtime {runtime_name()}" in out
    assert "service user: skipped under --root" in out
    assert f"profile:   {PROFILE} (runtime {runtime_name()}" in out
    assert "env file:  /etc/optillm-proxy/env" in out and "key file:  /etc/optillm-proxy/api-key" in out
    assert NO_CHANGE_LINE not in out
    assert staged.layout.key_file.read_text().strip() not in out


# --- idempotency -------------------------------------------------------------------------------


def test_second_run_reports_no_change_and_touches_nothing(staged):
    assert staged.second.returncode == 0, staged.second.output
    summary = staged.second.output[staged.second.output.index("install summary"):]
    assert NO_CHANGE_LINE in summary, summary
    assert "change detection: nothing the service depends on changed" in staged.second.output
    assert staged.snapshot_after_second == staged.snapshot_after_first


def test_rerun_without_profile_keeps_the_installed_profile(staged_copy):
    """The default profile is lean, but re-running the same bare command on a full host must not
    turn into a profile switch: the recorded profile wins when --profile is not given."""
    assert PROFILE != "lean", "this test needs the staged root to hold the non-default profile"
    env = {k: v for k, v in os.environ.items() if k != "OPX_INSTALL_PROFILE"}
    proc = subprocess.run([str(INSTALL_SH), "--root", str(staged_copy.root)], cwd="/", env=env,
                          capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert NO_CHANGE_LINE in output[output.index("install summary"):], output
    assert os.readlink(staged_copy.current).endswith(runtime_name()), output


def test_dry_run_on_an_empty_root_writes_nothing(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    run = run_install("--root", str(root), "--profile", PROFILE, "--dry-run")
    assert run.returncode == 0, run.output
    assert list(root.iterdir()) == []
    assert f"would build {runtime_name()}" in run.output
    assert "would: generate the proxy key into /etc/optillm-proxy/api-key" in run.output


def test_dry_run_on_an_installed_root_changes_nothing(staged):
    run = stage(staged.root, "--dry-run")
    assert run.returncode == 0, run.output
    assert NO_CHANGE_LINE in run.output
    assert "dry run: nothing changed, no restart would follow" in run.output
    assert snapshot(staged.root) == staged.snapshot_after_first


def test_dry_run_predicts_the_restart_an_edited_env_file_causes(staged_copy):
    lay = staged_copy
    lay.env_file.write_text(lay.env_file.read_text() + "UPSTREAM_RETRIES=2\n")
    before = snapshot(lay.root)
    run = stage(lay.root, "--dry-run")
    assert run.returncode == 0, run.output
    assert "dry run: a restart would follow (changed: env-file)" in run.output
    assert snapshot(lay.root) == before
    real = stage(lay.root)
    assert "changed since the last install: env-file" in real.output, real.output


JSON_KEYS = {"changed", "restart_reasons", "notes", "next", "profile", "runtime", "optillm_version", "lock",
             "lock_sha256", "health", "service", "dry_run", "root", "exit_code", "restarted", "reloaded"}


def run_json(*args: str) -> tuple[dict, str]:
    """install.sh --json: the object on stdout (nothing else there), and the progress on stderr."""
    proc = subprocess.run([str(INSTALL_SH), *args, "--json"], cwd="/", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout), proc.stderr


def test_json_dry_run_on_an_empty_root_is_one_object_naming_every_write(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    out, progress = run_json("--root", str(root), "--profile", PROFILE, "--dry-run")
    assert set(out) == JSON_KEYS
    assert (out["dry_run"], out["restarted"], out["reloaded"], out["health"], out["exit_code"]) == (True, False, False, "staged", 0)
    assert (out["profile"], out["runtime"], out["optillm_version"], out["lock"], out["lock_sha256"]) == \
        (PROFILE, runtime_name(), OPTILLM_VERSION, f"locks/py{python_version()}/{PROFILE}.txt", lock_sha())
    assert f"would: build {runtime_name()} from {out['lock']}" in out["changed"]
    assert "would: generate the proxy key into /etc/optillm-proxy/api-key" in out["changed"]
    assert out["restart_reasons"] == ["first-install", "files this run would write"]
    assert out["root"] == str(root) and out["next"][0] == "sudo opsctl health"
    assert "==> check system: " in progress and "install summary" not in progress
    assert list(root.iterdir()) == []


def test_json_rerun_says_nothing_changed_then_names_an_edited_file(staged_copy):
    lay = staged_copy
    out, _ = run_json("--root", str(lay.root), "--profile", PROFILE)
    assert (out["changed"], out["restart_reasons"], out["restarted"], out["dry_run"]) == ([], [], False, False)
    lay.env_file.write_text(lay.env_file.read_text() + "UPSTREAM_RETRIES=2\n")
    out, _ = run_json("--root", str(lay.root), "--profile", PROFILE, "--dry-run")
    assert out["restart_reasons"] == ["env-file"] and out["changed"] != []
    out, _ = run_json("--root", str(lay.root), "--profile", PROFILE)
    assert out["changed"] == ["nothing written by install.sh (changed since the last run: env-file)"]
    assert out["restart_reasons"] == ["env-file"]
    out, _ = run_json("--root", str(lay.root), "--profile", PROFILE)
    assert out["changed"] == [] and out["restart_reasons"] == []


def test_dry_run_uninstall_removes_nothing(staged):
    run = run_install("--uninstall", "--purge", "--dry-run", "--root", str(staged.root))
    assert run.returncode == 0, run.output
    assert "would remove /opt/optillm-proxy" in run.output
    assert snapshot(staged.root) == staged.snapshot_after_first


# --- operator files ----------------------------------------------------------------------------


def test_upstream_key_in_an_old_env_file_moves_into_its_credential_file(staged_copy):
    """An env file from before the upstream key was a credential: the value moves into the
    root-only key file, its line becomes a comment, nothing else in the file changes, and the
    value appears in no output. A second run changes nothing."""
    lay = staged_copy
    secret = "litellm-virtual-key-of-the-operator-0123"
    lay.upstream_key_file.unlink(missing_ok=True)
    lay.env_file.write_text(f"# the operator's own\nOPENAI_API_KEY={secret}\nPROXY_PLUGINS=majority_voting\n")
    run = stage(lay.root)
    assert run.returncode == 0, run.output
    assert secret not in run.output
    assert "moved OPENAI_API_KEY from /etc/optillm-proxy/env into /etc/optillm-proxy/upstream-key" in run.output
    assert lay.upstream_key_file.read_text() == secret + "\n" and mode(lay.upstream_key_file) == 0o600
    lines = lay.env_file.read_text().splitlines()
    assert lines[0] == "# the operator's own" and lines[2] == "PROXY_PLUGINS=majority_voting"
    assert lines[1].startswith("# OPENAI_API_KEY: moved to /etc/optillm-proxy/upstream-key")
    assert secret not in lay.env_file.read_text() and mode(lay.env_file) == 0o600
    again = stage(lay.root)
    assert again.returncode == 0 and "moved OPENAI_API_KEY" not in again.output, again.output


def test_the_same_key_in_both_places_leaves_only_the_key_file(staged_copy):
    lay = staged_copy
    lay.upstream_key_file.write_text("the-litellm-key\n")
    lay.env_file.write_text("OPENAI_API_KEY=the-litellm-key\n")
    run = stage(lay.root)
    assert run.returncode == 0, run.output
    assert lay.upstream_key_file.read_text() == "the-litellm-key\n"
    assert "the-litellm-key" not in lay.env_file.read_text()
    assert "removed the OPENAI_API_KEY lines" in run.output


def test_an_empty_key_file_is_filled_from_the_env_file(staged_copy):
    """A fresh install made the file empty; the operator then wrote the key where it used to go."""
    lay = staged_copy
    lay.upstream_key_file.write_text("")
    lay.env_file.write_text("OPENAI_API_KEY=the-litellm-key\n")
    run = stage(lay.root)
    assert run.returncode == 0, run.output
    assert lay.upstream_key_file.read_text() == "the-litellm-key\n" and mode(lay.upstream_key_file) == 0o600
    assert "the-litellm-key" not in lay.env_file.read_text()


def test_two_different_keys_are_both_kept_and_the_operator_told(staged_copy):
    lay = staged_copy
    lay.upstream_key_file.write_text("key-in-the-file\n")
    lay.env_file.write_text("OPENAI_API_KEY=another-key\n")
    run = stage(lay.root)
    assert run.returncode == 0, run.output
    assert lay.upstream_key_file.read_text() == "key-in-the-file\n"
    assert lay.env_file.read_text() == "OPENAI_API_KEY=another-key\n"
    assert "has an OPENAI_API_KEY different from /etc/optillm-proxy/upstream-key" in run.output
    assert "another-key" not in run.output and "key-in-the-file" not in run.output


def test_without_an_upstream_key_the_summary_says_where_to_write_it(staged_copy):
    lay = staged_copy
    lay.upstream_key_file.unlink(missing_ok=True)
    lay.env_file.write_text("PROXY_PLUGINS=none\n")
    run = stage(lay.root)
    assert run.returncode == 0, run.output  # staged: nothing is started anyway
    assert ("no LiteLLM key: write it into /etc/optillm-proxy/upstream-key (sudoedit /etc/optillm-proxy/upstream-key; "
            "one line: a LiteLLM virtual key limited to jerry-xl), then re-run install.sh") in run.output
    # Created empty and private, so the operator's editor fills a file nobody else can read.
    assert lay.upstream_key_file.read_text() == "" and mode(lay.upstream_key_file) == 0o600
    # What to do next is what can work with no service running: write the key, run again.
    next_line = next(line for line in run.output.splitlines() if line.startswith("  next:"))
    assert next_line == ("  next:      sudoedit /etc/optillm-proxy/upstream-key (one line); sudo ./install.sh "
                         "(starts it); sudo opsctl lint"), next_line


def test_existing_env_and_key_survive_a_rerun_byte_for_byte(staged_copy):
    lay = staged_copy
    env = b"# the operator's own\nPROXY_PLUGINS=majority_voting\nUPSTREAM_RETRIES=0\n"
    key = b"operator-chosen-proxy-key-0123456789abcdef0123\n"
    lay.env_file.write_bytes(env)
    lay.key_file.write_bytes(key)
    lay.key_file.chmod(0o644)  # a loose mode is tightened; the content is never touched
    run = stage(lay.root)
    assert run.returncode == 0, run.output
    assert lay.env_file.read_bytes() == env
    assert lay.key_file.read_bytes() == key
    assert mode(lay.key_file) == 0o600 and mode(lay.env_file) == 0o600
    assert "changed since the last install: env-file key-file" in run.output
    assert "mode of /etc/optillm-proxy/api-key set to 0600" in run.output
    again = stage(lay.root)
    assert NO_CHANGE_LINE in again.output
    assert lay.env_file.read_bytes() == env and lay.key_file.read_bytes() == key


def test_provider_file_is_rewritten_when_missing_and_an_edit_is_kept_and_restarts(staged_copy):
    lay = staged_copy
    written = lay.provider_file.read_bytes()
    lay.provider_file.unlink()
    run = stage(lay.root)
    assert run.returncode == 0, run.output
    assert lay.provider_file.read_bytes() == written
    # Same bytes as the service last ran with: nothing to restart for.
    assert "change detection: nothing the service depends on changed" in run.output
    edited = written.replace(b"enabled: false", b"enabled: true")
    lay.provider_file.write_bytes(edited)
    run = stage(lay.root)
    assert lay.provider_file.read_bytes() == edited
    assert "changed since the last install: provider-file" in run.output, run.output


# --- the generated key -------------------------------------------------------------------------


def assert_good_key(text: str) -> None:
    key = text.rstrip("\n")
    assert text.endswith("\n") and "\n" not in key
    assert KEY_PATTERN.match(key), key[:4]
    assert not key.startswith("sk-")
    assert len(base64.urlsafe_b64decode(key[4:] + "=")) == 32


def test_staged_key_is_well_formed(staged):
    assert_good_key(staged.layout.key_file.read_text())


def keys_tool(*args: str) -> subprocess.CompletedProcess:
    """The by-hand entry (`python -I -m ops.runtime.keys`), from the dev venv."""
    return subprocess.run([sys.executable, "-I", "-m", "ops.runtime.keys", *args], capture_output=True, text=True, timeout=60)


def test_generated_keys_are_random_0600_and_never_in_any_output(tmp_path):
    runs = [keys_tool("generate", str(tmp_path / f"key-{i}")) for i in range(20)]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr
    keys = []
    for path in sorted(tmp_path.glob("key-*")):
        assert mode(path) == 0o600
        assert_good_key(path.read_text())
        keys.append(path.read_text().strip())
    assert len(keys) == 20 and len(set(keys)) == 20
    assert not any(k in run.stdout + run.stderr for k in keys for run in runs)


def test_an_existing_key_file_is_never_regenerated(tmp_path):
    path = tmp_path / "key"
    path.write_text("keep-me\n")
    proc = keys_tool("generate", str(path))
    assert proc.returncode == 1 and proc.stderr.strip() == f"ops.runtime.keys: {path}: File exists", proc.stderr
    assert path.read_text() == "keep-me\n"


def test_an_env_file_that_is_not_text_is_one_line_and_exit_1(tmp_path):
    env = tmp_path / "env"
    env.write_bytes(b"OPENAI_API_KEY=\xff\xfe\n")
    proc = keys_tool("migrate", str(env), str(tmp_path / "upstream-key"), "/etc/optillm-proxy/upstream-key")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "not UTF-8 text" in proc.stderr, proc.stderr
    assert env.read_bytes() == b"OPENAI_API_KEY=\xff\xfe\n"


def test_keys_tool_usage_is_one_line_and_exit_2():
    proc = keys_tool("generate")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "usage:" in proc.stderr


# --- uninstall ---------------------------------------------------------------------------------


def test_uninstall_keeps_conf_and_state_and_purge_removes_them(staged_copy):
    lay = staged_copy
    env_before = lay.env_file.read_bytes()
    run = run_install("--uninstall", "--root", str(lay.root))
    assert run.returncode == 0, run.output
    for gone in (lay.prefix, lay.unit_file, lay.opsctl_link):
        assert not gone.exists() and not gone.is_symlink(), gone
    assert lay.env_file.read_bytes() == env_before and lay.key_file.exists() and lay.provider_file.exists()
    run = run_install("--uninstall", "--purge", "--root", str(lay.root))
    assert run.returncode == 0, run.output
    assert not lay.conf_dir.exists() and not lay.state_dir.exists()


def test_generated_uninstall_script_removes_the_install(staged, staged_copy):
    lay = staged_copy
    script = lay.uninstall_script.read_text()
    baked = f"ROOT={staged.root}\n"
    assert baked in script  # generated for the root it was installed under
    # The copy's script still names the original root: point it at the copy before running it.
    copy_script = lay.root / "uninstall-copy.sh"
    copy_script.write_text(script.replace(baked, f"ROOT={lay.root}\n"))
    proc = subprocess.run(["bash", str(copy_script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not lay.prefix.exists() and not lay.unit_file.exists() and not lay.opsctl_link.is_symlink()
    assert lay.key_file.exists() and lay.env_file.exists()
    assert staged.layout.prefix.exists()


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("args, code, message", [
    (["--bogus"], 2, "unknown argument '--bogus' (see ./install.sh --help)"),
    (["--profile", "tiny"], 2, "unknown profile 'tiny': use --profile lean or --profile full"),
    (["--purge"], 2, "--purge only goes with --uninstall"),
    (["--root"], 2, "--root needs a directory"),
    (["--json", "--uninstall"], 2, "--json goes with an install, --upgrade or --rollback run, not with --uninstall"),
])
def test_bad_arguments_exit_2_with_one_line(args, code, message):
    run = run_install(*args)
    assert run.returncode == code
    assert run.output.strip().splitlines() == [f"install.sh: {message}"]


def test_help_documents_flags_and_exit_codes():
    run = run_install("--help")
    assert run.returncode == 0
    for text in ("--profile", "--root", "--dry-run", "--uninstall", "--purge", "--no-start", "--json",
                 "Exit codes:", "  3  installed, but systemd is not PID 1"):
        assert text in run.output


@pytest.mark.real  # install.sh builds opsctl's venv from locks/opsctl.txt before the step fails
def test_a_failing_step_names_itself_and_what_to_do(tmp_path):
    root = tmp_path / "root"
    state_dir = Layout(root).state_dir
    state_dir.parent.mkdir(parents=True)
    state_dir.write_text("a file where the service user's home belongs\n")
    run = run_install("--root", str(root), "--profile", PROFILE)
    assert run.returncode == 1, run.output
    assert 'step "directories" failed' in run.output
    assert "what to do:" in run.output


@pytest.mark.fast
def test_a_step_failing_inside_a_helper_reports_once(tmp_path, capsys):
    """A failure deep in a step (here ops.runtime.keys reading an env file that is not text) is told
    once, by the step, with what to do, and exits 1; the env file is left as it was."""
    from ops.install.options import parse
    from ops.install.run import Run
    from ops.install.steps import write_upstream_key_file

    root = tmp_path / "root"
    env = Layout(root).env_file
    env.parent.mkdir(parents=True)
    env.write_bytes(b"OPENAI_API_KEY=\xff\xfe\n")
    run = Run(parse(["--root", str(root)], environ={}))
    with pytest.raises(UnicodeDecodeError) as raised:
        write_upstream_key_file(run)
    assert run.failure(raised.value) == 1
    err = capsys.readouterr().err
    assert err.count('install.sh: step "upstream key" failed: not UTF-8 text') == 1, err
    assert err.count("what to do:") == 1, err
    assert env.read_bytes() == b"OPENAI_API_KEY=\xff\xfe\n"


def render(template: str, root: str = "") -> str:
    """A repo template as install.sh renders it (ops.install.templates)."""
    from ops.install.templates import render as render_template

    return render_template(CHECKOUT / template, root)


@pytest.mark.parametrize("template", ["uninstall.sh.in", "systemd/sysusers.conf.in", "systemd/tmpfiles.conf.in",
                                      "etc/optillm-proxy/proxy_config.yaml.in"])
def test_templates_render_every_name_from_layout_env(template):
    text = render(template, "/srv/stage")
    assert not re.findall(r"@[A-Z_]+@", text), text
    assert text == render(template, "/srv/stage") and text.endswith("\n") and not text.endswith("\n\n")


def test_shellcheck_is_clean(tmp_path):
    require_tool("shellcheck", "shellcheck")
    uninstall = tmp_path / "uninstall.sh"
    uninstall.write_text(render("uninstall.sh.in", "/srv/stage"))
    scripts = [str(CHECKOUT / "install.sh"), str(uninstall)] + [str(p) for p in (CHECKOUT / "bench").glob("*.sh")]
    proc = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# --- the staged runtime really serves ----------------------------------------------------------


@pytest.mark.real
def test_staged_full_runtime_starts_with_all_plugins_and_no_error(staged, upstream, optillm_factory, tmp_path):
    lay = staged.layout
    launcher = lay.launcher()
    assert launcher.exists(), "install.sh staged no launcher"
    # As the unit runs it: the staged launcher, the key as a credential file, PROXY_PLUGINS=all.
    argv = [str(lay.current / "bin" / "python"), "-I", str(launcher), "--host", "127.0.0.1", "--port", "{port}",
            "--base-url", upstream.base_url, "--model", "jerry-xl"]
    key = lay.key_file.read_text().strip()
    # The staged key file as the api-key credential; a staged install has no LiteLLM key of its own.
    creds = launcher_credentials(tmp_path / "creds", key)
    proc = optillm_factory(lay.current, upstream.base_url, argv=argv,
                           env_extra={"PROXY_PLUGINS": "all", "CREDENTIALS_DIRECTORY": str(creds)})
    log = proc.log_text()
    assert log.count("Loaded package plugin") == 16, log[-3000:]
    assert [line for line in log.splitlines() if "ERROR" in line] == []
    assert key not in Path(f"/proc/{proc.proc.pid}/cmdline").read_bytes().decode(errors="replace")

    body = json.dumps({"model": "moa-jerry-xl", "max_tokens": 20,
                       "messages": [{"role": "user", "content": "What is 6*7?"}]}).encode()
    request = urllib.request.Request(f"{proc.url}/v1/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        assert resp.status == 200
    calls = upstream.calls()
    assert len(calls) == 3 and {c["model"] for c in calls} == {"jerry-xl"}
    assert {c["authorization"] for c in calls} == {"Bearer upstream-key-for-tests"}

    unauthenticated = urllib.request.Request(f"{proc.url}/v1/chat/completions", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unauthenticated, timeout=10)
    assert refused.value.code == 401


# --- profiles ----------------------------------------------------------------------------------


def test_default_profile_is_lean(tmp_path):
    lock = lock_path("lean")
    if not lock.exists():
        pytest.fail(f"{lock.relative_to(REPO)} is missing from the checkout: regenerate with tools/derive_locks.py")
    sha = hashlib.sha256(lock.read_bytes()).hexdigest()
    run = run_install("--root", str(tmp_path), "--dry-run")
    assert run.returncode == 0, run.output
    assert f"==> check python: /usr/bin/python3 is Python {python_version()}: {lock.relative_to(REPO)}, " \
           f"runtime {OPTILLM_VERSION}-lean-{sha[:12]}" in run.output
    assert f"profile:   lean (runtime {OPTILLM_VERSION}-lean-{sha[:12]}" in run.output
    assert list(tmp_path.iterdir()) == []


def checkout_copy(tmp_path: Path) -> Path:
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".*_cache"))
    return checkout


def install_in(checkout: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(checkout / "install.sh"), "--root", str(tmp_path / "root"), "--dry-run", *args],
                          capture_output=True, text=True)


def test_a_missing_lean_lock_names_the_full_profile(tmp_path):
    checkout = checkout_copy(tmp_path)
    lock = checkout / lock_path("lean").relative_to(REPO)
    lock.unlink()
    proc = install_in(checkout, tmp_path)
    assert proc.returncode == 5
    assert proc.stderr.strip().splitlines() == [
        f"install.sh: no lean lock ({lock}) in this checkout: install the stock runtime "
        "with --profile full, or update the checkout"]


def test_a_python_without_locks_is_refused_in_one_line(tmp_path):
    """The host's python3 picks locks/py<X.Y>/; a version with no directory is refused (exit 5)."""
    checkout = checkout_copy(tmp_path)
    host = python_version()
    shutil.rmtree(checkout / "locks" / f"py{host}")
    others = sorted(p.name[2:] for p in (checkout / "locks").glob("py*") if p.is_dir())
    proc = install_in(checkout, tmp_path)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"install.sh: /usr/bin/python3 is Python {host}; locks exist for Python {', '.join(others)} "
        "(locks/py<X.Y>/): use Debian 12 (3.11), Debian 13 (3.13) or another system whose python3 is one of them"]


def test_a_profile_unavailable_on_this_python_says_why(tmp_path):
    """Where tools/derive_locks.py found a profile unbuildable (full on 3.13), install.sh quotes why."""
    reason = (REPO / "locks" / "py3.13" / "full.unavailable").read_text().strip()
    checkout = checkout_copy(tmp_path)
    host_dir = checkout / "locks" / f"py{python_version()}"
    (host_dir / "full.txt").unlink(missing_ok=True)
    shutil.copy(REPO / "locks" / "py3.13" / "full.unavailable", host_dir / "full.unavailable")
    proc = install_in(checkout, tmp_path, "--profile", "full")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"install.sh: no full profile for Python {python_version()}: {reason}"]


# --- a real install where systemd is not PID 1 ---------------------------------------------------


@pytest.mark.box
def test_real_install_without_systemd_installs_everything_and_exits_3(tmp_path):
    """As root in a container whose PID 1 is not systemd (systemd-nspawn without --boot): the user,
    ownership and files are real; the service cannot start, which install.sh says, with exit 3."""
    from tests.box.base import base_rootfs
    from tests.cache import cache_dir
    from tests.box.machine import BOX_UV_CACHE, INSTALL_ENV, host_uv_cache

    require_root("the box tests", "systemd-nspawn")
    require_tool("systemd-nspawn", "systemd-container")
    base, _ = base_rootfs()
    root = cache_dir() / f"nosystemd-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True)
    try:
        def install_in_container() -> Run:
            cmd = ["systemd-nspawn", "-q", "-D", str(root), "--register=no", "--keep-unit",
                   f"--bind-ro={REPO}:/repo", f"--bind={host_uv_cache()}:{BOX_UV_CACHE}",
                   *[f"--setenv={k}={v}" for k, v in INSTALL_ENV.items()],
                   "/bin/bash", "/repo/install.sh"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL)
            return Run(proc.returncode, proc.stdout + proc.stderr)

        first = install_in_container()
        assert first.returncode == 3, first.output
        assert "NOT STARTED: systemd is not PID 1 here" in first.output
        assert "systemctl daemon-reload && systemctl enable --now optillm-proxy" in first.output
        # No service runs here: the summary suggests no health or smoke check.
        assert "  next:      sudo opsctl lint (health and smoke need the service started" in first.output
        assert "sudo opsctl smoke" not in first.output, first.output
        assert "created system user optillm-proxy" in first.output
        lay = Layout(root)
        passwd = [line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()]
        user = next(entry for entry in passwd if entry[0] == "optillm-proxy")
        assert user[5:] == [str(lay.state_dir).replace(str(root), ""), "/usr/sbin/nologin"]
        uid = int(user[2])
        assert uid < 1000  # a system user
        assert lay.state_dir.stat().st_uid == uid and mode(lay.state_dir) == 0o700
        for path in (lay.prefix, lay.current.resolve(), lay.launcher(), lay.env_file, lay.key_file,
                     lay.provider_file, lay.provider_file.parent, lay.unit_file, lay.tools / "uv" / "bin" / "uv"):
            assert path.lstat().st_uid == 0, path
        assert json.loads(lay.runtime_manifest().read_text())["profile"] == "lean"

        second = install_in_container()
        assert second.returncode == 3, second.output
        assert NO_CHANGE_LINE in second.output
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--purge", "--help"]])
def test_generated_uninstall_script_answers_help_and_removes_nothing(staged, staged_copy, args):
    lay = staged_copy
    baked = f"ROOT={staged.root}\n"
    copy_script = lay.root / "uninstall-copy.sh"
    # Pointed at the copy: if --help were ever taken as "go ahead", only the copy would go.
    copy_script.write_text(lay.uninstall_script.read_text().replace(baked, f"ROOT={lay.root}\n"))
    proc = subprocess.run(["bash", str(copy_script), *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    usage = proc.stdout
    assert usage.startswith(f"Usage: {copy_script} [--purge] [--dry-run]"), usage
    for text in ("--purge", "--dry-run", "-h, --help", f"Keeps {Layout(Path('/')).conf_dir} (env file",
                 "removes the system user optillm-proxy", "Exit codes: 0 ", "2 unknown argument", "5 not root"):
        assert text in usage, (text, usage)
    assert lay.prefix.exists() and lay.unit_file.exists() and lay.opsctl_link.is_symlink() and lay.conf_dir.exists()
    bogus = subprocess.run(["bash", str(copy_script), "--bogus"], capture_output=True, text=True)
    assert bogus.returncode == 2 and "unknown argument '--bogus' (flags: --purge --dry-run --help)" in bogus.stderr
