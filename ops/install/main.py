"""`opsctl install`'s run: the steps in order, then the summary or the --json object, and the exit
code. Stdlib only, like the rest of ops.install but its click command: install.sh runs a dry run
with the system Python from the checkout, so that planning writes nothing, not even opsctl's venv."""

from __future__ import annotations

import os
import subprocess
import sys

from ops.install import options, runtime, service, steps, summary
from ops.install.run import Run

# The install, in the order it runs: each step plans its part against the host and applies it.
INSTALL_STEPS = (steps.choose_profile, steps.check_system, steps.check_python, steps.keep_current_runtime,
                 steps.create_service_user, steps.create_directories, runtime.build_runtime, runtime.install_launcher,
                 runtime.link_runtimes_site_packages, runtime.switch_current, steps.write_provider_file,
                 steps.write_env_file, steps.write_upstream_key_file, steps.write_key_file, steps.install_unit,
                 steps.write_uninstall_script, steps.detect_changes, service.start_service)
# --upgrade: the runtime is built here, validated and switched to by `opsctl runtime upgrade`.
UPGRADE_STEPS = (steps.choose_profile, steps.check_system, steps.check_python, runtime.build_runtime,
                 runtime.install_launcher, runtime.link_runtimes_site_packages)


def install(opts: options.Options, result_fd: int) -> int:
    """Runs the steps; the summary (or the --json object, on result_fd) at the end; the exit code."""
    run = Run(opts, out=sys.stderr if opts.json else sys.stdout)
    for item in opts.bootstrapped:
        run.changes.append(f"would: {item}" if opts.dry_run else item)
    try:
        for step in UPGRADE_STEPS if opts.upgrade else INSTALL_STEPS:
            step(run)
        if opts.upgrade:
            return runtime_upgrade(run, result_fd)
    except Exception as exc:  # noqa: BLE001 - every failure stops the run at its step, told once
        return run.failure(exc)
    if opts.json:
        os.write(result_fd, (summary.to_json(run) + "\n").encode())
    else:
        sys.stdout.write(summary.summary(run))
    return summary.exit_code(run)


def runtime_upgrade(run: Run, result_fd: int) -> int:
    """Hands over to `opsctl runtime upgrade` (validation, switch, checks, switching back); its exit
    code is the run's."""
    run.step("runtime upgrade", "read the line above; opsctl runtime --help explains each exit code")
    opsctl = run.layout.opsctl
    sys.stdout.flush()
    json_flag = ["--json"] if run.opts.json else []
    return subprocess.run([str(opsctl), "runtime", "upgrade", run.runtime_name, *json_flag], stdout=result_fd,
                          check=False).returncode


def main(argv: list[str]) -> int:
    try:
        opts = options.parse(argv)
    except options.UsageError as exc:
        return options.fail(str(exc), exc.code)
    if opts.help:
        print(options.usage(opts.checkout), end="")
        return options.EXIT_OK
    if opts.uninstall:
        from ops.install.templates import uninstall

        return uninstall(opts)
    try:
        options.preflight(opts)
    except options.UsageError as exc:
        return options.fail(str(exc), exc.code)
    if opts.rollback:
        opsctl = opts.layout.opsctl
        return subprocess.run([str(opsctl), "runtime", "rollback", *(["--json"] if opts.json else [])],
                              check=False).returncode
    if not (opts.checkout / "launcher").is_dir():
        return options.fail("opsctl install runs from the toolkit: cd to its checkout first (or give it: "
                            "opsctl install --toolkit=DIR); a first install is sudo ./install.sh", options.EXIT_USAGE)
    os.umask(0o022)
    # With --json only the object goes to the invoker's stdout; progress and commands' output to stderr.
    sys.stdout.flush()
    result_fd = os.dup(1)
    if opts.json:
        os.dup2(2, 1)
    try:
        return install(opts, result_fd)
    finally:
        sys.stdout.flush()
        os.close(result_fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
