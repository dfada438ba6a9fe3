"""Shared test wiring. Fixtures live in tests/fixtures/, one module per real part.

Real parts (optillm from the lock, the booted box, LiteLLM) are never skipped: a missing
prerequisite fails the test with a message naming it. Deselect them locally with
`-m "not box"` etc. if you must; CI runs everything.
"""

pytest_plugins = [
    "tests.fixtures.upstream",
    "tests.fixtures.runtime",
    "tests.fixtures.litellm",
    "tests.fixtures.box",
    "tests.fixtures.fleet",
]
