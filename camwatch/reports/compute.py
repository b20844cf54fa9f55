"""The monthly bulletin (月度通报), computed from the store and the inventory: no I/O but the
store reads, no formatting (see :mod:`camwatch.reports.xlsx`, ``html``, ``csvjson``).

Definitions (printed in every report's method section):

* 安装率 = installed / planned, 上云率 = connected / installed, as of the period's last day.
* Online rate, time-weighted = Σ online time / Σ monitored time (online + offline) over the
  period, summed per channel and then per scope; a channel connected during the period counts
  from its connect day; ``unknown`` time and exempted (报备) time are neither online nor
  monitored. Snapshot = channels online / channels online or offline at the period end
  (``unknown`` and channels exempted at that moment left out). Both go through
  :func:`camwatch.rules.rates.online_rate`; time is counted in integer milliseconds.
* A scope with several point classes has no single target: it is below target when any of its
  classes (with at least ``targets.min_channels`` channels) is below that class's target. Its
  reference target (for charts) is the class targets weighted by each class's denominator.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from camwatch.config import Config, TargetsConfig
from camwatch.errors import Problem
from camwatch.inventory import Channel
from camwatch.model import CLASS_NAMES
from camwatch.reports.events import OutageEvent, OutageRow, group_outages
from camwatch.reports.gcpause import gc_paused
from camwatch.reports.intact import DEGRADED as I_DEGRADED
from camwatch.reports.intact import (
    INTACT,
    NOT_JUDGED,
    IntactTimeline,
    QualityCursor,
    intact_slot,
    scan_intact,
)
from camwatch.reports.intact import OFFLINE as I_OFFLINE
from camwatch.reports.period import Period, day_start, local_text, zone
from camwatch.reports.quality import Finding, data_quality
from camwatch.reports.timeline import (
    OFFLINE,
    ONLINE,
    UNKNOWN,
    Cursor,
    Timeline,
    exemption_map,
    initial_cursors,
    scan,
)
from camwatch.rules.rates import (
    BREAKDOWNS,
    Cell,
    RateRow,
    Targets,
    cell_of,
    online_rate,
    roll_up,
)
from camwatch.store.base import (
    Exemption,
    QualityChange,
    QualityChangeRow,
    Recording,
    Ticket,
    Transition,
    TransitionRow,
)

Scope = tuple[tuple[str, str], ...]
DAY = 86400.0
PICTURES = 15  # degraded cameras whose last degraded picture the printed bulletin shows

# Scopes of the bulletin's tables, coarse to fine.
SITE: tuple[str, ...] = ()
COUNTY = ("county",)
TOWNSHIP = ("county", "township")
VILLAGE = ("county", "township", "village")
OPERATOR = ("operator",)
OPERATOR_TOWNSHIP = ("county", "township", "operator")
ALL_DIMS = (SITE, COUNTY, TOWNSHIP, VILLAGE, OPERATOR, OPERATOR_TOWNSHIP)


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """The configurable parts of the bulletin; all printed in its method section."""

    probing_level: str = "describe"
    online_rate: str = "time_weighted"  # or "snapshot": which rate is published and ranked
    long_offline_days: int = 3
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    timezone: str = "Asia/Shanghai"
    max_villages: int = 30  # villages in the printed annex, worst first; 0: all
    # One event, one row: channels of one village or township going offline within
    # ``event_window`` seconds, at least ``event_min_channels`` of them, are one outage event
    # (the mass_outage alert rule's window and minimum, alerts.rules.mass_outage).
    event_window: float = 300.0
    event_min_channels: int = 4
    event_share: float = 0.8

    @classmethod
    def from_config(cls, cfg: Config) -> ReportSettings:
        mass = cfg.alerts.rules.mass_outage
        return cls(str(cfg.probing.level), cfg.report.online_rate,
                   cfg.report.long_offline_days, cfg.targets, cfg.report.timezone,
                   cfg.report.max_villages, float(mass.window), mass.min_channels,
                   float(mass.share))


@dataclass(frozen=True, slots=True)
class Part:
    """One point class (or project) inside a scope."""

    klass: int | None
    project: str | None
    channels: int  # connected
    tw: RateRow  # time-weighted; online / connected are milliseconds
    snap: RateRow  # snapshot; channel counts
    published: str
    judged: bool  # enough channels to be held to the target
    planned: int = 0
    installed: int = 0
    # 完好率 (reports/intact.py): time-weighted (ms) and snapshot (channels), against the
    # intact targets (targets.intact); None when the store has no picture quality
    itw: RateRow | None = None
    isnap: RateRow | None = None

    @property
    def install_rate(self) -> float | None:
        return online_rate(self.installed, self.planned)  # same Σ/Σ definition

    @property
    def cloud_rate(self) -> float | None:
        return online_rate(self.channels, self.installed)

    @property
    def intact_row(self) -> RateRow | None:
        return self.isnap if self.published == "snapshot" else self.itw

    @property
    def intact_rate(self) -> float | None:
        r = self.intact_row
        return r.rate if r is not None else None

    @property
    def intact_target(self) -> float | None:
        r = self.intact_row
        return r.target if r is not None else None

    @property
    def intact_meets_target(self) -> bool | None:
        r = self.intact_row
        return r.meets_target if r is not None and self.judged else None

    @property
    def name(self) -> str:
        if self.klass is not None:
            return CLASS_NAMES.get(self.klass, str(self.klass))
        return self.project or ""

    @property
    def row(self) -> RateRow:
        return self.snap if self.published == "snapshot" else self.tw

    @property
    def rate(self) -> float | None:
        return self.row.rate

    @property
    def target(self) -> float | None:
        return self.row.target

    @property
    def meets_target(self) -> bool | None:
        return self.row.meets_target if self.judged else None


@dataclass(frozen=True, slots=True)
class Figures:
    """One scope (the site, a county, township, village, operator, operator × township)."""

    scope: Scope
    planned: int
    installed: int
    connected: int
    tw: RateRow
    snap: RateRow
    published: str
    classes: tuple[Part, ...]
    projects: tuple[Part, ...]
    target: float | None  # reference target (class targets weighted by denominators)
    previous: float | None = None  # last period's published rate
    rank: int = 0
    itw: RateRow | None = None  # 完好率, as in Part
    isnap: RateRow | None = None
    previous_intact: float | None = None  # last period's published 完好率

    def get(self, dim: str) -> str:
        return dict(self.scope).get(dim, "")

    @property
    def install_rate(self) -> float | None:
        return online_rate(self.installed, self.planned)  # same Σ/Σ definition

    @property
    def cloud_rate(self) -> float | None:
        return online_rate(self.connected, self.installed)

    @property
    def rate(self) -> float | None:
        return (self.snap if self.published == "snapshot" else self.tw).rate

    @property
    def failing(self) -> tuple[Part, ...]:
        return tuple(p for p in self.classes + self.projects if p.meets_target is False)

    @property
    def meets_target(self) -> bool | None:
        verdicts = [p.meets_target for p in self.classes + self.projects
                    if p.meets_target is not None]
        if not verdicts:
            return None
        return all(verdicts)

    @property
    def intact_rate(self) -> float | None:
        """The published 完好率 (time-weighted or snapshot, as the online rate)."""
        r = self.isnap if self.published == "snapshot" else self.itw
        return r.rate if r is not None else None

    @property
    def intact_failing(self) -> tuple[Part, ...]:
        return tuple(p for p in self.classes + self.projects
                     if p.intact_meets_target is False)

    @property
    def intact_meets_target(self) -> bool | None:
        """As :attr:`meets_target`, for the 完好率 against the intact targets."""
        verdicts = [p.intact_meets_target for p in self.classes + self.projects
                    if p.intact_meets_target is not None]
        if not verdicts:
            return None
        return all(verdicts)

    @property
    def change_pp(self) -> float | None:
        """Month-over-month change in percentage points."""
        return _change_pp(self.rate, self.previous)

    @property
    def intact_change_pp(self) -> float | None:
        """The 完好率's month-over-month change in percentage points (环比)."""
        return _change_pp(self.intact_rate, self.previous_intact)


def _change_pp(rate: float | None, previous: float | None) -> float | None:
    return None if rate is None or previous is None else (rate - previous) * 100.0


@dataclass(frozen=True, slots=True)
class LongOffline:
    channel: Channel
    since: float | None
    days: float
    reason: str | None
    exemption: str | None  # reason of an exemption covering the period end


@dataclass(frozen=True, slots=True)
class DegradedRow:
    """A camera whose picture was degraded (画面异常) for some of the period while online."""

    channel: Channel
    seconds: float  # online with a degraded picture, within the period (exemptions left out)
    faults: tuple[str, ...]  # the checks at fault during the period, first seen first
    quality: str  # the picture's quality at the period end
    since: float | None  # when the degradation began, if still degraded at the period end
    state: str  # the online state at the period end


@dataclass(frozen=True, slots=True)
class ExemptionRow:
    exemption: Exemption
    channel: Channel | None
    seconds_in_period: float


@dataclass(frozen=True, slots=True)
class Bulletin:
    site: str
    period: Period
    previous_period: Period
    end: float  # the period end, or the report time when the period is not over
    generated: float
    settings: ReportSettings
    inventory_source: str
    previous_inventory_source: str
    summary: Figures
    counties: list[Figures]
    townships: list[Figures]  # ranked
    villages: list[Figures]  # grouped by township (in rank order), ranked within
    operators: list[Figures]
    operator_townships: list[Figures]
    long_offline: list[LongOffline]
    outages: list[OutageRow]
    repaired: list[OutageRow]
    exemptions: list[ExemptionRow]
    data_quality: list[Finding]
    transitions_read: int
    events: list[OutageEvent] = field(default_factory=list)  # outages grouped, by start
    # Coverage: Σ over counted channels of the period from their counting start (the period
    # start or their connect day) to the period's end, in milliseconds, whether or not the
    # period is over; the monitored part of it is ``summary.tw.connected``. Channels counted
    # so far: those whose counting has begun by ``end``.
    counted_ms: int = 0
    counted_channels: int = 0
    previous_monitored_ms: int = 0  # 0: no data for the previous period (上期 / 环比 "-")
    # repair tickets' assessment (camwatch.repairs.assess.assessment); None without tickets
    assessment: dict[str, Any] | None = None
    # 完好率 (picture quality, reports/intact.py): only when the store holds quality verdicts
    # for the period; a county that does not sample pictures gets the bulletin it had
    intact: bool = False
    degraded: list[DegradedRow] = field(default_factory=list)  # worst (longest) first
    # the last degraded picture (when, JPEG) of the first PICTURES degraded cameras
    pictures: dict[str, tuple[float, bytes]] = field(default_factory=dict)
    # 台账核对 against the GB/T 28181 catalogs of the period's last month
    # (camwatch.gb28181.reconcile.month_reconciliation); None when no platform sent one
    reconciliation: dict[str, Any] | None = None
    # 录像完整率 from the platforms' RecordInfo answers of the period's days
    # (camwatch.gb28181.records.month_recording); None without any
    recording: dict[str, Any] | None = None

    @property
    def tz(self) -> dt.tzinfo:
        return self.period.tz

    @property
    def mass_events(self) -> list[OutageEvent]:
        """The events that group several channels (a township's, village's, host's)."""
        return [e for e in self.events if e.grouped]

    @property
    def ended(self) -> bool:
        """False while the period is still running (the report is cut at its generation)."""
        return self.end >= self.period.end

    @property
    def coverage(self) -> float | None:
        """The monitored share of the period: Σ monitored / Σ counted time."""
        return online_rate(self.summary.tw.connected, self.counted_ms)

    @property
    def monitored_per_channel(self) -> float:
        """Seconds monitored (online or offline) per counted channel, on average."""
        if not self.counted_channels:
            return 0.0
        return self.summary.tw.connected / 1000.0 / self.counted_channels

    def method(self) -> list[tuple[str, str, str]]:
        """(key, 中文 label, value) of every setting and definition the figures depend on."""
        s = self.settings
        t = s.targets
        by_class = ", ".join(f"{CLASS_NAMES.get(k, str(k))} {v * 100:.2f}%"
                             for k, v in sorted(t.by_class.items()))
        by_project = ", ".join(f"{k} {v * 100:.2f}%" for k, v in sorted(t.by_project.items()))
        overrides = "; ".join(
            " ".join(x for x in (o.county, o.township,
                                 CLASS_NAMES.get(o.class_, str(o.class_)) if o.class_ else None,
                                 o.project) if x) + f" {o.target * 100:.2f}%"
            for o in t.overrides) or "无"
        published = "时间加权 time_weighted" if s.online_rate != "snapshot" else "期末快照 snapshot"
        ended = self.ended
        return [
            ("period", "统计周期",
             f"{self.period.label}（{local_text(self.period.start, self.tz)}"
             f" 至 {local_text(self.end, self.tz)}"
             f"{'' if ended else '，周期未结束，截至生成时间'}，{s.timezone}）"),
            ("previous_period", "环比周期", self.previous_period.label),
            ("inventory_source", "台账来源", self.inventory_source),
            ("previous_inventory_source", "环比台账来源", self.previous_inventory_source),
            ("probing.level", "在线判定级别 probing.level",
             f"{s.probing_level}（该级别探测成功才计为在线）"),
            ("report.online_rate", "发布在线率 report.online_rate", published),
            ("report.long_offline_days", "长期离线天数 report.long_offline_days",
             str(s.long_offline_days)),
            ("targets.class", "目标（点位类型）targets.class", by_class or "无"),
            ("targets.project", "目标（项目）targets.project", by_project or "无"),
            ("targets.overrides", "目标（按区域）targets.overrides", overrides),
            ("targets.min_channels", "考核最少通道数 targets.min_channels",
             f"{t.min_channels}（乡镇、村、运营商×乡镇中少于此数的类型不判定达标）"),
            ("install_rate", "安装率", "已安装 / 应安装（截至统计周期最后一天）"),
            ("cloud_rate", "上云率", "已联网上云 / 已安装（截至统计周期最后一天）"),
            ("online_rate_time_weighted", "在线率（时间加权）",
             "Σ在线时长 / Σ监测时长（在线+离线），逐通道累计后按范围求和，不对比率取平均；"
             "期中联网的通道自联网日起计；unknown（未探测、无法判定）时长不计入分子分母"),
            ("online_rate_snapshot", "在线率（期末快照）",
             "期末在线通道数 / 期末在线或离线通道数；unknown 不计入"),
            ("denominator", "分母", "只统计已联网上云的通道；未联网通道不计"),
            ("exemptions", "报备", "报备期间的时长既不计入在线也不计入监测；期末处于报备的通道"
                                 "不计入快照"),
            ("scope_target", "多类型范围的达标",
             "任一类型（通道数不少于 min_channels）低于其目标即为未达标；参考目标为各类型目标"
             "按分母加权"),
            ("change", "环比", "本期与上期在线率之差，单位百分点；上期按同一方法计算"),
            ("repaired", "修复",
             f"本期恢复在线、此前连续离线不少于 {s.long_offline_days} 天的故障"),
            ("events", "离线事件",
             f"同一乡镇（或村）{s.event_window / 60:g} 分钟内离线不少于 {s.event_min_channels} 路、"
             f"且不少于其已联网通道的 {s.event_share * 100:g}% 计为一起批量离线；同一村内因上级"
             f"设备离线的不少于 {s.event_min_channels} 路计为一起上级设备离线；与批量离线告警 "
             "alerts.rules.mass_outage 的 window、min_channels、share 相同；其余每次离线一行"),
            ("outages", "离线明细",
             "XLSX 按通道汇总（离线次数、累计时长、最长一次、最近原因）；逐次离线（开始、"
             "恢复、时长、原因）见 CSV（outages.csv）与 JSON（outages）版本"),
            ("report.max_villages", "打印版村排名 report.max_villages",
             f"{s.max_villages or '全部'}（HTML/PDF 附件列出在线率最低的村；XLSX、CSV、"
             "JSON 列出全部村）"),
            *(self._intact_method() if self.intact else []),
            ("generated", "生成时间", local_text(self.generated, self.tz)),
        ]

    def _intact_method(self) -> list[tuple[str, str, str]]:
        t = self.settings.targets.intact_targets()
        by_class = ", ".join(f"{CLASS_NAMES.get(k, str(k))} {v * 100:.2f}%"
                             for k, v in sorted(t.by_class.items()))
        by_project = ", ".join(f"{k} {v * 100:.2f}%" for k, v in sorted(t.by_project.items()))
        given = "targets.intact" if self.settings.targets.intact is not None else \
            "未单独设置，同在线率目标"
        return [
            ("intact_rate", "完好率",
             "在线且画面正常（最近一次视频质量诊断无异常）的时长 / 在线或离线且画面已诊断的时长"
             "（时间加权；期末快照按通道数），逐通道累计后按范围求和；离线、在线但画面异常"
             "（黑屏、冻结、模糊、偏色、遮挡等，见 docs/quality.md）均计为不完好；在线状态"
             "unknown 或画面尚无诊断结论（未采样、采样失败）的时长不计入分子分母；报备时长同在线率"
             "不计；画面状态以最近一次采样为准，直至下一次采样"),
            ("targets.intact", "完好率目标 targets.intact",
             f"{by_class or '无'}；项目 {by_project or '无'}（{given}）"),
            ("degraded", "画面异常清单",
             "本期在线但画面异常的通道，按异常时长排序；缩略图为该通道最近一次异常采样的画面"),
        ]

    def method_settings(self) -> dict[str, Any]:
        """The configurable settings, machine-readable."""
        s = self.settings
        t = s.targets
        return {
            "probing.level": s.probing_level,
            "report.online_rate": s.online_rate,
            "report.long_offline_days": s.long_offline_days,
            "report.timezone": s.timezone,
            "report.max_villages": s.max_villages,
            "alerts.rules.mass_outage.window": s.event_window,
            "alerts.rules.mass_outage.min_channels": s.event_min_channels,
            "alerts.rules.mass_outage.share": s.event_share,
            "targets": {
                "class": {str(k): v for k, v in sorted(t.by_class.items())},
                "project": dict(sorted(t.by_project.items())),
                "overrides": [o.model_dump(by_alias=True, exclude_none=True)
                              for o in t.overrides],
                "min_channels": t.min_channels,
                **({"intact": {
                    "class": {str(k): v for k, v in sorted(ti.by_class.items())},
                    "project": dict(sorted(ti.by_project.items())),
                    "overrides": [o.model_dump(by_alias=True, exclude_none=True)
                                  for o in ti.overrides]}}
                   if self.intact and (ti := t.intact_targets()) is not None else {}),
            },
        }


# --- computation --------------------------------------------------------------------------------


def _lifecycle(ch: Channel, last_day: dt.date) -> tuple[bool, bool]:
    """(installed, connected) as of ``last_day``."""
    connected = ch.connected and (ch.connected_date is None or ch.connected_date <= last_day)
    installed = connected or (ch.installed and (ch.installed_date is None
                                                or ch.installed_date <= last_day))
    return installed, connected


def _windows(channels: Iterable[Channel], period: Period, end: float) -> dict[str, float]:
    """Counted channels -> when counting starts: the period start or their connect day."""
    out = {}
    start, first, last = period.start, period.first, period.last
    for ch in channels:
        if not _lifecycle(ch, last)[1]:
            continue
        w = start
        if ch.connected_date is not None and ch.connected_date > first:
            w = day_start(ch.connected_date, period.tz)
        out[ch.id] = min(w, end)
    return out


def _exempt_at(ex: list[tuple[float, float]] | None, ts: float) -> bool:
    return bool(ex) and any(s < ts <= e for s, e in ex or ())


_SNAP_INDEX = {"online": 0, "offline": 1}
# A cell's counters: planned, installed, connected (channels); online, offline, unknown
# (time-weighted, milliseconds); online, offline, unknown (channels, at the period end); then
# the 完好率's: intact, not intact, not judged (milliseconds), and the same in channels at the
# period end.
_PLANNED, _INSTALLED, _CONNECTED, _TW, _SNAP, _ITW, _ISNAP = 0, 1, 2, 3, 6, 9, 12
_WIDTH = 15


def _intact_end(it: IntactTimeline, cid: str) -> int:
    """The 完好率 counter (0 intact, 1 not intact, 2 not judged) of a channel at the end."""
    q = it.quality.get(cid)
    slot = intact_slot(it.states.get(cid, "unknown"), q.quality if q else "unknown")
    return 0 if slot == INTACT else 1 if slot in (I_OFFLINE, I_DEGRADED) else 2


def _cells(channels: Sequence[Channel], period: Period, tl: Timeline,
           exempt: Mapping[str, list[tuple[float, float]]], end: float,
           it: IntactTimeline | None = None) -> dict[Cell, list[int]]:
    """Every channel's counters, summed per cell (:func:`camwatch.rules.rates.cell_of`): one
    dict update per channel; :func:`camwatch.rules.rates.roll_up` then adds the cells (a few
    thousand) into every scope, however many tables there are."""
    cells: dict[Cell, list[int]] = {}
    last = period.last
    for ch in channels:
        installed, connected = _lifecycle(ch, last)
        key = cell_of(ch)
        g = cells.get(key)
        if g is None:
            g = cells[key] = [0] * _WIDTH
        g[_PLANNED] += 1
        g[_INSTALLED] += installed
        if not connected:
            continue
        g[_CONNECTED] += 1
        ms = tl.ms.get(ch.id)
        if ms is not None:
            g[_TW] += ms[ONLINE]
            g[_TW + 1] += ms[OFFLINE]
            g[_TW + 2] += ms[UNKNOWN]
        if it is not None and (ims := it.ms.get(ch.id)) is not None:
            g[_ITW] += ims[INTACT]
            g[_ITW + 1] += ims[I_OFFLINE] + ims[I_DEGRADED]
            g[_ITW + 2] += ims[NOT_JUDGED]
        if not _exempt_at(exempt.get(ch.id), end):
            cur = tl.end_states.get(ch.id)
            g[_SNAP + (_SNAP_INDEX.get(cur.state, 2) if cur is not None else 2)] += 1
            if it is not None and ch.id in it.states:
                g[_ISNAP + _intact_end(it, ch.id)] += 1
    return cells


def _rows(scope: Scope, klass: int | None, project: str | None, v: Sequence[int],
          target: float | None, at: int = _TW) -> tuple[RateRow, RateRow]:
    """The time-weighted and the snapshot row of the counters at ``at`` (the online rate's,
    or ``_ITW`` for the 完好率's)."""
    s = at + 3
    tw = RateRow(scope, klass, project, v[at], v[at] + v[at + 1], v[at + 1], v[at + 2],
                 target)
    snap = RateRow(scope, klass, project, v[s], v[s] + v[s + 1], v[s + 1], v[s + 2], target)
    return tw, snap


def _figures(scope: Scope, total: Sequence[int],
             parts_of: Sequence[tuple[int | None, str | None, Sequence[int]]],
             targets: Targets, settings: ReportSettings, min_channels: int,
             intact: Targets | None = None) -> Figures:
    """``intact``: the 完好率's targets, when the bulletin has the 完好率."""
    published = settings.online_rate
    sd = dict(scope)
    parts: list[Part] = []
    for klass, project, v in parts_of:
        target = targets.target_for(sd, klass, project)
        tw, snap = _rows(scope, klass, project, v, target)
        itw = isnap = None
        if intact is not None:
            itw, isnap = _rows(scope, klass, project, v,
                               intact.target_for(sd, klass, project), _ITW)
        parts.append(Part(klass, project, v[_CONNECTED], tw, snap, published,
                          v[_CONNECTED] >= min_channels and v[_CONNECTED] > 0,
                          v[_PLANNED], v[_INSTALLED], itw, isnap))
    classes = tuple(sorted((p for p in parts if p.klass is not None),
                           key=lambda p: p.klass or 0))
    projects = tuple(sorted((p for p in parts if p.project is not None),
                            key=lambda p: p.project or ""))
    weight = num = 0.0
    for part in classes:
        if part.target is not None and part.row.connected:
            weight += part.row.connected
            num += part.target * part.row.connected
    tw, snap = _rows(scope, None, None, total, None)
    itw, isnap = _rows(scope, None, None, total, None, _ITW) if intact is not None else \
        (None, None)
    return Figures(scope, total[_PLANNED], total[_INSTALLED], total[_CONNECTED], tw, snap,
                   published, classes, projects, num / weight if weight else None,
                   itw=itw, isnap=isnap)


def _rank(rows: list[Figures]) -> list[Figures]:
    rows.sort(key=lambda f: (f.rate is None, -(f.rate or 0.0), f.scope))
    return [_with(f, rank=i) for i, f in enumerate(rows, start=1)]


def _with(f: Figures, **changes: Any) -> Figures:
    from dataclasses import replace

    return replace(f, **changes)


def _tables(channels: Sequence[Channel], period: Period, tl: Timeline,
            exempt: Mapping[str, list[tuple[float, float]]], end: float,
            settings: ReportSettings, it: IntactTimeline | None = None
            ) -> dict[tuple[str, ...], dict[Scope, Figures]]:
    targets = Targets(settings.targets)
    intact = Targets(settings.targets.intact_targets()) if it is not None else None
    rolled = roll_up(_cells(channels, period, tl, exempt, end, it), ALL_DIMS, BREAKDOWNS)
    totals: dict[Scope, list[int]] = {}
    parts: dict[Scope, list[tuple[int | None, str | None, list[int]]]] = {}
    for (scope, klass, project), v in rolled.items():
        if klass is None and project is None:
            totals[scope] = v
        else:
            parts.setdefault(scope, []).append((klass, project, v))
    totals.setdefault((), [0] * _WIDTH)
    out: dict[tuple[str, ...], dict[Scope, Figures]] = {d: {} for d in ALL_DIMS}
    for scope, total in totals.items():
        dims = tuple(d for d, _ in scope)
        judged_min = settings.targets.min_channels if dims in (
            TOWNSHIP, VILLAGE, OPERATOR_TOWNSHIP) else 0
        out[dims][scope] = _figures(scope, total, parts.get(scope, ()), targets, settings,
                                    judged_min, intact)
    return out


class BulletinSource(Protocol):
    """The reads the bulletin makes: a :class:`~camwatch.store.base.Store`, or a city's county
    stores read as one (:class:`camwatch.reports.city.CityStores`)."""

    def exemptions(self, start: float | None = None, end: float | None = None,
                   channel_ids: Iterable[str] | None = None) -> list[Exemption]: ...
    def last_transition_before(self, ts: float,
                               with_detail: bool = True) -> dict[str, Transition]: ...
    def transition_rows(self, start: float | None = None,
                        end: float | None = None) -> Iterable[TransitionRow]: ...
    def tickets(self, *, open_only: bool = False, since: float | None = None,
                until: float | None = None) -> list[Ticket]: ...
    def quality_changes(self, start: float | None = None,
                        end: float | None = None) -> Iterator[QualityChangeRow]: ...
    def last_quality_before(self, ts: float) -> dict[str, QualityChange]: ...
    def fault_pictures(self, channel_ids: Iterable[str]) -> dict[str, tuple[float, bytes]]: ...
    # GB/T 28181: the month's catalogs (台账核对) and RecordInfo answers (录像完整率)
    def gb_catalogs(self, month: str) -> dict[str, dict[str, Any]]: ...
    def gb_recordings(self, first_day: str, last_day: str) -> list[Recording]: ...


def compute_bulletin(store: BulletinSource, channels: Sequence[Channel], period: Period,
                     settings: ReportSettings, *, site: str = "camwatch",
                     inventory_source: str = "",
                     previous_channels: Sequence[Channel] | None = None,
                     previous_inventory_source: str = "",
                     rejected: Iterable[Problem] = (),
                     now: float | None = None,
                     progress: Callable[[int, int], None] | None = None) -> Bulletin:
    """Everything the bulletin shows for ``period`` (and the previous one, for 环比).

    ``channels`` is the inventory describing the period (that month's snapshot or the current
    inventory); ``previous_channels`` the one of the previous period (default: the same).
    ``now`` (default: the clock) caps a period that has not ended yet.
    """
    with gc_paused():
        return _compute(store, channels, period, settings, site, inventory_source,
                        previous_channels, previous_inventory_source, rejected, now, progress)


def _compute(store: BulletinSource, channels: Sequence[Channel], period: Period,
             settings: ReportSettings, site: str, inventory_source: str,
             previous_channels: Sequence[Channel] | None, previous_inventory_source: str,
             rejected: Iterable[Problem], now: float | None,
             progress: Callable[[int, int], None] | None) -> Bulletin:
    generated = time.time() if now is None else now
    prev = period.previous()
    end = min(period.end, generated)
    if end <= period.start:
        raise ValueError(f"the period {period.label} has not begun yet")
    prev_channels = channels if previous_channels is None else previous_channels
    step = progress or (lambda done, total: None)
    step(0, 4)

    exemptions = store.exemptions(prev.start, end)
    exempt = exemption_map(exemptions)
    # The report needs neither transitions' detail nor objects for them: plain rows.
    initial = initial_cursors(store.last_transition_before(prev.start, with_detail=False))
    step(1, 4)
    prev_windows = _windows(prev_channels, prev, prev.end)
    prev_tl = scan(store.transition_rows(prev.start, prev.end), prev.start, prev.end,
                   prev_windows, initial, exempt, outages=False)
    # the previous period's 完好率, for its 环比 (None without pictures sampled by then)
    prev_it = _intact(store, prev, prev.end, prev_windows, initial, exempt)
    del initial, prev_windows
    # The previous period's tables now, so that only its end states outlive its timeline.
    prev_tables = _tables(prev_channels, prev, prev_tl, exempt, prev.end, settings, prev_it)
    del prev_it
    prev_end_states, prev_read = prev_tl.end_states, prev_tl.transitions_read
    del prev_tl
    step(2, 4)
    # When each channel's counting starts; capped at ``end`` while the period runs. The
    # uncapped starts measure the coverage (the share of the whole period monitored).
    starts = _windows(channels, period, period.end)
    counted = {cid: min(w, end) for cid, w in starts.items()}
    period_end = period.end
    counted_ms = round(sum(period_end - w for w in starts.values()) * 1000)
    del starts
    tl = scan(store.transition_rows(period.start, end), period.start, end, counted,
              prev_end_states, exempt)
    it = _intact(store, period, end, counted, prev_end_states, exempt)
    del prev_end_states
    step(3, 4)

    cur_tables = _tables(channels, period, tl, exempt, end, settings, it)

    def tables(dims: tuple[str, ...]) -> list[Figures]:
        before = prev_tables.get(dims, {})
        return [_with(f, previous=before[s].rate if s in before else None,
                      previous_intact=before[s].intact_rate if s in before else None)
                for s, f in cur_tables[dims].items()]

    townships = _rank(tables(TOWNSHIP))
    order = {f.scope: f.rank for f in townships}
    villages = [_with(f, rank=i) for _, group in _group(tables(VILLAGE), order)
                for i, f in enumerate(_rank(group), start=1)]
    op_townships = sorted(tables(OPERATOR_TOWNSHIP),
                          key=lambda f: (f.get("operator"), order.get(f.scope[:2], 0)))
    by_id = {c.id: c for c in channels}
    ex_by_channel: dict[str, list[Exemption]] = {}
    for x in exemptions:
        ex_by_channel.setdefault(x.channel_id, []).append(x)
    long_offline, outages, repaired = _faults(tl, counted, by_id, ex_by_channel, end, settings)
    totals = {tuple(v for _, v in f.scope): f.connected for f in townships + villages}
    events = group_outages(outages, end, settings.event_window, settings.event_min_channels,
                           settings.event_share, totals)
    prev_site = prev_tables[SITE].get(())
    ex_rows = [
        ExemptionRow(x, by_id.get(x.channel_id),
                     max(0.0, min(x.end, end) - max(x.start, period.start)))
        for x in exemptions if x.end > period.start
    ]
    degraded = _degraded(it, by_id) if it is not None else []
    pictures = store.fault_pictures([d.channel.id for d in degraded[:PICTURES]]) \
        if degraded else {}
    step(4, 4)
    from camwatch.repairs.assess import REPEAT_WINDOW_S, assessment
    tickets = store.tickets(since=period.start - REPEAT_WINDOW_S, until=period.end)
    catalogs = store.gb_catalogs(f"{period.last:%Y-%m}")
    if catalogs:
        from camwatch.gb28181.reconcile import month_reconciliation

        reconciliation: dict[str, Any] | None = month_reconciliation(channels, catalogs)
    else:
        reconciliation = None
    recordings = store.gb_recordings(period.first.isoformat(), period.last.isoformat())
    if recordings:
        from camwatch.gb28181.records import month_recording

        recording: dict[str, Any] | None = month_recording(channels, recordings)
    else:
        recording = None
    return Bulletin(
        site=site, period=period, previous_period=prev, end=end, generated=generated,
        settings=settings, inventory_source=inventory_source,
        previous_inventory_source=previous_inventory_source or inventory_source,
        summary=tables(SITE)[0], counties=_rank(tables(COUNTY)), townships=townships,
        villages=villages, operators=_rank(tables(OPERATOR)),
        operator_townships=op_townships, long_offline=long_offline, outages=outages,
        repaired=repaired, exemptions=ex_rows, data_quality=data_quality(channels, rejected),
        transitions_read=prev_read + tl.transitions_read, events=events,
        counted_ms=counted_ms,
        counted_channels=sum(1 for w in counted.values() if w < end),
        previous_monitored_ms=prev_site.tw.connected if prev_site is not None else 0,
        assessment=assessment(tickets, period.start, period.end, end) if tickets else None,
        intact=it is not None, degraded=degraded, pictures=pictures,
        reconciliation=reconciliation, recording=recording,
    )


def _intact(store: BulletinSource, period: Period, end: float, counted: Mapping[str, float],
            start_states: Mapping[str, Cursor],
            exempt: Mapping[str, list[tuple[float, float]]]) -> IntactTimeline | None:
    """The 完好率's pass (:mod:`camwatch.reports.intact`); None when the store has no quality
    verdict up to ``end`` (pictures not sampled): nothing more is read then."""
    before = store.last_quality_before(period.start)
    changes = store.quality_changes(period.start, end)
    first = next(changes, None)
    if not before and first is None:
        return None
    quality = {cid: QualityCursor(c.to_quality, c.faults, c.ts) for cid, c in before.items()}
    return scan_intact(store.transition_rows(period.start, end),
                       itertools.chain([first] if first is not None else [], changes),
                       period.start, end, counted,
                       {cid: c.state for cid, c in start_states.items()}, quality, exempt)


def _degraded(it: IntactTimeline, by_id: Mapping[str, Channel]) -> list[DegradedRow]:
    """Cameras online with a degraded picture for some of the period, longest first."""
    rows = []
    for cid, ms in it.ms.items():
        q = it.quality.get(cid)
        still = q is not None and q.quality == "degraded"
        if not ms[I_DEGRADED] and not (still and it.states.get(cid) == "online"):
            continue
        faults = tuple(it.faults_seen.get(cid, ()))
        if still and q is not None:
            faults += tuple(f for f in q.faults if f not in faults)
        rows.append(DegradedRow(by_id[cid], ms[I_DEGRADED] / 1000.0, faults,
                                q.quality if q is not None else "unknown",
                                q.since if still and q is not None else None,
                                it.states.get(cid, "unknown")))
    rows.sort(key=lambda r: (-r.seconds, r.channel.id))
    return rows


def _group(rows: list[Figures], order: Mapping[Scope, int]
           ) -> list[tuple[Scope, list[Figures]]]:
    groups: dict[Scope, list[Figures]] = {}
    for f in rows:
        groups.setdefault(f.scope[:2], []).append(f)
    return sorted(groups.items(), key=lambda kv: (order.get(kv[0], 1 << 30), kv[0]))


def _faults(tl: Timeline, counted: Mapping[str, float], by_id: Mapping[str, Channel],
            exemptions: Mapping[str, list[Exemption]], end: float,
            settings: ReportSettings
            ) -> tuple[list[LongOffline], list[OutageRow], list[OutageRow]]:
    limit = settings.long_offline_days * DAY
    long_offline = []
    for cid in counted:
        cur: Cursor | None = tl.end_states.get(cid)
        if cur is None or cur.state != "offline":
            continue
        since = cur.since
        if since is not None and end - since < limit:
            continue
        ex_reason = None
        for x in exemptions.get(cid, ()):
            if x.start < end <= x.end:
                ex_reason = x.reason
        days = (end - since) / DAY if since is not None else (end - counted[cid]) / DAY
        if since is None and days * DAY < limit:
            continue
        long_offline.append(LongOffline(by_id[cid], since, days, cur.reason, ex_reason))
    long_offline.sort(key=lambda r: (-r.days, r.channel.id))
    outages = []
    for o in tl.outages:
        stop = o.end if o.end is not None else end
        seconds = stop - o.start if o.start is not None else None
        outages.append(OutageRow(by_id[o.channel_id], o.start, o.end, seconds, o.reason))
    outages.sort(key=lambda r: (r.start is not None, r.start or 0.0, r.channel.id))
    repaired = [o for o in outages if o.end is not None
                and (o.seconds is None or o.seconds >= limit)]
    repaired.sort(key=lambda r: (r.end or 0.0, r.channel.id))
    return long_offline, outages, repaired


def period_for(month: str | None, first: str | None, last: str | None,
               settings: ReportSettings, now: float) -> Period:
    """The report period from CLI-style arguments; default: the previous calendar month."""
    from camwatch.reports.period import local_date, parse_day

    tz = zone(settings.timezone)
    if month:
        return Period.month(month, tz)
    if first or last:
        if not (first and last):
            raise ValueError("expected both --from and --to")
        return Period.days(parse_day(first), parse_day(last), tz)
    today = local_date(now, tz)
    return Period.month(f"{today:%Y-%m}", tz).previous()


__all__ = [
    "Bulletin",
    "DegradedRow",
    "ExemptionRow",
    "Figures",
    "Finding",
    "LongOffline",
    "OutageEvent",
    "OutageRow",
    "Part",
    "ReportSettings",
    "compute_bulletin",
    "data_quality",
    "period_for",
]
