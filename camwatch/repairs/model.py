"""Repair tickets (维修工单): their states, the ticket, and its events.

A ticket's states, in the county's 七步闭环 (问题采集、生成工单、工单派遣、工单处理、工单反馈、
核实结案、考核评价)::

    待派单 ─▶ 已派单 ─▶ 已响应 ─▶ 已处理 ─▶ 核实结案
                 │           ▲        │
                 │           └ 处理中 ◀┘  (camwatch still sees the point down)
    any open state ⇄ 挂起 (an approved 报备 pauses the clock);  ─▶ 撤销 (left the ledger)

The values are what the store, the API and the webhook carry; the Chinese names
(:data:`STATE_ZH`) are what people read. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields
from typing import Any


class TicketState(enum.StrEnum):
    PENDING = "pending"  # 待派单: opened, no receiver took it (yet)
    DISPATCHED = "dispatched"  # 已派单: in the maintainers' outbox
    ACKNOWLEDGED = "acknowledged"  # 已响应: a maintainer took it
    FIXED = "fixed"  # 已处理: the maintainer says it is fixed; camwatch verifies
    REWORK = "rework"  # 处理中: "fixed" but camwatch still saw the point down
    SUSPENDED = "suspended"  # 挂起: an approved exemption (报备) pauses the clock
    CLOSED = "closed"  # 核实结案: camwatch saw the point online for repairs.verify_for
    CANCELLED = "cancelled"  # 撤销: the point left the ledger (台账)


STATE_ZH: dict[str, str] = {
    TicketState.PENDING: "待派单",
    TicketState.DISPATCHED: "已派单",
    TicketState.ACKNOWLEDGED: "已响应",
    TicketState.FIXED: "已处理",
    TicketState.REWORK: "处理中",
    TicketState.SUSPENDED: "挂起",
    TicketState.CLOSED: "核实结案",
    TicketState.CANCELLED: "撤销",
}

FINAL = frozenset({TicketState.CLOSED, TicketState.CANCELLED})

#: What a ticket is for: a channel (or a group) offline, or one channel's picture degraded
#: (视频质量诊断, camwatch.quality). A channel is in at most one open ticket of either kind.
ONLINE_FAULT = "online"
QUALITY_FAULT = "quality"

#: What a maintainer (CLI, API, a county's 运维 platform) may do to a ticket.
ACTIONS = ("ack", "done", "note")


class TicketError(Exception):
    """An action a ticket's state does not allow; the message says which states do."""


@dataclass(slots=True)
class Ticket:
    """One ticket. Times are UNIX seconds; durations (``response_s``, ``repair_s``) are the
    deadlines' lengths, counted from ``opened`` with the paused time added."""

    no: int
    state: str
    channels: list[str]  # the points it covers (a mass outage: every one of its group)
    opened: float
    fault_since: float  # when the (first) point went offline
    response_s: float
    repair_s: float
    reason: str | None = None  # camwatch.model.Why at opening
    group: str = ""  # "village:鹿邑县/城关镇/李庄" for a mass outage, "" for one point
    name: str = ""  # the point's name (one point) or the group's
    county: str = ""
    township: str = ""
    village: str = ""
    operator: str = ""
    project: str = ""
    klass: int | None = None
    acked: float | None = None
    acked_by: str = ""
    fixed: float | None = None  # the last "fixed" claim
    fixed_by: str = ""
    repaired: float | None = None  # the start of the online run that passed verification
    closed: float | None = None
    cancelled: float | None = None
    pauses: list[list[float | None]] = field(default_factory=list)  # [[start, end|None]]
    resume_state: str = ""  # the state a suspended ticket returns to
    rejections: int = 0  # "fixed" claims that failed verification
    reminded: bool = False
    escalated_response: bool = False
    escalated_repair: bool = False
    receivers: list[str] = field(default_factory=list)
    updated: float = 0.0
    kind: str = ONLINE_FAULT  # ONLINE_FAULT or QUALITY_FAULT
    faults: list[str] = field(default_factory=list)  # a quality ticket's checks at fault
    snapshot: str = ""  # a quality ticket's thumbnail: the channel's snapshot URL

    @property
    def is_open(self) -> bool:
        return self.state not in FINAL

    @property
    def final_ts(self) -> float | None:
        return self.closed if self.closed is not None else self.cancelled

    def paused(self, start: float, end: float) -> float:
        """Seconds of ``[start, end)`` the ticket spent suspended."""
        total = 0.0
        for a, b in self.pauses:
            assert a is not None
            hi = end if b is None else min(b, end)
            lo = max(a, start)
            if hi > lo:
                total += hi - lo
        return total

    def net(self, ts: float) -> float:
        """Seconds from the opening to ``ts``, the paused time left out."""
        return ts - self.opened - self.paused(self.opened, ts)

    def response_due(self, now: float) -> float:
        """When the response is due, as of ``now`` (a pause moves it)."""
        return self._due(self.response_s, now)

    def repair_due(self, now: float) -> float:
        return self._due(self.repair_s, now)

    def _due(self, length: float, now: float) -> float:
        # the deadline moves by every pause that began before it (an ongoing one up to now)
        due = self.opened + length
        if not self.pauses:
            return due
        for a, b in sorted(self.pauses, key=lambda p: p[0] or 0.0):
            assert a is not None
            if a >= due:
                break
            due += (now if b is None else b) - a
        return due

    def as_dict(self) -> dict[str, Any]:
        """The ticket as plain data (JSON), lists copied (``dataclasses.asdict`` deep-copies
        every value: 0.5 ms a ticket, the bulk of opening 5,000 at once)."""
        d = {name: getattr(self, name) for name in _FIELDS}
        d.update(channels=list(self.channels), receivers=list(self.receivers),
                 pauses=[list(p) for p in self.pauses], faults=list(self.faults))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ticket:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def copy(self) -> Ticket:
        """A draft of this ticket. The desk copies every open ticket at every step, so this
        is done slot by slot (~5 µs; ``dataclasses.replace`` took ~25 µs)."""
        new = object.__new__(Ticket)
        for name in _FIELDS:
            setattr(new, name, getattr(self, name))
        new.channels = list(self.channels)
        new.receivers = list(self.receivers)
        new.pauses = [list(p) for p in self.pauses]
        new.faults = list(self.faults)
        return new


_FIELDS = tuple(f.name for f in fields(Ticket))


@dataclass(frozen=True, slots=True)
class TicketEvent:
    """One change of a ticket, as the store keeps it (the ticket's history)."""

    no: int
    ts: float
    kind: str  # opened, dispatched, acknowledged, fixed, rejected, verified, suspended,
    #            resumed, cancelled, note, reminded, escalated, channel_added, channel_removed,
    #            self_recovered
    from_state: str
    to_state: str
    by: str = "camwatch"
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("id")
        return d
