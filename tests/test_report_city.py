"""``camwatch report --scope city``: the bulletin of a city read from its counties' PostgreSQL
databases equals the sum of the counties' own bulletins, figure for figure (numerators and
denominators compared, computed by the counties' bulletins, not written down here), and each
county's row of the city's county table is that county's own summary. Two counties: 鹿邑县 with
test_report.py's hand-computed month, 郸城县 with the same channels moved two days later, one
more outage and three more channels online all month (so that the counties weigh
differently and an average of their rates is not the city's), each in a database of its own
on a real PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from camwatch.inventory import Channel
from camwatch.reports import inventory_rows
from camwatch.reports.cli import add_report_arguments, cmd_report
from camwatch.secrets import Secret
from camwatch.store.base import Transition
from camwatch.store.postgres import PostgresStore
from tests.conftest import ROOT
from tests.peers.postgres import PgServer
from tests.test_report import CHANNELS, HISTORY, C, parse, ts

DAYS2 = 2 * 86400.0


def dancheng(ch: Channel) -> Channel:
    """鹿邑县's channel as one of 郸城县 (county code 411625): another id, same townships'
    names (a township is keyed with its county, so they are not merged)."""
    return dataclasses.replace(ch, id=ch.id.replace("411628", "411625", 1), county="郸城县",
                               county_code="411625")


def moved(t: Transition) -> Transition:
    return Transition(t.channel_id.replace("411628", "411625", 1), t.ts + DAYS2, t.from_state,
                      t.to_state, t.reason, t.detail)


EXTRA = [dancheng(dataclasses.replace(CHANNELS[3], id=CHANNELS[3].id[:-2] + f"9{i}"))
         for i in range(3)]
COUNTIES = {
    "鹿邑县": (CHANNELS, HISTORY),
    "郸城县": ([dancheng(c) for c in CHANNELS] + EXTRA,
            [moved(t) for t in HISTORY] +
            [Transition(c.id, ts(2026, 10, 1), "unknown", "online") for c in EXTRA] + [
                Transition(C.replace("411628", "411625", 1), ts(2026, 11, 25), "online",
                           "offline", "timeout"),
                Transition(C.replace("411628", "411625", 1), ts(2026, 11, 26), "offline",
                           "online")]),
}
ENV = {"鹿邑县": "CW_CITY_LUYI", "郸城县": "CW_CITY_DANCHENG"}


@pytest.fixture
def county_dsns(pg_server: PgServer) -> Iterator[dict[str, str]]:
    with pg_server.database() as luyi, pg_server.database() as dancheng_dsn:
        yield {"鹿邑县": luyi, "郸城县": dancheng_dsn}


def _config(tmp: Path, name: str, doc: dict[str, Any]) -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump({"inventory": {"path": "inventory.csv"},
                                    "targets": {"min_channels": 1}, **doc},
                                   allow_unicode=True), encoding="utf-8")
    return str(path)


def _report(config: str, out: Path, *extra: str) -> dict[str, Any]:
    assert cmd_report(parse(add_report_arguments, ["-c", config, "--month", "2026-11",
                                                   "-o", str(out), *extra])) == 0
    doc: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return doc


SUMS = ("planned", "installed", "connected", "online_seconds", "monitored_seconds")
FIGURE_SUMS = (*SUMS, "unknown_seconds", "online_channels", "offline_channels",
               "unknown_channels")


def test_city_bulletin_is_the_sum_of_the_county_bulletins(
        tmp_path: Path, county_dsns: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for county, (channels, history) in COUNTIES.items():
        monkeypatch.setenv(ENV[county], county_dsns[county])
        store = PostgresStore(Secret(county_dsns[county]))
        store.write_batch([], history)
        store.save_inventory_snapshot("2026-10", inventory_rows(channels))
        store.save_inventory_snapshot("2026-11", inventory_rows(channels))
        if county == "鹿邑县":  # 报备 in one county: left out of both its and the city's rates
            store.add_exemption(C, ts(2026, 11, 3), ts(2026, 11, 5), "道路施工",
                                ts(2026, 11, 1))
        store.close()
    stores = [{"backend": "postgresql", "dsn_env": ENV[c]} for c in COUNTIES]
    counties = {c: _report(_config(tmp_path, f"{c}.yaml", {"store": stores[i]}),
                           tmp_path / f"{c}.json")
                for i, c in enumerate(COUNTIES)}
    city_cfg = _config(tmp_path, "city.yaml", {
        "store": stores[0], "report": {"city": {"name": "周口市", "stores": stores}}})
    city = _report(city_cfg, tmp_path / "city.json", "--scope", "city")
    # the site-scope bulletin of the same config is one county's: --scope city is the change
    assert _report(city_cfg, tmp_path / "site.json")["summary"] == counties["鹿邑县"]["summary"]

    assert city["site"] == "周口市"
    luyi, dan = counties["鹿邑县"]["summary"], counties["郸城县"]["summary"]
    assert luyi["online_rate"] != dan["online_rate"]  # two different months
    for key in SUMS:
        assert city["summary"][key] == pytest.approx(luyi[key] + dan[key]), key
    rate = city["summary"]["online_rate"]
    assert rate == pytest.approx((luyi["online_seconds"] + dan["online_seconds"]) /
                                 (luyi["monitored_seconds"] + dan["monitored_seconds"]), abs=1e-6)
    assert rate != pytest.approx((luyi["online_rate"] + dan["online_rate"]) / 2, abs=1e-6)
    # by class and by project: numerators and denominators, per class, summed
    for part in ("by_class", "by_project"):
        got = {(p["class"], p["project"]): p for p in city["summary"][part]}
        parts = [{(p["class"], p["project"]): p for p in d[part]}
                 for d in (luyi, dan)]
        assert set(got) == set(parts[0]) | set(parts[1])
        for key, p in got.items():
            assert p["channels"] == sum(x[key]["channels"] for x in parts if key in x)
    # the city's county table: each row is that county's own summary
    rows = {r["county"]: r for r in city["summary"]["counties"]}
    assert set(rows) == set(COUNTIES)
    for county, doc in counties.items():
        (own,) = doc["summary"]["counties"]
        for key in (*FIGURE_SUMS, "online_rate", "online_rate_snapshot", "install_rate",
                    "cloud_rate", "previous_online_rate", "meets_target"):
            assert rows[county][key] == own[key], (county, key)
    # townships, villages, operators × township, long-offline channels, exemptions: the
    # counties' rows side by side (the same township name in two counties stays two rows)
    for table in ("townships", "villages"):
        want = {_key(f): f for d in counties.values() for f in d[table]}
        got = {_key(f): f for f in city[table]}
        assert got.keys() == want.keys(), table
        for k, f in got.items():
            for key in FIGURE_SUMS:
                assert f[key] == want[k][key], (table, k, key)
    ops = {o["operator"]: o for o in city["operators"]}
    for name, o in ops.items():
        parts = [x for d in counties.values() for x in d["operators"] if x["operator"] == name]
        for key in FIGURE_SUMS:
            assert o[key] == pytest.approx(sum(x[key] for x in parts)), (name, key)
    assert sorted(r["id"] for r in city["long_offline"]) == sorted(
        r["id"] for d in counties.values() for r in d["long_offline"])
    assert [x["channel_id"] for x in city["exemptions"]] == [C]
    assert len(city["repaired"]) == sum(len(d["repaired"]) for d in counties.values())
    assert "2 个存储" in city["method"]["inventory_source"]


def _key(f: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(f.get(k, "")) for k in ("county", "township", "village"))


def test_city_scope_errors_name_the_config_and_the_store(
        tmp_path: Path, county_dsns: dict[str, str]) -> None:
    """Without report.city: a usage error naming the key. A county store without the month's
    inventory snapshot: an input error naming that store (without its password), through the
    real command line."""
    cfg = _config(tmp_path, "plain.yaml", {})
    args = parse(add_report_arguments, ["-c", cfg, "--month", "2026-11", "-o",
                                        str(tmp_path / "x.json"), "--scope", "city"])
    assert cmd_report(args) == 2

    for county, (channels, _) in COUNTIES.items():
        store = PostgresStore(Secret(county_dsns[county]))
        if county == "鹿邑县":
            store.save_inventory_snapshot("2026-11", inventory_rows(channels))
        store.close()
    env = {ENV[c]: county_dsns[c] for c in COUNTIES}
    stores = [{"backend": "postgresql", "dsn_env": ENV[c]} for c in COUNTIES]
    city_cfg = _config(tmp_path, "city.yaml", {"report": {"city": {"name": "周口市",
                                                                   "stores": stores}}})
    out = subprocess.run(
        [sys.executable, "-m", "camwatch", "report", "-c", city_cfg, "--scope", "city",
         "--month", "2026-11", "-o", str(tmp_path / "c.json")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**_base_env(), **env, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 1, out.stderr
    assert "$.report.city.stores: report.city.stores[1] (" in out.stderr
    assert "no inventory snapshot for 2026-11" in out.stderr
    password = str(__import__("psycopg").conninfo.conninfo_to_dict(
        county_dsns["郸城县"]).get("password", ""))
    assert not password or password not in out.stderr
    assert "stores[0]" not in out.stderr  # 鹿邑县 has its snapshot

    unset = _config(tmp_path, "unset.yaml", {"report": {"city": {"name": "周口市", "stores": [
        stores[0], {"backend": "postgresql", "dsn_env": "CW_CITY_UNSET"}]}}})
    out = subprocess.run(
        [sys.executable, "-m", "camwatch", "report", "-c", unset, "--scope", "city",
         "--month", "2026-11", "-o", str(tmp_path / "u.json")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**_base_env(), **env, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 1
    assert "unset.yaml: report.city.stores[1] (dsn_env CW_CITY_UNSET): cannot read the " \
           "PostgreSQL DSN: environment variable CW_CITY_UNSET is not set" in out.stderr, \
        out.stderr

    bad = _config(tmp_path, "bad.yaml", {"report": {"city": {"name": "", "stores": []}}})
    out = subprocess.run(
        [sys.executable, "-m", "camwatch", "check-config", "-c", bad],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**_base_env(), "PYTHONPATH": str(ROOT)})
    assert out.returncode == 1
    assert "$.report.city.name" in out.stderr + out.stdout
    assert "$.report.city.stores" in out.stderr + out.stdout


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("CW_CITY_")}


_ = dt  # the months above are test_report's November 2026
