"""Report periods: a calendar month or a range of days, in the site's time zone.

Times in the store are UNIX seconds (UTC); months and days begin at local midnight
(``report.timezone``, default Asia/Shanghai). A period is half-open, ``[start, end)``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# China has kept UTC+8 without daylight saving since 1991: usable when tzdata is missing.
_FALLBACK = {"Asia/Shanghai": dt.timezone(dt.timedelta(hours=8), "CST")}


def zone(name: str) -> dt.tzinfo:
    """The ``tzinfo`` of an IANA name; ``LookupError`` naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if name in _FALLBACK:
            return _FALLBACK[name]
        raise LookupError(f"expected a time zone name like 'Asia/Shanghai', got {name!r}") \
            from None


def parse_month(text: str) -> tuple[int, int]:
    """``2026-11`` -> ``(2026, 11)``; ``ValueError`` with the expected form otherwise."""
    try:
        y, m = text.strip().split("-")
        year, month = int(y), int(m)
        if len(y) == 4 and 1 <= month <= 12:
            return year, month
    except ValueError:
        pass
    raise ValueError(f"expected a month like 2026-11, got {text!r}")


def parse_day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected a date like 2026-11-03, got {text!r}") from None


def day_start(day: dt.date, tz: dt.tzinfo) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


def local_date(ts: float, tz: dt.tzinfo) -> dt.date:
    return dt.datetime.fromtimestamp(ts, tz).date()


def local_text(ts: float | None, tz: dt.tzinfo) -> str:
    """``2026-11-03 08:00`` in the site's zone; empty for ``None``."""
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True, slots=True)
class Period:
    """``[start, end)`` in UNIX seconds; ``first`` and ``last`` are its local days."""

    first: dt.date
    last: dt.date
    tz: dt.tzinfo
    is_month: bool

    @classmethod
    def month(cls, text: str, tz: dt.tzinfo) -> Period:
        year, month = parse_month(text)
        first = dt.date(year, month, 1)
        nxt = dt.date(year + month // 12, month % 12 + 1, 1)
        return cls(first, nxt - dt.timedelta(days=1), tz, True)

    @classmethod
    def days(cls, first: dt.date, last: dt.date, tz: dt.tzinfo) -> Period:
        """From ``first`` to ``last``, both days included."""
        if last < first:
            raise ValueError(f"expected --to on or after --from, got {first} to {last}")
        return cls(first, last, tz, False)

    @property
    def start(self) -> float:
        return day_start(self.first, self.tz)

    @property
    def end(self) -> float:
        return day_start(self.last + dt.timedelta(days=1), self.tz)

    @property
    def label(self) -> str:
        if self.is_month:
            return f"{self.first:%Y-%m}"
        return f"{self.first.isoformat()} ~ {self.last.isoformat()}"

    @property
    def snapshot_month(self) -> str:
        """The month whose inventory snapshot describes this period (the month it ends in)."""
        return f"{self.last:%Y-%m}"

    def previous(self) -> Period:
        """The calendar month before a month; the same number of days before a range."""
        if self.is_month:
            prev_last = self.first - dt.timedelta(days=1)
            return Period(prev_last.replace(day=1), prev_last, self.tz, True)
        n = (self.last - self.first).days + 1
        return Period(self.first - dt.timedelta(days=n), self.first - dt.timedelta(days=1),
                      self.tz, False)
