"""The runtime's optillm/server.py is not 0.3.12's where the launcher patches it.

Why: the launcher changes optillm 0.3.12 in memory at documented points (load_plugins,
get_config, OpenAI, the Flask app) and relies on what the surrounding functions do, on the
bundled plugins' SLUGs, on openai's Completions.create parameters and on werkzeug's server
(patches.POINTS). At start it compares each with the pinned version's fingerprints
(patches.FINGERPRINTS) and refuses to start (exit 78) when one differs, so a hand-edited or
otherwise changed runtime takes the service down at its next restart. Lint calls the launcher's
own check (optillm_proxy_launcher.patches.verify_source). A runtime without optillm, or with
another version, is left to optillm-version.

Fails:
    .../site-packages/optillm/server.py    (check_api_key edited by hand)

Passes:
    .../site-packages/optillm/server.py    (as optillm 0.3.12's wheel installs it)

Fix: rebuild the runtime from the lock: `sudo ./install.sh` (never edit or pip-install into a
runtime by hand; `opsctl runtime rollback` returns to the previous one meanwhile).
"""

from pathlib import Path

from ops.from_launcher import patches, settings

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._launcher import REFUSES

ID = "optillm-internals"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable


def check(ctx):
    rt = ctx.runtime
    if rt is None:
        return
    dist = rt.dists.get("optillm")
    if dist is None or dist.version != patches.OPTILLM_VERSION:
        return  # optillm-version reports it
    package = Path(dist.metadata).parent.parent / "optillm"  # beside optillm-*.dist-info
    if not package.is_dir():
        return  # only the metadata (a stub tree such as lint's test runtimes): nothing to verify
    server = package / "server.py"
    try:
        patches.verify_source(server, dist.version)
    except settings.ConfigRefused as exc:
        yield Problem(str(server), 0, REFUSES + str(exc))
