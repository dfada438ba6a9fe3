"""What the probe tests share: a hermetic key source, MockTransport routing (smoke), a stand-in for
health's GET, a CLI runner that fails on any traceback, and the dev venv's opsctl for subprocess runs."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

import ops.probes.client
import ops.probes.unit_state
from ops.cli import cli
from ops.from_launcher.layout import Layout


@pytest.fixture(autouse=True)
def hermetic(monkeypatch, tmp_path):
    """Never read the host's key file, env file, environment or systemd units."""
    monkeypatch.setattr(ops.probes.client, "DEFAULT", Layout(tmp_path / "root"))
    monkeypatch.delenv("OPSCTL_API_KEY", raising=False)
    monkeypatch.setattr(ops.probes.unit_state, "_run", raising(OSError("no systemd in a unit test")))


@pytest.fixture
def release():
    """An event hanging handlers wait on; set at teardown so no worker thread outlives the test."""
    event = threading.Event()
    yield event
    event.set()


def raising(exc: Exception):
    """A MockTransport handler (or a use_fetch fetch) that fails the way the network (or a bug) would."""
    def handler(*_request) -> httpx.Response:
        raise exc
    return handler


def use_transport(monkeypatch, handler) -> list[httpx.Request]:
    """Route the CLI's client through a MockTransport; returns the requests it saw."""
    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    real = ops.probes.client.make_client
    monkeypatch.setattr(ops.probes.client, "make_client",
                        lambda url, timeout, transport=None: real(url, timeout, httpx.MockTransport(recording)))
    return seen


def use_fetch(monkeypatch, fetch) -> list[tuple[str, dict]]:
    """Answer `opsctl health`'s GETs with `fetch(path, headers) -> Answer` (or its exception);
    returns the (path, headers) it saw. The real GET is tested against real sockets."""
    import ops.probes.health

    seen: list[tuple[str, dict]] = []

    def get(base_url, path, headers=None, timeout=5.0):
        seen.append((path, dict(headers or {})))
        return fetch(path, headers or {})

    monkeypatch.setattr(ops.probes.health, "get", get)
    return seen


def run_cli(command: str, *args: str, env: dict | None = None):
    result = CliRunner().invoke(cli, [command, *args], env=env)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def opsctl_bin() -> str:
    """The checkout's opsctl console script (uv installs it into the dev venv), run as a subprocess."""
    path = Path(sys.executable).parent / "opsctl"
    if not path.exists():
        pytest.fail(f"{path} missing: run the tests with `uv run pytest` from the checkout (uv installs opsctl)")
    return str(path)
