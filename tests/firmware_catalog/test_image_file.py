"""A hostile file where the catalog's image should be refuses that hub with a reason code, at once, reading
nothing it should not: a FIFO with no writer, a symlink to /dev/zero, a symlink out of the folder, a directory,
a file larger than the catalog's `size` for it. A symlink that stays inside the folder is followed."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_catalog.hub import HubIdentity
from firmware_catalog.image_file import ImageFileRefused, read_catalog_image
from firmware_catalog.policy import decide
from firmware_catalog.reason import ReasonCode
from tests.firmware_catalog.conftest import NOW, World

Hub = Callable[..., HubIdentity]
IMAGE = "images/121D-0000-01010000.bin"


@pytest.fixture
def built(world: World) -> World:
    world.image(version="01010000", upgrade_from=["01000000"])
    world.build()
    return world


def _replace(world: World, make: Callable[[Path], None]) -> None:
    path = world.root / "catalog" / IMAGE
    path.unlink()
    make(path)


def _decide_within(world: World, hub: Hub, seconds: float = 2.0) -> tuple[ReasonCode, str]:
    """decide() in a thread, so a blocking read fails the test instead of hanging it."""
    catalog = world.load()
    result: list[tuple[ReasonCode, str]] = []
    worker = threading.Thread(target=lambda: result.append(_code(decide(hub(), catalog, NOW))), daemon=True)
    worker.start()
    worker.join(seconds)
    assert result, f"decide() did not return within {seconds} s"
    return result[0]


def _code(decision: object) -> tuple[ReasonCode, str]:
    return decision.code, decision.message  # type: ignore[attr-defined]


def test_the_built_entry_records_the_file_size(built: World) -> None:
    (entry,) = built.load().document.entries
    assert entry.size == (built.root / "catalog" / IMAGE).stat().st_size


def test_a_fifo_is_refused_without_blocking(built: World, hub: Hub) -> None:
    _replace(built, lambda p: os.mkfifo(p))
    started = time.monotonic()
    code, message = _decide_within(built, hub)
    assert code is ReasonCode.IMAGE_MISSING
    assert "FIFO" in message
    assert time.monotonic() - started < 1.0


def test_a_symlink_to_dev_zero_is_refused_unread(built: World, hub: Hub) -> None:
    _replace(built, lambda p: p.symlink_to("/dev/zero"))
    code, message = _decide_within(built, hub)
    assert code is ReasonCode.IMAGE_MISSING
    assert "out of the catalog folder" in message


def test_a_device_inside_the_folder_is_refused(built: World, hub: Hub) -> None:
    # A character device node reached without leaving the folder (a bind of /dev would look like this).
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    _replace(built, lambda p: os.mknod(p, 0o600 | 0o020000, os.makedev(1, 5)))  # S_IFCHR, /dev/zero's numbers
    code, message = _decide_within(built, hub)
    assert (code, "character device" in message) == (ReasonCode.IMAGE_MISSING, True)


def test_a_symlink_out_of_the_folder_is_refused(built: World, hub: Hub, tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes((built.root / "catalog" / IMAGE).read_bytes())  # even the right bytes
    _replace(built, lambda p: p.symlink_to(outside))
    code, message = _decide_within(built, hub)
    assert code is ReasonCode.IMAGE_MISSING
    assert "out of the catalog folder" in message


def test_a_symlink_inside_the_folder_is_followed(built: World, hub: Hub) -> None:
    path = built.root / "catalog" / IMAGE
    path.rename(path.with_name("real.bin"))
    path.symlink_to("real.bin")
    assert _decide_within(built, hub)[0] is ReasonCode.OK


def test_a_directory_is_refused(built: World, hub: Hub) -> None:
    _replace(built, lambda p: p.mkdir())
    code, message = _decide_within(built, hub)
    assert code is ReasonCode.IMAGE_MISSING
    assert "directory" in message


def test_a_dangling_symlink_is_missing(built: World, hub: Hub) -> None:
    _replace(built, lambda p: p.symlink_to("nowhere.bin"))
    assert _decide_within(built, hub)[0] is ReasonCode.IMAGE_MISSING


def test_an_oversized_file_is_refused_unread(built: World, hub: Hub) -> None:
    path = built.root / "catalog" / IMAGE
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(1 << 40)  # a sparse terabyte: reading it would exhaust memory
    code, message = _decide_within(built, hub)
    assert code is ReasonCode.MALFORMED_IMAGE
    assert f"larger than the {size}-byte file" in message


def test_reads_stop_at_the_size(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 100)
    assert read_catalog_image(tmp_path, "a.bin", 100) == b"x" * 100
    assert read_catalog_image(tmp_path, "a.bin", 200) == b"x" * 100  # shorter: the parser says what is missing
    with pytest.raises(ImageFileRefused) as caught:
        read_catalog_image(tmp_path, "a.bin", 99)
    assert caught.value.code is ReasonCode.MALFORMED_IMAGE
