"""What lint must know about optillm 0.3.12 itself (from its server.py and plugins/)."""

from __future__ import annotations

# server.py `known_approaches`: core approaches, always available, never plugins.
CORE_APPROACHES = (
    "none", "mcts", "bon", "moa", "rto", "z3", "self_consistency", "pvg", "rstar",
    "cot_reflection", "plansearch", "leap", "re2", "cepo", "mars",
)
# SLUG of each bundled plugin (plugins/*_plugin.py); the runtime's libexec/plugins.json
# is preferred when present, this is the fallback.
PLUGIN_SLUGS = (
    "coc", "deep_research", "deepthink", "executecode", "genselect", "json", "longcepo",
    "majority_voting", "mcp", "memory", "privacy", "proxy", "readurls", "router", "spl",
    "web_search",
)
DEFAULT_PORT = 8000  # optillm's --port default


def split_approaches(model: str, plugin_slugs=PLUGIN_SLUGS) -> tuple[list[str], str]:
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
