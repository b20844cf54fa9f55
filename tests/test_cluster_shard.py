"""The shard key (camwatch/cluster/shard.py) and the ``cluster:`` config section: a table of
keys and their shards (fixed values: the split must not change between versions or
processes), townships never split, and every config error naming its YAML path."""

from __future__ import annotations

import subprocess
import sys
import zlib
from typing import Any

import pytest

from camwatch.cluster.shard import filter_inventory, shard_key, shard_of, split
from camwatch.config import parse_config
from camwatch.errors import ConfigError
from camwatch.inventory import Channel, Inventory
from tests.conftest import ROOT


def ch(cid: str, county: str = "鹿邑县", county_code: str = "411628", township: str = "城关镇",
       township_code: str = "411628100") -> Channel:
    return Channel(id=cid, county=county, county_code=county_code, township=township,
                   township_code=township_code, connected=True)


@pytest.mark.parametrize(("channel", "by", "key"), [
    (ch("a"), "county", "411628"),
    (ch("a"), "township", "411628/411628100"),
    (ch("a", county_code=""), "county", "鹿邑县"),  # no code: the name
    (ch("a", township_code=""), "township", "411628/城关镇"),
    (ch("a", county_code="", township_code=""), "township", "鹿邑县/城关镇"),
    (ch("a", county="", county_code="", township="", township_code=""), "township", "/"),
])
def test_shard_key(channel: Channel, by: Any, key: str) -> None:
    assert shard_key(channel, by) == key


@pytest.mark.parametrize(("key", "shards", "shard"), [
    # CRC-32 of the UTF-8 key mod shards; the figures are the standard's, written down so
    # that a change of hash (Python's salted hash(), another CRC) fails here
    ("411628", 16, 7),  # CRC-32 0x1F6B9F27
    ("411628/411628100", 16, 12),  # 0x2DA3CF9C
    ("鹿邑县/城关镇", 7, 5),  # 0x4C7344E1
    ("411628", 1, 0),
])
def test_shard_of_is_crc32_of_the_key(key: str, shards: int, shard: int) -> None:
    county, _, township = key.partition("/")
    c = ch("x", county=county, county_code="", township=township, township_code="")
    assert shard_of(c, "township" if township else "county", shards) == shard


def test_crc_figure_is_the_standards() -> None:
    assert zlib.crc32(b"411628") == 0x1F6B9F27  # a value test_shard_of relies on
    assert zlib.crc32(b"123456789") == 0xCBF43926  # CRC-32's check value


def test_shard_is_the_same_in_another_process() -> None:
    """Python's hash() of a str changes per process (PYTHONHASHSEED): the split must not."""
    code = ("from camwatch.cluster.shard import shard_of; from camwatch.inventory import "
            "Channel; print(shard_of(Channel(id='x', county_code='411628', "
            "township_code='411628100'), 'township', 16))")
    runs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, check=True, env={"PYTHONHASHSEED": seed,
                                                       "PYTHONPATH": str(ROOT)}).stdout
            for seed in ("1", "2")}
    assert runs == {f"{shard_of(ch('x'), 'township', 16)}\n"}


def test_zero_shards_refused() -> None:
    with pytest.raises(ValueError, match="expected at least 1 shard, got 0"):
        shard_of(ch("a"), "county", 0)


def fleet() -> list[Channel]:
    return [ch(f"{county}-{town}-{i}", county=f"县{county}", county_code=f"41{county:04d}",
               township=f"镇{town}", township_code=f"41{county:04d}{town:03d}")
            for county in range(4) for town in range(6) for i in range(3)]


@pytest.mark.parametrize("by", ["county", "township"])
def test_split_keeps_a_township_whole_and_covers_everything(by: Any) -> None:
    chans = fleet()
    parts = split(chans, by, 5)
    assert sorted(c.id for p in parts.values() for c in p) == sorted(c.id for c in chans)
    home: dict[str, int] = {}
    for shard, members in parts.items():
        for c in members:
            unit = c.county_code if by == "county" else c.township_code
            assert home.setdefault(unit, shard) == shard, f"{unit} split over shards"
    assert len(parts) > 1  # 24 townships (or 4 counties) over 5 shards: more than one used


def test_county_mode_keeps_a_county_whole() -> None:
    parts = split(fleet(), "county", 16)
    counties = [{c.county_code for c in p} for p in parts.values()]
    assert sum(len(s) for s in counties) == 4  # each county in exactly one shard


def test_filter_inventory_takes_the_owned_shards_only() -> None:
    chans = fleet()
    inv = Inventory("inv.csv", chans, rows_read=len(chans), rejected_rows=2)
    parts = split(chans, "township", 5)
    owned = sorted(parts)[:2]
    mine = filter_inventory(inv, "township", 5, owned)
    assert [c.id for c in mine.channels] == \
        [c.id for c in chans if shard_of(c, "township", 5) in owned]
    assert mine.channels and len(mine.channels) < len(chans)
    assert (mine.source, mine.rows_read, mine.rejected_rows) == ("inv.csv", len(chans), 2)
    assert filter_inventory(inv, "township", 5, []).channels == []


# --- the config section --------------------------------------------------------------------

PG = {"backend": "postgresql", "dsn_env": "CAMWATCH_DSN"}


def cfg(cluster: dict[str, Any], store: dict[str, Any] | None = None,
        alerts: bool = False) -> Any:
    return parse_config({"inventory": {"path": "inv.csv"}, "store": store or PG,
                         "cluster": cluster, "alerts": {"enabled": alerts}})


def test_cluster_defaults() -> None:
    c = parse_config({"inventory": {"path": "inv.csv"}}).cluster
    assert (c.enabled, c.shard_by, c.shards, c.max_shards_per_instance, c.takeover,
            c.instance) == (False, "township", 16, None, 30.0, None)


def test_cluster_section_parsed() -> None:
    c = cfg({"enabled": True, "shard_by": "county", "shards": 8,
             "max_shards_per_instance": 3, "takeover": "45s", "instance": "cw-1.zk"}).cluster
    assert (c.enabled, c.shard_by, c.shards, c.max_shards_per_instance, c.takeover,
            c.instance) == (True, "county", 8, 3, 45.0, "cw-1.zk")


@pytest.mark.parametrize(("cluster", "store", "where", "message"), [
    ({"enabled": True}, {"backend": "sqlite"}, "$.cluster.enabled",
     "expected store.backend postgresql (instances share their shards through one "
     "PostgreSQL), got 'sqlite'"),
    ({"shard_by": "village"}, None, "$.cluster.shard_by",
     "expected one of 'county' or 'township', got 'village'"),
    ({"shards": 0}, None, "$.cluster.shards", "expected a value greater than or equal to 1"),
    ({"shards": 5000}, None, "$.cluster.shards", "expected a value less than or equal to 1024"),
    ({"max_shards_per_instance": 0}, None, "$.cluster.max_shards_per_instance",
     "expected a value greater than or equal to 1"),
    ({"takeover": "1s"}, None, "$.cluster.takeover", "expected a duration from 3s to 1h, got 1s"),
    ({"takeover": 30}, None, "$.cluster.takeover", "expected a duration like '500ms'"),
    ({"instance": "bad name!"}, None, "$.cluster.instance",
     "expected 1-40 characters of letters, digits and . _ : @ -"),
    ({"enable": True}, None, "$.cluster.enable", "unknown key (did you mean 'enabled'?)"),
])
def test_cluster_config_errors(cluster: dict[str, Any], store: dict[str, Any] | None,
                               where: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfg(cluster, store)
    text = str(err.value)
    assert where in text and message in text, text


def test_cluster_takes_alerts_kept_per_shard() -> None:
    assert cfg({"enabled": True}, alerts=True).alerts.enabled
    assert cfg({"enabled": False}, alerts=True).alerts.enabled


@pytest.mark.parametrize(("section", "body"), [
    ("gb28181", {"enabled": True, "allow_unknown": True, "password_env": "GB_PW"}),
    ("repairs", {"enabled": True})])
def test_cluster_refuses_what_is_not_built_for_it(section: str, body: dict[str, Any]) -> None:
    data = {"inventory": {"path": "inv.csv"}, "store": PG, "alerts": {"enabled": False},
            "cluster": {"enabled": True}, section: body}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert f"$.{section}.enabled: expected false with cluster.enabled: {section} is not " \
           f"built for a cluster of instances yet" in str(err.value)


def test_disabled_cluster_is_fine_on_sqlite() -> None:
    assert not cfg({"enabled": False, "shards": 4}, {"backend": "sqlite"}).cluster.enabled
