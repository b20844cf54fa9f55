"""The bulletin as tables with Chinese headers: one model for the XLSX, HTML and CSV writers.

Cell values are plain: ``str``, ``int``, ``float`` or ``None``; a column's ``kind`` says how to
show a number (``pct``: a fraction shown as ``98.00%``; ``pp``: percentage points; ``hours``,
``days``: one or two decimals; ``int``; ``text``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from camwatch.inventory import Channel
from camwatch.model import CLASS_NAMES, reason_zh
from camwatch.quality.names import CHECK_ZH
from camwatch.reports.compute import Bulletin, Figures, OutageRow, Part
from camwatch.reports.events import OutageEvent
from camwatch.reports.period import local_text
from camwatch.rules.rates import format_rate

Cell = str | int | float | None


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    kind: str = "text"  # text | int | pct | pp | hours | days
    width: int = 10  # characters, for the spreadsheet
    wrap: bool = False  # long free text: may wrap when printed (others never do)


@dataclass(frozen=True, slots=True)
class Table:
    key: str  # file / anchor name: "townships"
    title: str  # sheet name: "乡镇排名"
    columns: tuple[Column, ...]
    rows: list[list[Cell]]
    note: str = ""

    @property
    def headers(self) -> list[str]:
        return [c.header for c in self.columns]

    def without(self, *headers: str) -> Table:
        """The same table without the named columns."""
        keep = [i for i, c in enumerate(self.columns) if c.header not in headers]
        return Table(self.key, self.title, tuple(self.columns[i] for i in keep),
                     [[row[i] for i in keep] for row in self.rows], self.note)


def bulletin_title(b: Bulletin) -> str:
    return f"{b.site} 视频监控联网在线情况通报（{b.period.label}）"


def period_text(b: Bulletin) -> str:
    """``统计周期 2026-11（2026-11-01 00:00 至 2026-11-30 20:22）``."""
    return (f"统计周期 {b.period.label}（{local_text(b.period.start, b.tz)} 至 "
            f"{local_text(b.end, b.tz)}）")


def running_note(b: Bulletin) -> str:
    """Empty once the period is over; else says the figures stop at the report time."""
    if b.ended:
        return ""
    return f"周期未结束，截至 {local_text(b.end, b.tz)}：以下为期中数据，月底后请重新生成。"


def _duration_zh(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} 分钟"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} 小时"
    return f"{seconds / 86400:.1f} 天"


def coverage_text(b: Bulletin) -> str:
    """``监测覆盖 平均每通道 11 分钟 / 本月 30 天，0.03%``: how much of the period camwatch
    judged (online or offline) the counted channels, unknown and exempted time left out."""
    days = (b.period.last - b.period.first).days + 1
    span = f"本月 {days} 天" if b.period.is_month else f"本期 {days} 天"
    if not b.counted_channels:
        return f"监测覆盖：无已联网上云通道（{span}）"
    return (f"监测覆盖 平均每通道 {_duration_zh(b.monitored_per_channel)} / {span}，"
            f"{format_rate(b.coverage)}（{b.counted_channels} 个已联网上云通道）")


def previous_note(b: Bulletin) -> str:
    """Why 上期 / 环比 may show "-", said once."""
    label = b.previous_period.label
    if not b.previous_monitored_ms:
        return f"上期（{label}）无监测数据：各表的上期在线率、环比均显示为“-”。"
    return f"上期为 {label}；上期在线率、环比为“-”表示该范围上期无监测数据。"


def verdict(ok: bool | None) -> str:
    """达标 / 未达标; empty when not judged (no target, or too few channels)."""
    return {True: "达标", False: "未达标", None: ""}[ok]


def _other_label(b: Bulletin) -> str:
    return "快照在线率" if b.settings.online_rate != "snapshot" else "时间加权在线率"


def _other_rate(b: Bulletin, f: Figures | Part) -> float | None:
    return f.snap.rate if b.settings.online_rate != "snapshot" else f.tw.rate


def _failing(f: Figures) -> str:
    return "；".join(f"{p.name} {(p.rate or 0) * 100:.2f}%<{(p.target or 0) * 100:.2f}%"
                    for p in f.failing)


_RATE_COLS = (
    Column("在线率", "pct", 9), Column("", "pct", 10), Column("上期在线率", "pct", 10),
    Column("环比(百分点)", "pp", 11), Column("参考目标", "pct", 9), Column("是否达标", "text", 8),
    Column("未达标类型", "text", 24, True),
)


def _rate_cols(b: Bulletin) -> tuple[Column, ...]:
    cols = list(_RATE_COLS)
    cols[1] = Column(_other_label(b), "pct", 10)
    return tuple(cols)


def _rate_cells(b: Bulletin, f: Figures) -> list[Cell]:
    return [f.rate, _other_rate(b, f), f.previous, f.change_pp, f.target,
            verdict(f.meets_target), _failing(f)]


SUMMARY_NOTE = ("“全部”行混合多种点位类型，不设目标、不判定达标（各类型分别判定）；"
                "点位类型/项目行的上期在线率与环比不单独统计")


def summary_table(b: Bulletin) -> Table:
    """The site, then each county: a 全部 row (no target, no verdict: its classes have
    different targets) and one row per point class and project, each with its own install
    and cloud-connect rates. A site of one county shows the county only (its rows would be
    the site's again)."""
    s = b.summary
    cols: tuple[Column, ...] = (
        Column("范围", "text", 10), Column("点位类型/项目", "text", 12),
        Column("应安装", "int", 7), Column("已安装", "int", 7), Column("安装率", "pct", 8),
        Column("已联网上云", "int", 9), Column("上云率", "pct", 8),
        Column("在线率(时间加权)", "pct", 14), Column("在线率(期末快照)", "pct", 14),
        Column("上期在线率", "pct", 9), Column("环比(百分点)", "pp", 10),
        Column("目标", "pct", 8), Column("是否达标", "text", 8))
    blocks: list[tuple[str, Figures]] = []
    if len(b.counties) == 1 and b.counties[0].planned == s.planned:
        blocks.append((b.counties[0].get("county"), s))
    else:
        blocks.append(("全域", s))
        blocks.extend((c.get("county"), c) for c in b.counties)
    intact = b.intact  # 完好率 beside 在线率, its own target and verdict at the end
    if intact:
        cols = (*cols[:9], Column(intact_header(b), "pct", 12),
                Column("完好率环比(百分点)", "pp", 12), *cols[9:],
                Column("完好率目标", "pct", 10), Column("完好率是否达标", "text", 12))
    rows: list[list[Cell]] = []
    for label, f in blocks:
        row: list[Cell] = [label, "全部", f.planned, f.installed, f.install_rate, f.connected,
                           f.cloud_rate, f.tw.rate, f.snap.rate, f.previous, f.change_pp,
                           None, ""]
        rows.append([*row[:9], f.intact_rate, f.intact_change_pp, *row[9:], None, ""]
                    if intact else row)
        for p in f.classes + f.projects:
            row = [label, p.name, p.planned, p.installed, p.install_rate, p.channels,
                   p.cloud_rate, p.tw.rate, p.snap.rate, None, None, p.target,
                   verdict(p.meets_target)]
            rows.append([*row[:9], p.intact_rate, None, *row[9:], p.intact_target,
                         verdict(p.intact_meets_target)] if intact else row)
    return Table("summary", "汇总", cols, rows,
                 f"{SUMMARY_NOTE}；{INTACT_NOTE}" if intact else SUMMARY_NOTE)


INTACT_NOTE = ("完好率 = 在线且画面正常的时长（期末快照：通道数）/ 在线或离线且画面已诊断的时长，"
               "离线或画面异常计为不完好，未诊断不计；目标见 targets.intact，定义见统计方法")


def intact_header(b: Bulletin) -> str:
    return "完好率(期末快照)" if b.settings.online_rate == "snapshot" else "完好率(时间加权)"


def township_table(b: Bulletin) -> Table:
    cols = (Column("排名", "int", 6), Column("区县", "text", 10), Column("乡镇", "text", 14),
            Column("应安装", "int", 8), Column("已安装", "int", 8), Column("安装率", "pct", 9),
            Column("已联网上云", "int", 10), Column("上云率", "pct", 9), *_rate_cols(b))
    rows: list[list[Cell]] = [
        [f.rank, f.get("county"), f.get("township"), f.planned, f.installed, f.install_rate,
         f.connected, f.cloud_rate, *_rate_cells(b, f)] for f in b.townships]
    if b.intact:
        cols = (*cols, Column("完好率", "pct", 9), Column("完好率环比(百分点)", "pp", 12),
                Column("完好率是否达标", "text", 12))
        rows = [[*row, f.intact_rate, f.intact_change_pp, verdict(f.intact_meets_target)]
                for row, f in zip(rows, b.townships, strict=True)]
    return Table("townships", "乡镇排名", cols, rows)


def village_table(b: Bulletin) -> Table:
    rank = {f.scope: f.rank for f in b.townships}
    cols = (Column("乡镇排名", "int", 8), Column("区县", "text", 10), Column("乡镇", "text", 14),
            Column("村内排名", "int", 8), Column("村", "text", 14), Column("已安装", "int", 8),
            Column("已联网上云", "int", 10), *_rate_cols(b))
    rows: list[list[Cell]] = [
        [rank.get(f.scope[:2]), f.get("county"), f.get("township"), f.rank, f.get("village"),
         f.installed, f.connected, *_rate_cells(b, f)] for f in b.villages]
    return Table("villages", "村排名", cols, rows)


def worst_villages(b: Bulletin, n: int) -> Table:
    """The ``n`` villages with the lowest published rate (0: every village), worst first:
    the printed bulletin's annex (``report.max_villages``)."""
    table = village_table(b)
    rate_at = table.headers.index("在线率")
    rows = sorted(table.rows, key=lambda r: (r[rate_at] is None, r[rate_at] or 0.0,
                                             str(r[2]), str(r[4])))
    if n:
        rows = rows[:n]
    return Table(table.key, table.title, table.columns, rows, table.note)


def operator_table(b: Bulletin) -> Table:
    cols = (Column("运营商", "text", 8), Column("区县", "text", 10), Column("乡镇", "text", 14),
            Column("已安装", "int", 8), Column("已联网上云", "int", 10), Column("上云率", "pct", 9),
            *_rate_cols(b))
    rows: list[list[Cell]] = []
    for op in sorted(b.operators, key=lambda f: f.get("operator")):
        rows.append([op.get("operator"), "合计", "", op.installed, op.connected, op.cloud_rate,
                     *_rate_cells(b, op)])
        for f in b.operator_townships:
            if f.get("operator") == op.get("operator"):
                rows.append([f.get("operator"), f.get("county"), f.get("township"),
                             f.installed, f.connected, f.cloud_rate, *_rate_cells(b, f)])
    return Table("operators", "运营商×乡镇", cols, rows)


def _place(ch: Channel) -> list[Cell]:
    return [ch.id, ch.name, ch.township, ch.village, ch.operator,
            CLASS_NAMES.get(ch.klass, str(ch.klass)) if ch.klass is not None else ""]


_PLACE_COLS = (Column("设备编码", "text", 22), Column("点位名称", "text", 20, True),
               Column("乡镇", "text", 12), Column("村", "text", 12), Column("运营商", "text", 7),
               Column("点位类型", "text", 8))


def long_offline_table(b: Bulletin) -> Table:
    cols = (*_PLACE_COLS, Column("离线起始", "text", 17), Column("离线天数", "days", 9),
            Column("原因", "text", 12), Column("报备", "text", 12, True))
    rows: list[list[Cell]] = [
        [*_place(r.channel), local_text(r.since, b.tz), r.days, reason_zh(r.reason),
         r.exemption or ""]
        for r in b.long_offline]
    return Table("long_offline", f"离线超{b.settings.long_offline_days}天", cols, rows)


QUALITY_ZH = {"ok": "正常", "degraded": "异常", "unknown": "未诊断"}
STATE_ZH = {"online": "在线", "offline": "离线", "unknown": "未知"}


def faults_zh(faults: Sequence[str]) -> str:
    return "、".join(CHECK_ZH.get(f, f) for f in faults)


DEGRADED_NOTE = ("本期在线但画面异常（视频质量诊断，docs/quality.md）的通道，按异常时长排序；"
                 "异常时长只计在线时间，报备时间不计；画面异常的通道计为不完好")


def degraded_table(b: Bulletin) -> Table:
    """The cameras whose picture was degraded while online (画面异常), longest first."""
    cols = (*_PLACE_COLS, Column("异常项", "text", 18, True),
            Column("异常时长(小时)", "hours", 12), Column("期末画面", "text", 8),
            Column("异常起始", "text", 17), Column("期末状态", "text", 8))
    rows: list[list[Cell]] = [
        [*_place(d.channel), faults_zh(d.faults), d.seconds / 3600.0,
         QUALITY_ZH.get(d.quality, d.quality), local_text(d.since, b.tz) if d.since else "",
         STATE_ZH.get(d.state, d.state)]
        for d in b.degraded]
    return Table("degraded", "画面异常", cols, rows, DEGRADED_NOTE)


def _outage_rows(b: Bulletin, items: Sequence[OutageRow]) -> list[list[Cell]]:
    return [[*_place(o.channel), local_text(o.start, b.tz),
             local_text(o.end, b.tz) if o.end is not None else "未恢复",
             None if o.seconds is None else o.seconds / 3600.0, reason_zh(o.reason)]
            for o in items]


_OUTAGE_COLS = (*_PLACE_COLS, Column("离线开始", "text", 17), Column("恢复时间", "text", 17),
                Column("时长(小时)", "hours", 10), Column("原因", "text", 12))


def outage_table(b: Bulletin) -> Table:
    """One row per channel and outage (the CSV and JSON annex)."""
    return Table("outages", "离线明细", _OUTAGE_COLS, _outage_rows(b, b.outages),
                 "每个通道每次离线一行：本期内结束或期末仍在持续的离线；时长自离线开始计")


EVENT_LEVELS = {"township": "乡镇批量", "village": "村批量", "host": "上级设备",
                "channel": "单点"}
_EVENT_COLS = (Column("离线开始", "text", 16), Column("恢复时间", "text", 16),
               Column("时长(小时)", "hours", 9), Column("类型", "text", 8),
               Column("乡镇", "text", 10), Column("村", "text", 10),
               Column("点位名称", "text", 22, True), Column("通道数", "int", 6),
               Column("未恢复", "int", 6), Column("原因", "text", 18, True),
               Column("设备编码", "text", 21))


def event_note(b: Bulletin) -> str:
    s = b.settings
    return (f"同一乡镇或村 {s.event_window / 60:g} 分钟内离线不少于 {s.event_min_channels} 路且"
            f"不少于其通道的 {s.event_share * 100:g}%，或同村因上级设备离线不少于 "
            f"{s.event_min_channels} 路，计为一起，其余每次离线一行；时长自首个通道离线至最后"
            "一个恢复；逐通道清单见 CSV（outages.csv）或 JSON（outages）版本")


def event_rows(b: Bulletin, events: Sequence[OutageEvent]) -> list[list[Cell]]:
    rows: list[list[Cell]] = []
    for e in events:
        ch = e.first
        single = e.level == "channel"
        rows.append([
            local_text(e.start, b.tz),
            local_text(e.end, b.tz) if e.end is not None else "未恢复",
            None if e.seconds is None else e.seconds / 3600.0,
            EVENT_LEVELS[e.level], ch.township, ch.village if e.level != "township" else "",
            ch.name if single else "", e.channels, e.still_offline, e.cause(),
            ch.id if single else ""])
    return rows


def event_table(b: Bulletin, events: Sequence[OutageEvent] | None = None,
                title: str = "离线事件") -> Table:
    """The outages as events (:mod:`camwatch.reports.events`): a mass outage is one row."""
    items = b.events if events is None else events
    return Table("events", title, _EVENT_COLS, event_rows(b, items), event_note(b))


def mass_event_table(b: Bulletin) -> Table:
    """The mass outages only: the machine formats' version of :func:`event_table`, whose
    single-channel rows (~130,000 for 100,000 channels) are there already as the outages."""
    return Table("events", "批量离线", _EVENT_COLS, event_rows(b, b.mass_events),
                 event_note(b).split("，其余每次离线一行")[0]
                 + "；单个通道的离线见离线通道汇总（XLSX）、outages.csv 或 JSON 的 outages")


OUTAGE_SUMMARY_NOTE = ("每个通道一行：本期离线次数、累计时长、最长一次与最近一次的原因"
                       "（自离线开始计，期末仍在持续的计至期末，起始未知的不计时长）；"
                       "逐次离线事件见 CSV（outages.csv）或 JSON（outages）版本")


def outage_summary_table(b: Bulletin) -> Table:
    """The outages per channel, worst first (longest total down time): the workbook's version
    of :func:`outage_table`. One row per outage (~130,000 for 100,000 channels) took most of
    the time of writing the XLSX; the staff work from the per-channel figures."""
    by_channel: dict[str, list[Any]] = {}
    for o in b.outages:  # in start order: the last one seen is the most recent
        s = by_channel.get(o.channel.id)
        if s is None:
            s = by_channel[o.channel.id] = [o.channel, 0, None, None, ""]
        s[1] += 1
        if o.seconds is not None:
            s[2] = o.seconds if s[2] is None else s[2] + o.seconds
            s[3] = o.seconds if s[3] is None else max(s[3], o.seconds)
        s[4] = reason_zh(o.reason)
    items = sorted(by_channel.values(), key=lambda s: (-(s[2] or 0.0), s[0].id))
    rows: list[list[Cell]] = [
        [*_place(s[0]), s[1], None if s[2] is None else s[2] / 3600.0,
         None if s[3] is None else s[3] / 3600.0, s[4]] for s in items]
    return Table("outages", "离线通道汇总", _OUTAGE_SUMMARY_COLS, rows, OUTAGE_SUMMARY_NOTE)


_OUTAGE_SUMMARY_COLS = (*_PLACE_COLS, Column("离线次数", "int", 8),
                        Column("累计时长(小时)", "hours", 12),
                        Column("最长一次(小时)", "hours", 12), Column("最近原因", "text", 12))


def repaired_table(b: Bulletin) -> Table:
    return Table("repaired", "本期修复", _OUTAGE_COLS, _outage_rows(b, b.repaired),
                 f"本期恢复在线、此前连续离线不少于 {b.settings.long_offline_days} 天")


def exemption_table(b: Bulletin) -> Table:
    cols = (Column("编号", "int", 6), Column("设备编码", "text", 22),
            Column("点位名称", "text", 20, True), Column("乡镇", "text", 12),
            Column("开始", "text", 17), Column("结束", "text", 17),
            Column("原因", "text", 16, True),
            Column("本期报备时长(小时)", "hours", 12))
    rows: list[list[Cell]] = []
    for r in b.exemptions:
        ch = r.channel
        rows.append([r.exemption.id, r.exemption.channel_id, ch.name if ch else "",
                     ch.township if ch else "", local_text(r.exemption.start, b.tz),
                     local_text(r.exemption.end, b.tz), r.exemption.reason,
                     r.seconds_in_period / 3600.0])
    return Table("exemptions", "报备", cols, rows)


def data_quality_table(b: Bulletin) -> Table:
    cols = (Column("设备编码", "text", 22), Column("点位名称", "text", 20, True),
            Column("乡镇", "text", 12), Column("字段", "text", 14),
            Column("问题", "text", 50, True))
    rows: list[list[Cell]] = [[f.channel_id, f.name, f.township, f.field, f.problem]
                              for f in b.data_quality]
    return Table("data_quality", "数据质量", cols, rows)


_ASSESSMENT_NOTE = ("工单自派单起计时，报备挂起时间不计；修复以 camwatch 核实恢复在线的时刻为准；"
         "按时修复率含本期超时未修复的工单；重复故障：同一点位 30 天内再次派单")


def _assessment_columns(what: str) -> tuple[Column, ...]:
    return (Column("排名", "int", 6), Column(what, "text", 16), Column("派单", "int", 7),
            Column("核实结案", "int", 9), Column("未结案", "int", 8),
            Column("响应中位数(小时)", "hours", 12), Column("响应P90(小时)", "hours", 12),
            Column("修复中位数(小时)", "hours", 12), Column("修复P90(小时)", "hours", 12),
            Column("按时响应率", "pct", 10), Column("按时修复率", "pct", 10),
            Column("重复故障", "int", 8))


def _assessment_hours(v: Any) -> Cell:
    return None if v is None else float(v) / 3600.0


def _assessment_rows(rows: list[dict[str, Any]]) -> list[list[Cell]]:
    return [[r["rank"], r["key"], r["opened"], r["closed"], r["still_open"],
             _assessment_hours(r["response_median_s"]), _assessment_hours(r["response_p90_s"]),
             _assessment_hours(r["repair_median_s"]), _assessment_hours(r["repair_p90_s"]),
             r["response_within"], r["repair_within"], r["repeats"]] for r in rows]


def assessment_tables(doc: dict[str, Any] | None) -> list[Table]:
    """The assessment (考核评价) as tables: one per operator, one per township, ranked, from
    :func:`camwatch.repairs.assess.assessment`. Only when the period has tickets: a county
    without the repair desk gets the bulletin it had."""
    if not doc:
        return []
    return [Table("assessment_operators", "运维考核（运营商）", _assessment_columns("运营商"),
                  _assessment_rows(doc["operators"]), _ASSESSMENT_NOTE),
            Table("assessment_townships", "运维考核（乡镇）", _assessment_columns("乡镇"),
                  _assessment_rows(doc["townships"]), _ASSESSMENT_NOTE)]


_CLOUD_NOTE = ("台账：安装状态为已安装且上云状态为已上云；实测：已安装且列在某个下级平台的 "
               "GB/T 28181 目录中（各平台本月最后一次目录）；上云率 = 上云通道 / 已安装")
_RECONCILE_KINDS = (("missing", "台账已上云、不在任何平台目录"),
                    ("not_in_ledger", "平台目录中有、台账中没有"),
                    ("names_differ", "点位名称不一致"),
                    ("not_connected_in_ledger", "在平台目录中、台账未上云或未安装"))


def reconciliation_tables(b: Bulletin) -> list[Table]:
    """台账核对 as two tables: the cloud-connect rate as the ledger declares it beside the one
    measured from the platforms' catalogs, and every row that differs. Only when some GB/T
    28181 platform sent a catalog that month: a county without one gets the bulletin it had."""
    doc = b.reconciliation
    if not doc:
        return []
    platforms = "；".join(
        f"{p['name'] or p['id']}（{p['id']}）目录 {p['channels']} 路，"
        f"{local_text(p['at'], b.tz) if p['at'] is not None else '-'}"
        f"{'，不完整' if p['partial'] else ''}" for p in doc["platforms"])
    cols = (Column("口径", "text", 12), Column("上云通道", "int", 10),
            Column("已安装", "int", 10), Column("上云率", "pct", 10),
            Column("说明", "text", 60, True))
    measured_note = "在下级平台目录中" + ("" if doc["complete"] else
                                      "（有平台目录不完整，实测可能偏低）")
    rates = Table("cloud_rate", "上云率核对", cols, [
        ["台账", doc["declared_connected"], doc["installed"], doc["declared_rate"],
         "台账上云状态为已上云"],
        ["实测", doc["measured_connected"], doc["installed"], doc["measured_rate"],
         measured_note],
    ], f"{_CLOUD_NOTE}。平台：{platforms}")
    detail_cols = (Column("类别", "text", 28), Column("设备编码", "text", 22),
                   Column("台账点位名称", "text", 30, True),
                   Column("平台目录名称", "text", 30, True), Column("下级平台", "text", 22))
    rows: list[list[Cell]] = []
    for key, title in _RECONCILE_KINDS:
        for r in doc[key]:
            if key == "names_differ":
                rows.append([title, r["channel"], r["ledger"], r["catalog"], None])
            elif key == "not_in_ledger":
                rows.append([title, r["channel"], None, r["name"], r["platform"]])
            else:
                rows.append([title, r["channel"], r["name"], None, None])
    counts = "，".join(f"{title} {doc[key + '_count']} 路" for key, title in _RECONCILE_KINDS)
    return [rates, Table("reconciliation", "台账核对", detail_cols, rows, counts)]


_RECORDING_NOTE = ("录像完整率 = Σ 录像时长 / Σ 应录时长：各下级平台按 GB/T 28181 RecordInfo 报告的"
                   "每个点位每天的录像（主码流、子码流等重叠录像只计一次）；每个点位每天查询一次"
                   "前一天；答复不完整的天数计入下限")


def recording_tables(b: Bulletin) -> list[Table]:
    """录像完整率 by township (the whole county first), and every channel below 100 %, lowest
    first. Only when some platform answered RecordInfo for the period."""
    doc = b.recording
    if not doc:
        return []
    cols = (Column("区县", "text", 10), Column("乡镇", "text", 12), Column("点位数", "int", 8),
            Column("录像(小时)", "hours", 11), Column("应录(小时)", "hours", 11),
            Column("录像完整率", "pct", 10))
    rows: list[list[Cell]] = [["全部", None, doc["channels"], doc["recorded_s"] / 3600.0,
                               doc["period_s"] / 3600.0, doc["rate"]]]
    rows += [[r["county"], r["township"], r["channels"], r["recorded_s"] / 3600.0,
              r["period_s"] / 3600.0, r["rate"]] for r in doc["townships"]]
    note = _RECORDING_NOTE + (f"；{doc['partial_days']} 个点位·天的答复不完整"
                              if doc["partial_days"] else "")
    short_cols = (Column("设备编码", "text", 22), Column("点位名称", "text", 28, True),
                  Column("乡镇", "text", 12), Column("村", "text", 12),
                  Column("运营商", "text", 8), Column("下级平台", "text", 22),
                  Column("天数", "int", 6), Column("录像(小时)", "hours", 11),
                  Column("应录(小时)", "hours", 11), Column("录像完整率", "pct", 10),
                  Column("不完整答复(天)", "int", 12))
    short = [[r["channel"], r["name"], r["township"], r["village"], r["operator"],
              r["platform"], r["days"], r["recorded_s"] / 3600.0, r["period_s"] / 3600.0,
              r["rate"], r["partial_days"]] for r in doc["short"]]
    return [Table("recording", "录像完整率", cols, rows, note),
            Table("recording_short", "录像缺失点位", short_cols, short,
                  "录像完整率低于 100% 的点位，由低到高")]


def method_table(b: Bulletin) -> Table:
    cols = (Column("项目", "text", 34, True), Column("说明", "text", 90, True))
    return Table("method", "统计方法", cols, [[label, value] for _, label, value in b.method()])


def all_tables(b: Bulletin, *, outage_events: bool = True) -> list[Table]:
    """Every table, in report order. ``outage_events=False``: the outages summarised per
    channel (:func:`outage_summary_table`, the XLSX) instead of one row per outage."""
    outages = outage_table(b) if outage_events else outage_summary_table(b)
    return [summary_table(b), township_table(b), village_table(b), operator_table(b),
            long_offline_table(b), *([degraded_table(b)] if b.intact else []),
            mass_event_table(b), outages, repaired_table(b),
            exemption_table(b), *assessment_tables(b.assessment), *reconciliation_tables(b),
            *recording_tables(b), data_quality_table(b),
            method_table(b)]
