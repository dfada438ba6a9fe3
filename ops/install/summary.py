"""What a run tells the operator at its end: the summary, or with --json one object (the Ansible
role reads it; docs/install-outcome.md lists its keys), and the exit code."""

from __future__ import annotations

import json

from ops.from_launcher.layout import BASE_MODEL, FACTS, OPTILLM_VERSION, SERVICE
from ops.install import options
from ops.install.run import Run


def next_commands(run: Run) -> list[tuple[str, str]]:
    """Only commands that can work in the state the service is left in (health and smoke need it
    running): the command, and what the summary adds about it."""
    if not run.root and not run.dry_run and not run.has_systemd:
        return [("sudo opsctl lint", "(health and smoke need the service started, on a systemd host)")]
    if run.upstream_key_missing:
        return [(f"sudoedit {FACTS['UPSTREAM_KEY_FILE']}", "(one line)"), ("sudo ./install.sh", "(starts it)"),
                ("sudo opsctl lint", "")]
    return [("sudo opsctl health", ""), ("sudo opsctl smoke --all", ""), ("sudo opsctl lint", ""),
            (f"journalctl -u {SERVICE} -f", "")]


def changed_items(run: Run) -> list[str]:
    """What this run wrote and did, or else what changed since the last run (empty: nothing)."""
    if run.changes:
        return list(run.changes)
    if run.restart_reasons:
        return [f"nothing written by install.sh (changed since the last run: {' '.join(run.restart_reasons)})"]
    return []


def exit_code(run: Run) -> int:
    if run.dry_run or run.root:
        return options.EXIT_OK
    if not run.has_systemd:
        return options.EXIT_NO_SYSTEMD
    if run.health == "unhealthy":
        return options.EXIT_UNHEALTHY
    if run.upstream_key_missing:
        return options.EXIT_PREREQ
    if run.health == "refused":
        return options.EXIT_CONFIG_REFUSED
    return options.EXIT_OK


def summary(run: Run) -> str:
    f = FACTS
    lines = ["", "optillm-proxy install summary" + (" (dry run: nothing was written)" if run.dry_run else ""),
             f"  profile:   {run.profile} (runtime {run.runtime_name}, optillm {OPTILLM_VERSION}; recorded in "
             f"{f['CURRENT_LINK']}/{f['MANIFEST_REL']})"]
    if run.changes:
        lines.append("  changed:")
        lines += [f"    - {item}" for item in run.changes]
    elif run.restart_reasons:
        lines.append(f"  changed:   {changed_items(run)[0]}")
    else:
        lines.append("  changed:   nothing (no change; nothing restarted)")
    lines += [f"  service:   {run.service_state}",
              f"  env file:  {f['ENV_FILE']} (PROXY_PLUGINS, PROXY_APPROACHES, request bounds; no secret; root 0600)",
              f"  key file:  {f['KEY_FILE']} (the proxy key LiteLLM presents; root 0600; read with: sudo cat {f['KEY_FILE']})",
              f"  upstream:  {f['UPSTREAM_KEY_FILE']} (the LiteLLM virtual key the proxy presents, limited to "
              f"{BASE_MODEL}; root 0600)"]
    if run.root:
        lines.append(f"  staged at: {run.root}")
    lines += [f"  note:      {note}" for note in run.notes]
    shown = [f"{cmd} {note}" if note else cmd for cmd, note in next_commands(run)]
    if len(shown) == 4:
        lines += [f"  next:      {shown[0]}; {shown[1]}; {shown[2]}",
                  f"             {shown[3]}; after editing the env file: sudo ./install.sh (reloads once, no pause)"]
    else:
        lines.append(f"  next:      {'; '.join(shown)}")
    lines.append(f"  uninstall: sudo ./install.sh --uninstall (or {f['UNINSTALL_SCRIPT']}); --purge also removes "
                 f"{f['CONF_DIR']}")
    return "\n".join(lines) + "\n"


def outcome(run: Run) -> dict:
    """The --json object (docs/install-outcome.md)."""
    return {"changed": changed_items(run), "restart_reasons": list(run.restart_reasons), "notes": list(run.notes),
            "next": [cmd for cmd, _ in next_commands(run)], "profile": run.profile, "runtime": run.runtime_name,
            "optillm_version": OPTILLM_VERSION, "lock": run.lock_shown, "lock_sha256": run.lock_sha,
            "health": run.health, "service": run.service_state, "dry_run": run.dry_run, "root": run.root or None,
            "exit_code": exit_code(run), "reloaded": run.reloaded,
            "restarted": run.health in ("healthy", "unhealthy") and not run.reloaded}


def to_json(run: Run) -> str:
    return json.dumps(outcome(run), indent=2)
