"""The `sim` jig driver: one simulated hub on an emulated link, behind the same driver the real jigs use.

Registered as `sim` in the `reflash.jig_drivers` entry-point group (pyproject.toml), so the station imports it only
when a slot names it; its slot options are `SimJigOptions`.

The jig powers the hub. When the hub has lost power (a `power-loss@N` fault), the next connection powers it up again
from its state directory, as an operator re-seating it would; `power_cycle()` does the same on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Self

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field

from drivers.driver_options import ConfigPath, DriverOptions
from drivers.jig import MaintenancePortJig, OpenedLink
from drivers.maintenance_port import SessionSettings
from firmware_catalog.hub import HubIdentity
from firmware_catalog.keys import load_public_key
from firmware_catalog.signature_scope import DEFAULT_SCOPE, SignatureScope
from simulators.fault import Faults, parse_faults
from simulators.hub import HubOptions, SimulatedHub, load_identity
from simulators.link import Link, LinkSettings

__all__ = ["SimHubTable", "SimJig", "SimJigOptions"]


class SimHubTable(BaseModel):
    """One simulated hub in a `sim` slot's table: where it keeps its state, who it is, what it trusts, its faults.

    The identity is a file (`identity`, the JSON of `reflash jig identify --json`) or the keys manufacturer, model,
    hardware, firmware, chf_id, gpf_id. `trusted_keys` maps a manufacturer code to public key files: what the hub's
    own signature check accepts, and `signature_scope` which bytes those signatures cover (the hub follows its
    manufacturer; docs/simulator.md). Relative paths are taken from the configuration file's folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state_dir: ConfigPath
    identity: ConfigPath | None = None
    manufacturer: str = "1072"
    model: str = "0102"
    hardware: str = "0100"
    firmware: str = "04000007"
    chf_id: str | None = None
    gpf_id: str | None = None
    # None: the first hub's (for `swap_to`), or none at all.
    trusted_keys: dict[str, list[ConfigPath]] | None = None
    # None: the first hub's (for `swap_to`), or the default scope.
    signature_scope: SignatureScope | None = None
    fault: str = ""
    # None: the first hub's (for `swap_to`), or 0.5 s.
    reboot_delay_s: float | None = Field(default=None, ge=0)


class SimJigOptions(SimHubTable, DriverOptions):
    """A `sim` slot's table: the hub, the emulated line (`baud`, `latency_ms` each way), and `swap_to`, the hub put on
    the jig when the first one's `swap@N` fault fires (the keys it leaves out are the first hub's). `url` (every slot
    has one) is ignored: the link is in memory."""

    baud: int = Field(default=921_600, gt=0)
    latency_ms: float = Field(default=1, ge=0)
    swap_to: SimHubTable | None = None


class SimJig(MaintenancePortJig):
    """The `sim` driver: `MaintenancePortJig` over an in-memory link to a `SimulatedHub`."""

    options_model = SimJigOptions

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
    def from_options(cls, options: SimJigOptions) -> Self:
        hub = _hub_options(options, None)
        swap_to = _hub_options(options.swap_to, hub) if options.swap_to is not None else None
        latency = options.latency_ms / 1000
        link = LinkSettings(baud=options.baud, latency_to_hub_s=latency, latency_to_station_s=latency)
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


def _hub_options(table: SimHubTable, base: HubOptions | None) -> HubOptions:
    if table.identity is not None:
        identity = load_identity(table.identity)
    else:
        identity = HubIdentity(
            manufacturer=table.manufacturer,
            model=table.model,
            hardware_version=table.hardware,
            firmware_version=table.firmware,
            chf_id=table.chf_id,
            gpf_id=table.gpf_id,
        )
    if table.trusted_keys is not None or base is None:
        trusted: Mapping[int, Sequence[ec.EllipticCurvePublicKey]] = {
            int(manufacturer, 16): [load_public_key(path) for path in paths]
            for manufacturer, paths in (table.trusted_keys or {}).items()
        }
    else:
        trusted = base.trusted_keys
    if table.signature_scope is not None:
        scope = table.signature_scope
    else:
        scope = base.signature_scope if base is not None else DEFAULT_SCOPE
    if table.reboot_delay_s is not None:
        reboot_delay_s = table.reboot_delay_s
    else:
        reboot_delay_s = base.reboot_delay_s if base is not None else 0.5
    return HubOptions(
        identity=identity,
        state_dir=table.state_dir,
        trusted_keys=trusted,
        signature_scope=scope,
        faults=parse_faults(table.fault),
        reboot_delay_s=reboot_delay_s,
    )
