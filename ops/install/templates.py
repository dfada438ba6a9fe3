"""The toolkit's *.in files with each @NAME@ replaced: layout.env's keys, ROOT and the exit codes;
and --uninstall, which runs uninstall.sh.in rendered afresh. Stdlib only (see options)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ops.from_launcher.layout import FACTS
from ops.install import options


def render(template: Path, root: str = "") -> str:
    """The template's text with one trailing newline."""
    values = dict(FACTS, ROOT=root, EXIT_STEP_FAILED=str(options.EXIT_STEP_FAILED),
                  EXIT_USAGE=str(options.EXIT_USAGE), EXIT_PREREQ=str(options.EXIT_PREREQ))
    text = template.read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    return text.rstrip("\n") + "\n"


def uninstall(opts: options.Options) -> int:
    """install.sh --uninstall runs what the installed uninstall script runs, rendered afresh."""
    if not opts.root and not opts.dry_run and os.geteuid() != 0:
        return options.fail("must run as root to uninstall: sudo ./install.sh --uninstall", options.EXIT_PREREQ)
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="optillm-proxy-uninstall-") as script:
        script.write(render(opts.checkout / "uninstall.sh.in", opts.root))
        script.flush()
        flags = [*(["--purge"] if opts.purge else []), *(["--dry-run"] if opts.dry_run else [])]
        sys.stdout.flush()
        return subprocess.run(["bash", script.name, *flags], check=False).returncode
