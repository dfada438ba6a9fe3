"""How a LiteLLM config routes model names, as far as this proxy is concerned.

An entry is routed to the proxy when its api_base is on loopback at the proxy's --port, and
back to LiteLLM itself when it is on loopback at --base-url's port. The proxy strips the
approach prefix and asks LiteLLM for the base model: that is an edge in the routing graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from ops.lint.netaddr import is_loopback_host, split_url
from ops.lint.optillm_facts import split_approaches

PROXY, LITELLM, OTHER = "proxy", "litellm", "other"


@dataclass(frozen=True)
class Route:
    name: str  # model_name clients ask LiteLLM for
    line: int
    target: str  # PROXY, LITELLM or OTHER
    sent: str  # model name sent to the target (provider prefix removed)
    approaches: tuple[str, ...]  # parsed by the proxy from `sent` (PROXY only)
    next_name: str | None  # the model name LiteLLM is asked for next, if any


def _loaded_slugs(ctx) -> tuple[str, ...]:
    enabled = ctx.enabled_plugins()
    if enabled is None or "*" in enabled[1]:
        return ctx.plugin_slugs
    return tuple(s for s in ctx.plugin_slugs if s in enabled[1])


def routes(ctx) -> list[Route]:
    cfg = ctx.litellm_config
    if cfg is None:
        return []
    entries = cfg.get("model_list")
    if not isinstance(entries, list):
        return []
    _, _, litellm_port = split_url(ctx.upstream_url)
    out: list[Route] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        params = entry.get("litellm_params")
        if not isinstance(params, dict):
            continue
        name = str(entry.get("model_name", ""))
        model = str(params.get("model", ""))
        sent = model.partition("/")[2] if "/" in model else model
        api_base = params.get("api_base") or params.get("base_url")
        target = OTHER
        if isinstance(api_base, str):
            _, host, port = split_url(api_base)
            if is_loopback_host(host) and port == ctx.proxy_port:
                target = PROXY
            elif is_loopback_host(host) and port == litellm_port:
                target = LITELLM
        approaches: tuple[str, ...] = ()
        next_name = None
        if target == PROXY:
            approaches = tuple(split_approaches(sent, ctx.plugin_slugs)[0])
            # What the running proxy strips: core approaches and only the plugins it loads.
            found, base = split_approaches(sent, _loaded_slugs(ctx))
            next_name = base if found else sent
        elif target == LITELLM:
            next_name = sent
        line = params.line_of("api_base") if target == PROXY and hasattr(params, "line_of") \
            else entries.line_of(i) if hasattr(entries, "line_of") else 0
        out.append(Route(name, line, target, sent, approaches, next_name))
    return out


def cycles(route_list: list[Route]) -> list[list[Route]]:
    """Every distinct routing cycle, each as the routes taken in order."""
    edges: dict[str, list[Route]] = {}
    for r in route_list:
        if r.next_name is not None:
            edges.setdefault(r.name, []).append(r)
    found: dict[frozenset, list[Route]] = {}

    def walk(start: str) -> None:
        # Iterative DFS bounded by the number of routes, so no input can recurse too deep.
        stack = [(start, [])]
        while stack:
            node, path = stack.pop()
            for r in edges.get(node, ()):
                if r in path:
                    continue
                new = path + [r]
                if r.next_name == start:
                    key = frozenset(id(x) for x in new)
                    found.setdefault(key, new)
                elif r.next_name not in {p.name for p in new} and len(new) < len(route_list):
                    stack.append((r.next_name, new))

    for start in sorted(edges):
        walk(start)
    return list(found.values())


def describe(cycle: list[Route]) -> str:
    parts = [cycle[0].name]
    for r in cycle:
        via = "proxy" if r.target == PROXY else "LiteLLM"
        parts.append(f"[{via}] {r.next_name}")
    return " -> ".join(parts)
