"""Deliberate upgrades and rollback in the booted box, with the real install.sh, systemd and optillm.

The tests run in file order and share the box (session fixture): upgrade to a second valid lock,
refuse a broken one and a runtime of the next optillm release without touching the live
service, roll back by itself when a runtime fails only after the switch, then
`install.sh --rollback`. The module puts the box back the way it
found it. Downtime of an upgrade and of a rollback is measured from the host (the box shares its
network) by polling /health, and reported in the box figures, never asserted.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ops.from_launcher.layout import DEFAULT as L
from ops.from_launcher.layout import OPTILLM_VERSION as L_VERSION
from tests.box.errors import BoxError
from tests.box.install import assert_rerun_changes_nothing
from tests.box.machine import INSTALL_ENV
from tests.box.service import HEALTH_URL, main_pid, show, wait_healthy
from tests.fixtures.box import record

pytestmark = pytest.mark.box

REPO = Path(__file__).resolve().parents[1]
# Where the tests put the locks they upgrade to, inside the box.
LOCK_DIR = "/root/upgrade-locks"
BENCH_VARIANT_COMMENT = "# bench/upgrade_downtime.sh variant\n"


@dataclass
class HealthPoller:
    """Polls /health from the host every 50 ms while an upgrade runs. systemd holds the socket, so
    during a restart a probe waits on it rather than being refused: `refused` counts the probes
    that were, and `outages()` the stretches in which /health did not answer 200 (slow or not)."""

    interval: float = 0.05
    samples: list[tuple[float, bool]] = field(default_factory=list)
    refused: int = 0
    longest_answer: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _ok(self) -> bool:
        start = time.monotonic()
        try:
            with urllib.request.urlopen(HEALTH_URL, timeout=30) as resp:
                ok = resp.status == 200 and json.load(resp).get("status") == "ok"
        except urllib.error.URLError as exc:
            self.refused += isinstance(exc.reason, ConnectionRefusedError)
            return False
        except (OSError, ValueError):
            return False
        self.longest_answer = max(self.longest_answer, time.monotonic() - start)
        return ok

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self._ok()))
            time.sleep(self.interval)

    def __enter__(self) -> "HealthPoller":
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def outages(self) -> list[float]:
        """Length of each stretch during which /health did not answer, seconds."""
        found, down_since = [], None
        for at, ok in self.samples:
            if not ok and down_since is None:
                down_since = at
            elif ok and down_since is not None:
                found.append(at - down_since)
                down_since = None
        if down_since is not None:
            found.append(float("inf"))
        return found


def box_path(box, path: str) -> Path:
    return box.root / path.lstrip("/")


def link_name(box, link: Path) -> str | None:
    path = box_path(box, str(link))
    return Path(path.readlink()).name if path.is_symlink() else None


def manifest(box, runtime_name: str) -> dict:
    return json.loads(box_path(box, f"{L.runtimes}/{runtime_name}/optillm-proxy-runtime.json").read_text())


def put_lock(box, name: str, text: str) -> str:
    path = box_path(box, f"{LOCK_DIR}/{name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return f"{LOCK_DIR}/{name}"


def without_requirement(lock_text: str, package: str) -> str:
    """The lock with one pinned package (its line and its hash continuation lines) taken out."""
    out, skipping = [], False
    for line in lock_text.splitlines(keepends=True):
        if re.match(rf"{re.escape(package)}==", line):
            skipping = True
            continue
        if skipping and line.startswith((" ", "\t")):
            continue
        skipping = False
        out.append(line)
    return "".join(out)


def install_sh(box, *args: str, timeout: float = 1500.0):
    cmd = f"cd /repo && bash ./install.sh {shlex.join(args)}"
    return box.run(cmd, env=INSTALL_ENV, timeout=timeout)


def opsctl(box, *args: str, timeout: float = 300.0):
    return box.run(f"opsctl {shlex.join(args)}", timeout=timeout)


@pytest.fixture(scope="module")
def original(box):
    """The runtime install.sh made current; the module switches back to it and removes its own."""
    current = link_name(box, L.current)
    previous = link_name(box, L.previous)
    if current is None:
        pytest.fail(f"{L.current} is not a link in the box after install.sh: the install did not finish")
    try:
        wait_healthy(box, timeout=120)
    except BoxError as exc:
        pytest.fail(f"the box's service is not healthy before the upgrade tests (left so by an earlier test?): {exc}")
    before = set(p.name for p in box_path(box, str(L.runtimes)).iterdir())
    yield current
    if link_name(box, L.current) != current:
        result = opsctl(box, "runtime", "upgrade", "--no-prune", current)
        assert result.ok, f"could not switch the box back to {current}: {result.stderr}"
    for runtime in box_path(box, str(L.runtimes)).iterdir():
        if runtime.name not in before and runtime.name != current:
            box.run(f"rm -rf {shlex.quote(f'{L.runtimes}/{runtime.name}')}")
    if previous is None:
        box.run(f"rm -f {L.previous}")
    else:
        box.run(f"ln -sfn runtimes/{previous} {L.previous}")
    box.run(f"rm -rf {LOCK_DIR}")


def profile_lock_text(box) -> tuple[str, str]:
    """The profile the box runs and the repo's lock it was built from (lean or full, for the box's
    Python: its manifest names the lock install.sh picked)."""
    recorded = manifest(box, link_name(box, L.current))
    assert recorded["lock_source"] == f"locks/py{recorded['python']}/{recorded['profile']}.txt", recorded
    return recorded["profile"], (REPO / recorded["lock_source"]).read_text()


def test_upgrade_to_a_second_valid_lock_switches_and_serves(box, box_upstream, original):
    profile, lock = profile_lock_text(box)
    # Any file name but <profile>.txt: install.sh then keeps the profile the box runs. The same
    # comment line as bench/upgrade_downtime.sh's variant, so the bench's run on this box (below)
    # reuses this runtime.
    variant = put_lock(box, "variant.txt", lock + BENCH_VARIANT_COMMENT)
    pid_before = main_pid(box)
    with HealthPoller() as poller:
        result = install_sh(box, "--upgrade", variant)
    assert result.ok, f"install.sh --upgrade exited {result.rc}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    current = link_name(box, L.current)
    assert current != original and current.startswith(f"0.3.12-{profile}-")
    assert link_name(box, L.previous) == original
    assert manifest(box, current)["profile"] == profile
    assert main_pid(box) not in (0, pid_before), "the service was not restarted onto the new runtime"
    # The candidate ran as a transient unit before the switch, and is gone afterwards.
    log = box.run("journalctl -o cat --no-pager | grep -F 'runtime validation (optillm-proxy-validate-'").stdout
    assert "Started" in log, "no transient validation unit was started"
    assert box.run("systemctl list-units --all --no-legend 'optillm-proxy-validate-*'").stdout.strip() == ""
    # And the new runtime serves the strategies through the real upstream.
    box_upstream.reset()
    smoke = opsctl(box, "smoke", "--all")
    assert smoke.ok, smoke.stdout + smoke.stderr
    assert {c["model"] for c in box_upstream.calls()} == {"jerry-xl"}

    # The restart queued probes on the socket instead of refusing them.
    assert poller.refused == 0 and poller.outages() == [], (poller.refused, poller.outages())
    record("upgrade: longest /health answer during the switch s (polled every 50 ms, none refused)",
           round(poller.longest_answer, 2))
    assert_rerun_changes_nothing(box, "install.sh --upgrade")


def test_a_plain_rerun_after_an_upgrade_applies_env_changes_on_the_current_runtime(box, original):
    """After --upgrade to another lock, the documented way to apply an env change (a plain
    install.sh re-run) keeps that runtime and applies the change once: a reload (a new launcher on
    the same runtime), or a restart where memory cannot hold two launchers (ops/runtime/service.py)."""
    current = link_name(box, L.current)
    assert current != original, "runs after the upgrade test: the box is on the variant"
    env = box_path(box, str(L.env_file))
    before = env.read_text()
    pid_before = main_pid(box)
    try:
        env.write_text(before + "UPSTREAM_RETRIES=2\n")
        result = install_sh(box, timeout=900)
        output = result.stdout + result.stderr
        assert result.ok, f"install.sh exited {result.rc}:\n{output[-3000:]}"
        assert f"kept the current runtime {current}" in output
        # Only the env file: opsctl recorded the runtime it switched to (ops/runtime/install_state.py).
        assert re.search(r"(reloaded|restarted) \(changed: env-file\)", output), output[-2000:]
        assert link_name(box, L.current) == current and main_pid(box) not in (0, pid_before)
    finally:
        env.write_text(before)
        assert install_sh(box, timeout=900).ok


def test_upgrade_to_a_broken_lock_is_refused_and_the_service_never_interrupted(box, original):
    current = link_name(box, L.current)
    # From the lean lock whatever the box runs (a full one would cost 8 GB to be refused).
    lean = (REPO / "locks" / f"py{manifest(box, current)['python']}" / "lean.txt").read_text()
    broken = put_lock(box, "no-math-verify.txt", without_requirement(lean, "math-verify"))
    assert "math-verify==" not in box_path(box, broken).read_text()
    pid_before = main_pid(box)
    with HealthPoller() as poller:
        result = install_sh(box, "--upgrade", broken, "--profile", "lean")
    output = result.stdout + result.stderr
    print(output.strip().splitlines()[-1])  # the refusal an operator reads, for the CI log
    assert result.rc == 1, f"expected exit 1 (refused at validation), got {result.rc}:\n{output[-3000:]}"
    assert "at validation" in output and "untouched" in output
    # Lint (the venv misses what 0.3.12 imports) or the transient start (ModuleNotFoundError) says so.
    assert re.search(r"math[-_]verify", output), f"the refusal does not say what failed:\n{output[-2000:]}"
    assert link_name(box, L.current) == current
    assert main_pid(box) == pid_before, "the live service was restarted by a refused upgrade"
    assert poller.samples and all(ok for _, ok in poller.samples), "/health failed during a refused upgrade"


# The next optillm release, which the patch points do not match (docs/optillm-0.4.0-audit.md).
NEXT_OPTILLM = "0.4.0"


def lean_lock_pinning(version: str, python: str) -> str:
    """The box's lean lock with optillm pinned to `version` instead (its wheel's hashes from the
    package index through uv pip compile, kept in the test cache): what a lean runtime of that
    release is built from. The rest of the lean set is unchanged: the refusal comes before any of
    it is imported."""
    import subprocess

    from tests.cache import build_once, cache_dir
    from tests.fixtures.runtime import uv_bin

    def build(target: Path) -> None:
        target.mkdir(parents=True)
        (target / "optillm.in").write_text(f"optillm=={version}\n")
        proc = subprocess.run([uv_bin(), "pip", "compile", "-q", "--no-deps", "--generate-hashes", "--no-header",
                               "--python-version", python, str(target / "optillm.in")],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or f"optillm=={version}" not in proc.stdout:
            pytest.fail(f"could not pin optillm=={version} with hashes (uv pip compile needs the package index): "
                        f"{proc.stderr.strip()[-1000:]}")
        (target / "pin.txt").write_text(proc.stdout)

    pinned, _ = build_once(cache_dir() / f"optillm-{version}-pin-py{python}", build, lock=".optillm-pin.lock")
    lean = (REPO / "locks" / f"py{python}" / "lean.txt").read_text()
    return without_requirement(lean, "optillm") + (pinned / "pin.txt").read_text()


def test_a_runtime_of_the_next_optillm_is_refused_with_the_audits_reasons(box, box_upstream, original):
    """A lean runtime whose lock pins optillm 0.4.0, handed to `opsctl runtime upgrade`: refused at
    validation naming the patch points that differ, the live service never touched (same MainPID,
    /health answered throughout), and `opsctl runtime list` shows it refused and why."""
    import hashlib

    current = link_name(box, L.current)
    python = manifest(box, current)["python"]
    lock = lean_lock_pinning(NEXT_OPTILLM, python)
    sha = hashlib.sha256(lock.encode()).hexdigest()
    name = f"{NEXT_OPTILLM}-lean-{sha[:12]}"
    src, dst = f"{L.runtimes}/{current}", f"{L.runtimes}/{name}"
    lock_in_box = put_lock(box, "next-optillm-lean.txt", lock)
    # The current (relocatable) runtime copied, then synced to the lock: only optillm changes.
    started = time.monotonic()
    built = box.run(
        f"set -e; rm -rf {dst}; cp -a {src} {dst}; "
        f"$(command -v uv || echo {L.prefix}/tools/uv/bin/uv) --system-certs pip sync -q --python {dst}/bin/python --require-hashes {lock_in_box}; "
        f"install -m 0644 {lock_in_box} {dst}/libexec/lean.txt; "
        f"{dst}/bin/python -I -c 'import importlib.metadata as m; print(m.version(\"optillm\"))'",
        env=INSTALL_ENV, timeout=600)
    assert built.ok and built.stdout.strip().splitlines()[-1] == NEXT_OPTILLM, built.stdout + built.stderr
    record(f"optillm {NEXT_OPTILLM} lean runtime built in the box s (copy of current, uv pip sync)",
           round(time.monotonic() - started, 1))
    box_path(box, f"{dst}/optillm-proxy-runtime.json").write_text(json.dumps(
        {"profile": "lean", "optillm_version": NEXT_OPTILLM, "lock_sha256": sha, "lock_file": "libexec/lean.txt",
         "lock_source": lock_in_box, "python": python}) + "\n")

    pid_before = main_pid(box)
    with HealthPoller() as poller:
        result = opsctl(box, "runtime", "upgrade", "--no-prune", name, timeout=600)
    output = result.stdout + result.stderr
    print(output.strip().splitlines()[-1])  # the refusal an operator reads, for the CI log
    assert result.rc == 1, f"expected exit 1 (refused at validation), got {result.rc}:\n{output[-3000:]}"
    assert f"refused {name} at validation, optillm-proxy untouched" in output
    assert f"optillm {NEXT_OPTILLM} is installed, not {L_VERSION}; patch points that differ: " in output
    for point in ("server.load_plugins", "server.get_config", "server.app.wsgi_app", "server.app.run"):
        assert point in output, output[-2000:]
    assert "validate-" not in box.run("systemctl list-units --all --no-legend 'optillm-proxy-validate-*'").stdout
    assert link_name(box, L.current) == current
    assert main_pid(box) == pid_before, "the live service was restarted by a refused upgrade"
    assert poller.samples and all(ok for _, ok in poller.samples), "/health failed during a refused upgrade"
    smoke = opsctl(box, "smoke", "--all")
    assert smoke.ok, smoke.stdout + smoke.stderr

    listed = opsctl(box, "runtime", "list")
    assert listed.ok, listed.stderr
    lines = listed.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if name in line)
    assert lines[at].startswith(f"refused  {name}  profile=lean optillm={NEXT_OPTILLM}"), listed.stdout
    assert "refused at validation" in lines[at + 1] and "patch points that differ" in lines[at + 1], listed.stdout


def test_a_runtime_failing_only_after_the_switch_is_rolled_back_automatically(box, original):
    """A copy of the current runtime whose launcher refuses the live port 4020 (but not the spare
    validation port): it passes validation and fails for real once the service runs it."""
    current = link_name(box, L.current)
    previous = link_name(box, L.previous)
    bad = f"{current}-fails-on-4020"
    src, dst = f"{L.runtimes}/{current}", f"{L.runtimes}/{bad}"
    launcher = f"{dst}/libexec/optillm-proxy-launcher.py"
    box.run(f"rm -rf {dst}").check()
    # Hardlinked copy (fast, no new download); the launcher is renamed, never written through.
    box.run(f"cp -al {src} {dst} && mv {launcher} {dst}/libexec/real-launcher.py").check()
    box_path(box, launcher).write_text(
        "import os, runpy, sys\n"
        "if '4020' in sys.argv:\n"
        "    sys.exit('test runtime: refusing the live port 4020 on purpose')\n"
        "runpy.run_path(os.path.join(os.path.dirname(__file__), 'real-launcher.py'), run_name='__main__')\n")
    box.run(f"chmod 0644 {launcher} && touch {dst}").check()

    pid_before = main_pid(box)
    result = opsctl(box, "runtime", "upgrade", "--no-prune", bad, timeout=600)
    output = result.stdout + result.stderr
    print(output.strip().splitlines()[-1])  # what the operator reads, for the CI log
    assert result.rc == 3, f"expected exit 3 (switched back), got {result.rc}:\n{output[-3000:]}"
    assert "refusing the live port 4020 on purpose" in output, output[-2000:]
    assert f"switched back to {current}, which is serving and healthy" in output
    assert (link_name(box, L.current), link_name(box, L.previous)) == (current, previous)
    assert main_pid(box) not in (0, pid_before)
    smoke = opsctl(box, "smoke", "--all")
    assert smoke.ok, smoke.stdout + smoke.stderr
    assert_rerun_changes_nothing(box, "opsctl runtime upgrade (switched back)")


def test_rollback_returns_to_the_previous_runtime_in_one_restart(box, original):
    current, previous = link_name(box, L.current), link_name(box, L.previous)
    assert previous == original, "the first test's upgrade should have left the original as previous"
    pid_before = main_pid(box)
    with HealthPoller() as poller:
        result = install_sh(box, "--rollback")
    assert result.ok, f"install.sh --rollback exited {result.rc}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert (link_name(box, L.current), link_name(box, L.previous)) == (original, current)
    assert main_pid(box) not in (0, pid_before)
    smoke = opsctl(box, "smoke", "--all")
    assert smoke.ok, smoke.stdout + smoke.stderr
    assert poller.refused == 0 and poller.outages() == [], (poller.refused, poller.outages())
    record("rollback: longest /health answer during the switch s (polled every 50 ms, none refused)",
           round(poller.longest_answer, 2))
    assert_rerun_changes_nothing(box, "install.sh --rollback")


def test_bench_upgrade_downtime_runs_and_ends_where_it_started(box, original):
    """bench/upgrade_downtime.sh (a script, figures quoted in bench/README.md) on this box, one round,
    so it cannot rot unseen: its variant lock is the first test's (same comment line), so the
    runtime exists and the round costs an upgrade and a rollback. Exit 0, its two lines, and the
    box where it started; the figures themselves are not judged."""
    current, previous = link_name(box, L.current), link_name(box, L.previous)
    result = box.run("bash /repo/bench/upgrade_downtime.sh 1", env=INSTALL_ENV, timeout=900)
    assert result.ok, f"upgrade_downtime.sh exited {result.rc}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    number = r"[0-9]+(?:\.[0-9]+)?"
    lines = [re.sub(r" +", " ", line) for line in result.stdout.splitlines()]
    assert len(lines) == 2 and all(re.fullmatch(rf"{what} \(round 1\) wall {number} s downtime {number} s", line)
                                   for what, line in zip(("upgrade", "rollback"), lines)), result.stdout
    assert (link_name(box, L.current), link_name(box, L.previous)) == (current, previous)
    wait_healthy(box, timeout=120)


def test_a_plain_rerun_with_another_profile_is_refused_not_switched(box, original):
    """Switching profiles is an upgrade: a plain `install.sh --profile OTHER` says so, builds nothing."""
    current, previous = link_name(box, L.current), link_name(box, L.previous)
    other = "full" if manifest(box, current)["profile"] == "lean" else "lean"
    runtimes_before = sorted(p.name for p in box_path(box, str(L.runtimes)).iterdir())
    pid_before = main_pid(box)
    # Where the box's Python has no such profile (full on 3.13), the refusal comes first and says why.
    python = manifest(box, current)["python"]
    unavailable = REPO / "locks" / f"py{python}" / f"{other}.unavailable"
    code, words = ((5, f"install.sh: no {other} profile for Python {python}: {unavailable.read_text().strip()}")
                   if unavailable.exists() else (1, "is a switch, which a plain run never makes"))
    result = install_sh(box, "--profile", other, timeout=300)
    assert result.rc == code, f"expected exit {code}, got {result.rc}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert words in result.stderr
    if code == 1:
        assert f"sudo ./install.sh --upgrade --profile {other}" in result.stderr
    # The dry run predicts the same refusal (it used to promise a switch the real run refused).
    dry = install_sh(box, "--profile", other, "--dry-run", timeout=300)
    assert dry.rc == code and words in dry.stderr, dry.stdout + dry.stderr
    assert (link_name(box, L.current), link_name(box, L.previous)) == (current, previous)
    assert sorted(p.name for p in box_path(box, str(L.runtimes)).iterdir()) == runtimes_before
    assert main_pid(box) == pid_before


def test_validation_unit_has_the_service_hardening(box, original):
    """The transient unit is built from the installed unit: same exposure score, same identity."""
    from ops.runtime.transient_unit import build

    unit = build(box_path(box, str(L.unit_file)), Path(f"{L.runtimes}/{original}"), 45987,
                 "optillm-proxy-validate-exposure")
    started = box.run(shlex.join(unit.systemd_run_argv()), timeout=120)
    try:
        assert started.ok, started.stderr
        score = {}
        for name in ("optillm-proxy", unit.name):
            out = box.run(f"systemd-analyze security {name} --no-pager").stdout
            score[name] = re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1)
        props = ("User", "ProtectSystem", "PrivateUsers", "IPAddressDeny", "SystemCallFilter",
                 "CapabilityBoundingSet")
        # systemctl show lists set-valued properties (IPAddressDeny, SystemCallFilter) in hash
        # order, which differs between units: compare their members, not their order.
        shown = {name: {key: set(value.split()) for key, value in show(box, *props, unit=name).items()}
                 for name in ("optillm-proxy", unit.name)}
    finally:
        box.run(f"systemctl stop {unit.name}")
    assert score[unit.name] == score["optillm-proxy"], score
    assert shown[unit.name] == shown["optillm-proxy"]
    assert set(shown[unit.name]) == set(props), shown[unit.name]
