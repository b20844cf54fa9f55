"""Times as county staff read them: in ``report.timezone`` (北京时间 by default), to the
minute. Used by the alert messages and the sinks that render them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CST = timezone(timedelta(hours=8), "CST")  # 北京时间: the default of report.timezone


def local_zone(name: str | None) -> tzinfo:
    """The zone named by ``report.timezone`` (validated at load); 北京时间 when unknown."""
    try:
        return ZoneInfo(name) if name else CST
    except (ZoneInfoNotFoundError, ValueError):
        return CST


def format_time(ts: float, tz: tzinfo = CST) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M")


