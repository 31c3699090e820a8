"""The command-line tools' rollback pin, through the real CLI: once a newer catalog is accepted, an older one is
refused as CATALOG_ROLLBACK by `jig flash`, `catalog check` and `catalog verify --catalog`, across invocations."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from firmware_catalog.keys import fingerprint, generate_key, public_key_pem
from station.cli import main
from station.pin_folder import STATE_DIR_ENV, PinFolder
from tests.firmware_catalog.conftest import World
from tests.station.conftest import serve_pty_hub

HUB = {"manufacturer": "121D", "model": "0000", "hardware_version": "1200", "firmware_version": "01000000"}


@dataclass
class Catalogs:
    world: World
    authority_pub: Path
    old: Path  # serial 1
    new: Path  # serial 2
    new_other: Path  # serial 2 again, other content
    expired: Path  # serial 3, expired
    image: Path

    @property
    def pin_name(self) -> str:
        return f"catalog-pin-{fingerprint(self.world.authority.public_key())}.json"


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> Catalogs:
    root = tmp_path_factory.mktemp("pins")
    world = World(root=root, authority=generate_key())
    world.trust("maker", "121D")
    entry = world.image(version="01010000", upgrade_from=["01000000"])
    now = datetime.now(UTC)  # the CLI checks expiry against the real clock
    world.build("old", now=now)
    world.serial = 2
    world.build("new", now=now)
    world.serial = 3
    world.build("expired", now=now - timedelta(days=31))
    world.serial = 2
    world.entries[0]["chts_version"] = "V1.4"
    world.build("new-other", now=now)
    (root / "authority.pub").write_bytes(public_key_pem(world.authority.public_key()))
    return Catalogs(
        world, root / "authority.pub", root / "old", root / "new", root / "new-other", root / "expired",
        root / entry["image"],
    )  # fmt: skip


def run(*args: str | Path, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def check(cat: Catalogs, folder: Path, *extra: str | Path, env: dict[str, str | None] | None = None) -> Result:
    args: list[str | Path] = ["catalog", "check", "--catalog", folder, "--authority", cat.authority_pub]
    args += ["--hub", json.dumps(HUB)]
    return run(*args, *extra, "--json", env=env)


def verify(cat: Catalogs, folder: Path, *extra: str | Path) -> Result:
    return run("catalog", "verify", cat.image, "--catalog", folder, "--authority", cat.authority_pub, *extra, "--json")


def state_dir() -> Path:
    return Path(os.environ[STATE_DIR_ENV])


def pinned_serial(folder: Path, cat: Catalogs) -> int:
    serial: int = json.loads((folder / cat.pin_name).read_text())["serial"]
    return serial


def test_check_pins_the_newest_catalog_and_refuses_an_older_one(catalogs: Catalogs) -> None:
    assert not (state_dir() / catalogs.pin_name).exists()
    older_first = check(catalogs, catalogs.old)
    assert older_first.exit_code == 0, older_first.output  # nothing pinned yet: serial 1 is the newest seen
    assert pinned_serial(state_dir(), catalogs) == 1
    newer = check(catalogs, catalogs.new)
    assert newer.exit_code == 0, newer.output
    assert json.loads(newer.output)["catalog_serial"] == 2
    assert pinned_serial(state_dir(), catalogs) == 2
    older = check(catalogs, catalogs.old)
    assert older.exit_code == 1
    refusal = json.loads(older.output)
    assert (refusal["decision"], refusal["code"]) == ("refuse", "CATALOG_ROLLBACK")
    assert "serial 1 is older than serial 2" in refusal["message"]
    assert pinned_serial(state_dir(), catalogs) == 2
    again = check(catalogs, catalogs.new)  # the catalog already pinned still loads
    assert again.exit_code == 0, again.output
    record = json.loads((state_dir() / catalogs.pin_name).read_text())
    assert set(record) == {"format", "authority", "serial", "digest", "catalog", "accepted_at"}
    assert record["digest"] == hashlib.sha256((catalogs.new / "catalog.json").read_bytes()).hexdigest()
    assert sorted(p.name for p in state_dir().iterdir()) == [f".{catalogs.pin_name}.lock", catalogs.pin_name]


def test_same_serial_with_other_content_is_refused(catalogs: Catalogs) -> None:
    assert check(catalogs, catalogs.new).exit_code == 0
    replay = check(catalogs, catalogs.new_other)
    assert replay.exit_code == 1
    refusal = json.loads(replay.output)
    assert refusal["code"] == "CATALOG_ROLLBACK"
    assert "already accepted with different content" in refusal["message"]


def test_verify_with_catalog_refuses_an_older_catalog(catalogs: Catalogs) -> None:
    newer = verify(catalogs, catalogs.new)
    assert newer.exit_code == 0, newer.output
    assert json.loads(newer.output)["valid"] is True
    older = verify(catalogs, catalogs.old)
    assert older.exit_code == 1, older.output
    verdict = json.loads(older.output)
    assert (verdict["valid"], verdict["reason"]) == (False, "CATALOG_ROLLBACK")


def test_the_pin_survives_into_another_process(catalogs: Catalogs) -> None:
    assert verify(catalogs, catalogs.new).exit_code == 0  # verify raises the pin that check then honours
    process = subprocess.run(
        [sys.executable, "-c", "from station.cli import main; main()", "catalog", "check", "--catalog",
         str(catalogs.old), "--authority", str(catalogs.authority_pub), "--hub", json.dumps(HUB), "--json"],
        capture_output=True, timeout=60, env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    assert process.returncode == 1, process.stderr
    assert json.loads(process.stdout)["code"] == "CATALOG_ROLLBACK"


def test_state_dir_option_and_env_var_choose_the_folder(catalogs: Catalogs, tmp_path: Path) -> None:
    mine, other, from_env = tmp_path / "mine", tmp_path / "other", tmp_path / "from-env"
    assert check(catalogs, catalogs.new, "--state-dir", mine).exit_code == 0
    assert pinned_serial(mine, catalogs) == 2
    assert not (state_dir() / catalogs.pin_name).exists()
    # Another state folder is another pin: the older catalog is new to it.
    assert check(catalogs, catalogs.old, "--state-dir", other).exit_code == 0
    assert json.loads(check(catalogs, catalogs.old, "--state-dir", mine).output)["code"] == "CATALOG_ROLLBACK"
    # The environment variable, and --state-dir over it.
    assert check(catalogs, catalogs.new, env={STATE_DIR_ENV: str(from_env)}).exit_code == 0
    assert pinned_serial(from_env, catalogs) == 2
    assert check(catalogs, catalogs.old, "--state-dir", other, env={STATE_DIR_ENV: str(from_env)}).exit_code == 0
    assert check(catalogs, catalogs.old, env={STATE_DIR_ENV: str(from_env)}).exit_code == 1


def test_default_folder_is_xdg_state_home_then_home(catalogs: Catalogs, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    assert check(catalogs, catalogs.new, env={STATE_DIR_ENV: None, "XDG_STATE_HOME": str(xdg)}).exit_code == 0
    assert pinned_serial(xdg / "reflash", catalogs) == 2
    home = tmp_path / "home"
    result = check(catalogs, catalogs.new, env={STATE_DIR_ENV: None, "XDG_STATE_HOME": None, "HOME": str(home)})
    assert result.exit_code == 0, result.output
    assert pinned_serial(home / ".local/state/reflash", catalogs) == 2
    assert PinFolder.locate(environ={"XDG_STATE_HOME": "relative", "HOME": str(home)}).path == (
        home / ".local/state/reflash"
    )  # the XDG spec: a relative $XDG_STATE_HOME is ignored


@pytest.mark.parametrize(
    "content",
    ["", "{not json", '{"format": "reflash-catalog-pin/1", "serial": "2"}', "[]"],
    ids=["empty", "not-json", "wrong-type", "not-an-object"],
)
def test_a_corrupt_pin_file_is_an_error_naming_it_never_a_reset(catalogs: Catalogs, content: str) -> None:
    pin = state_dir() / catalogs.pin_name
    pin.parent.mkdir(parents=True, exist_ok=True)
    pin.write_text(content)
    for result in (
        check(catalogs, catalogs.new),
        verify(catalogs, catalogs.new),
        run("jig", "flash", "tcp://127.0.0.1:9", "--catalog", catalogs.new, "--authority", catalogs.authority_pub),
    ):
        assert result.exit_code == 2, result.output
        assert str(pin) in result.output
        assert "not a catalog pin" in result.output
    assert pin.read_text() == content


def test_a_pin_for_another_authority_is_refused(catalogs: Catalogs) -> None:
    pin = state_dir() / catalogs.pin_name
    pin.parent.mkdir(parents=True, exist_ok=True)
    assert check(catalogs, catalogs.new).exit_code == 0
    record = json.loads(pin.read_text())
    pin.write_text(json.dumps(record | {"authority": "ab" * 32}))
    result = check(catalogs, catalogs.old)
    assert result.exit_code == 2
    assert f"{pin}: pins authority {'ab' * 32}" in result.output


def test_a_refused_catalog_leaves_the_pin_alone(catalogs: Catalogs) -> None:
    assert check(catalogs, catalogs.new).exit_code == 0
    before = (state_dir() / catalogs.pin_name).read_bytes()
    expired = check(catalogs, catalogs.expired)  # newer, but expired: not accepted, so it pins nothing
    assert json.loads(expired.output)["code"] == "CATALOG_EXPIRED"
    assert check(catalogs, catalogs.new_other).exit_code == 1
    assert (state_dir() / catalogs.pin_name).read_bytes() == before
    assert check(catalogs, catalogs.new).exit_code == 0


@pytest.fixture
def pty_hub(catalogs: Catalogs, tmp_path: Path) -> Iterator[str]:
    with serve_pty_hub(catalogs.world.root / "keys/maker.pub", tmp_path / "hub") as path:
        yield path


def test_jig_flash_pins_and_refuses_an_older_catalog(catalogs: Catalogs, pty_hub: str) -> None:
    def flash(folder: Path) -> Result:
        return run("jig", "flash", pty_hub, "--catalog", folder, "--authority", catalogs.authority_pub, "--json")

    newer = flash(catalogs.new)
    assert newer.exit_code == 0, newer.output
    assert json.loads(newer.output)["outcome"] == "REFLASHED"
    assert pinned_serial(state_dir(), catalogs) == 2
    older = flash(catalogs.old)
    assert older.exit_code == 1, older.output
    outcome = json.loads(older.output)
    assert (outcome["outcome"], outcome["reason"]) == ("REFUSED", "CATALOG_ROLLBACK")
    # One pin for every tool: what jig flash accepted, check honours too.
    assert json.loads(check(catalogs, catalogs.old).output)["code"] == "CATALOG_ROLLBACK"
