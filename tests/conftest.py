"""Shared test wiring. Fixtures live in tests/fixtures/, one module per real part.

Real parts (optillm from the lock, the booted box, LiteLLM) are never skipped: a missing
prerequisite fails the test with a message naming it. CI (scripts/test.sh) runs every test.

Tiers, for developers (README, "Test tiers"): a test is marked by what it needs (markers in
pyproject.toml). `real` is set here on every test that uses a fixture building an optillm runtime
from a lock, so a test cannot forget it; a test needing none of `NEEDS` gets `fast`:
`uv run --frozen pytest -m fast` runs as any user, offline, in under a minute.
"""

import pytest

pytest_plugins = [
    "tests.fixtures.upstream",
    "tests.fixtures.runtime",
    "tests.fixtures.litellm",
    "tests.fixtures.box",
]

# Markers that take a test out of the fast tier (each registered in pyproject.toml).
NEEDS = ("real", "box", "chain")

# Fixtures that build (or reuse) an optillm runtime venv from locks/*.txt: the 8.7 GB full
# profile or the lean one, via uv from its cache or PyPI. `staged` runs install.sh --root, which
# builds one (tests/test_install.py, tests/lint/test_shipped.py).
RUNTIME_FIXTURES = frozenset({"full_runtime", "lean_runtime", "staged"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if RUNTIME_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.real)
        if not any(item.get_closest_marker(name) for name in NEEDS):
            item.add_marker(pytest.mark.fast)
