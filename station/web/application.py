"""The Starlette application of the bench page and its API (docs/bench-page.md).

Two doors, one set of actions (`BenchActions`) and roles:

- the page: an operator signs in with id and PIN; a server-side session (`SessionBook`) behind an HttpOnly,
  SameSite=Strict cookie (Secure over TLS); every state-changing request carries the session's CSRF token;
- the API (`/api/v1/...`): a line controller sends `Authorization: Bearer TOKEN` (`reflash tokens add`); a bearer
  token is not sent by a browser on its own, so the API needs no CSRF token.

Both see the bench live through server-sent events fed by `LiveState.subscribe()`. Every response carries a strict
Content-Security-Policy (scripts and styles only from the station itself, no inline script), X-Frame-Options DENY,
nosniff and no-referrer.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from firmware_catalog.reason import RULES
from station.live_state import LiveState, StationSnapshot
from station.outcome import JOB_REASONS
from station.slot import SlotSnapshot
from station.store import SignInRefused, Store, StoreError
from station.web.bench_actions import ActionResult, BenchActions, Principal
from station.web.fleet_page import FleetSource, fleet_endpoint
from station.web.openapi import API_ROUTES, DispatchRequest, ReleaseRequest, ScanInRequest
from station.web.order_view import current_order, open_orders, order_glance
from station.web.sessions import SessionBook

__all__ = ["REASON_WORDS", "BenchPage", "build_app"]

HERE = Path(__file__).parent
SESSION_COOKIE = "reflash_session"
SIGN_IN_COOKIE = "reflash_sign_in"  # the sign-in form's CSRF token, before there is a session (double submit)
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

# Reason codes in words: the job's own (station/outcome.py) and the policy's (firmware_catalog/reason.py).
REASON_WORDS: dict[str, str] = {
    **{rule.code.value: rule.when for rule in RULES},
    **{code.value: meaning for code, (_, meaning) in JOB_REASONS.items()},
}
OUTCOME_ICONS = {
    "REFLASHED": "✔",
    "ALREADY_CURRENT": "✔",
    "REFUSED": "✖",
    "FAILED": "✖",
    "QUARANTINED": "⚠",
    "SCRAP": "✖",
    "UNEXPECTED": "?",
}


@dataclass
class BenchPage:
    """What the page and the API read and act on: the station's live state, its store, its actions."""

    live: LiveState
    store: Store
    actions: BenchActions
    station: str
    tls: bool
    sessions: SessionBook
    closing: bool = False
    order_version: int = 0  # bumped by every action, so that the order glance is read again
    # The station's Prometheus registry (station/metrics.py), served at /metrics to a bearer of an API token.
    metrics: CollectorRegistry | None = None
    # The serial of the catalog in force (None when there is none), shown on the page.
    catalog_serial: Callable[[], int | None] = lambda: None
    pin_checks: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    # Where /fleet reads every station's status (`[fleet]`); None: the page says none is configured.
    fleet: FleetSource | None = None

    def close(self) -> None:
        """The station stops: every event stream ends at its next wake (woken now)."""
        self.closing = True
        self.live.changed()


def _slot_json(slot: SlotSnapshot) -> dict[str, Any]:
    data = slot.model_dump(mode="json")
    data["last_reason_text"] = REASON_WORDS.get(slot.last_reason or "", "")
    data["last_icon"] = OUTCOME_ICONS.get(slot.last_outcome.value if slot.last_outcome else "", "")
    return data


def _order_or_none(store: Store, ref: str | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    try:
        return order_glance(store, ref)
    except StoreError:
        return None


def build_app(page: BenchPage) -> Starlette:
    templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    templates.globals["reason_words"] = REASON_WORDS
    templates.globals["outcome_icons"] = OUTCOME_ICONS

    def html(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(templates.get_template(name).render(station=page.station, **context), status)

    def session_of(request: Request) -> Any:
        session = page.sessions.find(request.cookies.get(SESSION_COOKIE))
        if session is not None and not page.store.roster.on_roster(session.operator):
            page.sessions.close(session.id)  # removed with `reflash operators remove`: signed out at once
            return None
        return session

    def token_principal(request: Request) -> Principal | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        found = page.store.roster.token(token.strip())
        return None if found is None else Principal(found.name, found.role, "token")

    def csrf_ok(request: Request, sent: str | None) -> bool:
        session = session_of(request)
        return session is not None and sent is not None and hmac.compare_digest(session.csrf, sent)

    # -- metrics ----------------------------------------------------------------------------------------------------

    async def metrics(request: Request) -> Response:
        """The station's metrics for Prometheus (`authorization: {type: Bearer}` in its scrape config): the page's
        server may face the network, and the metrics say what the bench does, so a token is needed here, as for the
        API. `[metrics] listen` serves them without one, on loopback only."""
        if token_principal(request) is None:
            return PlainTextResponse("an API token is needed (Authorization: Bearer)\n", 401,
                                     headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        assert page.metrics is not None
        return Response(generate_latest(page.metrics), media_type=CONTENT_TYPE_LATEST)

    # -- the page -------------------------------------------------------------------------------------------------

    async def sign_in_form(request: Request) -> Response:
        token = secrets.token_urlsafe(32)
        ended = request.query_params.get("ended") == "1"
        response = html("sign_in.html", csrf=token, error=None,
                        notice="Your session has ended: sign in again." if ended else None)  # fmt: skip
        _set_cookie(response, SIGN_IN_COOKIE, token, page.tls, max_age=600)
        return response

    async def sign_in(request: Request) -> Response:
        form = await request.form()
        operator, pin, sent = (str(form.get(k, "")) for k in ("operator", "pin", "csrf"))
        cookie = request.cookies.get(SIGN_IN_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, sent):
            return html("sign_in.html", 403, csrf=cookie, error="the form expired: sign in again")
        try:
            attempt = page.store.roster.begin_sign_in(operator.strip())
            # scrypt takes ~50 ms and 16 MiB: on a worker thread, two at a time, so that the bench page and the
            # station's loop stay responsive however many sign-ins arrive together.
            async with page.pin_checks:
                matched = await asyncio.to_thread(attempt.pin_matches, pin)
            who = page.store.roster.finish_sign_in(attempt, matched)
        except (SignInRefused, StoreError) as exc:
            return html("sign_in.html", 401, csrf=cookie, error=str(exc))
        session = page.sessions.open(who.id, who.role)
        response = RedirectResponse("/", 303)
        _set_cookie(response, SESSION_COOKIE, session.id, page.tls)
        response.delete_cookie(SIGN_IN_COOKIE)
        return response

    async def whoami(request: Request) -> Response:
        """Whether this browser is still signed in: the page asks when its event stream is refused, to tell a
        station it has lost from a session that has ended (a restart, the idle limit, a removed operator)."""
        session = session_of(request)
        if session is None:
            return JSONResponse({"ok": False, "message": "signed out"}, 401)
        return JSONResponse({"ok": True, "operator": session.operator, "role": session.role.value},
                            headers={"Cache-Control": "no-store"})  # fmt: skip

    async def sign_out(request: Request) -> Response:
        form = await request.form()
        if not csrf_ok(request, str(form.get("csrf", ""))):
            return JSONResponse({"ok": False, "message": "missing or wrong CSRF token"}, 403)
        page.sessions.close(request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/sign-in", 303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def bench(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return RedirectResponse("/sign-in", 303)
        snapshot = page.live.snapshot()
        ref = current_order(page.store, request.query_params.get("order"))
        return html("bench.html", session=session, slots=[_slot_json(s) for s in snapshot.slots],
                    snapshot=snapshot.model_dump(mode="json"), order=_order_or_none(page.store, ref),
                    open_orders=open_orders(page.store), catalog_serial=page.catalog_serial(),
                    fleet=page.fleet is not None)  # fmt: skip

    def page_action(act: Callable[[Principal, dict[str, str]], ActionResult]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            session = session_of(request)
            if session is None:
                return JSONResponse({"ok": False, "result": "signed_out", "message": "sign in again"}, 401)
            form = {k: str(v) for k, v in (await request.form()).items()}
            if not csrf_ok(request, request.headers.get("x-csrf-token") or form.get("csrf")):
                return JSONResponse({"ok": False, "result": "forbidden", "message": "missing or wrong CSRF token"},
                                    403)  # fmt: skip
            result = act(Principal(session.operator, session.role, "page"), form)
            return _answer(result)

        return endpoint

    # -- the API --------------------------------------------------------------------------------------------------

    def api(needs_body: type[BaseModel] | None, act: Callable[[Principal, Any], Response]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            who = token_principal(request)
            if who is None:
                return JSONResponse({"ok": False, "message": "a valid API token is needed (Authorization: Bearer)"},
                                    401, headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
            body: Any = request
            if needs_body is not None:
                try:
                    body = needs_body.model_validate_json(await request.body())
                except ValueError as exc:
                    return JSONResponse({"ok": False, "result": "misread", "message": str(exc)}, 422)
            return act(who, body)

        return endpoint

    def api_slots(who: Principal, request: Request) -> Response:
        """List every slot of the bench and what it is doing."""
        return JSONResponse({"station": page.station, "slots": [_slot_json(s) for s in page.live.snapshot().slots]})

    def api_order(who: Principal, request: Request) -> Response:
        """One order at a glance: hubs asked for, received, done by outcome, dispatched, missing."""
        glance = _order_or_none(page.store, request.path_params["ref"])
        if glance is None:
            return JSONResponse({"ok": False, "message": "no such order"}, 404)
        return JSONResponse(glance)

    def api_scan_in(who: Principal, body: ScanInRequest) -> Response:
        return _answer(page.actions.scan_in(who, body.chf_id, body.order_ref))

    def api_dispatch(who: Principal, body: DispatchRequest) -> Response:
        return _answer(page.actions.dispatch(who, body.chf_id, body.order_ref))

    def api_close(who: Principal, request: Request) -> Response:
        return _answer(page.actions.close_order(who, request.path_params["ref"]))

    def api_release(who: Principal, body: ReleaseRequest) -> Response:
        return _answer(page.actions.release(who, body.chf_id))

    def api_reload_catalog(who: Principal, request: Request) -> Response:
        return _answer(page.actions.reload_catalog(who))

    # -- the live stream, for both ----------------------------------------------------------------------------

    async def events(request: Request) -> Response:
        session = session_of(request)
        if session is None and token_principal(request) is None:
            return JSONResponse({"ok": False, "message": "sign in, or send an API token"}, 401)
        cookie = request.cookies.get(SESSION_COOKIE)

        def allowed() -> bool:
            """Checked at every event: a session that expires or an operator removed, or a token revoked, ends the
            stream (the page then finds itself signed out, rather than watching on)."""
            if session is not None:
                found = page.sessions.find(cookie, touch=False)
                return found is not None and page.store.roster.on_roster(found.operator)
            return token_principal(request) is not None

        wanted = request.query_params.get("order")
        return StreamingResponse(_event_stream(page, wanted, allowed), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip

    endpoints: dict[str, Callable[[Request], Any]] = {
        "api_slots": api(None, api_slots),
        "api_order": api(None, api_order),
        "api_close": api(None, api_close),
        "api_release": api(ReleaseRequest, api_release),
        "api_reload_catalog": api(None, api_reload_catalog),
        "api_scan_in": api(ScanInRequest, api_scan_in),
        "api_dispatch": api(DispatchRequest, api_dispatch),
        "api_events": events,
    }

    routes = [
        Route("/", bench),
        Route("/sign-in", sign_in_form, methods=["GET"]),
        Route("/sign-in", sign_in, methods=["POST"]),
        Route("/sign-out", sign_out, methods=["POST"]),
        Route("/session", whoami),
        Route("/events", events),
        Route("/fleet", fleet_endpoint(lambda: page.fleet, html, session_of)),
        Route("/actions/scan-in", page_action(lambda who, f: page.actions.scan_in(who, f.get("chf_id", ""),
                                                                                    f.get("order_ref"))),
              methods=["POST"]),
        Route("/actions/dispatch", page_action(lambda who, f: page.actions.dispatch(who, f.get("chf_id", ""),
                                                                                      f.get("order_ref"))),
              methods=["POST"]),
        Route("/actions/release", page_action(lambda who, f: page.actions.release(who, f.get("chf_id", ""))),
              methods=["POST"]),
        Route("/actions/close", page_action(lambda who, f: page.actions.close_order(who, f.get("order_ref", ""))),
              methods=["POST"]),
        Route("/actions/reload-catalog", page_action(lambda who, f: page.actions.reload_catalog(who)),
              methods=["POST"]),
        *(Route(route.path, endpoints[route.name], methods=[route.method], name=route.name) for route in API_ROUTES),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        *([Route("/metrics", metrics)] if page.metrics is not None else []),
    ]  # fmt: skip
    app = Starlette(routes=routes)
    app.add_middleware(SecurityHeaders, tls=page.tls)
    return app


def _answer(result: ActionResult) -> JSONResponse:
    status = 200 if result.ok else {"forbidden": 403, "misread": 422}.get(result.result, 409)
    return JSONResponse(result.as_json(), status)


def _set_cookie(response: Response, name: str, value: str, tls: bool, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=tls, httponly=True, samesite="strict")


async def _event_stream(page: BenchPage, wanted: str | None, allowed: Callable[[], bool]) -> AsyncIterator[str]:
    """Server-sent events: `snapshot` with every slot (at most four a second) and the DSP link; `order` when the
    order's counts may have changed (a hub finished, an action was taken): the order `wanted` while it is open, else
    the newest open one. Ends when the station stops."""
    yield "retry: 1000\n\n"
    seen: tuple[int, int, str | None] | None = None
    async for snapshot in page.live.subscribe(min_interval_s=0.25, heartbeat_s=10):
        if page.closing or not allowed():
            return
        yield _event("snapshot", _snapshot_json(snapshot))
        ref = current_order(page.store, wanted)
        key = (sum(slot.hubs_done for slot in snapshot.slots), page.order_version, ref)
        if key != seen:
            seen = key
            yield _event("order", _order_or_none(page.store, ref))


def _snapshot_json(snapshot: StationSnapshot) -> dict[str, Any]:
    data = snapshot.model_dump(mode="json")
    data["slots"] = [_slot_json(s) for s in snapshot.slots]
    return data


def _event(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class SecurityHeaders:
    """Pure ASGI, so that event streams pass through unbuffered."""

    def __init__(self, app: ASGIApp, tls: bool) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if tls:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)
