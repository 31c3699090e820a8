"""A `host:port` a station server listens on (`[web] listen`, `[metrics] listen`), and whether it is this machine only.

Both servers refuse an address other machines can reach unless it is protected (the page by TLS, the metrics not at
all), so both ask the same question the same way: a literal loopback address or `localhost`; no name is resolved.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback", "parse_listen"]


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` as (host, port); port 0 picks a free one. Raises ValueError."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be host:port (e.g. 127.0.0.1:8080, or [::1]:8080 for IPv6), got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only: `localhost`, 127.0.0.0/8 or ::1 (no name is resolved)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
