"""The bench page's doors against a running station (`reflash run` over simulated TCP hubs, real HTTP): sign-in,
CSRF, roles, lockout, API tokens and their revocation, the security headers, the live stream, and a prompt stop."""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import sqlite3
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from station.demo import device_id
from station.web.openapi import OrderGlance, SlotsAnswer
from tests.station.test_slot_faults import Bench, Events
from tests.station.web.conftest import ORDER, PINS, PageStation, reflash, start_station


def audit(station: PageStation, kind: str) -> list[tuple[str, dict[str, object]]]:
    conn = sqlite3.connect(station.config.parent / "state/station.db")
    try:
        rows = conn.execute("SELECT operator, data FROM audit WHERE kind = ? ORDER BY seq", (kind,)).fetchall()
    finally:
        conn.close()
    return [(operator, json.loads(data)) for operator, data in rows]


def sign_in(client: httpx.Client, operator: str, pin: str) -> httpx.Response:
    form = client.get("/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    return client.post("/sign-in", data={"operator": operator, "pin": pin, "csrf": csrf.group(1)})


def page_csrf(client: httpx.Client) -> str:
    found = re.search(r'name="csrf" content="([^"]+)"', client.get("/").text)
    assert found is not None
    return found.group(1)


def test_the_page_signs_in_checks_csrf_and_roles_and_locks_out(bench: Bench) -> None:
    station = start_station(bench, refused_hub=False)
    with httpx.Client(base_url=station.url) as client:
        assert client.get("/").status_code == 303  # to /sign-in
        signed = sign_in(client, "olive", PINS["olive"])
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "reflash_session=" in cookie
        page = client.get("/")
        assert page.status_code == 200
        assert "olive" in page.text
        headers = page.headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert "<script>" not in page.text  # the page's script is a file (the CSP allows no inline script)

        hub = device_id(1, 1)
        # No CSRF token, or a wrong one: refused, and nothing recorded.
        assert client.post("/actions/scan-in", data={"chf_id": hub}).status_code == 403
        assert client.post("/actions/scan-in", data={"chf_id": hub, "csrf": "x" * 43}).status_code == 403
        assert audit(station, "hub_received") == [("demo-operator", {"order_ref": ORDER, "chf_id": device_id(2, 1),
                                                                     "asked": True})]  # fmt: skip
        csrf = page_csrf(client)
        misread = client.post("/actions/scan-in", data={"chf_id": "not-a-hub", "csrf": csrf})
        assert misread.status_code == 422
        assert misread.json()["result"] == "misread"
        scanned = client.post("/actions/scan-in", data={"chf_id": hub.replace("-", "").lower(), "csrf": csrf})
        assert scanned.status_code == 200, scanned.text
        assert scanned.json()["result"] == "received"
        # One audit entry, naming the operator signed in, with the ID normalised.
        assert audit(station, "hub_received")[-1] == ("olive", {"order_ref": ORDER, "chf_id": hub, "asked": True})
        # An operator cannot close an order.
        closing = client.post("/actions/close", data={"order_ref": ORDER, "csrf": csrf})
        assert closing.status_code == 403
        assert closing.json()["result"] == "forbidden"
        assert audit(station, "order_closed") == []
        # Nor release a hub held as UNEXPECTED.
        releasing = client.post("/actions/release", data={"chf_id": hub, "csrf": csrf})
        assert releasing.status_code == 403

    # Five wrong PINs lock the supervisor out: the right one is refused after them.
    with httpx.Client(base_url=station.url) as client:
        for _ in range(5):
            assert sign_in(client, "sam", "000000").status_code == 401
        locked = sign_in(client, "sam", PINS["sam"])
        assert locked.status_code == 401
        assert "locked out" in locked.text
        assert [op for op, _ in audit(station, "operator_locked_out")] == ["demo-operator"]

    listed = reflash(station.config, "operators", "list", "--json")
    assert {o["id"]: o["locked_until"] is not None for o in json.loads(listed.stdout)["operators"]} == {
        "olive": False, "sam": True}  # fmt: skip
    # A removed operator is signed out at their next request.
    with httpx.Client(base_url=station.url) as client:
        sign_in(client, "olive", PINS["olive"])
        assert client.get("/").status_code == 200
        assert reflash(station.config, "operators", "remove", "olive").returncode == 0
        assert client.get("/").status_code == 303
    station.kill()


def test_the_api_takes_tokens_with_roles_and_refuses_revoked_ones(bench: Bench) -> None:
    station = start_station(bench, refused_hub=False)
    line = reflash(station.config, "tokens", "add", "line-1", "--role", "operator").stdout.strip()
    boss = reflash(station.config, "tokens", "add", "mes", "--role", "supervisor").stdout.strip()
    assert line.startswith("rfs_")
    assert boss.startswith("rfs_")
    with httpx.Client(base_url=station.url) as anonymous:
        assert anonymous.get("/api/v1/slots").status_code == 401
        assert anonymous.get("/metrics").status_code == 401  # the metrics on the page's server need a token too
    as_line = {"Authorization": f"Bearer {line}"}
    with httpx.Client(base_url=station.url, headers=as_line) as client:
        answer = SlotsAnswer.model_validate(client.get("/api/v1/slots").json())  # as docs/openapi.json says
        assert [slot.name for slot in answer.slots] == ["H"]
        scanned = client.post("/api/v1/scan-in", json={"chf_id": device_id(1, 1)})
        assert scanned.status_code == 200, scanned.text
        assert scanned.json()["result"] == "received"
        assert client.post("/api/v1/scan-in", json={"chf_id": "00-11"}).status_code == 422
        order = OrderGlance.model_validate(client.get(f"/api/v1/orders/{ORDER}").json())
        assert (order.asked, order.received, order.missing) == (3, 2, 1)
        assert client.post(f"/api/v1/orders/{ORDER}/close").status_code == 403
        # The same live stream as the page.
        with client.stream("GET", "/api/v1/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            kinds = []
            for text in events.iter_lines():
                if text.startswith("event: "):
                    kinds.append(text.removeprefix("event: "))
                if {"snapshot", "order"} <= set(kinds):
                    break
        # Prometheus scrapes the same server with a token (station/metrics.py's registry, the station's catalog).
        scraped = client.get("/metrics")
        assert scraped.status_code == 200, scraped.text
        families = {family.name: family for family in text_string_to_metric_families(scraped.text)}
        assert [sample.value for sample in families["reflash_catalog_serial"].samples] == [1.0]
        assert reflash(station.config, "tokens", "revoke", "line-1").returncode == 0
        assert client.get("/api/v1/slots").status_code == 401
        assert client.get("/metrics").status_code == 401
    assert audit(station, "hub_received")[-1][0] == "line-1"
    with httpx.Client(base_url=station.url, headers={"Authorization": f"Bearer {boss}"}) as client:
        closed = client.post(f"/api/v1/orders/{ORDER}/close")
        assert closed.status_code == 200, closed.text
    assert [op for op, _ in audit(station, "order_closed")] == ["mes"]
    assert [data["name"] for _, data in audit(station, "api_token_revoked")] == ["line-1"]
    station.kill()


def test_sigterm_stops_the_station_within_two_seconds_with_a_page_watching(bench: Bench) -> None:
    station = start_station(bench, refused_hub=False)
    with httpx.Client(base_url=station.url) as client:
        sign_in(client, "olive", PINS["olive"])
        with client.stream("GET", "/events") as events:
            lines = events.iter_lines()
            while not next(lines).startswith("event: snapshot"):
                pass
            started = time.monotonic()
            station.process.send_signal(signal.SIGTERM)
            station.process.wait(10)
            elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"SIGTERM took {elapsed:.2f} s"
    station.events.wait_for("station_stopped", within=5)


def test_over_tls_the_cookie_is_secure_and_hsts_is_sent(bench: Bench, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "bench.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "bench.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    tls = f'tls_cert = "{tmp_path / "bench.crt"}"\ntls_key = "{tmp_path / "bench.key"}"\n'
    station = start_station(bench, refused_hub=False, web=tls)
    assert station.url.startswith("https://127.0.0.1:")
    with httpx.Client(base_url=station.url, verify=ssl.create_default_context(cafile=tmp_path / "bench.crt")) as client:
        signed = sign_in(client, "olive", PINS["olive"])
        assert "Secure" in signed.headers["set-cookie"]
        assert signed.headers["strict-transport-security"] == "max-age=31536000"
    station.kill()


def test_the_page_can_be_turned_off(bench: Bench) -> None:
    bench.hub("H", 1, {})
    config = bench.config()
    config.write_text(config.read_text() + "\n[web]\nenabled = false\n")
    process = bench.station(config)
    events = Events(process)
    events.wait_for("station_started", within=30)
    events.rest(1.0)
    assert not [e for e in events.seen if e["event"] == "web_listening"]
    process.kill()
