"""A real Prometheus scrapes ``camwatch run`` watching simulated cameras, with the recording and
alert rules of ``deploy/prometheus`` loaded: every rule evaluates without error, the recording
rules give the daemon's own rates (``/api/rates``) to 4 decimals, and every PromQL expression of
every dashboard panel runs, the headline panels returning data."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from camwatch.sim.model import Fault
from tests.conftest import ROOT, need_binary
from tests.fleet_thread import FleetThread, Row
from tests.fleet_thread import write_site as write_site_rows
from tests.test_daemon import Proc, get, poll

RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yaml"))
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))

OK, AUTH, NF = Fault.NONE, Fault.AUTH_FAIL, Fault.NOT_FOUND
# (class, project, county, township, operator, fault): 鹿邑县 class 1 is 3/4 in 城关镇 and 1/6 in
# 玄武镇: 4/10 = 40 % for the county, where an average of the townships would say 45.83 %.
FLEET = [
    *[(1, "雪亮工程", "鹿邑县", "城关镇", "移动", f) for f in (OK, OK, OK, AUTH)],
    *[(1, "雪亮工程", "鹿邑县", "玄武镇", "联通", f) for f in (OK, NF, NF, NF, NF, NF)],
    *[(2, "数字乡村", "鹿邑县", "城关镇", "电信", f) for f in (OK, OK, NF)],
    *[(3, "数字乡村", "郸城县", "南丰镇", "电信", f) for f in (OK, OK, OK)],
    (1, "智慧小区", "郸城县", "南丰镇", "移动", AUTH),
    (9, "天网", "郸城县", "", "", OK),  # no township, no operator: left out of those scopes
]
VARS = {"county": "鹿邑县", "township": "城关镇", "class": "1", "operator": "移动",
        "__rate_interval": "1m"}
# panels that must return data on this fleet (everything but the list of long-offline ones)
MAY_BE_EMPTY = {"离线超过3天的点位", "超时未修复工单",  # usually nothing to list
                "本月运维考核（全县）",  # only with repairs enabled and tickets this month
                # 完好率: only with quality.enabled and cameras that send pictures (the
                # simulator's do not yet); the rules and queries still run
                "完好率（所选范围）", "完好 / 已判定", "乡镇完好率排名", "各类点位完好率与目标",
                "画面异常点位", "画面抽检落后", "画面抽检速率（按结果）",
                # only with gb28181 enabled (tests/test_grafana_dashboards.py runs them on
                # the series camwatch exports, in promtool)
                "国标下级平台", "国标下级平台在线", "国标注册被拒"}
# a query per class or per project (refIds C1, T1, P0, ...): each must run, and at least one
# of a panel's returns data (with class 1 selected, the class-2 query has nothing to show)
SPLIT_REF = re.compile(r"[CTP]\d+")
# rate scopes of the daemon -> recording-rule level
LEVELS = {
    ((), None): "site", ((), "class"): "class", ((), "project"): "project",
    (("county",), None): "county", (("county",), "class"): "county_class",
    (("county",), "project"): "county_project",
    (("county", "township"), None): "county_township",
    (("county", "township"), "class"): "county_township_class",
    (("county", "township"), "project"): "county_township_project",
    (("operator",), None): "operator", (("county", "operator"), None): "county_operator",
    (("county", "township", "operator"), None): "county_township_operator",
}


def write_site(tmp: Path, ports: list[int]) -> Path:
    rows = [Row(f"rtsp://127.0.0.1:{port}/ch", klass=klass, project=project, county=county,
                township=town, operator=op)
            for (klass, project, county, town, op, _), port in zip(FLEET, ports, strict=True)]
    return write_site_rows(tmp, rows, "probing: {interval: 2s, timeout: 1s, "
                                      "per_host_concurrency: 64, onvif: false}\n"
                                      "states: {fail_threshold: 1}\nstore: {path: state.db}\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    def __init__(self, tmp: Path, target: str) -> None:
        binary = need_binary("prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "1s"},
            "rule_files": [str(p) for p in RULES],
            "scrape_configs": [{"job_name": "camwatch",
                                "static_configs": [{"targets": [target]}]}],
        }), encoding="utf-8")
        self.log_path = tmp / "prometheus.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.p = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        poll("Prometheus ready", self._ready, 60)

    def _ready(self) -> bool:
        assert self.p.poll() is None, self.log_path.read_text("utf-8", "replace")
        return get(self.url + "/-/ready")[0] == 200

    def api(self, path: str, **params: str) -> Any:
        code, body = get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        doc = json.loads(body)
        assert code == 200 and doc["status"] == "success", (params, body)
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else \
            [{"metric": {}, "value": data["result"]}]
        return result

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Proc, Prometheus]]:
    need_binary("prometheus")
    with FleetThread([f[-1] for f in FLEET]) as fleet:
        proc = Proc(write_site(tmp_path, fleet.ports))
        prom = None
        try:
            prom = Prometheus(tmp_path, proc.base.removeprefix("http://"))
            yield proc, prom
        finally:
            if prom is not None:
                prom.stop()
            if proc.p.poll() is None:
                proc.p.kill()
                proc.p.wait()
            proc.stderr.close()


def daemon_rates(proc: Proc) -> list[dict[str, Any]]:
    rates: list[dict[str, Any]] = json.loads(get(proc.base + "/api/rates")[1])["rates"]
    return rates


def expected_rates(proc: Proc) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The daemon's rates keyed as the recording rules' series would be."""
    out = {}
    for r in daemon_rates(proc):
        breakdown = "class" if r["class"] is not None else \
            "project" if r["project"] is not None else None
        level = LEVELS.get((tuple(r["scope"]), breakdown))
        if level is None or r["rate"] is None:
            continue  # villages, operator × class: no recording rule; 0/0: no rate
        labels = dict(r["scope"])
        if breakdown is not None:
            labels[breakdown] = str(r[breakdown])
        out[(level, frozenset(labels.items()))] = r["online"] / r["connected"]
    return out


def recorded_rates(prom: Prometheus) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for level in set(LEVELS.values()):
        for s in prom.query(f"{level}:camwatch_online_rate:ratio"):
            labels = {k: v for k, v in s["metric"].items() if k != "__name__"}
            out[(level, frozenset(labels.items()))] = float(s["value"][1])
    return out


def _querier(prom: Prometheus, expr: str) -> Callable[[], list[dict[str, Any]]]:
    return lambda: prom.query(expr)


def substitute(expr: str) -> str:
    return re.sub(r"\$(\w+)", lambda m: VARS[m.group(1)], expr)


@pytest.mark.peer
@pytest.mark.slow
def test_recording_rules_and_dashboards_against_real_prometheus(
        stack: tuple[Proc, Prometheus]) -> None:
    proc, prom = stack
    judged = sum(1 for f in FLEET)

    def daemon_settled() -> bool:
        site = [r for r in daemon_rates(proc) if r["scope"] == {} and r["class"] is None
                and r["project"] is None]
        return bool(site) and site[0]["connected"] == judged

    poll("every channel judged by the daemon", daemon_settled, 60)

    def recorded_settled() -> bool:
        got = prom.query("site:camwatch_channels:sum")
        return bool(got) and float(got[0]["value"][1]) == judged

    poll("the recording rules to see every channel", recorded_settled, 60)

    # the same rates, from the same fleet, by the two definitions: Python and PromQL (every
    # level recorded: the groups of rules evaluate at offsets of their own)
    want = expected_rates(proc)
    poll("every level of the recording rules", lambda: set(recorded_rates(prom)) == set(want),
         60)
    got = recorded_rates(prom)
    assert set(got) == set(want)
    for key, rate in want.items():
        assert round(got[key], 4) == round(rate, 4), key
    county1 = ("county_class", frozenset({("county", "鹿邑县"), ("class", "1")}))
    assert got[county1] == pytest.approx(0.4)  # not 0.4583, the average of 3/4 and 1/6
    assert len(got) >= 30

    # every rule (recording and alerting) evaluates without error
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    # every rule of every file under deploy/prometheus/rules (60 before the cluster's)
    assert len(rules) == sum(len(g["rules"]) for path in RULES for g in
                             yaml.safe_load(path.read_text("utf-8"))["groups"]) >= 61
    for r in rules:
        assert r["health"] != "err", (r["name"], r.get("lastError"))

    # every dashboard expression runs; the headline panels return data
    for path in DASHBOARDS:
        doc = json.loads(path.read_text("utf-8"))
        for var in doc["templating"]["list"]:
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", var.get("definition", ""))
            if m:
                values = {s["metric"].get(m.group(2)) for s in
                          prom.query(f"group by ({m.group(2)}) ({substitute(m.group(1))})")}
                assert VARS[var["name"]] in values, (path.stem, var["name"], values)
        for p in doc["panels"]:
            splits = []
            for t in p["targets"]:
                expr = substitute(t["expr"])
                assert "$" not in expr
                if p["title"] in MAY_BE_EMPTY or SPLIT_REF.fullmatch(t["refId"]):
                    prom.query(expr)  # must run
                    splits.append(expr)
                    continue
                poll(f"{path.stem}: {p['title']}: {expr}", _querier(prom, expr), 30)
            if splits and p["title"] not in MAY_BE_EMPTY:
                poll(f"{path.stem}: {p['title']}: one of {splits}",
                     lambda s=splits: any(prom.query(e) for e in s), 30)

    # the scoped panels follow the selection, and "All" is the whole site, channels without a
    # township included (天网 in 郸城县 has none): the daemon's rates, by the cell rules
    def panel_value(uid: str, title: str, ref: str, variables: dict[str, str]) -> float:
        doc = json.loads((ROOT / f"deploy/grafana/dashboards/{uid}.json").read_text("utf-8"))
        (p,) = [p for p in doc["panels"] if p["title"] == title]
        (t,) = [t for t in p["targets"] if t["refId"] == ref]
        expr = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], t["expr"])
        (sample,) = prom.query(expr)
        return float(sample["value"][1])

    every = {"county": ".*", "township": ".*", "class": ".*", "operator": ".*"}
    daemon = {(json.dumps(r["scope"], sort_keys=True, ensure_ascii=False), r["class"],
               r["project"]): r for r in daemon_rates(proc)}

    def daemon_rate(scope: dict[str, str], klass: int | None = None,
                    project: str | None = None) -> float:
        r = daemon[(json.dumps(scope, sort_keys=True, ensure_ascii=False), klass, project)]
        return float(r["online"] / r["connected"])

    scope_rate = ("camwatch-overview", "在线率（所选范围）")
    assert panel_value(*scope_rate, "ALL", every) == pytest.approx(daemon_rate({}))
    town = {"county": "鹿邑县", "township": "城关镇"}
    assert panel_value(*scope_rate, "ALL", {**every, **town}) == pytest.approx(daemon_rate(town))
    assert panel_value(*scope_rate, "C1", {**every, **town}) == pytest.approx(
        daemon_rate(town, 1)) == pytest.approx(0.75)
    assert panel_value(*scope_rate, "C3", {**every, "county": "郸城县"}) == pytest.approx(
        daemon_rate({"county": "郸城县"}, 3))
    projects = ("camwatch-overview", "各项目在线率")
    assert panel_value(*projects, "P1", every) == pytest.approx(
        daemon_rate({}, project="智慧小区")) == 0.0
    operators = ("camwatch-operators", "运营商在线率")
    assert panel_value(*operators, "C1", {**every, **town, "operator": "移动"}) == \
        pytest.approx(daemon_rate({**town, "operator": "移动"}))

    # the offline table: the right channels, with their reasons and since-when
    offline = next(t["expr"] for t in json.loads(
        (ROOT / "deploy/grafana/dashboards/camwatch-offline.json").read_text("utf-8"))["panels"]
        [4]["targets"] if t["refId"] == "A")
    rows = prom.query(re.sub(r"\$(\w+)", lambda m: ".*" if m.group(1) != "__rate_interval"
                             else "1m", offline))
    assert sorted(r["metric"]["reason"] for r in rows) == ["auth", "auth"] + ["not_found"] * 6
    down = json.loads(get(proc.base + "/api/channels?state=offline")[1])["channels"]
    since = {c["id"]: c["since"] for c in down}
    for r in rows:
        assert float(r["value"][1]) == pytest.approx(since[r["metric"]["channel"]], abs=1e-3)
