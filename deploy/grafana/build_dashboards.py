"""Writes camwatch's Grafana dashboards (``dashboards/*.json``) from the definitions below.

    python3 deploy/grafana/build_dashboards.py          # rewrite the JSON files
    python3 deploy/grafana/build_dashboards.py --check  # exit 1 if they are out of date

(run with an interpreter that has camwatch installed: ``./run-tests`` makes one in ``.venv``.)

The JSON files are what operators provision; this script keeps them consistent (stable uids, a
``${datasource}`` variable, a unit and a Chinese description on every panel, panel layout) and
takes from camwatch itself what must agree with it: the targets (``TargetsConfig``'s defaults)
that colour each class's rates, the class names (``CLASS_NAMES``) and the Chinese offline
reasons (``REASON_ZH``, as Grafana value mappings). Panels read recording rules of
``deploy/prometheus/rules``; those that follow ``$county`` and ``$township`` sum the "cell"
rules (every label kept), so a filter left at "All" still counts channels lacking a township.
Per-channel tables and the prober's own health read the raw series.

Why not grafana-foundation-sdk (Grafana's typed builders, evaluated at 1769699379!11.6.0):
- what these dashboards get wrong when they are wrong is PromQL, transformations, overrides
  and value mappings; in the SDK the last three are untyped (``options: object``,
  ``DynamicConfigValue.value: object``), and PromQL is a string either way. The checks that
  matter run in tests/: every query in a real Prometheus, every panel's variables, units,
  thresholds against the targets;
- its automatic layout put a 24-wide panel after a 6-wide one at x=6 (off the 24-column grid),
  so the layout below would stay anyway;
- it writes every default it knows (``transparent: false``, ``repeatDirection``, ...) and pins
  a schema version per Grafana release through an epoch version (``1769699379!11.6.0``), which
  makes the committed JSON noisier and the dependency awkward to keep current.
Plain dicts, checked by tests, are the smaller tool here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from camwatch.config import TargetsConfig  # noqa: E402
from camwatch.model import CLASS_NAMES, REASON_ZH  # noqa: E402
from camwatch.quality.names import CHECK_ZH  # noqa: E402

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}

COUNTY = 'county=~"$county"'
TOWN = 'township=~"$township"'
CLASS = 'class=~"$class"'
OPERATOR = 'operator=~"$operator"'
AREA = f"{COUNTY},{TOWN}"

# The recording rules' "cell" levels: every label kept, instances summed away.
CELL = "class_project_county_township"
OP_CELL = "class_county_township_operator"

TARGETS = TargetsConfig()
CLASS_TARGETS: dict[int, float] = dict(TARGETS.by_class)
PROJECT_TARGETS: dict[str, float] = dict(TARGETS.by_project)
# 完好率's targets (targets.intact; by default the online ones)
INTACT_TARGETS: dict[int, float] = dict(TARGETS.intact_targets().by_class)
ORANGE_PP = 0.03  # orange within 3 percentage points below a target, red further below
NEUTRAL = "blue"  # a rate without a target: no verdict colour

# offline channels (camwatch_channel_up == 0), value 1, with the channel's labels
OFFLINE = f"((camwatch_channel_up{{{AREA},{CLASS}}} == 0) + 1)"
# labels of camwatch_channel_up shown in the per-channel tables; name (点位名称) and village (村)
# show once camwatch exports them on camwatch_channel_up
CHANNEL_LABELS = "name, village, class, project, county, township, operator"


# --- queries ------------------------------------------------------------------------------------


def q(expr: str, legend: str = "", *, instant: bool = False, table: bool = False,
      ref: str = "A") -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "refId": ref, "expr": expr,
                         "legendFormat": legend or "__auto"}
    if instant or table:
        t.update(instant=True, range=False)
    if table:
        t["format"] = "table"
    return t


def summed(level: str, metric: str, by: str, sel: str) -> str:
    """``sum by (by) (level:metric:sum{sel})``: a cell rule, filtered, then summed."""
    grouping = f"by ({by}) " if by else ""
    return f"sum {grouping}({level}:{metric}:sum{{{sel}}})"


def rate(level: str, by: str, sel: str) -> str:
    """The online rate, Σ online / Σ judged, of the cells ``sel`` selects, by ``by``: the one
    definition (camwatch/rules/rates.py), no rate where nothing is judged."""
    return (f"{summed(level, 'camwatch_channels_online', by, sel)}\n  /\n"
            f"({summed(level, 'camwatch_channels', by, sel)} > 0)")


def intact_rate(level: str, by: str, sel: str) -> str:
    """The 完好率, Σ intact / Σ judged (docs/quality.md), as :func:`rate`."""
    return (f"{summed(level, 'camwatch_channels_intact', by, sel)}\n  /\n"
            f"({summed(level, 'camwatch_channels_intact_judged', by, sel)} > 0)")


def offline_count(level: str, by: str, sel: str) -> str:
    return (f"{summed(level, 'camwatch_channels', by, sel)}\n  -\n"
            f"{summed(level, 'camwatch_channels_online', by, sel)}")


def class_ref(klass: int) -> str:
    return f"C{klass}"


def per_class(make: Any, legend: str, **kw: Any) -> list[dict[str, Any]]:
    """One query per point class (``make(class_matcher)``), legend with the Chinese class
    name in place of ``{class}``: each class gets its own thresholds by its refId."""
    return [q(make(f'class="{k}"'), legend.replace("{class}", name), ref=class_ref(k), **kw)
            for k, name in CLASS_NAMES.items()]


# --- colours ------------------------------------------------------------------------------------


def target_thresholds(target: float | None) -> dict[str, Any]:
    """Green from the target, orange up to ``ORANGE_PP`` below it, red further below; one
    neutral colour for a rate without a target."""
    if target is None:
        return {"mode": "absolute", "steps": [{"color": NEUTRAL, "value": None}]}
    return {"mode": "absolute", "steps": [
        {"color": "red", "value": None},
        {"color": "orange", "value": round(target - ORANGE_PP, 4)},
        {"color": "green", "value": target}]}


def by_ref(ref: str, *properties: dict[str, Any]) -> dict[str, Any]:
    return {"matcher": {"id": "byFrameRefID", "options": ref}, "properties": list(properties)}


def class_colours(targets: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """Overrides colouring each class's query against that class's target (the online
    targets, or ``targets``)."""
    chosen = CLASS_TARGETS if targets is None else targets
    return [by_ref(class_ref(k), {"id": "thresholds",
                                  "value": target_thresholds(chosen.get(k))},
                   {"id": "color", "value": {"mode": "thresholds"}})
            for k in CLASS_NAMES]


def value_map(table: dict[str, str]) -> list[dict[str, Any]]:
    return [{"type": "value", "options": {
        k: {"text": v, "index": i} for i, (k, v) in enumerate(table.items())}}]


CLASS_MAP = value_map({str(k): v for k, v in CLASS_NAMES.items()})
REASON_MAP = value_map({str(k): v for k, v in REASON_ZH.items()})
CHECK_MAP = value_map(dict(CHECK_ZH))


def column(name: str, *properties: dict[str, Any]) -> dict[str, Any]:
    return {"matcher": {"id": "byName", "options": name}, "properties": list(properties)}


def mapped(name: str, mappings: list[dict[str, Any]]) -> dict[str, Any]:
    return column(name, {"id": "mappings", "value": mappings})


# --- panels and dashboards ----------------------------------------------------------------------


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


TARGET_NOTE = ("颜色按各类目标：" + "，".join(
    f"{CLASS_NAMES[k]} ≥ {v:.0%}" for k, v in CLASS_TARGETS.items()) +
    f"（达标为绿，低于目标 {ORANGE_PP:.0%} 以内为橙，更低为红；无目标的类型为蓝）")


def overview() -> dict[str, Any]:
    sel = f"{AREA},{CLASS}"
    ctc = f"{{{sel}"  # + class="k"}
    below = (f"county_township_class:camwatch_online_rate:ratio{{{sel}}}\n"
             f"  < on (class) group_left ()\nclass:camwatch_online_rate_target:max")
    smart = ",".join(f'project!="{p}"' for p in PROJECT_TARGETS)
    return dashboard(
        "camwatch-overview", "camwatch 在线率总览",
        "所选区县、乡镇、点位类型的视频监控在线率（在线 / 已判定，未知不计），"
        "按类型、项目、区县和乡镇，与目标对照。",
        [v_county(), v_township(), v_class()],
        [
            panel("stat", "在线率（所选范围）",
                  "所选区县、乡镇、类型内全部已判定点位的在线率（Σ在线 / Σ已判定），"
                  "及各类型的在线率。" + TARGET_NOTE,
                  "percentunit",
                  [q(rate(CELL, "", sel), "全部", ref="ALL"),
                   *per_class(lambda c: rate(CELL, "", f"{sel},{c}"), "{class}")],
                  w=10, h=5,
                  defaults={"thresholds": target_thresholds(None)},
                  overrides=class_colours()),
            panel("stat", "在线 / 已判定 / 未知",
                  "所选范围内在线、已判定（在线 + 离线，即在线率的分母）和未知"
                  "（从未探测，或探测服务自身异常，不计入在线率）的点位数。",
                  "none", [q(summed(CELL, "camwatch_channels_online", "", sel), "在线", ref="A"),
                           q(summed(CELL, "camwatch_channels", "", sel), "已判定", ref="B"),
                           q(summed(CELL, "camwatch_channels_unknown", "", sel), "未知",
                             ref="C")],
                  w=8, h=5),
            panel("bargauge", "各项目在线率",
                  "所选范围内各项目（雪亮工程、数字乡村、天网、智慧小区 ...）的在线率。"
                  + "，".join(f"{p}目标 {t:.0%}" for p, t in PROJECT_TARGETS.items())
                  + "，按目标着色；其他项目无目标，为蓝色。",
                  "percentunit",
                  [*(q(rate(CELL, "project", f'{sel},project="{p}"'), "{{project}}",
                       instant=True, ref=f"P{i}")
                     for i, p in enumerate(PROJECT_TARGETS, start=1)),
                   q(rate(CELL, "project", f'{sel},project!="",{smart}'), "{{project}}",
                     instant=True, ref="P0")],
                  w=6, h=5, defaults={"thresholds": target_thresholds(None)},
                  overrides=[by_ref(f"P{i}", {"id": "thresholds",
                                              "value": target_thresholds(t)})
                             for i, t in enumerate(PROJECT_TARGETS.values(), start=1)],
                  options={"orientation": "horizontal"}),
            panel("timeseries", "各类点位在线率与目标",
                  "所选范围内各类型在线率随时间的变化；虚线为该类型的目标"
                  "（camwatch_online_rate_target）。",
                  "percentunit",
                  [*per_class(lambda c: rate(CELL, "", f"{sel},{c}"), "{class} 在线率"),
                   *(q(f'class:camwatch_online_rate_target:max{{{CLASS},class="{k}"}}',
                       f"{CLASS_NAMES[k]} 目标", ref=f"T{k}") for k in CLASS_TARGETS)],
                  w=12, h=8, overrides=[by_ref(f"T{k}", {
                      "id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}})
                      for k in CLASS_TARGETS]),
            panel("timeseries", "各区县在线率趋势",
                  "所选乡镇范围内，各区县各类型在线率随时间的变化。",
                  "percentunit",
                  per_class(lambda c: rate(CELL, "county", f"{sel},{c}"), "{{county}} {class}"),
                  w=12, h=8),
            panel("table", "各区县在线率",
                  "所选范围内各区县、各类型当前的在线率、在线数和已判定数。",
                  "percentunit",
                  [q(rate(CELL, "county, class", f'{sel},class!=""'), table=True, ref="A"),
                   q(summed(CELL, "camwatch_channels_online", "county, class",
                            f'{sel},class!=""'), table=True, ref="B"),
                   q(summed(CELL, "camwatch_channels", "county, class", f'{sel},class!=""'),
                     table=True, ref="C")],
                  w=12, h=8, transformations=[
                      {"id": "merge", "options": {}},
                      {"id": "organize", "options": {
                          "excludeByName": {"Time": True},
                          "renameByName": {"county": "区县", "class": "类型",
                                           "Value #A": "在线率", "Value #B": "在线",
                                           "Value #C": "已判定"}}}],
                  overrides=[column("在线", {"id": "unit", "value": "none"}),
                             column("已判定", {"id": "unit", "value": "none"}),
                             mapped("类型", CLASS_MAP)]),
            panel("bargauge", "乡镇在线率排名",
                  "所选范围内各乡镇的在线率，每个类型从低到高排列。" + TARGET_NOTE,
                  "percentunit",
                  per_class(lambda c: f"sort(county_township_class:camwatch_online_rate:ratio"
                                      f"{ctc},{c}}})",
                            "{{county}} {{township}} {class}", instant=True),
                  w=12, h=12, defaults={"thresholds": target_thresholds(None)},
                  overrides=class_colours(),
                  options={"orientation": "horizontal", "displayMode": "lcd"}),
            panel("table", "未达标乡镇",
                  "当前在线率低于其类型目标的乡镇 × 类型（持续 15 分钟即触发告警 "
                  "CamwatchOnlineRateBelowTarget）。",
                  "percentunit", [q(below, table=True)], w=12, h=12,
                  transformations=[{"id": "organize", "options": {
                      "excludeByName": {"Time": True},
                      "renameByName": {"county": "区县", "township": "乡镇", "class": "类型",
                                       "Value": "在线率"}}}],
                  overrides=[mapped("类型", CLASS_MAP)]),
            panel("timeseries", "乡镇在线率趋势",
                  "所选范围内各乡镇各类型在线率随时间的变化。",
                  "percentunit",
                  per_class(lambda c: f"county_township_class:camwatch_online_rate:ratio"
                                      f"{ctc},{c}}}", "{{township}} {class}"),
                  w=24, h=8),
            *intact_panels(sel, ctc),
        ])


INTACT_NOTE = ("完好率 = 在线且画面正常（最近一次视频质量诊断无异常）的点位 / 离线或已诊断的点位，"
               "画面未诊断的不计（开启 quality.enabled 后才有数据）。颜色按各类完好率目标"
               "（targets.intact）：" + "，".join(
                   f"{CLASS_NAMES[k]} ≥ {v:.0%}" for k, v in INTACT_TARGETS.items()) + "。")


def intact_panels(sel: str, ctc: str) -> list[dict[str, Any]]:
    """完好率 beside 在线率 (docs/quality.md): the rate by class, its trend against the
    targets, the townships ranked, and the channels whose picture is degraded."""
    degraded = ("camwatch_channel_quality_score\n  * on (channel) group_left (name, village, "
                f"class, county, township, operator)\n(camwatch_channel_up{{{sel}}} * 0 + 1)")
    return [
        panel("stat", "完好率（所选范围）",
              "所选区县、乡镇、类型内的视频监控完好率（Σ完好 / Σ已判定），及各类型的完好率。"
              + INTACT_NOTE,
              "percentunit",
              [q(intact_rate(CELL, "", sel), "全部", ref="ALL"),
               *per_class(lambda c: intact_rate(CELL, "", f"{sel},{c}"), "{class}")],
              w=10, h=5, defaults={"thresholds": target_thresholds(None)},
              overrides=class_colours(INTACT_TARGETS)),
        panel("stat", "完好 / 已判定",
              "所选范围内画面完好的点位数与完好率的分母（离线，或在线且画面已诊断的点位）。",
              "none", [q(summed(CELL, "camwatch_channels_intact", "", sel), "完好", ref="A"),
                       q(summed(CELL, "camwatch_channels_intact_judged", "", sel), "已判定",
                         ref="B")],
              w=4, h=5),
        panel("bargauge", "乡镇完好率排名",
              "所选范围内各乡镇的完好率，每个类型从低到高排列。" + INTACT_NOTE,
              "percentunit",
              per_class(lambda c: f"sort(county_township_class:camwatch_intact_rate:ratio"
                                  f"{ctc},{c}}})",
                        "{{county}} {{township}} {class}", instant=True),
              w=10, h=10, defaults={"thresholds": target_thresholds(None)},
              overrides=class_colours(INTACT_TARGETS),
              options={"orientation": "horizontal", "displayMode": "lcd"}),
        panel("timeseries", "各类点位完好率与目标",
              "所选范围内各类型完好率随时间的变化；虚线为该类型的完好率目标"
              "（camwatch_intact_rate_target）。",
              "percentunit",
              [*per_class(lambda c: intact_rate(CELL, "", f"{sel},{c}"), "{class} 完好率"),
               *(q(f'class:camwatch_intact_rate_target:max{{{CLASS},class="{k}"}}',
                   f"{CLASS_NAMES[k]} 目标", ref=f"T{k}") for k in INTACT_TARGETS)],
              w=12, h=10, overrides=[by_ref(f"T{k}", {
                  "id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}})
                  for k in INTACT_TARGETS]),
        panel("table", "画面异常点位",
              "所选范围内最近一次视频质量诊断画面异常的点位及异常项（黑屏、冻结、模糊、偏色、"
              "遮挡 ...）和得分；最近画面见 /api/channels/{id}/snapshot.jpg。",
              "none", [q(degraded, table=True)], w=12, h=10,
              transformations=[{"id": "organize", "options": {
                  "excludeByName": {"Time": True, "__name__": True, "instance": True,
                                    "job": True},
                  "indexByName": {"name": 0, "village": 1, "township": 2, "check": 3,
                                  "Value": 4, "operator": 5, "class": 6, "county": 7,
                                  "channel": 8},
                  "renameByName": {"name": "点位名称", "village": "村", "township": "乡镇",
                                   "check": "异常项", "Value": "得分", "operator": "运营商",
                                   "class": "类型", "county": "区县", "channel": "设备编码"}}}],
              overrides=[mapped("异常项", CHECK_MAP), mapped("类型", CLASS_MAP)]),
    ]


def offline_table(expr_a: str, expr_b: str | None, value_names: dict[str, str]
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Targets and transformations of a per-channel table: 点位名称 and 村 first, the Chinese
    reason, the 20-digit code last."""
    targets = [q(expr_a, table=True, ref="A")]
    if expr_b is not None:
        targets.append(q(expr_b, table=True, ref="B"))
    names = {"name": "点位名称", "village": "村", "township": "乡镇", "county": "区县",
             "class": "类型", "project": "项目", "operator": "运营商", "reason": "原因",
             **value_names, "channel": "设备编码", "instance": "camwatch"}
    transformations: list[dict[str, Any]] = []
    if expr_b is not None:
        transformations.append({"id": "merge", "options": {}})
    transformations.append({"id": "organize", "options": {
        "excludeByName": {"Time": True, "__name__": True, "job": True},
        "indexByName": {k: i for i, k in enumerate(names)},
        "renameByName": names}})
    return targets, transformations


def offline() -> dict[str, Any]:
    sel = f"{AREA},{CLASS}"
    since = ("camwatch_channel_state_since_timestamp_seconds\n"
             "  * on (channel) group_left (reason) camwatch_channel_offline_reason\n"
             f"  * on (channel) group_left ({CHANNEL_LABELS})\n"
             f"  {OFFLINE}")
    last = ("camwatch_channel_last_probe_timestamp_seconds\n"
            f"  * on (channel) group_left ({CHANNEL_LABELS})\n"
            f"  {OFFLINE}")
    long_off = (f"(time() - camwatch_channel_state_since_timestamp_seconds)\n"
                f"  * on (channel) group_left ({CHANNEL_LABELS}) {OFFLINE}\n"
                f"  > 3 * 86400")
    list_targets, list_steps = offline_table(since, last, {"Value #A": "离线起始",
                                                           "Value #B": "最后探测"})
    long_targets, long_steps = offline_table(long_off, None, {"Value": "已离线"})
    return dashboard(
        "camwatch-offline", "camwatch 离线点位",
        "离线点位：哪些、为什么、从何时起；按乡镇和原因统计的离线点位数。",
        [v_county(), v_township(), v_class()],
        [
            panel("stat", "离线点位数",
                  "所选区县、乡镇、类型内当前离线的点位数（已判定减在线）。",
                  "none", [q(offline_count(CELL, "", sel), "离线")], w=6, h=5,
                  defaults={"thresholds": {"mode": "absolute", "steps": [
                      {"color": "green", "value": None}, {"color": "red", "value": 1}]}}),
            panel("stat", "未知点位数",
                  "所选范围内尚无结论的点位数（从未探测，或探测服务自身异常）：不计入在线率。",
                  "none", [q(summed(CELL, "camwatch_channels_unknown", "", sel), "未知")],
                  w=6, h=5),
            panel("piechart", "离线原因",
                  "所选范围内离线点位按原因统计（超时、拒绝连接、认证失败、地址不存在、上级设备离线、"
                  "频繁上下线 ...）。",
                  "none", [q("count by (reason) (\n  camwatch_channel_offline_reason\n"
                             f"    * on (channel) group_left () {OFFLINE}\n)",
                             "{{reason}}", instant=True)], w=12, h=10,
                  overrides=[column(code, {"id": "displayName", "value": zh})
                             for code, zh in REASON_ZH.items()],
                  options={"pieType": "donut", "legend": {"displayMode": "table",
                                                          "placement": "right",
                                                          "values": ["value"]}}),
            panel("bargauge", "各乡镇离线点位数",
                  "所选范围内各乡镇的离线点位数（已判定减在线），多者在前。",
                  "none",
                  [q(f"sort_desc(\n  {offline_count(CELL, 'county, township', sel)}\n)",
                     "{{county}} {{township}}", instant=True)],
                  w=12, h=10, options={"orientation": "horizontal"}),
            panel("table", "离线点位清单",
                  "所选范围内每个离线点位：点位名称、村、乡镇、原因、离线起始时间和最后探测时间"
                  "（camwatch_channel_up == 0，关联 camwatch_channel_offline_reason、"
                  "camwatch_channel_state_since_timestamp_seconds 和 "
                  "camwatch_channel_last_probe_timestamp_seconds）。",
                  "dateTimeAsIso", list_targets, w=24, h=14,
                  transformations=[*list_steps, {"id": "sortBy", "options": {
                      "sort": [{"field": "离线起始"}]}}],
                  overrides=[mapped("原因", REASON_MAP), mapped("类型", CLASS_MAP)]),
            panel("table", "离线超过3天的点位",
                  "所选范围内离线超过 3 天（月度通报的默认值）的点位及已离线时长。",
                  "s", long_targets, w=24, h=10, transformations=long_steps,
                  overrides=[mapped("类型", CLASS_MAP)]),
        ])


def operators() -> dict[str, Any]:
    sel = f"{AREA},{OPERATOR},operator!=\"\""
    cto = f"{{{AREA},{OPERATOR}}}"
    return dashboard(
        "camwatch-operators", "camwatch 运营商",
        "各运营商（移动 / 联通 / 电信）负责点位的在线率和离线点位：由运营商负责修复。",
        [v_county(), v_township(), v_operator()],
        [
            panel("bargauge", "运营商在线率",
                  "所选区县、乡镇内各运营商各类型点位的在线率（来自 camwatch_channel_up：Σ在线 / "
                  "已判定）。" + TARGET_NOTE,
                  "percentunit",
                  per_class(lambda c: rate(OP_CELL, "operator", f"{sel},{c}"),
                            "{{operator}} {class}", instant=True),
                  w=12, h=6, defaults={"thresholds": target_thresholds(None)},
                  overrides=class_colours()),
            panel("bargauge", "运营商离线点位数",
                  "所选区县、乡镇内各运营商的离线点位数。",
                  "none", [q(offline_count(OP_CELL, "operator", sel), "{{operator}}",
                             instant=True)],
                  w=12, h=6),
            panel("timeseries", "运营商在线率趋势",
                  "所选区县、乡镇内各运营商在线率随时间的变化。",
                  "percentunit", [q(rate(OP_CELL, "operator", sel), "{{operator}}")],
                  w=24, h=8),
            panel("table", "运营商 × 乡镇在线率",
                  "所选范围内各运营商在各乡镇的在线率和已判定点位数，低者在前。",
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
                  overrides=[column("已判定", {"id": "unit", "value": "none"})]),
            panel("bargauge", "超时未修复工单",
                  "所选区县、乡镇内各运营商已超过修复时限、尚未核实结案的维修工单数"
                  "（camwatch_repair_tickets_overdue，需启用 repairs；挂起的工单不计）。"
                  "月度考核见 /api/tickets/assessment 与月度通报。",
                  "none", [q(f"sum by (operator) (camwatch_repair_tickets_overdue{cto})",
                             "{{operator}}", instant=True)],
                  w=24, h=6),
            panel("table", "本月运维考核（全县）",
                  "本月各运营商的维修工单考核（需启用 repairs），全县口径，不随区县、乡镇选择变化："
                  "排名、派单、核实结案、按时修复率、修复时长中位数（小时，以 camwatch 核实恢复"
                  "在线为准，挂起不计）。定义见 docs/repairs.md；乡镇考核见月度通报。",
                  "none",
                  [q("camwatch_repair_assessment_rank", table=True, ref="A"),
                   q('camwatch_repair_assessment_tickets{kind="opened"}', table=True, ref="B"),
                   q('camwatch_repair_assessment_tickets{kind="closed"}', table=True, ref="C"),
                   q('camwatch_repair_assessment_within_ratio{deadline="repair"}', table=True,
                     ref="D"),
                   q('camwatch_repair_assessment_seconds{what="repair",quantile="0.5"} / 3600',
                     table=True, ref="E")],
                  w=24, h=8, transformations=[
                      {"id": "merge", "options": {}},
                      {"id": "organize", "options": {
                          "excludeByName": {"Time": True, "instance": True, "job": True,
                                            "kind": True, "deadline": True, "what": True,
                                            "quantile": True, "__name__": True},
                          "renameByName": {"operator": "运营商", "Value #A": "排名",
                                           "Value #B": "派单", "Value #C": "核实结案",
                                           "Value #D": "按时修复率",
                                           "Value #E": "修复中位数(小时)"}}}],
                  overrides=[column("按时修复率", {"id": "unit", "value": "percentunit"})]),
        ])


# GB/T 28181 lower platforms (docs/gb28181.md): each platform's up, joined with its name
PLATFORM_UP = ("camwatch_gb_platform_up\n  * on (instance, platform) group_left (name, transport)"
               "\ncamwatch_gb_platform_info")
PLATFORM_COLUMNS = {"name": "平台名称", "platform": "平台编号", "transport": "传输",
                    "Value #A": "状态", "Value #B": "心跳间隔", "Value #C": "目录通道",
                    "Value #D": "其中在台账", "Value #E": "目录不完整", "instance": "camwatch"}


def platform_panels() -> list[dict[str, Any]]:
    """The lower platforms registered with camwatch (gb28181): one row each, up over time,
    and refused registrations (a rising bad_password: someone guessing). Empty without
    ``gb28181.enabled``."""
    ri = "$__rate_interval"
    targets = [q(PLATFORM_UP, table=True, ref="A"),
               q("camwatch_gb_keepalive_age_seconds", table=True, ref="B"),
               q("camwatch_gb_catalog_channels", table=True, ref="C"),
               q("camwatch_gb_catalog_inventory_channels", table=True, ref="D"),
               q("camwatch_gb_catalog_partial", table=True, ref="E")]
    up_map = [{"type": "value", "options": {"0": {"text": "离线", "color": "red"},
                                            "1": {"text": "在线", "color": "green"}}}]
    yes_no = [{"type": "value", "options": {"0": {"text": "完整", "color": "green"},
                                            "1": {"text": "不完整", "color": "orange"}}}]
    return [
        panel("table", "国标下级平台", "向 camwatch 注册的 GB/T 28181 下级平台（运营商云平台、"
              "县级平台）：是否在线、距上次心跳或注册的时间、目录中的通道数及其中在台账的通道数、"
              "上次目录是否完整。心跳超时的平台其通道按“下级平台离线”计为离线。", "none",
              targets, w=24, h=8,
              transformations=[{"id": "merge", "options": {}}, {"id": "organize", "options": {
                  "excludeByName": {"Time": True, "__name__": True, "job": True},
                  "indexByName": {k: i for i, k in enumerate(PLATFORM_COLUMNS)},
                  "renameByName": PLATFORM_COLUMNS}}],
              overrides=[column("状态", {"id": "mappings", "value": up_map},
                                {"id": "custom.cellOptions", "value": {"type": "color-text"}}),
                         column("心跳间隔", {"id": "unit", "value": "s"}),
                         mapped("目录不完整", yes_no)]),
        panel("timeseries", "国标下级平台在线", "各下级平台是否在线（1 在线，0 心跳超时、注册"
              "过期或注销）。", "none", [q(PLATFORM_UP, "{{name}} {{platform}}")],
              defaults={"min": 0, "max": 1, "mappings": up_map}),
        panel("timeseries", "国标注册被拒", "每秒被拒绝的注册和请求，按原因；bad_password（"
              "密码错误）持续上升说明有人在猜密码。", "ops",
              [q(f"sum by (reason) (rate(camwatch_gb_refused_total[{ri}]))", "{{reason}}")]),
    ]


def prober() -> dict[str, Any]:
    job = '{job="camwatch"}'
    ri = "$__rate_interval"
    return dashboard(
        "camwatch-prober", "camwatch 探测服务",
        "camwatch 自身是否健康：能否被采集、是否信任自己的结果、是否跟得上、探测耗时多少。",
        [],
        [
            panel("stat", "采集状态", "Prometheus 能采集到的 camwatch 实例为 1（up）。", "none",
                  [q(f"up{job}", "{{instance}}")], w=6, h=5,
                  defaults={"mappings": [{"type": "value", "options": {
                      "0": {"text": "DOWN", "color": "red"},
                      "1": {"text": "UP", "color": "green"}}}]}),
            panel("stat", "探测服务健康", "探测服务信任自己的结果时为 1；事件循环延迟、探测落后一个"
                  "周期或自身上联中断时为 0（/healthz 给出原因）。", "none",
                  [q("camwatch_prober_healthy", "{{instance}}")], w=6, h=5,
                  defaults={"mappings": [{"type": "value", "options": {
                      "0": {"text": "异常 unhealthy", "color": "red"},
                      "1": {"text": "正常 healthy", "color": "green"}}}]}),
            panel("stat", "未知点位数", "全部实例中尚无结论的点位数。", "none",
                  [q("site:camwatch_channels_unknown:sum", "未知")], w=6, h=5),
            panel("stat", "待发送告警", "发件箱中等待发送的通知数（-1：尚未统计或存储出错）。",
                  "none", [q("camwatch_alert_outbox_depth", "{{instance}}")], w=6, h=5),
            panel("timeseries", "探测延迟与周期",
                  "探测相对应探时间的延迟（中位数）、上一轮完整探测所用时间，以及配置的探测周期。",
                  "s",
                  [q("camwatch_sweep_lag_seconds", "延迟 {{instance}}", ref="A"),
                   q("camwatch_sweep_duration_seconds", "一轮 {{instance}}", ref="B"),
                   q("camwatch_probe_interval_seconds", "周期 {{instance}}", ref="C")]),
            panel("timeseries", "事件循环延迟",
                  "事件循环延迟；超过 1 秒探测服务即不再信任自己的结果。", "s",
                  [q("camwatch_loop_lag_seconds", "{{instance}}")]),
            panel("timeseries", "探测速率（按结果）", "每秒探测次数，按探测类型和结果。",
                  "ops", [q(f"sum by (kind, reason) (rate(camwatch_probes_total[{ri}]))",
                            "{{kind}} {{reason}}")]),
            panel("timeseries", "探测阶段耗时 p95", "各探测阶段（connect、options、describe ...）"
                  "耗时的 95 分位。", "s",
                  [q("histogram_quantile(0.95,\n  sum by (phase, le) (rate("
                     f"camwatch_probe_phase_seconds_bucket[{ri}])))", "{{phase}}")]),
            panel("timeseries", "并发探测数", "正在进行的探测数。", "none",
                  [q("camwatch_probes_in_flight", "{{instance}}")]),
            panel("timeseries", "画面抽检落后",
                  "画面抽检（quality.enabled）开始时间相对应检时间的落后；0 为跟得上，持续落后应调大"
                  " quality.max_concurrency（每次抽检占用一个 RTSP 会话数秒）。", "s",
                  [q("camwatch_quality_lag_seconds", "{{instance}}")]),
            panel("timeseries", "画面抽检速率（按结果）",
                  "每秒画面抽检次数，按结果（含按需与重试的抽检）。", "ops",
                  [q(f"sum by (quality) (rate(camwatch_quality_samples_total[{ri}]))",
                     "{{quality}}")]),
            panel("timeseries", "状态变化速率", "每秒点位状态变化次数，按新状态。", "ops",
                  [q(f"sum by (to) (rate(camwatch_channel_transitions_total[{ri}]))",
                     "{{to}}")]),
            panel("timeseries", "存储写入错误与配置重载", "每秒存储写入失败次数，以及按结果统计的"
                  "配置重载。", "ops",
                  [q(f"rate(camwatch_store_write_errors_total[{ri}])", "存储错误", ref="A"),
                   q(f"sum by (result) (rate(camwatch_config_reloads_total[{ri}]))",
                     "重载 {{result}}", ref="B")]),
            panel("timeseries", "采集耗时", "Prometheus 每次采集 camwatch 所用的时间。",
                  "s", [q(f"scrape_duration_seconds{job}", "{{instance}}")]),
            panel("timeseries", "内存", "camwatch 进程占用的常驻内存（RSS）。", "bytes",
                  [q(f"process_resident_memory_bytes{job}", "{{instance}}")]),
            panel("timeseries", "CPU", "camwatch 进程占用的 CPU（1 = 一个核）。",
                  "percentunit", [q(f"rate(process_cpu_seconds_total{job}[{ri}])",
                                    "{{instance}}")]),
            *platform_panels(),
            panel("table", "版本", "每个 camwatch 实例运行的版本号。", "none",
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
