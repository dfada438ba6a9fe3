"""The runtime does not have optillm exactly 0.3.12 installed.

Why: every other rule, the launcher and the unit encode measured facts about 0.3.12 (flag
defaults, the sk- forwarding, the provider file lookup, --approach parsing). Another version
may differ in any of them, silently.

Fails:
    .../site-packages/optillm-0.3.13.dist-info/METADATA    (Version: 0.3.13)

Passes:
    .../site-packages/optillm-0.3.12.dist-info/METADATA    (Version: 0.3.12)

Fix: rebuild the runtime from the lock: `sudo ./install.sh` (an upgrade is a new runtime,
validated and switched atomically; `opsctl runtime rollback` returns to the previous one).
"""

from pathlib import Path

from ops.from_launcher import patches

from ops.from_launcher.layout import OPTILLM_VERSION
from ops.lint.finding import ERROR, Problem
from ops.lint.rules._launcher import refusal

ID = "optillm-version"
SEVERITY = ERROR


def check(ctx):
    rt = ctx.runtime
    if rt is None:
        return
    dist = rt.dists.get("optillm")
    if dist is None:
        yield Problem(str(rt.path), 0, f"optillm is not installed in this runtime; rebuild it "
                                       f"with install.sh (optillm=={OPTILLM_VERSION})")
    else:
        # The launcher's own check, naming the patch points that differ in this runtime's optillm.
        message = refusal(patches.check_version, dist.version, Path(dist.metadata).parent.parent)
        if message:
            yield Problem(dist.metadata, 0, message)
    declared = (rt.manifest or {}).get("optillm_version")
    if rt.manifest is not None and declared != OPTILLM_VERSION:
        yield Problem(str(rt.manifest_path), 1, f"manifest says optillm_version={declared!r}, "
                                                f"expected {OPTILLM_VERSION!r}; rebuild the runtime")
