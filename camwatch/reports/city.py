"""``camwatch report --scope city``: the bulletin of a city from the stores of its counties.

A city runs one camwatch per county, each with its own database (docs/scale-out.md), or a
cluster of instances on one database. The city's bulletin is computed exactly as a county's
(:func:`~camwatch.reports.compute.compute_bulletin`, one definition of every figure) over
the counties' stores read as one (:class:`CityStores`): their inventory snapshots side by
side, their transitions merged in time order, their exemptions and tickets together. So
every figure of the city is the sum of the counties' numerators and denominators, never an
average of their rates (tests/test_report_city.py compares them).

Only reads: nothing is written to a county's store. A channel in two counties' snapshots is
refused (it would be counted twice), naming it and both stores.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from camwatch.config import CityConfig, StoreConfig
from camwatch.errors import InputError, Problem, StoreError
from camwatch.inventory import Channel
from camwatch.reports.rows import channels_from_rows
from camwatch.store import Store, open_configured
from camwatch.store.base import (
    Exemption,
    QualityChange,
    QualityChangeRow,
    Recording,
    Ticket,
    Transition,
    TransitionRow,
)

__all__ = ["CityStores", "describe_store"]


def describe_store(cfg: StoreConfig) -> str:
    """A store as messages name it: the SQLite file, or the PostgreSQL server and database
    without the password."""
    if cfg.backend != "postgresql":
        return str(cfg.path)
    from camwatch.store.postgres import describe_dsn

    try:
        return describe_dsn(cfg.dsn())
    except LookupError:
        return f"dsn_env {cfg.dsn_env}" if cfg.dsn_env else f"dsn_file {cfg.dsn_file}"


@dataclass(frozen=True, slots=True)
class _Part:
    where: str  # report.city.stores[1] (postgresql://camwatch@db:5432/camwatch_luyi)
    store: Store


class CityStores:
    """The city's county stores, read as one store by the bulletin (the reads it makes)."""

    def __init__(self, parts: list[_Part], source: str) -> None:
        self.parts = parts
        self.source = source  # the config file, for messages

    @classmethod
    def open(cls, city: CityConfig, source: str) -> CityStores:
        parts: list[_Part] = []
        try:
            for i, cfg in enumerate(city.stores):
                where = f"report.city.stores[{i}] ({describe_store(cfg)})"
                try:
                    store = open_configured(cfg)
                except StoreError as exc:  # its messages say "store": say which one
                    raise StoreError(f"{source}: {where}: "
                                     f"{str(exc).removeprefix('store: ')}") from None
                parts.append(_Part(where, store))
        except BaseException:
            for p in parts:
                p.store.close()
            raise
        return cls(parts, source)

    def close(self) -> None:
        for p in self.parts:
            p.store.close()

    # --- the inventory: each county's snapshot of the month ------------------------------------

    def channels(self, month: str) -> tuple[list[Channel], list[str]]:
        """The city's channels of ``month``: every store's snapshot, side by side, and the
        stores that have none (the daemon writes it at start and when the month turns). An
        :class:`InputError` when a channel is in two stores."""
        out: list[Channel] = []
        seen: dict[str, str] = {}
        missing: list[str] = []
        problems: list[Problem] = []
        for p in self.parts:
            chans = channels_from_rows(p.store.iter_inventory_snapshot(month))
            if not chans:
                missing.append(p.where)
            for c in chans:
                other = seen.setdefault(c.id, p.where)
                if other != p.where:
                    problems.append(Problem(
                        self.source, "$.report.city.stores",
                        f"channel {c.id} is in the {month} inventory of both {other} and "
                        f"{p.where}; expected each county's channels in one store only"))
            out += chans
        if problems:
            raise InputError(problems[:20])
        return out, missing

    # --- what compute_bulletin reads ------------------------------------------------------------

    def exemptions(self, start: float | None = None, end: float | None = None,
                   channel_ids: Iterable[str] | None = None) -> list[Exemption]:
        wanted = list(channel_ids) if channel_ids is not None else None
        items = [x for p in self.parts for x in p.store.exemptions(start, end, wanted)]
        return sorted(items, key=lambda x: (x.channel_id, x.start))

    def last_transition_before(self, ts: float,
                               with_detail: bool = True) -> dict[str, Transition]:
        out: dict[str, Transition] = {}
        for p in self.parts:
            out.update(p.store.last_transition_before(ts, with_detail=with_detail))
        return out

    def transition_rows(self, start: float | None = None,
                        end: float | None = None) -> Iterator[TransitionRow]:
        """Every store's rows merged in time order, each store read a page at a time."""
        return heapq.merge(*(p.store.transition_rows(start, end) for p in self.parts),
                           key=_ts)

    def tickets(self, *, open_only: bool = False, since: float | None = None,
                until: float | None = None) -> list[Ticket]:
        return [t for p in self.parts
                for t in p.store.tickets(open_only=open_only, since=since, until=until)]


    def quality_changes(self, start: float | None = None,
                        end: float | None = None) -> Iterator[QualityChangeRow]:
        """Every store's picture-quality changes merged in time order."""
        return heapq.merge(*(p.store.quality_changes(start, end) for p in self.parts),
                           key=_qts)

    def last_quality_before(self, ts: float) -> dict[str, QualityChange]:
        out: dict[str, QualityChange] = {}
        for p in self.parts:
            out.update(p.store.last_quality_before(ts))
        return out

    def fault_pictures(self, channel_ids: Iterable[str]) -> dict[str, tuple[float, bytes]]:
        wanted = list(channel_ids)
        out: dict[str, tuple[float, bytes]] = {}
        for p in self.parts:
            out.update(p.store.fault_pictures(wanted))
        return out

    def gb_catalogs(self, month: str) -> dict[str, dict[str, Any]]:
        """Every county's GB/T 28181 catalogs of the month; a platform cascading to several
        counties lists the union of what it listed to each (the latest name and time)."""
        out: dict[str, dict[str, Any]] = {}
        for p in self.parts:
            for pid, doc in p.store.gb_catalogs(month).items():
                had = out.get(pid)
                if had is None:
                    out[pid] = {**doc, "channels": dict(doc["channels"])}
                    continue
                had["channels"].update(doc["channels"])
                had["partial"] = bool(had.get("partial")) or bool(doc.get("partial"))
                if (doc.get("at") or 0.0) > (had.get("at") or 0.0):
                    had["name"], had["at"] = doc.get("name", ""), doc.get("at")
        return out

    def gb_recordings(self, first_day: str, last_day: str) -> list[Recording]:
        return [r for p in self.parts for r in p.store.gb_recordings(first_day, last_day)]


def _qts(row: QualityChangeRow) -> Any:
    return row[1]


def _ts(row: TransitionRow) -> Any:
    return row[1]
