"""docs/openapi.json is the API as the code declares it (`API_ROUTES` and its pydantic models), and valid OpenAPI 3.1;
the app serves exactly those routes."""

from __future__ import annotations

import json
from pathlib import Path

from openapi_spec_validator import validate
from starlette.routing import Route

from station.web.openapi import API_ROUTES, openapi_document

DOC = Path(__file__).resolve().parents[3] / "docs/openapi.json"


def test_the_committed_document_is_the_generated_one_and_valid_openapi_3_1() -> None:
    committed = json.loads(DOC.read_text())
    assert committed == openapi_document(), "regenerate: python -m station.web.openapi > docs/openapi.json"
    assert committed["openapi"] == "3.1.0"
    validate(committed)


def test_the_app_serves_exactly_the_declared_api_routes() -> None:
    from unittest.mock import MagicMock

    from station.web.application import build_app

    app = build_app(MagicMock(tls=False))
    served = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route) and route.path.startswith("/api/")
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert served == {(route.path, route.method) for route in API_ROUTES}
