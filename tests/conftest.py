"""Test-session fixtures shared by every package: a real Mosquitto broker on a free loopback port, a state
folder of each test's own for the command-line tools' catalog pins, and a SoftHSM2 token store of a test's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from station.mosquitto import Mosquitto
from station.pin_folder import STATE_DIR_ENV
from tests.softhsm import SoftHsm

# No per-example deadline: these tests check what the code does, not how fast (benchmarks in bench/ measure speed),
# and on a shared two-core machine running brokers and stations beside them an example can take longer than
# hypothesis's default 200 ms for reasons that are not the code's: a deadline would make the suite flaky.
settings.register_profile("reflash", deadline=None)
settings.load_profile("reflash")


@pytest.fixture(autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes catalog pins into the home folder of whoever runs it (subprocesses inherit this too)."""
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path_factory.mktemp("state")))


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One broker for the session; tests keep apart by using their own station IDs."""
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture
def private_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of the test's own, which the test may stop and start (an outage)."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    """SoftHSM2 with its configuration and tokens in the test's folder (tests/softhsm.py)."""
    return SoftHsm.start(tmp_path / "softhsm", monkeypatch)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--hardware",
        action="store_true",
        help="also run tests marked `hardware`, against a real jig (REFLASH_HW_URL, e.g. /dev/ttyUSB0)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hardware"):
        return
    skip = pytest.mark.skip(reason="needs a real jig: run with --hardware and REFLASH_HW_URL")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)
