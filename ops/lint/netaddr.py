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
