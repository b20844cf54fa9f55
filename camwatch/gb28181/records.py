"""Recording coverage (录像完整率) from GB/T 28181 ``RecordInfo``: what a platform says it has
recorded of a channel over a day, as the union of its recordings' intervals ÷ the day. Pure:
no I/O, times passed in.

A platform answers a RecordInfo query with the channel's recordings (``<RecordList>`` items
with ``StartTime`` and ``EndTime``, local times), split over several MESSAGEs until
``SumNum`` items, like a catalog. Recordings overlap (main and sub stream, alarm and
continuous recordings of the same time), so their lengths are never summed: the union is.
An answer short of its ``SumNum`` at the deadline is kept as partial (its coverage is a lower
bound), never as "nothing recorded".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from camwatch.inventory import Channel
    from camwatch.store.base import Recording

Interval = tuple[float, float]  # [start, end) in UNIX seconds

MAX_RECORDS = 20_000  # items one answer may announce (SumNum) and we keep


def recorded_seconds(intervals: Iterable[Interval], start: float, end: float) -> float:
    """Seconds of ``[start, end)`` covered by at least one interval (the union)."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in intervals
                     if b > start and a < end and b > a)
    total = 0.0
    cur_a = cur_b = None
    for a, b in clipped:
        if cur_b is None or a > cur_b:
            if cur_a is not None and cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        elif b > cur_b:
            cur_b = b
    if cur_a is not None and cur_b is not None:
        total += cur_b - cur_a
    return total


def coverage(intervals: Iterable[Interval], start: float, end: float) -> float | None:
    """The covered share of ``[start, end)``; None for an empty period."""
    if end <= start:
        return None
    return recorded_seconds(intervals, start, end) / (end - start)


def local_time(text: str, tz: dt.tzinfo) -> float | None:
    """``2026-11-30T15:00:00`` (a device's local time, ``T`` or a space) in ``tz``; a time
    with its own offset keeps it. None when it is not such a time."""
    text = text.strip()[:32]
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    return t.timestamp()


def local_text(ts: float, tz: dt.tzinfo) -> str:
    """The ``StartTime``/``EndTime`` form: local time without an offset, to the second."""
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%dT%H:%M:%S")


def previous_day(now: float, tz: dt.tzinfo) -> tuple[str, float, float]:
    """The last whole local day before ``now``: (``2026-11-29``, its start, its end)."""
    today = dt.datetime.fromtimestamp(now, tz).date()
    day = today - dt.timedelta(days=1)
    start = dt.datetime.combine(day, dt.time(), tz).timestamp()
    end = dt.datetime.combine(today, dt.time(), tz).timestamp()
    return day.isoformat(), start, end


@dataclass(slots=True)
class RecordQuery:
    """One RecordInfo query and its answer arriving in parts, keyed by SN."""

    sn: int
    peer_id: str
    channel_id: str
    day: str
    start: float
    end: float
    deadline: float
    sum_num: int | None = None
    intervals: list[Interval] = field(default_factory=list)
    items: int = 0  # items received (some may not parse as times)
    messages: int = 0

    @property
    def complete(self) -> bool:
        return self.sum_num is not None and self.items >= self.sum_num

    def add(self, sum_num: int | None, records: Iterable[tuple[str, str]],
            tz: dt.tzinfo) -> None:
        """One MESSAGE's items. Raises ValueError for a SumNum beyond :data:`MAX_RECORDS`."""
        if sum_num is not None:
            if sum_num > MAX_RECORDS:
                raise ValueError(f"SumNum {sum_num} is more than the {MAX_RECORDS} accepted")
            self.sum_num = sum_num
        self.messages += 1
        for a_text, b_text in records:
            if self.items >= MAX_RECORDS:
                break
            self.items += 1
            a, b = local_time(a_text, tz), local_time(b_text, tz)
            if a is not None and b is not None and b > a:
                self.intervals.append((a, b))

    def recorded(self) -> float:
        return recorded_seconds(self.intervals, self.start, self.end)


def month_recording(channels: Sequence[Channel], rows: Iterable[Recording]) -> dict[str, Any]:
    """录像完整率 of a period for the bulletin, from the store's answers (a row per channel
    and day): Σ recorded ÷ Σ day, overall and by township, and every ledger channel below
    100 %, lowest first. Channels no longer in the period's inventory are left out."""
    by_id = {c.id: c for c in channels}
    per: dict[str, list[Any]] = {}  # id -> [recorded, period, days, partial days, platform]
    for r in rows:
        if r.channel_id not in by_id:
            continue
        acc = per.setdefault(r.channel_id, [0.0, 0.0, 0, 0, r.platform_id])
        acc[0] += r.recorded_s
        acc[1] += r.period_s
        acc[2] += 1
        acc[3] += int(r.partial)
        acc[4] = r.platform_id
    towns: dict[tuple[str, str], list[float]] = {}
    for cid, acc in per.items():
        ch = by_id[cid]
        t = towns.setdefault((ch.county, ch.township), [0.0, 0.0, 0])
        t[0] += acc[0]
        t[1] += acc[1]
        t[2] += 1

    def share(num: float, den: float) -> float | None:
        return num / den if den else None  # Σ / Σ, as every rate

    recorded = sum(a[0] for a in per.values())
    period = sum(a[1] for a in per.values())
    short = sorted(((cid, a) for cid, a in per.items() if a[0] < a[1]),
                   key=lambda x: (share(x[1][0], x[1][1]) or 0.0, x[0]))
    return {
        "channels": len(per), "recorded_s": recorded, "period_s": period,
        "rate": share(recorded, period),
        "partial_days": sum(a[3] for a in per.values()),
        "townships": sorted(
            ({"county": c, "township": t, "channels": int(v[2]), "recorded_s": v[0],
              "period_s": v[1], "rate": share(v[0], v[1])} for (c, t), v in towns.items()),
            key=lambda r: (r["rate"] if r["rate"] is not None else 2.0, r["township"])),
        "short": [{"channel": cid, "name": by_id[cid].name, "county": by_id[cid].county,
                   "township": by_id[cid].township, "village": by_id[cid].village,
                   "operator": by_id[cid].operator, "platform": a[4], "days": a[2],
                   "recorded_s": a[0], "period_s": a[1], "rate": share(a[0], a[1]),
                   "partial_days": a[3]} for cid, a in short],
    }
