"""The runtime steps: the hashed runtime venv built by uv, the launcher copied into it, the
`current` link switched (the previous one kept for rollback). A runtime is built under a temporary
name and renamed, so `current` never names a half-built one."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from ops.from_launcher.layout import FACTS, OPTILLM_VERSION
from ops.install import host, options
from ops.install.files import build_dir, make_link, put_file
from ops.install.run import Run, StepFailed, sh

SYSTEM_PYTHON = options.SYSTEM_PYTHON


def uv_version_wanted(repo: Path) -> str:
    match = re.search(r"^uv==([0-9.]+)", (repo / "locks" / "uv.txt").read_text(encoding="utf-8"), re.MULTILINE)
    return match.group(1) if match else ""


def find_uv(run: Run) -> str:
    """The uv install.sh bootstrapped into tools/, or the same version on PATH."""
    want = f"uv {uv_version_wanted(run.repo)}"
    for candidate in (str(run.layout.tools / "uv" / "bin" / "uv"), shutil.which("uv")):
        if candidate and os.access(candidate, os.X_OK):
            got = subprocess.run([candidate, "--version"], capture_output=True, text=True, check=False).stdout
            if got.startswith(want):
                return candidate
    raise StepFailed(f"no {want} in {FACTS['TOOLS_DIR']}/uv or on PATH: re-run install.sh, which bootstraps it")


# --system-certs: the host's trust store (a company CA in it works as for curl and apt), not the
# Mozilla roots uv bundles. install.sh's uv_cmd passes the same (a test holds them together).
UV_FLAGS = ("--no-config", "--system-certs", "-q")


def uv(run: Run, *args: str | Path) -> None:
    sh(find_uv(run), *UV_FLAGS, *args)


def build_runtime(run: Run) -> None:
    run.step("runtime", "check the uv cache/index access and disk space (full needs ~9 GB), then re-run")
    dest = run.layout.runtimes / run.runtime_name
    if run.kept_runtime:
        run.report(f"{run.runtime_name} is current and kept (built from another lock)")
    elif host.runtime_is_complete(dest, run.lock_sha):
        run.report(f"{run.runtime_name} already built (lock unchanged)")
    else:
        if not run.dry_run:
            run.report(f"building {run.runtime_name} from {run.lock_shown} (hashes required, bytecode compiled)")
        run.apply(f"build {run.runtime_name} from {run.lock_shown}", f"built runtime {run.runtime_name}",
                  lambda: build_dir(run, dest, lambda tmp: build_venv(run, tmp)))


def build_venv(run: Run, tmp: Path) -> None:
    """The venv is relocatable (uv writes relative script launchers): built under another name."""
    uv(run, "venv", "--relocatable", "--python", SYSTEM_PYTHON, tmp)
    uv(run, "pip", "sync", "--python", tmp / "bin" / "python", "--require-hashes", "--compile-bytecode", run.lock_file)
    got = subprocess.run([tmp / "bin" / "python", "-I", "-c",
                          'import importlib.metadata as m; print(m.version("optillm"))'],
                         check=True, capture_output=True, text=True).stdout.strip()
    if got != OPTILLM_VERSION:
        raise StepFailed(f"{run.lock_shown} installed optillm {got}, expected {OPTILLM_VERSION}: fix the lock")
    lock_copy = tmp / "libexec" / f"{run.profile}.txt"
    lock_copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.lock_file, lock_copy)
    os.chmod(lock_copy, 0o644)
    link_site_packages(run, tmp)
    write_manifest(run, tmp)


def write_manifest(run: Run, runtime: Path) -> None:
    """The format's one reader: launcher/optillm_proxy_launcher/manifest.py."""
    python = subprocess.run([runtime / "bin" / "python", "-I", "-c", 'import sys; print("%d.%d" % sys.version_info[:2])'],
                            check=True, capture_output=True, text=True).stdout.strip()
    manifest = {"profile": run.profile, "optillm_version": OPTILLM_VERSION, "lock_sha256": run.lock_sha,
                "lock_file": f"libexec/{run.profile}.txt", "lock_source": run.lock_shown, "python": python}
    (runtime / FACTS["MANIFEST_REL"]).write_text(json.dumps(manifest) + "\n", encoding="utf-8")


def link_site_packages(run: Run, runtime: Path) -> None:
    """<runtime>/site-packages -> lib/python3.X/site-packages: the unit names paths inside the
    runtime (spl's data, BindPaths=) without naming the Python version."""
    found = host.site_packages_rel(runtime)
    link = runtime / FACTS["SITE_PACKAGES_REL"]
    if found and host.link_differs(found, link):
        make_link(run, found, link)


def link_runtimes_site_packages(run: Run) -> None:
    """Runtimes built before the link existed: current, previous or a rollback target must have it
    before the unit that names it starts."""
    run.step("runtime links", f"check {FACTS['RUNTIMES_DIR']} by hand, then re-run")
    runtimes = run.layout.runtimes
    missing = []
    for runtime in sorted(runtimes.iterdir()) if runtimes.is_dir() else []:
        if runtime.is_dir() and (runtime / FACTS["MANIFEST_REL"]).is_file():
            found = host.site_packages_rel(runtime)
            if found and host.link_differs(found, runtime / FACTS["SITE_PACKAGES_REL"]):
                missing.append(runtime)
    if missing:
        names = " ".join(r.name for r in missing)
        rel = FACTS["SITE_PACKAGES_REL"]
        run.apply(f"link {rel} in {names}", f"linked {rel} in {names}",
                  lambda: [link_site_packages(run, r) for r in missing])
    else:
        run.report("unchanged")


def launcher_files(repo: Path) -> list[str]:
    """The checkout's launcher/ files as shipped (entry script, plugin table, the package)."""
    base = repo / "launcher"
    found = [str(p.relative_to(base)) for p in base.rglob("*")
             if p.is_file() and p.suffix in (".py", ".json", ".env") and "__pycache__" not in p.parts]
    return sorted(found, key=lambda p: p.encode())


def install_launcher(run: Run) -> None:
    """launcher/ into <runtime>/libexec; the bytecode is compiled here: the service cannot write the runtime."""
    run.step("launcher", "check the repo's launcher/ directory, then re-run")
    libexec = run.layout.runtimes / run.runtime_name / "libexec"
    updated = [rel for rel in launcher_files(run.repo)
               if host.file_differs((run.repo / "launcher" / rel).read_bytes(), libexec / rel, 0o644, bool(run.root))]
    if updated:
        shown = " ".join(updated)
        run.apply(f"install launcher files in {run.runtime_name}/libexec: {shown}",
                  f"launcher files in {run.runtime_name}/libexec: {shown}", lambda: copy_launcher(run, libexec, updated))
    else:
        run.report("unchanged")


def copy_launcher(run: Run, libexec: Path, files: list[str]) -> None:
    for rel in files:
        put_file(run, (run.repo / "launcher" / rel).read_bytes(), libexec / rel, 0o644)
    sh(libexec.parent / "bin" / "python", "-I", "-m", "compileall", "-q", libexec, stdout=subprocess.DEVNULL)


def switch_current(run: Run) -> None:
    run.step("current runtime", f"check {FACTS['CURRENT_LINK']} by hand (ls -l), then re-run")
    current = run.layout.current
    previous = os.readlink(current) if current.is_symlink() else ""
    target = f"runtimes/{run.runtime_name}"
    if previous == target:
        run.report(f"current -> {target} (unchanged)")
    elif previous:
        run.apply(f"point current at {run.runtime_name}",
                  f"current runtime {previous.removeprefix('runtimes/')} -> {run.runtime_name} (previous kept for rollback)",
                  lambda: link_runtime(run, previous))
    else:
        run.apply(f"point current at {target}", f"current -> {target}", lambda: link_runtime(run, ""))


def link_runtime(run: Run, previous: str) -> None:
    if previous:
        make_link(run, previous, run.layout.previous)
    make_link(run, f"runtimes/{run.runtime_name}", run.layout.current)


