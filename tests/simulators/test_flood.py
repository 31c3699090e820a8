"""A hub that floods `A5 5A` at line rate (flood-sof@N): its session ends as a link timeout within the bounds a silent
hub gets (the flash fails with LINK_RETRIES_EXHAUSTED, its attempt ended by the timeout), while another slot on the
same event loop finishes its transfer and the loop stays responsive."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from drivers.errors import LinkError
from drivers.maintenance_port import SessionSettings
from drivers.url_jig import UrlJig
from firmware_catalog.image import UpgradeImage
from firmware_catalog.keys import write_keypair
from simulators.jig import SimJig
from station.flash import Ending
from station.outcome import JobReason, Outcome
from tests.flashing import flash_once

from .conftest import MANUFACTURER, MODEL, OLD_VERSION, QUICK

_T = TypeVar("_T")
FLOOD_AT = 16384
# What a LinkTimeout says (drivers/maintenance_port.py, drivers/transfer.py): no answer to a request, or no progress.
LINK_TIMEOUT = re.compile(r"no answer to [A-Z_]+ after|no progress past byte")
# A slot gives up after this many retransmission timeouts without progress: small, so the test is quick.
PATIENCE = dataclasses.replace(QUICK, reply_timeout_s=0.5, retries=2, max_stalls=2)


async def test_a_flooding_hub_is_a_link_timeout(make_jig: Callable[..., SimJig], image: UpgradeImage) -> None:
    jig = make_jig(f"flood-sof@{FLOOD_AT}", settings=PATIENCE)
    ending, observer = await flash_once(jig, image, link_retries=0)
    assert_link_timeout(ending)
    assert [a["result"] for a in observer.of("attempt")] == ["link_error"]
    assert jig.hub.held >= FLOOD_AT


def assert_link_timeout(ending: Ending) -> None:
    """The flash failed because its one attempt timed out (not because the link closed)."""
    assert (ending.outcome, ending.reason) == (Outcome.FAILED, JobReason.LINK_RETRIES_EXHAUSTED), ending
    assert LINK_TIMEOUT.search(ending.detail), ending.detail


class LoopLag:
    """Measures how late a 10 ms timer fires: the event loop's responsiveness."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - due)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.fixture
def tcp_hub(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> Iterator[Callable[[str, str], str]]:
    """Start `reflash sim hub --tcp` in its own process (at 3 Mbaud on its emulated UART); returns its URL."""
    _, public = write_keypair(key, tmp_path / "maker")
    hubs: list[subprocess.Popen[str]] = []

    def start(name: str, fault: str) -> str:
        n = len(hubs) + 1
        hub = subprocess.Popen(
            [sys.executable, "-c", "from station.cli import main; main()", "sim", "hub", "--tcp", "127.0.0.1:0",
             "--manufacturer", f"{MANUFACTURER:04X}", "--model", f"{MODEL:04X}", "--hardware", "0110",
             "--firmware", OLD_VERSION, "--chf-id", f"00-DB-12-34-56-78-90-{n:02X}",
             "--gpf-id", f"00-DB-12-34-56-78-91-{n:02X}", "--trust", f"{MANUFACTURER:04X}={public}",
             "--baud", "3000000", "--fault", fault, "--state", str(tmp_path / name)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        hubs.append(hub)
        assert hub.stdout is not None
        url = hub.stdout.readline().strip()
        assert url.startswith("tcp://"), url
        return url

    yield start
    for hub in hubs:
        hub.terminate()
        hub.wait(10)
        if hub.stdout is not None:
            hub.stdout.close()


async def _timed(call: Awaitable[_T]) -> tuple[float, _T | BaseException]:
    started = time.monotonic()
    try:
        result: _T | BaseException = await call
    except LinkError as exc:
        result = exc
    return time.monotonic() - started, result


async def test_a_flood_over_tcp_starves_no_other_slot(tcp_hub: Callable[[str, str], str], image: UpgradeImage) -> None:
    """Three hubs in their own processes over TCP: honest, silent and flooding from the same byte. The honest one is
    re-flashed; the flooding one fails as a link timeout no later than the silent one; the loop never lags 0.2 s."""
    urls = {name: tcp_hub(name, fault) for name, fault in
            (("honest", ""), ("silent", f"silent-after={FLOOD_AT}"), ("flood", f"flood-sof@{FLOOD_AT}"))}  # fmt: skip
    settings: SessionSettings = PATIENCE
    jigs = {name: UrlJig(url, settings) for name, url in urls.items()}
    try:
        with LoopLag() as lag:
            flashes = (flash_once(jig, image, link_retries=0) for jig in jigs.values())
            outcomes = await asyncio.gather(*map(_timed, flashes))
    finally:
        for jig in jigs.values():
            await jig.close()
    (_, honest), (silent_s, silent), (flood_s, flood) = outcomes
    assert not isinstance(honest, BaseException), honest
    assert (honest[0].outcome, honest[0].firmware_after) == (Outcome.REFLASHED, f"{image.file_version:08X}")
    assert not isinstance(silent, BaseException), silent
    assert_link_timeout(silent[0])
    assert not isinstance(flood, BaseException), flood
    assert_link_timeout(flood[0])
    # Normal bounds: a flood costs the slot no more time than silence does.
    assert flood_s <= silent_s + 1.0, (flood_s, silent_s)
    assert lag.worst < 0.2, lag.worst
