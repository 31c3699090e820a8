"""Killing the simulator's process is a power cut: a new hub on the same state directory resumes the transfer."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from simulators.hub import HubOptions
from simulators.jig import SimJig
from station.outcome import Outcome
from tests.flashing import flash_once
from tests.simulators.conftest import FAST_LINK, QUICK, make_image

CHILD = textwrap.dedent(
    """
    import asyncio, dataclasses, json, sys
    from pathlib import Path
    from firmware_catalog.hub import HubIdentity
    from firmware_catalog.image import read_image
    from simulators.hub import HubOptions
    from simulators.jig import SimJig
    from simulators.link import LinkSettings

    async def main() -> None:
        state, image_path, identity = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
        hub = HubOptions(identity=HubIdentity(**identity), state_dir=Path(state), flash_bytes_per_s=100_000)
        jig = SimJig(hub, LinkSettings(baud=4_000_000))
        await jig.transfer(read_image(image_path))

    asyncio.run(main())
    """
)


async def test_killed_process_resumes_from_its_state_directory(
    tmp_path: Path, key: ec.EllipticCurvePrivateKey, hub_options: Callable[..., HubOptions]
) -> None:
    options = hub_options()
    image = make_image(key, os.urandom(400_000))
    image_path = tmp_path / "image.bin"
    image_path.write_bytes(image.raw)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(options.state_dir),
        str(image_path),
        options.identity.model_dump_json(exclude_none=True),
        cwd=Path(__file__).parents[2],
    )
    slot = options.state_dir / "slot-b.bin"
    try:
        for _ in range(600):
            if slot.exists() and slot.stat().st_size > 50_000:
                break
            await asyncio.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    held = slot.stat().st_size
    assert 50_000 < held < image.total_size

    jig = SimJig(options, FAST_LINK, QUICK)
    try:
        ending, observer = await flash_once(jig, image)
    finally:
        await jig.close()
    assert observer.of("transfer_ended")[0]["resumed_from"] == held
    assert (ending.outcome, ending.firmware_after) == (Outcome.REFLASHED, f"{image.file_version:08X}")
