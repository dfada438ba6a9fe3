"""The commands the operator docs and install.sh's summary print, run in the booted box as printed.

tests/printed_commands.py lists them and how each is proven; the fast tier
(tests/test_printed_commands.py) fails on a printed command that is in no list. Here every "box"
one runs as an operator types it (as root, so `sudo` is a no-op, from the checkout at /repo), and its
exit code must be the one the docs promise. Commands that need a state of their own run in the
dedicated tests below: follow the journal, an exported journal, editors (SUDO_EDITOR stands in for
the operator's hands), the Prometheus wiring with Debian's prometheus installed in the box, and the
uninstall forms, each followed by the README's install, which leaves the box as it was.

The full-profile CI run selects test_runs_as_printed and the completeness check only (the
commands that name `--profile full`).
"""

from __future__ import annotations

import json
import time

import pytest

from ops.from_launcher.layout import DEFAULT as LAYOUT
from tests.box import service
from tests.box.machine import INSTALL_ENV
from tests.fixtures.box import INSTALL_ARGS, record
from tests.printed_commands import PROOFS

pytestmark = pytest.mark.box

PROFILE = "full" if "full" in INSTALL_ARGS else "lean"
BOX_COMMANDS = sorted(c for c, p in PROOFS.items() if p.how == "box" and p.profile == PROFILE)
# Run by the dedicated tests below, which set up what they need.
FOLLOW = "journalctl -u optillm-proxy -f"
EXPORTED = "opsctl report --input records.json"
EDIT_UPSTREAM_KEY = "sudoedit /etc/optillm-proxy/upstream-key"
PROMETHEUS = (
    "sudo install -D -m 0644 etc/prometheus/optillm-proxy.rules.yml /etc/prometheus/rules/optillm-proxy.rules.yml",
    "sudoedit /etc/prometheus/prometheus.yml",
    "sudo promtool check config /etc/prometheus/prometheus.yml",
    "sudo systemctl reload prometheus",
    "curl -sG http://127.0.0.1:9090/api/v1/query --data-urlencode 'query=up{job=\"optillm-proxy\"}'",
)
UNINSTALL = ("sudo /opt/optillm-proxy/uninstall.sh", "/opt/optillm-proxy/uninstall.sh",
             "sudo ./install.sh --uninstall --purge")
SPECIAL = {FOLLOW, EXPORTED, EDIT_UPSTREAM_KEY, *PROMETHEUS, *UNINSTALL}
SIMPLE = [c for c in BOX_COMMANDS if c not in SPECIAL]
RAN: set[str] = set()


@pytest.fixture(scope="module", autouse=True)
def sudo_keeps_the_install_environment(box):
    """`sudo` resets the environment; these commands run as printed, with sudo, so sudo must keep
    what INSTALL_ENV gives every install in the box: the host's uv cache (an operator's host needs
    none; certificates come from the box's own trust store, as on any host). The box's hostname is
    made resolvable, as on any installed host, so sudo does not warn."""
    keep = box.root / "etc/sudoers.d/box-install-env"
    names = " ".join(sorted(INSTALL_ENV))
    keep.write_text(f'Defaults env_keep += "{names}"\n')
    keep.chmod(0o440)
    hosts = box.root / "etc/hosts"
    original = hosts.read_text() if hosts.exists() else ""
    hosts.write_text(original + "127.0.1.1 optillm-box\n")
    yield
    keep.unlink()
    hosts.write_text(original)


def run_printed(box, command: str, *, editor: str | None = None, timeout: float = 900.0, prefix: str = ""):
    """`command` exactly as printed (placeholders filled as PROOFS says), from /repo."""
    proof = PROOFS[command]
    assert proof.how == "box", f"`{command}` is not one the box runs"
    env = dict(INSTALL_ENV)
    if editor:
        env["SUDO_EDITOR"] = editor
    result = box.run(f"cd /repo && {prefix}{proof.as_run(command)}", env=env, timeout=timeout)
    assert result.rc in proof.codes, (f"`{command}` exited {result.rc}, the docs promise {proof.codes}:\n"
                                      f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    RAN.add(command)
    return result


def key_files(box) -> dict[str, bytes]:
    paths = (LAYOUT.env_file, LAYOUT.key_file, LAYOUT.upstream_key_file)
    return {str(p): (box.root / str(p).lstrip("/")).read_bytes() for p in paths}


@pytest.mark.parametrize("command", SIMPLE)
def test_runs_as_printed(box, box_upstream, command):
    secret = command == "sudo cat /etc/optillm-proxy/api-key"
    result = run_printed(box, command)
    if secret:  # what it prints is the key itself: compare, never show
        assert result.stdout.strip() == (box.root / str(LAYOUT.key_file).lstrip("/")).read_text().strip(), \
            "`sudo cat` did not print the proxy key"
    assert service.healthy(), f"the service is not healthy after `{command}`"


def test_follow_the_journal(box):
    # -f follows until stopped (Ctrl-C): `timeout` stops it; lines must have been shown first.
    result = run_printed(box, FOLLOW, prefix="timeout 3 ")
    assert result.stdout.strip(), "journalctl -f showed nothing in 3 s"


def test_report_from_an_exported_journal(box, box_upstream):
    box.check("mkdir -p /tmp/export && journalctl -u optillm-proxy -o json > /tmp/export/records.json")
    result = run_printed(box, EXPORTED, prefix="cd /tmp/export && ")
    assert "request record(s)" in result.stdout, result.stdout[-2000:]


def test_sudoedit_of_the_upstream_key_keeps_it_when_nothing_is_typed(box):
    before = key_files(box)
    run_printed(box, EDIT_UPSTREAM_KEY, editor="true")
    assert key_files(box) == before


def test_prometheus_wiring_as_the_runbook_prints_it(box, box_upstream):
    """Section 8, "Prometheus: wiring and alerts", on Debian's own prometheus package."""
    start = time.monotonic()
    # The RUNBOOK's precondition: ARGS keeps Prometheus on loopback (the box shares the host's network).
    box.check("mkdir -p /etc/default && echo 'ARGS=\"--web.listen-address=127.0.0.1:9090\"' > /etc/default/prometheus")
    install = box.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                      "--no-install-recommends -o Dpkg::Options::=--force-confold prometheus", timeout=900)
    assert install.ok, f"apt-get install prometheus in the box failed:\n{install.stdout[-2000:]}{install.stderr[-2000:]}"
    record("apt-get install prometheus in the box s", round(time.monotonic() - start, 1))
    try:
        run_printed(box, PROMETHEUS[0])
        # The operator's edit: the example's rule file and job added to Debian's own config (with
        # the YAML library of opsctl's venv; the box's python3 has none).
        merge = (f"#!{LAYOUT.tools}/opsctl/bin/python\n"
                 "import sys, yaml\n"
                 "config = yaml.safe_load(open(sys.argv[1])) or {}\n"
                 "example = yaml.safe_load(open('/repo/etc/prometheus/prometheus.example.yml'))\n"
                 "config['rule_files'] = (config.get('rule_files') or []) + example['rule_files']\n"
                 "config['scrape_configs'] = (config.get('scrape_configs') or []) + example['scrape_configs']\n"
                 "yaml.safe_dump(config, open(sys.argv[1], 'w'), sort_keys=False)\n")
        (box.root / "usr/local/bin/merge-example").write_text(merge)
        (box.root / "usr/local/bin/merge-example").chmod(0o755)
        run_printed(box, PROMETHEUS[1], editor="/usr/local/bin/merge-example")
        checked = run_printed(box, PROMETHEUS[2])
        assert "SUCCESS" in checked.stdout + checked.stderr
        run_printed(box, PROMETHEUS[3])
        deadline = time.monotonic() + 120
        while True:
            answer = run_printed(box, PROMETHEUS[4])
            results = json.loads(answer.stdout)["data"]["result"]
            if results and results[0]["value"][1] == "1":
                break
            assert time.monotonic() < deadline, f"up{{job=\"optillm-proxy\"}} never became 1: {answer.stdout}"
            time.sleep(1)
    finally:
        box.run("systemctl stop prometheus; DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq prometheus "
                ">/dev/null; rm -rf /etc/prometheus /etc/default/prometheus /var/lib/prometheus "
                "/usr/local/bin/merge-example", timeout=300)


def _reinstall_as_the_readme_says(box, saved: dict[str, bytes]) -> None:
    """README: install.sh, sudoedit the upstream key, install.sh; the keys are put back as they were
    (LiteLLM, box_upstream, holds the old proxy key)."""
    if (box.root / str(LAYOUT.upstream_key_file).lstrip("/")).exists():  # not purged: one run does it
        run_printed(box, "sudo ./install.sh")
    else:
        first = box.run("cd /repo && sudo ./install.sh", env=INSTALL_ENV, timeout=900)
        assert first.rc == 5, f"a first install must stop short of starting (exit 5), got {first.rc}"
        for path in (LAYOUT.env_file, LAYOUT.key_file):
            target = box.root / str(path).lstrip("/")
            target.write_bytes(saved[str(path)])
            target.chmod(0o600)
        # The operator types the key in the editor: a script copies it from a root-only file (never a
        # command line); sudoedit writes it back to the key file.
        typed, editor = box.root / "root/typed-upstream-key", box.root / "root/type-key"
        typed.write_bytes(saved[str(LAYOUT.upstream_key_file)])
        typed.chmod(0o600)
        editor.write_text('#!/bin/sh\ncat /root/typed-upstream-key > "$1"\n')
        editor.chmod(0o700)
        try:
            run_printed(box, EDIT_UPSTREAM_KEY, editor="/root/type-key")
        finally:
            typed.unlink()
            editor.unlink()
        run_printed(box, "sudo ./install.sh")
    service.wait_healthy(box, timeout=120)


@pytest.mark.parametrize("command", UNINSTALL)
def test_uninstall_as_printed_then_install_as_the_readme_says(box, box_upstream, command):
    saved = key_files(box)
    start = time.monotonic()
    run_printed(box, command)
    unit = box.root / str(LAYOUT.unit_file).lstrip("/")
    assert not unit.exists() and not (box.root / str(LAYOUT.prefix).lstrip("/")).exists()
    purge = "--purge" in command
    assert (box.root / str(LAYOUT.conf_dir).lstrip("/")).exists() != purge
    # The plan on a host without the service: every step would run, and planning writes nothing.
    dry = box.run(" ".join(("cd /repo && bash ./install.sh", *INSTALL_ARGS, "--dry-run --json")), env=INSTALL_ENV,
                  timeout=300)
    assert dry.rc == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    plan = json.loads(dry.stdout)
    assert f"would: install {LAYOUT.unit_file}" in plan["changed"] and "first-install" in plan["restart_reasons"]
    assert any(item.startswith("would: build ") for item in plan["changed"]), plan["changed"]
    assert not unit.exists() and not (box.root / str(LAYOUT.prefix).lstrip("/")).exists()
    _reinstall_as_the_readme_says(box, saved)
    assert key_files(box) == saved, "a reinstall changed the operator's files"
    record(f"`{command}` + reinstall s", round(time.monotonic() - start, 1))


# RUNBOOK, "Rotate the proxy key": a key typed at a prompt, then a strategy model through LiteLLM.
THROUGH_LITELLM = tuple(c for c in PROOFS if c.startswith("read -rsp 'LiteLLM key") or
                        (c.startswith("curl ") and "127.0.0.1:4000" in c))


def test_the_check_through_litellm_as_printed(box, box_upstream):
    """Both lines in one shell, as an operator types them, the key given on stdin (never argv).
    With LiteLLM holding the proxy key, moa-jerry-xl answers 200 through the proxy (moa's 3 model
    calls). After `opsctl key rotate`, before LiteLLM has the new key, the same check fails: the
    case `opsctl smoke --all`, which talks to the proxy directly, cannot see."""
    assert len(THROUGH_LITELLM) == 2, THROUGH_LITELLM
    script = "cd /repo && " + "\n".join(THROUGH_LITELLM)
    litellm_key = box.upstream_key + "\n"  # the box's LiteLLM key (its master key: LiteLLM runs without a database)
    before = len(box_upstream.calls())
    good = box.run(script, input=litellm_key, timeout=300)
    assert good.rc == 0 and good.stdout.rstrip().endswith("HTTP 200"), good.stdout[-2000:] + good.stderr[-2000:]
    assert '"choices"' in good.stdout and box.upstream_key not in good.stdout + good.stderr
    assert len(box_upstream.calls()) - before == 3, "moa- did not run through the proxy (3 model calls)"
    key_file = box.root / str(LAYOUT.key_file).lstrip("/")
    old = key_file.read_text()
    try:
        rotated = box.run("opsctl key rotate", timeout=600)
        assert rotated.ok, rotated.stdout[-2000:] + rotated.stderr[-2000:] + service.journal(box, 80)
        stale = box.run(script, input=litellm_key, timeout=300)
        print(f"through LiteLLM with its old proxy key: {stale.stdout[-600:]}")
        assert not stale.stdout.rstrip().endswith("HTTP 200"), stale.stdout[-2000:]
        assert "HTTP 401" in stale.stdout, stale.stdout[-2000:]
    finally:
        # Back to the key LiteLLM (box_upstream) presents, for the tests after this one.
        key_file.write_text(old)
        box.run("systemctl reset-failed optillm-proxy && systemctl restart optillm-proxy", timeout=120)
        service.wait_healthy(box)


def test_every_box_command_of_this_profile_ran():
    missing = [c for c in BOX_COMMANDS if c not in RAN]
    assert not missing, f"printed commands that no box test ran here: {missing}"
