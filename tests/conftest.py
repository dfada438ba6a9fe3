"""Shared test wiring. Fixtures live in tests/fixtures/, one module per real part.

Real parts (optillm from the lock, the booted box, LiteLLM) are never skipped: a missing
prerequisite fails the test with a message naming it. CI (scripts/test.sh) runs every test.

Tiers, for developers (README, "Test tiers"): a test is marked by what it needs (markers in
pyproject.toml). Set here from the fixtures a test uses, so it cannot forget them: `real` for a
venv built from a lock (an optillm runtime, or LiteLLM's, which is `chain` too), `box` for the
booted box or its ports. A test with none of the other markers gets `fast`: `uv run --frozen
pytest -m fast` runs as any user, offline, in under a minute. A slower marker on a test that needs
neither a box nor such a venv is refused, so `-m "not box and not real"` is the fast tier.
"""

import pytest

pytest_plugins = [
    "tests.fixtures.upstream",
    "tests.fixtures.runtime",
    "tests.fixtures.litellm",
    "tests.fixtures.box",
    "tests.fixtures.fleet",
]

# Fixtures that build (or reuse) an optillm runtime venv from locks/py<X.Y>/*.txt: the 8.7 GB full
# profile or the lean one, via uv from its cache or PyPI. `staged` runs install.sh --root, which
# builds one (tests/test_install.py, tests/lint/test_shipped.py).
RUNTIME_FIXTURES = frozenset({"full_runtime", "lean_runtime", "staged"})
# Fixtures that build (or reuse) LiteLLM's venv from locks/litellm.txt (bench/litellm_start.py's
# test needs it and no runtime).
LITELLM_FIXTURES = frozenset({"litellm_venv", "litellm_factory"})
# Fixtures that boot the box or hold its ports (a test reaching one is a box test, marked or not).
BOX_FIXTURES = frozenset({"box", "box_ports", "box_upstream", "fleet"})


def needs(config) -> set[str]:
    """Every marker pyproject.toml registers names something a test needs, but `fast` itself: a
    marker added there (a test needing two boxes, say) takes its tests out of the fast tier."""
    return {line.split(":", 1)[0].strip() for line in config.getini("markers")} - {"fast"}


def pytest_collection_modifyitems(config, items):
    slow = needs(config)
    for item in items:
        if (RUNTIME_FIXTURES | LITELLM_FIXTURES) & set(item.fixturenames):
            item.add_marker(pytest.mark.real)  # a venv built from a lock: uv, the test cache, else PyPI
        if LITELLM_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.chain)
        if BOX_FIXTURES & set(item.fixturenames) or item.get_closest_marker("fleet"):
            item.add_marker(pytest.mark.box)  # two booted boxes are boxes: `-m "not box"` leaves them out
        if not any(item.get_closest_marker(name) for name in slow):
            item.add_marker(pytest.mark.fast)
        elif not (item.get_closest_marker("box") or item.get_closest_marker("real")):
            # `-m "not box and not real"` is the fast tier by construction: every slower test needs
            # a box or a venv built from a lock (a chain test with neither reads only files, and
            # belongs in fast).
            raise pytest.UsageError(f"{item.nodeid}: marked {[m.name for m in item.iter_markers()]} but needs "
                                    "neither a box, a runtime nor LiteLLM: drop the marker (it is a fast test)")
