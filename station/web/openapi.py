"""The API's routes as data, and its OpenAPI 3.1 document generated from them and from the pydantic models of what
each takes and answers: `build_app` mounts exactly `API_ROUTES`, and docs/openapi.json is `openapi_document()` (a
test keeps the two equal and validates the file as OpenAPI 3.1). `python -m station.web.openapi` prints it."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from station.slot import SlotSnapshot
from station.store import Role

__all__ = [
    "API_ROUTES",
    "ActionAnswer",
    "ApiRoute",
    "DispatchRequest",
    "OrderGlance",
    "ReleaseRequest",
    "ScanInRequest",
    "SlotView",
    "SlotsAnswer",
    "openapi_document",
]


class ScanInRequest(BaseModel):
    """A hub scanned in: its CHF ID as scanned (any EUI-64 spelling), and the order it came in when no open order
    names it (it is then received UNASKED, and held)."""

    model_config = ConfigDict(extra="forbid")
    chf_id: str = Field(max_length=64, description="EUI-64, any spelling: 00-DB-12-34-56-78-90-A0, 00db1234567890a0")
    order_ref: str | None = Field(default=None, max_length=64)


class DispatchRequest(ScanInRequest):
    """A finished hub scanned out of its order."""


class ReleaseRequest(BaseModel):
    """A hub held as UNEXPECTED, released to leave (a supervisor's decision)."""

    model_config = ConfigDict(extra="forbid")
    chf_id: str = Field(max_length=64, description="EUI-64, any spelling")


class ActionAnswer(BaseModel):
    """What an action did, in words for the operator."""

    ok: bool
    result: str = Field(
        description="received, received_unasked, dispatched, released, closed, catalog_accepted, catalog_refused, "
        "misread, refused, forbidden"
    )
    message: str
    chf_id: str | None
    order_ref: str | None


class SlotView(SlotSnapshot):
    """A slot as status.json has it, with its last hub's reason in words and an icon beside the outcome."""

    last_reason_text: str = ""
    last_icon: str = ""


class SlotsAnswer(BaseModel):
    station: str
    slots: list[SlotView]


class OrderGlance(BaseModel):
    """One order at a glance."""

    order_ref: str
    state: str
    kind: str
    region: str
    asked: int = Field(description="hubs the order names")
    received: int = Field(description="of those, scanned in (or processed)")
    done: int = Field(description="of those, with a final outcome")
    outcomes: dict[str, int] = Field(description="final outcomes by kind, unasked hubs included")
    dispatched: int
    missing: int = Field(description="named hubs never received")
    unasked: int = Field(description="hubs received or processed that the order does not name")


@dataclass(frozen=True)
class ApiRoute:
    name: str
    method: str
    path: str
    summary: str
    role: Role
    body: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None
    stream: bool = False


API_ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("api_slots", "GET", "/api/v1/slots", "Every slot and what it is doing", Role.OPERATOR,
             answer=SlotsAnswer),
    ApiRoute("api_order", "GET", "/api/v1/orders/{ref}", "One order at a glance", Role.OPERATOR, answer=OrderGlance),
    ApiRoute("api_scan_in", "POST", "/api/v1/scan-in", "Scan a hub in", Role.OPERATOR, ScanInRequest, ActionAnswer),
    ApiRoute("api_dispatch", "POST", "/api/v1/dispatch", "Dispatch a finished hub", Role.OPERATOR, DispatchRequest,
             ActionAnswer),
    ApiRoute("api_close", "POST", "/api/v1/orders/{ref}/close", "Close an order (writes its report, queues its "
             "summary for the DSP)", Role.SUPERVISOR, answer=ActionAnswer),
    ApiRoute("api_release", "POST", "/api/v1/release", "Release a hub held as UNEXPECTED (it may leave)",
             Role.SUPERVISOR, ReleaseRequest, ActionAnswer),
    ApiRoute("api_reload_catalog", "POST", "/api/v1/catalog/reload", "Offer the catalog folder again (as SIGHUP "
             "does): a refused catalog leaves the one in force", Role.SUPERVISOR, answer=ActionAnswer),
    ApiRoute("api_events", "GET", "/api/v1/events", "The bench live, as server-sent events: `snapshot` (the "
             "station: status.json's form, slots as SlotView) and `order` (OrderGlance, or null)", Role.OPERATOR,
             stream=True),
)  # fmt: skip

_ERRORS = {
    "401": "no API token, or one that is unknown or revoked",
    "403": "the token's role may not do this",
    "409": "refused: the store says why (closed order, hub not processed, ...)",
    "422": "misread: the body or an ID does not parse",
}


def openapi_document() -> dict[str, Any]:
    models: list[type[BaseModel]] = []
    for route in API_ROUTES:
        models += [m for m in (route.body, route.answer) if m is not None and m not in models]
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    paths: dict[str, Any] = {}
    for route in API_ROUTES:
        operation: dict[str, Any] = {
            "operationId": route.name.removeprefix("api_"),
            "summary": route.summary,
            "description": f"Role: {route.role.value} or above.",
            "responses": {},
        }
        if "{ref}" in route.path:
            operation["parameters"] = [{"name": "ref", "in": "path", "required": True, "schema": {"type": "string"},
                                        "description": "the DCC's order reference"}]  # fmt: skip
        if route.stream:
            operation["parameters"] = [{"name": "order", "in": "query", "required": False,
                                        "schema": {"type": "string"}, "description": "the open order whose glance "
                                        "`order` events carry (default: the newest open order)"}]  # fmt: skip
        if route.body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
                "$ref": f"#/components/schemas/{route.body.__name__}"}}}}  # fmt: skip
        if route.stream:
            ok: dict[str, Any] = {"description": "an event stream", "content": {"text/event-stream": {
                "schema": {"type": "string"}}}}  # fmt: skip
        else:
            assert route.answer is not None
            ok = {"description": "done", "content": {"application/json": {"schema": {
                "$ref": f"#/components/schemas/{route.answer.__name__}"}}}}  # fmt: skip
        operation["responses"]["200"] = ok
        for code, why in _ERRORS.items():
            if code == "422" and route.body is None:
                continue
            if code == "409" and (route.method == "GET"):
                continue
            operation["responses"][code] = {"description": why}
        if route.name == "api_order":
            operation["responses"]["404"] = {"description": "no such order"}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "reflash station: bench API",
            "version": version("reflash-station"),
            "description": "The bench page's API for a line controller or MES (docs/bench-page.md). Every request "
            "carries `Authorization: Bearer TOKEN` (`reflash tokens add NAME --role operator|supervisor`); every "
            "action is one audit entry naming the token.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
    }


if __name__ == "__main__":  # python -m station.web.openapi > docs/openapi.json
    import json

    print(json.dumps(openapi_document(), indent=2, ensure_ascii=False))
