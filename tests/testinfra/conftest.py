"""The deployed-host suite runs only against a host named with --hosts.

Without --hosts, pytest-testinfra would run it against the machine running pytest (a developer's
or CI's), which is not a deployed box: so it is not collected then. CI runs it inside the booted
box with --hosts=local:// (tests/test_box_testinfra.py).
"""


def pytest_ignore_collect(collection_path, config):
    if not config.getoption("hosts", default=None):
        return True
    return None
