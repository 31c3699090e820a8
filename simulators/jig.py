"""A simulated jig: one simulated hub on an emulated link, behind the same driver the real jigs use.

The jig powers the hub. When the hub has lost power (a `power-loss@N` fault), the next connection powers it up again
from its state directory, as an operator re-seating it would; `power_cycle()` does the same on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from drivers.jig import MaintenancePortJig, OpenedLink
from drivers.maintenance_port import SessionSettings
from firmware_catalog.hub import HubIdentity
from firmware_catalog.keys import load_public_key
from simulators.fault import Faults, parse_faults
from simulators.hub import HubOptions, SimulatedHub, load_identity
from simulators.link import Link, LinkSettings

__all__ = ["SimJig"]


class SimJig(MaintenancePortJig):
    """The `sim` driver: `MaintenancePortJig` over an in-memory link to a `SimulatedHub`."""

    def __init__(
        self,
        hub: HubOptions,
        link: LinkSettings | None = None,
        settings: SessionSettings | None = None,
        baud: int | None = None,
        swap_to: HubOptions | None = None,
    ) -> None:
        super().__init__(self._open, settings, baud)
        self.hub_options = hub
        self.link_settings = link or LinkSettings()
        self.line_baud = self.settings.line_baud or self.link_settings.baud
        self.hub = SimulatedHub(hub)
        self.swap_to = swap_to
        # The hubs taken off the jig by a swap, first first.
        self.swapped_out: list[SimulatedHub] = []
        self.links: list[Link] = []
        self._serving: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> SimJig:
        """Keys: state_dir (required), identity (file) or manufacturer/model/hardware/firmware/chf_id/gpf_id,
        trusted_keys ({manufacturer: [public key files]}: what the hub's own signature check accepts), fault, baud,
        latency_ms, reboot_delay_s, and swap_to: a table with its own state_dir and identity (or identity keys),
        optionally trusted_keys, fault and reboot_delay_s (the rest from the first hub), for the hub put on the jig
        when the first one's `swap@N` fault fires. `url` (every slot has one) is ignored: the link is in memory."""
        hub = _hub_options(options, None)
        swap_to = _hub_options(dict(options["swap_to"]), hub) if "swap_to" in options else None
        latency = float(options.get("latency_ms", 1)) / 1000
        link = LinkSettings(
            baud=int(options.get("baud", 921_600)), latency_to_hub_s=latency, latency_to_station_s=latency
        )
        return cls(hub, link, swap_to=swap_to)

    @property
    def bytes_to_hub(self) -> int:
        """Every byte the station has written to the hub, over every link this jig has opened."""
        return sum(link.station_end.bytes_written for link in self.links)

    async def power_cycle(self, faults: Faults | None = None) -> None:
        """Cut the hub's power and restore it, from its state directory; optionally with different faults."""
        await self._drop()
        await self._stop_serving()
        if faults is not None:
            self.hub_options = replace(self.hub_options, faults=faults)
        self.hub = SimulatedHub(self.hub_options)

    async def _stop_serving(self) -> None:
        if self._serving is not None:
            self._serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._serving
            self._serving = None
        for link in self.links:
            link.cut()

    async def _open(self) -> OpenedLink:
        await self._stop_serving()
        if self.hub.swapped and self.swap_to is not None:
            self.swapped_out.append(self.hub)
            self.hub_options, self.swap_to = self.swap_to, None
            self.hub = SimulatedHub(self.hub_options)
        elif not self.hub.powered:
            self.hub = SimulatedHub(self.hub_options)
        link = Link(self.link_settings)
        self.links.append(link)
        self._serving = asyncio.create_task(self.hub.serve(link.hub, link.hub_end), name="simulated hub")
        return OpenedLink(link.station, link.station_end)

    async def close(self) -> None:
        await super().close()
        await self._stop_serving()


def _hub_options(options: Mapping[str, Any], base: HubOptions | None) -> HubOptions:
    if "identity" in options:
        identity = load_identity(options["identity"])
    else:
        identity = HubIdentity(
            manufacturer=options.get("manufacturer", "1072"),
            model=options.get("model", "0102"),
            hardware_version=options.get("hardware", "0100"),
            firmware_version=options.get("firmware", "04000007"),
            chf_id=options.get("chf_id"),
            gpf_id=options.get("gpf_id"),
        )
    if "trusted_keys" in options or base is None:
        trusted: Mapping[int, Sequence[ec.EllipticCurvePublicKey]] = {
            int(manufacturer, 16): [load_public_key(path) for path in paths]
            for manufacturer, paths in dict(options.get("trusted_keys", {})).items()
        }
    else:
        trusted = base.trusted_keys
    default_delay = base.reboot_delay_s if base is not None else 0.5
    return HubOptions(
        identity=identity,
        state_dir=Path(options["state_dir"]),
        trusted_keys=trusted,
        faults=parse_faults(str(options.get("fault", ""))),
        reboot_delay_s=float(options.get("reboot_delay_s", default_delay)),
    )
