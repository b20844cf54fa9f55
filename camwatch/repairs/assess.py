"""The operators' monthly assessment (考核评价), the last step of the county's 七步闭环: a
pure function of the tickets, so the bulletin, ``/api/tickets/assessment`` and the tests
compute it the same way.

Definitions (docs/repairs.md), for a period ``[start, end)`` seen at ``now`` (a month still
running ends at ``now``):

- A ticket's clock starts when it is opened (派单); paused time (挂起, an approved 报备) is
  left out of every duration and moves every deadline.
- **Response** (响应): the first ``ack`` (or a ``done`` without one). **Repair** (修复): the
  start of the online run camwatch verified (核实结案), not the maintainer's "fixed" claim.
- **opened** / **closed**: tickets opened / verified-closed within the period; **still open**:
  opened before the period's end and neither closed nor cancelled by then.
- **Response / repair times**: median and p90 (nearest rank: the ⌈0.9·n⌉-th smallest) over
  the responses / verified repairs within the period.
- **Response within deadline**: of the tickets opened in the period whose response is in or
  due by its end, the share answered within the response deadline.
  **Repair within deadline**: of the tickets closed in the period plus those still open whose
  repair deadline passed within it, the share repaired within the repair deadline.
- **Repeat faults**: tickets opened in the period for a point that had another ticket opened
  within the 30 days before.
- **Ranking**: repair-within share (higher first), then response-within share, then median
  repair time (shorter first), then fewer repeats; a row without tickets due ranks last.
- Cancelled tickets (撤销: the point left the ledger) are left out.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from camwatch.repairs.model import Ticket, TicketState

if TYPE_CHECKING:
    from camwatch.store.base import Store

REPEAT_WINDOW_S = 30 * 86400.0


@dataclass(frozen=True, slots=True)
class AssessRow:
    key: str  # the operator, or "county township"
    opened: int
    closed: int
    still_open: int
    response_median_s: float | None
    response_p90_s: float | None
    repair_median_s: float | None
    repair_p90_s: float | None
    response_within: float | None  # share, None when nothing was due
    response_due: int  # the share's denominator
    repair_within: float | None
    repair_due: int
    repeats: int
    rank: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def p90(values: Sequence[float]) -> float | None:
    """Nearest rank: the ⌈0.9·n⌉-th smallest value."""
    if not values:
        return None
    return sorted(values)[math.ceil(0.9 * len(values)) - 1]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _row(key: str, mine: Sequence[Ticket], history: Sequence[Ticket], start: float,
         end: float) -> AssessRow:
    def within(ts: float | None) -> bool:
        return ts is not None and start <= ts < end

    opened = [t for t in mine if within(t.opened)]
    closed = [t for t in mine if within(t.closed)]
    still_open = [t for t in mine if t.opened < end and (t.closed is None or t.closed >= end)]
    responses = [t.net(t.acked) for t in mine if t.acked is not None and within(t.acked)]
    repairs = [t.net(t.repaired) for t in closed if t.repaired is not None]
    resp_due = [t for t in opened
                if (t.acked is not None and t.acked < end) or t.response_due(end) <= end]
    resp_ok = [t for t in resp_due if t.acked is not None and t.acked < end
               and t.net(t.acked) <= t.response_s]
    overdue = [t for t in still_open if start <= t.repair_due(end) <= end]
    rep_due = closed + overdue
    rep_ok = [t for t in closed if t.repaired is not None and t.net(t.repaired) <= t.repair_s]
    repeats = 0
    for t in opened:
        points = set(t.channels)
        if any(o.no != t.no and t.opened - REPEAT_WINDOW_S <= o.opened < t.opened
               and points & set(o.channels) for o in history):
            repeats += 1
    return AssessRow(
        key=key, opened=len(opened), closed=len(closed), still_open=len(still_open),
        response_median_s=median(responses), response_p90_s=p90(responses),
        repair_median_s=median(repairs), repair_p90_s=p90(repairs),
        response_within=len(resp_ok) / len(resp_due) if resp_due else None,
        response_due=len(resp_due),
        repair_within=len(rep_ok) / len(rep_due) if rep_due else None,
        repair_due=len(rep_due), repeats=repeats)


def _ranked(rows: list[AssessRow]) -> list[AssessRow]:
    def order(r: AssessRow) -> tuple[Any, ...]:
        return (r.repair_within is None and r.response_within is None,
                -(r.repair_within if r.repair_within is not None else -1.0),
                -(r.response_within if r.response_within is not None else -1.0),
                r.repair_median_s if r.repair_median_s is not None else math.inf,
                r.repeats, r.key)

    out = sorted(rows, key=order)
    return [AssessRow(**{**r.as_dict(), "rank": i}) for i, r in enumerate(out, 1)]


def assess_by(tickets: Iterable[Ticket], key: Callable[[Ticket], str], start: float,
              end: float, now: float) -> list[AssessRow]:
    """One row per ``key(ticket)``, ranked. ``tickets`` should include those opened within 30
    days before ``start`` (for the repeats)."""
    end = min(end, math.nextafter(now, math.inf))  # a running month includes ``now`` itself
    live = [t for t in tickets if t.state != TicketState.CANCELLED]
    groups: dict[str, list[Ticket]] = {}
    for t in live:
        if t.opened < end and (t.final_ts is None or t.final_ts >= start):
            groups.setdefault(key(t), []).append(t)
    return _ranked([_row(k, ts, live, start, end) for k, ts in groups.items()])


def assessment(tickets: Iterable[Ticket], start: float, end: float, now: float
               ) -> dict[str, Any]:
    """Per operator and per township, ranked: what ``/api/tickets/assessment`` serves."""
    ts = list(tickets)
    return {
        "start": start, "end": end, "complete": now >= end,
        "operators": [r.as_dict() for r in assess_by(ts, lambda t: t.operator or "-", start,
                                                     end, now)],
        "townships": [r.as_dict() for r in assess_by(
            ts, lambda t: f"{t.county} {t.township}".strip() or "-", start, end, now)],
    }


def month_bounds(year: int, month: int, tz: dt.tzinfo) -> tuple[float, float]:
    start = dt.datetime(year, month, 1, tzinfo=tz).timestamp()
    end = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=tz).timestamp()
    return start, end


def month_assessment(store: Store, year: int, month: int, tz: dt.tzinfo, now: float
                     ) -> dict[str, Any]:
    """The assessment of a month from the store's tickets (reads only)."""
    start, end = month_bounds(year, month, tz)
    tickets = store.tickets(since=start - REPEAT_WINDOW_S, until=end)
    return {"month": f"{year:04d}-{month:02d}", **assessment(tickets, start, end, now)}
