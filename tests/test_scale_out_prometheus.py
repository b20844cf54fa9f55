"""A city on three camwatch instances (docs/scale-out.md): each watches part of the fleet and
keeps its history in a database of its own on a real PostgreSQL; a real Prometheus finds them
through file-based service discovery, as the docs configure it, and its recording rules give,
for every scope, the rate one instance watching the whole fleet computes itself.

The fleet of test_prometheus_integration.py is split by township, so that 鹿邑县's class-1
rate (城关镇 3/4 on one instance, 玄武镇 1/6 on another) is only right as Σ online / Σ judged
across instances: 40 %, not the 45.83 % an average of the two would give."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from camwatch.secrets import Secret
from camwatch.store.postgres import PostgresStore
from tests.conftest import need_binary
from tests.fleet_thread import FleetThread, Row
from tests.fleet_thread import write_site as write_site_rows
from tests.peers.postgres import PgServer
from tests.test_daemon import Proc, get, poll
from tests.test_prometheus_integration import (
    FLEET,
    RULES,
    Prometheus,
    daemon_rates,
    expected_rates,
    free_port,
    recorded_rates,
)

PROBING = ("probing: {interval: 2s, timeout: 1s, per_host_concurrency: 64, onvif: false}\n"
           "states: {fail_threshold: 1}\n")
# which instance watches which townships (郸城县's channel without a township goes with 南丰镇)
INSTANCES = [{"城关镇"}, {"玄武镇"}, {"南丰镇", ""}]


class DiscoveringPrometheus(Prometheus):
    """The tests' Prometheus, finding its targets in a file_sd file (docs/scale-out.md)."""

    def __init__(self, tmp: Path, targets: list[str]) -> None:
        binary = need_binary("prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        sd = tmp / "camwatch-instances"
        sd.mkdir()
        (sd / "city.yaml").write_text(json.dumps([{"targets": targets,
                                                   "labels": {"city": "周口市"}}]))
        config = tmp / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "1s"},
            "rule_files": [str(p) for p in RULES],
            "scrape_configs": [{"job_name": "camwatch", "file_sd_configs": [
                {"files": [str(sd / "*.yaml")], "refresh_interval": "1s"}]}],
        }), encoding="utf-8")
        self.log_path = tmp / "prometheus.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.p = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        poll("Prometheus ready", self._ready, 60)


def _rows(ports: list[int], townships: set[str] | None) -> list[Row]:
    return [Row(f"rtsp://127.0.0.1:{port}/ch", klass=klass, project=project, county=county,
                township=town, operator=op)
            for (klass, project, county, town, op, _), port in zip(FLEET, ports, strict=True)
            if townships is None or town in townships]


def _stop(proc: Proc) -> None:
    if proc.p.poll() is None:
        proc.p.kill()
        proc.p.wait()
    proc.stderr.close()


def _judged(proc: Proc) -> int:
    site = [r for r in daemon_rates(proc) if r["scope"] == {} and r["class"] is None
            and r["project"] is None]
    return int(site[0]["connected"]) if site else 0


@pytest.fixture
def city(tmp_path: Path, pg_server: PgServer) -> Iterator[tuple[list[Proc], Proc, list[str]]]:
    """Three instances on PostgreSQL, and one instance (SQLite) watching the whole fleet."""
    need_binary("prometheus")
    with ExitStack() as stack:
        fleet = stack.enter_context(FleetThread([f[-1] for f in FLEET]))
        instances, dsns = [], []
        for n, townships in enumerate(INSTANCES):
            home = tmp_path / f"instance{n}"
            home.mkdir()
            dsn = stack.enter_context(pg_server.database())
            dsns.append(dsn)
            (home / "dsn").write_text(dsn + "\n")
            cfg = write_site_rows(home, _rows(fleet.ports, townships),
                                  PROBING + "store: {backend: postgresql, dsn_file: dsn}\n")
            proc = Proc(cfg)
            stack.callback(_stop, proc)
            instances.append(proc)
        home = tmp_path / "single"
        home.mkdir()
        single = Proc(write_site_rows(home, _rows(fleet.ports, None),
                                      PROBING + "store: {path: state.db}\n"))
        stack.callback(_stop, single)
        yield instances, single, dsns


@pytest.mark.peer
@pytest.mark.slow
def test_city_rates_from_three_instances_equal_one_instances(
        tmp_path: Path, city: tuple[list[Proc], Proc, list[str]]) -> None:
    instances, single, dsns = city
    split = [sum(1 for f in FLEET if f[3] in towns) for towns in INSTANCES]
    assert sum(split) == len(FLEET) and all(split)
    for proc, n in zip(instances, split, strict=True):
        poll("every channel of an instance judged", lambda p=proc, n=n: _judged(p) == n, 60)
    poll("every channel judged by the single instance", lambda: _judged(single) == len(FLEET),
         60)

    prom = DiscoveringPrometheus(tmp_path, [p.base.removeprefix("http://") for p in instances])
    try:
        def seen() -> bool:
            got = prom.query('count(up{job="camwatch", city="周口市"} == 1)')
            return bool(got) and float(got[0]["value"][1]) == len(instances)

        poll("the three instances discovered and up", seen, 60)
        want = expected_rates(single)
        poll("every level of the recording rules, summed over the instances",
             lambda: set(recorded_rates(prom)) == set(want), 60)
        got = recorded_rates(prom)
        for key, rate in want.items():
            assert round(got[key], 4) == round(rate, 4), key
        county1 = ("county_class", frozenset({("county", "鹿邑县"), ("class", "1")}))
        assert got[county1] == pytest.approx(0.4)  # across two instances; not 0.4583
        assert len(got) >= 30
        # the city levels the city alerts read (camwatch-scale-out.yaml), by the target label
        # the discovery gives: the whole fleet is 周口市, so the single instance's site rates
        city_want = {(k, str(r[k])): r["online"] / r["connected"]
                     for r in daemon_rates(single) for k in ("class", "project")
                     if r["scope"] == {} and r[k] is not None and r["connected"]
                     and r["class" if k == "project" else "project"] is None}

        def city_rates() -> dict[tuple[str, str], float]:
            out: dict[tuple[str, str], float] = {}
            for k in ("class", "project"):
                for sample in prom.query(f"city_{k}:camwatch_online_rate:ratio"):
                    assert sample["metric"]["city"] == "周口市", sample
                    out[(k, sample["metric"][k])] = float(sample["value"][1])
            return out

        # the city rules are a group of their own, evaluated on its own tick: wait until it
        # has run over what the instances' rules record now
        poll("the city levels, summed over the instances",
             lambda: {k: round(v, 4) for k, v in city_rates().items()}
             == {k: round(v, 4) for k, v in city_want.items()}, 60)
        city = city_rates()
        assert city.keys() == city_want.keys() and len(city) >= 3, (city, city_want)
        for key, rate in city_want.items():
            assert round(city[key], 4) == round(rate, 4), key
    finally:
        prom.stop()

    # each instance's history is in its own database
    for dsn, n in zip(dsns, split, strict=True):
        store = PostgresStore(Secret(dsn))
        states: dict[str, Any] = store.load_states()
        assert len(states) == n
        store.close()
    assert get(instances[0].base + "/healthz")[0] == 200
