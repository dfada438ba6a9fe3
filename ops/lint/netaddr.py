"""Loopback tests for hosts and URLs as lint needs them."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_url(url: str) -> tuple[str, str | None, int | None]:
    """(scheme, host, port) with the scheme's default port; host None if unparsable."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        host = parts.hostname
    except ValueError:
        return "", None, None
    scheme = parts.scheme.lower()
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, host, port


def is_loopback_url(url: str) -> bool:
    scheme, host, _ = split_url(url)
    return scheme in ("http", "https") and is_loopback_host(host)


def listen_stream_address(value: str) -> tuple[str, int] | None:
    """The (host, port) a socket bound for `ListenStream=VALUE` reports (getsockname), as systemd
    binds it: `ADDR:PORT`, `[ADDR6]:PORT`, or a bare port (IPv6 dual-stack, '::'); None for what
    is not a TCP address (a path, `vsock:`, ...)."""
    text = value.strip()
    if text.isdigit():
        return "::", int(text)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(host)), int(port)
    except ValueError:
        return None
