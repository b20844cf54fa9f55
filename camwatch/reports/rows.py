"""Inventory snapshot rows: what the store keeps of the inventory each month.

A row is a JSON-able dict describing one channel's place, class, operator and lifecycle, so
a later report can be computed from the inventory as it was then. It holds no address and
no credential: neither URLs nor user names nor credential references are copied.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from camwatch.inventory import Channel

ROW_FIELDS: tuple[str, ...] = (
    "id", "name", "class", "project", "county", "county_code", "township", "township_code",
    "village", "village_code", "operator", "installed", "installed_date", "connected",
    "connected_date", "longitude", "latitude",
)


def inventory_rows(channels: Iterable[Channel]) -> list[dict[str, Any]]:
    """One snapshot row per channel (see :data:`ROW_FIELDS`); dates as ``2026-11-03``."""
    out = []
    for c in channels:
        out.append({
            "id": c.id, "name": c.name, "class": c.klass, "project": c.project,
            "county": c.county, "county_code": c.county_code,
            "township": c.township, "township_code": c.township_code,
            "village": c.village, "village_code": c.village_code,
            "operator": c.operator,
            "installed": c.installed,
            "installed_date": c.installed_date.isoformat() if c.installed_date else None,
            "connected": c.connected,
            "connected_date": c.connected_date.isoformat() if c.connected_date else None,
            "longitude": c.longitude, "latitude": c.latitude,
        })
    return out


def _date(v: object) -> dt.date | None:
    if isinstance(v, str) and v:
        try:
            return dt.date.fromisoformat(v[:10])
        except ValueError:
            return None
    return None


def _float(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _text(row: Mapping[str, Any], key: str) -> str:
    v = row.get(key)
    return "" if v is None else str(v)


def channels_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[Channel]:
    """Snapshot rows back to :class:`Channel` objects (without any address)."""
    out = []
    for r in rows:
        klass = r.get("class")
        out.append(Channel(
            id=_text(r, "id"), name=_text(r, "name"),
            klass=klass if isinstance(klass, int) and not isinstance(klass, bool) else None,
            project=_text(r, "project"),
            county=_text(r, "county"), county_code=_text(r, "county_code"),
            township=_text(r, "township"), township_code=_text(r, "township_code"),
            village=_text(r, "village"), village_code=_text(r, "village_code"),
            operator=_text(r, "operator"),
            installed=bool(r.get("installed")), installed_date=_date(r.get("installed_date")),
            connected=bool(r.get("connected")), connected_date=_date(r.get("connected_date")),
            longitude=_float(r.get("longitude")), latitude=_float(r.get("latitude")),
        ))
    return out
