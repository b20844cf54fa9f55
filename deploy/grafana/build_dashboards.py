"""Writes camwatch's Grafana dashboards (``dashboards/*.json``) from the definitions below.

    python3 deploy/grafana/build_dashboards.py          # rewrite the JSON files
    python3 deploy/grafana/build_dashboards.py --check  # exit 1 if they are out of date

The JSON files are what operators provision; this script keeps them consistent (stable uids, a
``${datasource}`` variable, a unit and a description on every panel, panel layout). Panels
query the recording rules of ``deploy/prometheus/rules`` wherever one exists; per-channel
tables and the prober's own health read the raw series. Titles are Chinese (the people who
read them), descriptions English.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}

COUNTY = 'county=~"$county"'
TOWN = 'township=~"$township"'
CLASS = 'class=~"$class"'
OPERATOR = 'operator=~"$operator"'

# offline channels (camwatch_channel_up == 0), value 1, with the channel's labels
OFFLINE = f"((camwatch_channel_up{{{COUNTY},{TOWN},{CLASS}}} == 0) + 1)"


def q(expr: str, legend: str = "", *, instant: bool = False, table: bool = False,
      ref: str = "A") -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "refId": ref, "expr": expr,
                         "legendFormat": legend or "__auto"}
    if instant or table:
        t.update(instant=True, range=False)
    if table:
        t["format"] = "table"
    return t


def panel(kind: str, title: str, description: str, unit: str, targets: list[dict[str, Any]],
          w: int = 12, h: int = 8, **extra: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit}
    if unit == "percentunit":
        defaults.update(min=0, max=1, decimals=2)
    defaults.update(extra.pop("defaults", {}))
    p: dict[str, Any] = {
        "type": kind, "title": title, "description": description, "datasource": DS,
        "targets": targets, "fieldConfig": {"defaults": defaults,
                                            "overrides": extra.pop("overrides", [])},
        "gridPos": {"w": w, "h": h},
    }
    p.update(extra)
    return p


def rate_thresholds(red_below: float = 0.95, green_from: float = 0.98) -> dict[str, Any]:
    return {"thresholds": {"mode": "absolute", "steps": [
        {"color": "red", "value": None}, {"color": "orange", "value": red_below},
        {"color": "green", "value": green_from}]}}


def var_datasource() -> dict[str, Any]:
    return {"name": "datasource", "label": "数据源 (datasource)", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0}


def var_query(name: str, label: str, query: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
            "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"}, "sort": 1, "hide": 0}


def v_county() -> dict[str, Any]:
    return var_query("county", "区县 (county)",
                     "label_values(county:camwatch_channels:sum, county)")


def v_township() -> dict[str, Any]:
    return var_query("township", "乡镇 (township)",
                     f"label_values(county_township:camwatch_channels:sum{{{COUNTY}}}, township)")


def v_class() -> dict[str, Any]:
    return var_query("class", "点位类型 (class)",
                     "label_values(class:camwatch_channels:sum, class)")


def v_operator() -> dict[str, Any]:
    return var_query("operator", "运营商 (operator)",
                     "label_values(operator:camwatch_channels:sum, operator)")


def dashboard(uid: str, title: str, description: str, variables: list[dict[str, Any]],
              panels: list[dict[str, Any]], refresh: str = "1m") -> dict[str, Any]:
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["id"] = i
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x += w
        row_h = max(row_h, h)
    return {
        "uid": uid, "title": title, "description": description,
        "tags": ["camwatch"], "timezone": "browser", "editable": True,
        "schemaVersion": 39, "version": 1, "refresh": refresh, "graphTooltip": 1,
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": [var_datasource(), *variables]},
        "links": [{"title": "camwatch", "type": "dashboards", "tags": ["camwatch"],
                   "asDropdown": True}],
        "annotations": {"list": []},
        "panels": panels,
    }


def overview() -> dict[str, Any]:
    cls = f"{{{CLASS}}}"
    cc = f"{{{COUNTY},{CLASS}}}"
    ctc = f"{{{COUNTY},{TOWN},{CLASS}}}"
    below = (f"county_township_class:camwatch_online_rate:ratio{ctc}\n"
             f"  < on (class) group_left ()\nclass:camwatch_online_rate_target:max")
    return dashboard(
        "camwatch-overview", "camwatch 在线率总览",
        "Online rates (Σ online / Σ judged channels, unknown left out) by class, county and "
        "township against their targets.",
        [v_county(), v_township(), v_class()],
        [
            panel("stat", "全域在线率",
                  "Online rate of every judged channel of every camwatch instance.",
                  "percentunit", [q("site:camwatch_online_rate:ratio", "全域")], w=6, h=5,
                  defaults=rate_thresholds()),
            panel("stat", "在线 / 已判定 / 未知",
                  "Channels online, judged (online + offline: the denominator) and unknown "
                  "(never probed or prober unhealthy, left out of the rates).",
                  "none", [q("site:camwatch_channels_online:sum", "在线 online", ref="A"),
                           q("site:camwatch_channels:sum", "已判定 judged", ref="B"),
                           q("site:camwatch_channels_unknown:sum", "未知 unknown", ref="C")],
                  w=8, h=5),
            panel("bargauge", "各类点位在线率",
                  "Online rate by point class (一类/二类/三类...), whole site; colours follow "
                  "the default targets (98 % / 95 %).",
                  "percentunit", [q(f"class:camwatch_online_rate:ratio{cls}",
                                    "{{class}}类", instant=True)],
                  w=10, h=5, defaults=rate_thresholds(), options={"orientation": "vertical"}),
            panel("timeseries", "各类点位在线率与目标",
                  "Online rate by class over time, dashed: the class's target "
                  "(camwatch_online_rate_target).",
                  "percentunit",
                  [q(f"class:camwatch_online_rate:ratio{cls}", "{{class}}类 在线率", ref="A"),
                   q(f"class:camwatch_online_rate_target:max{cls}", "{{class}}类 目标",
                     ref="B")],
                  w=12, h=8, overrides=[{
                      "matcher": {"id": "byFrameRefID", "options": "B"},
                      "properties": [{"id": "custom.lineStyle",
                                      "value": {"fill": "dash", "dash": [10, 10]}}]}]),
            panel("timeseries", "各区县在线率趋势",
                  "Online rate by county and class over time.",
                  "percentunit", [q(f"county_class:camwatch_online_rate:ratio{cc}",
                                    "{{county}} {{class}}类")], w=12, h=8),
            panel("table", "各区县在线率",
                  "Online rate, online and judged channels by county and class, now.",
                  "percentunit",
                  [q(f"county_class:camwatch_online_rate:ratio{cc}", table=True, ref="A"),
                   q(f"county_class:camwatch_channels_online:sum{cc}", table=True, ref="B"),
                   q(f"county_class:camwatch_channels:sum{cc}", table=True, ref="C")],
                  w=12, h=8, transformations=[
                      {"id": "merge", "options": {}},
                      {"id": "organize", "options": {
                          "excludeByName": {"Time": True},
                          "renameByName": {"county": "区县", "class": "类型",
                                           "Value #A": "在线率", "Value #B": "在线",
                                           "Value #C": "已判定"}}}],
                  overrides=[{"matcher": {"id": "byRegexp", "options": "在线|已判定"},
                              "properties": [{"id": "unit", "value": "none"}]}]),
            panel("bargauge", "乡镇在线率排名",
                  "Townships ranked by online rate (lowest first), per class.",
                  "percentunit",
                  [q(f"sort(county_township_class:camwatch_online_rate:ratio{ctc})",
                     "{{county}} {{township}} {{class}}类", instant=True)],
                  w=12, h=12, defaults=rate_thresholds(),
                  options={"orientation": "horizontal", "displayMode": "lcd"}),
            panel("table", "未达标乡镇",
                  "Township × class scopes whose online rate is below the class target now "
                  "(the alert CamwatchOnlineRateBelowTarget fires after 15 minutes of this).",
                  "percentunit", [q(below, table=True)], w=12, h=12,
                  transformations=[{"id": "organize", "options": {
                      "excludeByName": {"Time": True},
                      "renameByName": {"county": "区县", "township": "乡镇", "class": "类型",
                                       "Value": "在线率"}}}]),
            panel("timeseries", "乡镇在线率趋势",
                  "Online rate by township and class over time.",
                  "percentunit", [q(f"county_township_class:camwatch_online_rate:ratio{ctc}",
                                    "{{township}} {{class}}类")], w=24, h=8),
        ])


def offline() -> dict[str, Any]:
    ct = f"{{{COUNTY},{TOWN}}}"
    since = ("camwatch_channel_state_since_timestamp_seconds\n"
             "  * on (channel) group_left (reason) camwatch_channel_offline_reason\n"
             "  * on (channel) group_left (class, project, county, township, operator)\n"
             f"  {OFFLINE}")
    last = ("camwatch_channel_last_probe_timestamp_seconds\n"
            "  * on (channel) group_left (class, project, county, township, operator)\n"
            f"  {OFFLINE}")
    long_off = (f"(time() - camwatch_channel_state_since_timestamp_seconds)\n"
                f"  * on (channel) group_left (county, township, operator) {OFFLINE}\n"
                f"  > 3 * 86400")
    return dashboard(
        "camwatch-offline", "camwatch 离线点位",
        "Offline channels: which, why, since when; offline counts by township and reason.",
        [v_county(), v_township(), v_class()],
        [
            panel("stat", "离线点位数",
                  "Channels offline now in the selected scope (judged minus online).",
                  "none", [q(f"sum(county_township:camwatch_channels:sum{ct})\n"
                             f"  - sum(county_township:camwatch_channels_online:sum{ct})",
                             "离线 offline")], w=6, h=5,
                  defaults={"thresholds": {"mode": "absolute", "steps": [
                      {"color": "green", "value": None}, {"color": "red", "value": 1}]}}),
            panel("stat", "未知点位数",
                  "Channels without a verdict (never probed, or prober unhealthy): left out "
                  "of the rates.",
                  "none", [q(f"sum(county_township:camwatch_channels_unknown:sum{ct})",
                             "未知 unknown")], w=6, h=5),
            panel("piechart", "离线原因",
                  "Offline channels by reason (timeout, refused, auth, not_found, host_down, "
                  "flapping, ...).",
                  "none", [q("count by (reason) (\n  camwatch_channel_offline_reason\n"
                             f"    * on (channel) group_left () {OFFLINE}\n)",
                             "{{reason}}", instant=True)], w=12, h=10,
                  options={"pieType": "donut", "legend": {"displayMode": "table",
                                                          "placement": "right",
                                                          "values": ["value"]}}),
            panel("bargauge", "各乡镇离线点位数",
                  "Offline channels per township (judged minus online), most first.",
                  "none",
                  [q(f"sort_desc(\n  county_township:camwatch_channels:sum{ct}\n"
                     f"    - county_township:camwatch_channels_online:sum{ct}\n)",
                     "{{county}} {{township}}", instant=True)],
                  w=12, h=10, options={"orientation": "horizontal"}),
            panel("table", "离线点位清单",
                  "Every offline channel with its reason, since when it is offline and when "
                  "it was last probed (camwatch_channel_up == 0 joined with "
                  "camwatch_channel_state_since_timestamp_seconds and "
                  "camwatch_channel_last_probe_timestamp_seconds).",
                  "dateTimeAsIso",
                  [q(since, table=True, ref="A"), q(last, table=True, ref="B")],
                  w=24, h=14, transformations=[
                      {"id": "merge", "options": {}},
                      {"id": "organize", "options": {
                          "excludeByName": {"Time": True, "__name__": True, "job": True},
                          "renameByName": {"channel": "设备编码", "county": "区县",
                                           "township": "乡镇", "class": "类型",
                                           "project": "项目", "operator": "运营商",
                                           "reason": "原因", "instance": "camwatch",
                                           "Value #A": "离线起始 (since)",
                                           "Value #B": "最后探测 (last probe)"}}},
                      {"id": "sortBy", "options": {"sort": [{"field": "离线起始 (since)"}]}}]),
            panel("table", "离线超过3天的点位",
                  "Channels offline for more than 3 days (the monthly bulletin's default), "
                  "with how long.",
                  "s", [q(long_off, table=True)], w=24, h=10,
                  transformations=[{"id": "organize", "options": {
                      "excludeByName": {"Time": True},
                      "renameByName": {"channel": "设备编码", "county": "区县",
                                       "township": "乡镇", "operator": "运营商",
                                       "Value": "已离线 (offline for)"}}}]),
        ])


def operators() -> dict[str, Any]:
    op = f"{{{OPERATOR}}}"
    cto = f"{{{COUNTY},{TOWN},{OPERATOR}}}"
    return dashboard(
        "camwatch-operators", "camwatch 运营商",
        "Online rates and offline channels by operator (移动 / 联通 / 电信), who must fix "
        "their channels.",
        [v_county(), v_township(), v_operator()],
        [
            panel("bargauge", "运营商在线率",
                  "Online rate by operator, whole site (from camwatch_channel_up: Σ up / "
                  "judged channels).",
                  "percentunit", [q(f"operator:camwatch_online_rate:ratio{op}", "{{operator}}",
                                    instant=True)],
                  w=12, h=6, defaults=rate_thresholds()),
            panel("bargauge", "运营商离线点位数",
                  "Offline channels by operator in the selected county and township.",
                  "none", [q(f"sum by (operator) (\n  county_township_operator:camwatch_channels"
                             f":sum{cto}\n    - county_township_operator:camwatch_channels_"
                             f"online:sum{cto}\n)", "{{operator}}", instant=True)],
                  w=12, h=6),
            panel("timeseries", "运营商在线率趋势",
                  "Online rate by operator over time.",
                  "percentunit", [q(f"operator:camwatch_online_rate:ratio{op}",
                                    "{{operator}}")], w=24, h=8),
            panel("table", "运营商 × 乡镇在线率",
                  "Online rate by operator and township, lowest first.",
                  "percentunit",
                  [q(f"sort(county_township_operator:camwatch_online_rate:ratio{cto})",
                     table=True, ref="A"),
                   q(f"county_township_operator:camwatch_channels:sum{cto}", table=True,
                     ref="B")],
                  w=24, h=12, transformations=[
                      {"id": "merge", "options": {}},
                      {"id": "organize", "options": {
                          "excludeByName": {"Time": True},
                          "renameByName": {"county": "区县", "township": "乡镇",
                                           "operator": "运营商", "Value #A": "在线率",
                                           "Value #B": "已判定"}}}],
                  overrides=[{"matcher": {"id": "byName", "options": "已判定"},
                              "properties": [{"id": "unit", "value": "none"}]}]),
        ])


def prober() -> dict[str, Any]:
    job = '{job="camwatch"}'
    ri = "$__rate_interval"
    return dashboard(
        "camwatch-prober", "camwatch 探测服务",
        "Health of camwatch itself: is it scraped, does it trust its results, is it keeping "
        "up, how long probes take.",
        [],
        [
            panel("stat", "采集状态", "1 when Prometheus can scrape each camwatch instance "
                  "(up).", "none", [q(f"up{job}", "{{instance}}")], w=6, h=5,
                  defaults={"mappings": [{"type": "value", "options": {
                      "0": {"text": "DOWN", "color": "red"},
                      "1": {"text": "UP", "color": "green"}}}]}),
            panel("stat", "探测服务健康", "1 when the prober trusts its own results; 0 when the "
                  "event loop lags, the sweep is an interval behind, or its own uplink is down "
                  "(/healthz says which).", "none",
                  [q("camwatch_prober_healthy", "{{instance}}")], w=6, h=5,
                  defaults={"mappings": [{"type": "value", "options": {
                      "0": {"text": "异常 unhealthy", "color": "red"},
                      "1": {"text": "正常 healthy", "color": "green"}}}]}),
            panel("stat", "未知点位数", "Channels without a verdict, all instances.", "none",
                  [q("site:camwatch_channels_unknown:sum", "unknown")], w=6, h=5),
            panel("stat", "待发送告警", "Notifications waiting in the outbox (-1: not counted "
                  "yet or the store failed).", "none",
                  [q("camwatch_alert_outbox_depth", "{{instance}}")], w=6, h=5),
            panel("timeseries", "探测延迟与周期",
                  "Median lag of probes behind their due time, time the last full round took, "
                  "and the configured interval.", "s",
                  [q("camwatch_sweep_lag_seconds", "lag {{instance}}", ref="A"),
                   q("camwatch_sweep_duration_seconds", "round {{instance}}", ref="B"),
                   q("camwatch_probe_interval_seconds", "interval {{instance}}", ref="C")]),
            panel("timeseries", "事件循环延迟", "Event-loop lag; over 1 s the prober stops "
                  "trusting itself.", "s", [q("camwatch_loop_lag_seconds", "{{instance}}")]),
            panel("timeseries", "探测速率（按结果）", "Probes per second by kind and outcome.",
                  "ops", [q(f"sum by (kind, reason) (rate(camwatch_probes_total[{ri}]))",
                            "{{kind}} {{reason}}")]),
            panel("timeseries", "探测阶段耗时 p95", "95th percentile duration of each probe "
                  "phase (connect, options, describe, ...).", "s",
                  [q("histogram_quantile(0.95,\n  sum by (phase, le) (rate("
                     f"camwatch_probe_phase_seconds_bucket[{ri}])))", "{{phase}}")]),
            panel("timeseries", "并发探测数", "Probes running now.", "none",
                  [q("camwatch_probes_in_flight", "{{instance}}")]),
            panel("timeseries", "状态变化速率", "Channel state transitions per second, by new "
                  "state.", "ops",
                  [q(f"sum by (to) (rate(camwatch_channel_transitions_total[{ri}]))",
                     "{{to}}")]),
            panel("timeseries", "存储写入错误与配置重载", "Failed store writes per second and "
                  "config reloads by result.", "ops",
                  [q(f"rate(camwatch_store_write_errors_total[{ri}])", "store errors", ref="A"),
                   q(f"sum by (result) (rate(camwatch_config_reloads_total[{ri}]))",
                     "reload {{result}}", ref="B")]),
            panel("timeseries", "采集耗时", "How long Prometheus takes to scrape camwatch.",
                  "s", [q(f"scrape_duration_seconds{job}", "{{instance}}")]),
            panel("timeseries", "内存", "Resident memory of the camwatch process.", "bytes",
                  [q(f"process_resident_memory_bytes{job}", "{{instance}}")]),
            panel("timeseries", "CPU", "CPU used by the camwatch process (1 = one core).",
                  "percentunit", [q(f"rate(process_cpu_seconds_total{job}[{ri}])",
                                    "{{instance}}")]),
            panel("table", "版本", "camwatch version of each instance.", "none",
                  [q("camwatch_build_info", table=True)], w=24, h=5,
                  transformations=[{"id": "organize", "options": {
                      "excludeByName": {"Time": True, "__name__": True, "Value": True}}}]),
        ])


DASHBOARDS = {"camwatch-overview.json": overview, "camwatch-offline.json": offline,
              "camwatch-operators.json": operators, "camwatch-prober.json": prober}


def render() -> dict[str, str]:
    return {name: json.dumps(make(), ensure_ascii=False, indent=2) + "\n"
            for name, make in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        path = OUT / name
        if check:
            if not path.exists() or path.read_text("utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date: {', '.join(stale)}; run {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
