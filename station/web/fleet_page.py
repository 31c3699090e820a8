"""The fleet page (/fleet), beside the bench page: every station the site broker knows, as `reflash fleet status`
shows it (station/fleet.py's `FleetView`, one model for both). Read from the broker named in `[fleet]` on each
request: a few retained messages, so the page is as fresh as its last reload and keeps nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from station.config import FleetConfig
from station.fleet import FleetError, FleetView, client_settings, collect

__all__ = ["FleetSource", "fleet_endpoint"]


class FleetSource:
    """Where the page reads the fleet: the `[fleet]` broker and account."""

    def __init__(self, config: FleetConfig, resolve: Callable[[Path], Path]) -> None:
        self.config = config
        self._ca = str(resolve(config.ca)) if config.ca is not None else None

    async def view(self, timeout_s: float = 5.0) -> FleetView:
        """The fleet now; FleetError when the broker cannot be read (the page says why)."""
        fleet = self.config
        settings = client_settings(fleet.broker, username=fleet.username, ca=self._ca, password_env=fleet.password_env)
        return await collect(fleet.broker, settings, timeout_s=timeout_s)


def fleet_endpoint(
    source: Callable[[], FleetSource | None],
    html: Callable[..., HTMLResponse],
    signed_in: Callable[[Request], Any],
) -> Callable[[Request], Awaitable[Response]]:
    """GET /fleet for a signed-in operator (any role): the fleet table, or why there is none."""

    async def fleet(request: Request) -> Response:
        session = signed_in(request)
        if session is None:
            return RedirectResponse("/sign-in", 303)
        where = source()
        if where is None:
            return html("fleet.html", 404, session=session, view=None, error="no [fleet] broker is configured")
        try:
            view = await where.view()
        except FleetError as exc:
            return html("fleet.html", 502, session=session, view=None, error=str(exc), broker=where.config.broker)
        return html("fleet.html", session=session, view=view, error=None, broker=where.config.broker)

    return fleet
