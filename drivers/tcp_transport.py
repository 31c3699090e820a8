"""Jigs behind a networked controller, over TCP (`tcp://host:port`, or pyserial's spelling `socket://host:port`).

A plain asyncio stream connection: asyncio already turns Nagle's algorithm off on TCP stream sockets, which matters
because the protocol's acknowledgements are small and would otherwise wait for the peer's delayed ACK. Keepalive is
on so that a controller that vanishes without a FIN is noticed by the OS even when the protocol is quiet.
"""

from __future__ import annotations

import asyncio
import socket

from drivers.transport import Transport

__all__ = ["open_tcp"]

_READ_LIMIT = 1 << 20


async def open_tcp(host: str, port: int, *, connect_timeout: float = 10.0) -> Transport:
    """Connect to `host:port` and return the connection as a `Transport`.

    Raises `OSError` (refused, unreachable) or `TimeoutError` naming the address.
    """
    try:
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=_READ_LIMIT)
    except TimeoutError:
        raise TimeoutError(f"tcp {host}:{port}: no connection within {connect_timeout} s") from None
    except OSError as exc:
        raise OSError(exc.errno, f"tcp {host}:{port}: {exc.strerror or exc}") from exc
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return Transport(reader, writer, f"tcp {host}:{port}")
