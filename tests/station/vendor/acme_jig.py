"""A jig vendor's driver as a vendor would ship it: this one module, and its entry point in
`acme_jig-1.0.dist-info/entry_points.txt` (`acme = acme_jig:AcmeJig` in the `reflash.jig_drivers` group).

The Acme jig speaks the maintenance port over a link of its own, which here is an in-memory line to a simulated hub:
the station sees only what any `JigDriver` shows it. A slot's options are `state_dir`, `identity` (a JSON file) and
`trusted_keys`, all paths, taken from the configuration file's folder when relative.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

from drivers.driver_options import ConfigPath, DriverOptions
from drivers.jig import MaintenancePortJig, OpenedLink
from firmware_catalog.keys import load_public_key
from simulators.hub import HubOptions, SimulatedHub, load_identity
from simulators.link import Link, LinkSettings

__all__ = ["AcmeJig", "AcmeOptions"]


class AcmeOptions(DriverOptions):
    url: str
    state_dir: ConfigPath
    identity: ConfigPath
    trusted_keys: dict[str, list[ConfigPath]]


class AcmeJig(MaintenancePortJig):
    options_model = AcmeOptions

    def __init__(self, hub: HubOptions, url: str) -> None:
        super().__init__(self._open)
        self.url = url
        self.hub = SimulatedHub(hub)
        self._serving: asyncio.Task[None] | None = None
        self._link: Link | None = None

    @classmethod
    def from_options(cls, options: AcmeOptions) -> Self:
        trusted = {int(maker, 16): [load_public_key(p) for p in paths] for maker, paths in options.trusted_keys.items()}
        identity = load_identity(options.identity)
        return cls(HubOptions(identity, options.state_dir, trusted, reboot_delay_s=0.0), options.url)

    async def _open(self) -> OpenedLink:
        await self._unplug()
        self._link = link = Link(LinkSettings())
        self._serving = asyncio.create_task(self.hub.serve(link.hub, link.hub_end), name=f"acme {self.url}")
        return OpenedLink(link.station, link.station_end)

    async def _unplug(self) -> None:
        if self._serving is not None:
            self._serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._serving
            self._serving = None
        if self._link is not None:
            self._link.cut()

    async def close(self) -> None:
        await super().close()
        await self._unplug()
