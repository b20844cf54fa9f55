"""Inventory snapshot rows: what the store keeps of the inventory each month.

A row is a JSON-able dict describing one channel's place, class, operator and lifecycle, so
a later report can be computed from the inventory as it was then. It holds no address and
no credential: neither URLs nor user names nor credential references are copied.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from camwatch.inventory import Channel
from camwatch.reports.gcpause import gc_paused

ROW_FIELDS: tuple[str, ...] = (
    "id", "name", "class", "project", "county", "county_code", "township", "township_code",
    "village", "village_code", "operator", "installed", "installed_date", "connected",
    "connected_date", "longitude", "latitude",
)


def inventory_rows(channels: Iterable[Channel]) -> list[dict[str, Any]]:
    """One snapshot row per channel (see :data:`ROW_FIELDS`); dates as ``2026-11-03``."""
    return list(iter_inventory_rows(channels))


def iter_inventory_rows(channels: Iterable[Channel]) -> Iterator[dict[str, Any]]:
    """:func:`inventory_rows` one at a time, for a writer that streams them."""
    for c in channels:
        yield {
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
        }


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
    """Snapshot rows back to :class:`Channel` objects (without any address).

    ``rows`` may be a stream (:meth:`Store.iter_inventory_snapshot`): each row is dropped once
    converted. Area names and codes, operators and projects repeat across thousands of rows;
    one string object is kept for each distinct value.
    """
    with gc_paused():
        return _channels(rows)


def _channels(rows: Iterable[Mapping[str, Any]]) -> list[Channel]:
    out = []
    seen: dict[str, str] = {}

    def shared(v: object) -> str:
        if v is None:
            return ""
        text = v if type(v) is str else str(v)
        return seen.setdefault(text, text)

    for r in rows:
        get = r.get
        klass = get("class")
        out.append(Channel(
            id=_text(r, "id"), name=_text(r, "name"),
            klass=klass if isinstance(klass, int) and not isinstance(klass, bool) else None,
            project=shared(get("project")),
            county=shared(get("county")), county_code=shared(get("county_code")),
            township=shared(get("township")), township_code=shared(get("township_code")),
            village=shared(get("village")), village_code=shared(get("village_code")),
            operator=shared(get("operator")),
            installed=bool(get("installed")), installed_date=_date(get("installed_date")),
            connected=bool(get("connected")), connected_date=_date(get("connected_date")),
            longitude=_float(get("longitude")), latitude=_float(get("latitude")),
        ))
    return out
