"""The plugin table opsctl reads (launcher/plugins.json, the one list of plugin slugs).

A checkout has it beside the launcher package; opsctl's own venv gets the package from install.sh
without it, so there the installed runtime's copy (libexec/plugins.json, the table the service
itself reads) is the one.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def table() -> dict[str, dict]:
    """slug -> {"module", "profiles", "risk"}; raises settings.ConfigRefused when neither exists."""
    from ops.from_launcher import settings

    from ops.from_launcher.layout import DEFAULT

    try:
        return settings.plugin_table()
    except settings.ConfigRefused:
        return settings.plugin_table(DEFAULT.current / "libexec" / settings.PLUGIN_TABLE.name)
