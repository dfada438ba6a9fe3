"""What lint must know about optillm 0.3.12 itself (from its server.py and plugins/).

The facts live with the launcher, which verifies them against 0.3.12 at start: the core
approaches in optillm_proxy_launcher.settings, the plugin slugs in launcher/plugins.json (the
runtime's copy when lint checks one: Context.plugin_table)."""

from __future__ import annotations

from ops.from_launcher import settings

# server.py `known_approaches`: core approaches, always available, never plugins.
CORE_APPROACHES = ("none", *settings.CORE_APPROACHES)


def split_approaches(model: str, plugin_slugs) -> tuple[list[str], str]:
    """(approaches, base model) as server.py parse_combined_approach splits a model name."""
    known = set(CORE_APPROACHES) | set(plugin_slugs)
    approaches: list[str] = []
    rest: list[str] = []
    parsing = True
    for part in model.split("-"):
        if parsing and part in known:
            approaches.append(part)
        elif parsing and "&" in part:
            approaches.extend(part.split("&"))
        elif parsing and "|" in part:
            approaches.extend(part.split("|"))
        else:
            parsing = False
            rest.append(part)
    return approaches, "-".join(rest)
