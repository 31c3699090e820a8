"""TCP jig controllers: a real loopback socket to the simulator's server."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import pytest

from drivers.transport import Transport
from drivers.transport_url import open_transport
from simulators.tcp_server import serve_tcp


async def echo(transport: Transport) -> None:
    while data := await transport.reader.read(65536):
        transport.writer.write(data)
        await transport.writer.drain()


@pytest.mark.parametrize("scheme", ["tcp", "socket"])
async def test_round_trip_on_a_free_loopback_port(scheme: str) -> None:
    async with await serve_tcp(echo) as server:
        transport = await open_transport(f"{scheme}://127.0.0.1:{server.port}")
        try:
            data = os.urandom(1024 * 1024)
            transport.writer.write(data)
            await transport.writer.drain()
            assert await asyncio.wait_for(transport.reader.readexactly(len(data)), 10) == data
        finally:
            await transport.close()


async def test_server_close_ends_the_connection_quietly(caplog: pytest.LogCaptureFixture) -> None:
    server = await serve_tcp(echo)
    transport = await open_transport(server.url)
    try:
        transport.writer.write(b"x")
        assert await transport.reader.readexactly(1) == b"x"
        await server.close()
        assert await asyncio.wait_for(transport.reader.read(), 5) == b""
    finally:
        await transport.close()
    await asyncio.sleep(0.01)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_refused_connection_names_the_address() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError, match=f"tcp 127.0.0.1:{port}"):
        await open_transport(f"tcp://127.0.0.1:{port}")
