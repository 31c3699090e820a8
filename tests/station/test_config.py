"""Station configuration: what it refuses, and how it says so."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("missing", ["operator", "facility_approval"])
def test_station_refuses_config_without_operator_or_facility(tmp_path: Path, missing: str) -> None:
    from station.config import ConfigError, load_config

    fields = {"id": '"st-1"', "region": '"North"', "operator": '"op-1"', "facility_approval": '"SSC-1"'}
    fields.pop(missing)
    body = "\n".join(f"{k} = {v}" for k, v in fields.items())
    path = tmp_path / "station.toml"
    path.write_text(f'[station]\n{body}\n[catalog]\nfolder = "c"\nauthority_key = "a.pub"\n')
    with pytest.raises(ConfigError, match=rf"station\.toml: station\.{missing}: Field required"):
        load_config(path)


def test_a_misspelt_key_is_named_with_the_key_it_was_meant_to_be(tmp_path: Path) -> None:
    from station.config import ConfigError, load_config

    path = tmp_path / "station.toml"
    path.write_text(
        '[station]\nid = "st-1"\nregion = "North"\noperater = "op-1"\nfacility_approval = "SSC-1"\n'
        '[catalog]\nfolder = "c"\nauthority_key = "a.pub"\n'
    )
    with pytest.raises(
        ConfigError, match=r"station\.toml: station\.operater: unknown key 'operater'; did you mean 'operator'\?"
    ):
        load_config(path)
