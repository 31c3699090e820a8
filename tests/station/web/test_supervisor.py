"""The bench page's remaining doors against a running station: badge sign-in, the catalog reloaded by a supervisor
(page and API, refused catalogs leave the one in force), an UNEXPECTED hub released through the API, and the
operator choosing among several open orders."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import httpx

from firmware_catalog.catalog_source import build_catalog
from firmware_catalog.keys import load_private_key
from station.config import load_config
from station.demo import device_id
from station.orders import OrderRequest
from tests.station.test_slot_faults import HONEST, Bench
from tests.station.web.conftest import ORDER, PINS, PageStation, reflash, start_station
from tests.station.web.test_api import audit, page_csrf

SECOND = "DCC-PAGE-2"
BADGE = "EMP-0042-7731"


def sign_in_as(client: httpx.Client, identity: str, pin: str) -> httpx.Response:
    form = client.get("/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    return client.post("/sign-in", data={"operator": identity, "pin": pin, "csrf": csrf.group(1)})


def rebuild_catalog(station: PageStation, serial: int) -> None:
    """The catalog authority publishes a newer catalog into the station's folder."""
    world = station.bench.world
    source = Path("config/catalog/example.toml").read_text()
    newer = station.config.parent / f"catalog-{serial}.toml"
    newer.write_text(re.sub(r"(?m)^serial = \d+$", f"serial = {serial}", source))
    # The source's relative paths (images, keys) resolve against the demo world, as build_demo_world has them.
    authority = load_private_key(world.workdir / "keys" / "authority.key")
    build_catalog(newer, authority, world.catalog_dir, datetime.now(UTC), base=world.workdir)


def test_badges_catalog_reload_release_and_the_order_chosen(bench: Bench) -> None:
    bench.hub("U", 5, HONEST)  # a hub no open order names: held as UNEXPECTED
    station = start_station(bench, refused_hub=False)
    store = load_config(station.config).open_store()
    store.import_order(OrderRequest(SECOND, "dcc", "SUPPLIER-A", "North", [(device_id(7, 1), 8)], "b.csv", "1" * 64))
    store.close()
    added = reflash(station.config, "operators", "add", "bea", "--role", "supervisor", "--badge",
                    stdin=f"8642\n8642\n{BADGE}\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = reflash(station.config, "operators", "list")
    assert "bea\tsupervisor" in listed.stdout
    assert ", badge" in listed.stdout
    assert BADGE not in listed.stdout

    # A badge scan plus the PIN signs in; the badge alone, or with a wrong PIN, does not.
    with httpx.Client(base_url=station.url) as client:
        assert sign_in_as(client, BADGE, "0000").status_code == 401
        assert sign_in_as(client, BADGE, "8642").status_code == 303
        page = client.get("/")
        assert '<p class="who">bea <span class="role">(supervisor)' in page.text
        # Two open orders: the newest is shown, and the operator may choose the other.
        assert f'<option value="{ORDER}">' in page.text
        assert f'<option value="{SECOND}" selected>' in page.text
        chosen = client.get("/", params={"order": ORDER})
        assert f'<option value="{ORDER}" selected>' in chosen.text
        assert f'data-order="{ORDER}"' in chosen.text
        assert 'data-order="DCC-PAGE-2"' in client.get("/", params={"order": "NO-SUCH"}).text
        with client.stream("GET", "/events", params={"order": ORDER}) as events:
            for line in events.iter_lines():
                if line.startswith("data: {") and '"asked"' in line:
                    assert f'"order_ref":"{ORDER}"' in line
                    break
        # The supervisor reloads the catalog from the page: a newer one is taken, the offer audited as theirs.
        assert 'id="catalog-serial">1<' in page.text
        rebuild_catalog(station, 2)
        csrf = page_csrf(client)
        reloaded = client.post("/actions/reload-catalog", data={"csrf": csrf})
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["result"] == "catalog_accepted"
        assert "serial 2 in force" in reloaded.json()["message"]
        assert 'id="catalog-serial">2<' in client.get("/").text
        assert client.post("/actions/reload-catalog").status_code == 403  # no CSRF token
    assert [op for op, _ in audit(station, "catalog_accepted")][-1] == "bea"
    assert [e["event"] for e in station.events.seen if e["event"] == "catalog"]  # said in the log too

    # An operator's session may not reload it.
    with httpx.Client(base_url=station.url) as client:
        sign_in_as(client, "olive", PINS["olive"])
        forbidden = client.post("/actions/reload-catalog", data={"csrf": page_csrf(client)})
        assert forbidden.status_code == 403
        assert 'id="reload-catalog"' not in client.get("/").text

    line = reflash(station.config, "tokens", "add", "line-1", "--role", "operator").stdout.strip()
    mes = reflash(station.config, "tokens", "add", "mes", "--role", "supervisor").stdout.strip()
    unexpected = device_id(5, 1)
    with httpx.Client(base_url=station.url, headers={"Authorization": f"Bearer {line}"}) as client:
        assert client.post("/api/v1/catalog/reload").status_code == 403
        assert client.post("/api/v1/release", json={"chf_id": unexpected}).status_code == 403
    with httpx.Client(base_url=station.url, headers={"Authorization": f"Bearer {mes}"}) as client:
        # A damaged catalog is refused, and the one in force stays.
        (station.bench.world.catalog_dir / "catalog.sig").write_bytes(b"\0" * 64)
        refused = client.post("/api/v1/catalog/reload")
        assert refused.status_code == 409, refused.text
        assert refused.json()["result"] == "catalog_refused"
        assert "the one in force stays" in refused.json()["message"]
        # The UNEXPECTED hub, once the station has held it, is released through the API.
        assert client.post("/api/v1/release", json={"chf_id": "nonsense"}).status_code == 422
        released = None
        for _ in range(120):
            released = client.post("/api/v1/release", json={"chf_id": unexpected.replace("-", ":")})
            if released.status_code == 200:
                break
            station.events.rest(0.5)
        assert released is not None
        assert released.status_code == 200, released.text
        assert released.json()["result"] == "released"
        again = client.post("/api/v1/release", json={"chf_id": unexpected})
        assert again.status_code == 409
    assert [op for op, _ in audit(station, "hub_released")] == ["mes"]
    station.kill()


def test_an_operator_with_a_badge_signs_in_at_the_page_by_scanning_it(bench: Bench, tmp_path: Path) -> None:
    """The scanner types the badge and Enter into the first field: the page moves to the PIN, not submitting."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from tests.station.web.browser import chromium
    from tests.station.web.test_page_browser import text, until

    station = start_station(bench, refused_hub=False)
    added = reflash(station.config, "operators", "add", "bea", "--role", "operator", "--badge",
                    stdin=f"8642\n8642\n{BADGE}\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    with chromium() as driver:
        driver.get(station.url + "/sign-in")
        driver.find_element(By.ID, "operator").send_keys(BADGE + Keys.ENTER)
        assert driver.switch_to.active_element.get_attribute("id") == "pin"
        driver.switch_to.active_element.send_keys("8642" + Keys.ENTER)
        until(lambda: "live" in text(driver, "#link-text"), 15, "live link")
        assert text(driver, ".who").startswith("bea")
    station.kill()
