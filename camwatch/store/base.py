"""What the daemon keeps: the store interface, independent of the database behind it.

SQLite is the embedded default (:mod:`camwatch.store.sqlite`). A PostgreSQL backend can be
added later by implementing :class:`Store`; nothing outside this package touches SQL.
Times are UNIX seconds (float, UTC) everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from camwatch.model import ChannelState, Transition, TransitionRow
from camwatch.repairs.model import Ticket, TicketEvent

__all__ = ["ChannelState", "Exemption", "OutboxItem", "QualityChange", "QualityChangeRow",
           "QualityState", "RateSnapshot", "Store", "Ticket", "TicketEvent", "Transition",
           "TransitionRow"]

#: A quality change as the bulletin reads a month of them: (channel_id, ts, from_quality,
#: to_quality, faults) with ``faults`` the checks at fault joined by commas.
QualityChangeRow = tuple[str, float, str, str, str]


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    receiver: str
    fingerprint: str
    created: float
    payload: dict[str, Any]
    attempts: int
    next_attempt: float
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class RateSnapshot:
    ts: float
    scope: dict[str, str]
    klass: int | None
    project: str | None
    online: int
    connected: int


@dataclass(frozen=True, slots=True)
class Exemption:
    """报备: ``channel_id`` is left out of the rates (neither online nor monitored) for
    ``[start, end)``, e.g. planned works or road construction."""

    channel_id: str
    start: float
    end: float
    reason: str
    created: float
    id: int | None = None


@dataclass(frozen=True, slots=True)
class QualityState:
    """A channel's last picture verdict as the store keeps it (table ``quality_state``, one
    row a channel): what a restart takes back into
    :class:`~camwatch.quality.book.QualityBook`, so that quality state, its run (``since``,
    ``streak``) and the scene reference survive it, and what the bulletin shows of a degraded
    camera (its last degraded picture).

    The pictures are written only when new: ``None`` in ``jpeg``, ``reference`` or
    ``fault_jpeg`` leaves the stored one as it is (a sample that could not be decoded keeps
    the last thumbnail, as the book does)."""

    channel_id: str
    quality: str  # camwatch.model.Quality value
    ts: float  # the last sample
    since: float  # the first sample of the current run of this quality
    streak: int  # samples in that run
    faults: tuple[tuple[str, float], ...] = ()  # (check, score) of each fault
    scores: dict[str, float] = field(default_factory=dict)
    reason: str | None = None  # why unknown
    detail: str = ""
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    latency_ms: float = 0.0
    # the blur baselines, "day" / "night" -> (moving average, samples)
    baselines: dict[str, tuple[float, int]] = field(default_factory=dict)
    jpeg: bytes | None = None  # the last thumbnail (320 px JPEG)
    jpeg_ts: float | None = None
    reference: bytes | None = None  # the scene reference, 64x36 grey uint8, row-major
    fault_jpeg: bytes | None = None  # the last degraded sample's thumbnail
    fault_ts: float | None = None


@dataclass(frozen=True, slots=True)
class QualityChange:
    """One change of a channel's picture quality (table ``quality_transitions``): to another
    quality, or, while degraded, to another set of faults. The bulletin's 完好率 replays them
    beside the online transitions."""

    channel_id: str
    ts: float
    from_quality: str
    to_quality: str
    faults: tuple[str, ...] = ()  # the checks at fault after the change
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Recording:
    """A channel's recordings of one local day as a GB/T 28181 platform listed them
    (RecordInfo): ``recorded_s`` of the union of its recordings within the day's
    ``period_s``; ``partial``: the answer missed its SumNum (a lower bound)."""

    channel_id: str
    platform_id: str
    day: str  # 2026-11-29, in report.timezone
    recorded_s: float
    period_s: float
    partial: bool
    at: float  # when the answer came


class Store(Protocol):
    def close(self) -> None: ...

    # channel state and transitions: written together, one transaction per batch
    def load_states(self) -> dict[str, ChannelState]: ...
    def write_batch(self, states: Iterable[ChannelState],
                    transitions: Iterable[Transition]) -> None: ...
    def delete_states(self, channel_ids: Iterable[str]) -> None: ...
    def transitions(self, start: float | None = None, end: float | None = None,
                    channel_ids: Iterable[str] | None = None,
                    with_detail: bool = True) -> Iterator[Transition]: ...
    def transition_rows(self, start: float | None = None,
                        end: float | None = None) -> Iterator[TransitionRow]: ...
    def last_transition_before(self, ts: float,
                               with_detail: bool = True) -> dict[str, Transition]: ...

    # picture quality (camwatch.quality): the last verdict per channel and the log of changes;
    # delete_states deletes the channels' quality state too
    def write_quality(self, states: Iterable[QualityState],
                      changes: Iterable[QualityChange]) -> None: ...
    def load_quality(self, with_pictures: bool = True) -> dict[str, QualityState]: ...
    def quality_changes(self, start: float | None = None,
                        end: float | None = None) -> Iterator[QualityChangeRow]: ...
    def last_quality_before(self, ts: float) -> dict[str, QualityChange]: ...
    def fault_pictures(self, channel_ids: Iterable[str]) -> dict[str, tuple[float, bytes]]: ...

    # rate snapshots
    def add_rate_snapshots(self, rows: Iterable[RateSnapshot]) -> None: ...
    def rate_snapshots(self, start: float, end: float) -> list[RateSnapshot]: ...

    # monthly inventory snapshots ("2026-11")
    def save_inventory_snapshot(self, month: str, rows: Iterable[dict[str, Any]]) -> None: ...
    def inventory_snapshot(self, month: str) -> list[dict[str, Any]]: ...
    def iter_inventory_snapshot(self, month: str) -> Iterator[dict[str, Any]]: ...
    def inventory_months(self) -> list[str]: ...

    # GB/T 28181: each lower platform's latest catalog of a month (``{"name", "partial",
    # "declared", "channels": {id: name}}``), for the bulletin's reconciliation (台账核对)
    def save_gb_catalog(self, month: str, platform_id: str, at: float,
                        data: Mapping[str, Any]) -> None: ...
    def gb_catalogs(self, month: str) -> dict[str, dict[str, Any]]: ...
    # GB/T 28181 RecordInfo (录像完整率): one row per channel and day, the latest answer
    def save_gb_recording(self, r: Recording) -> None: ...
    def gb_recordings(self, first_day: str, last_day: str) -> list[Recording]: ...

    # exemptions (报备)
    def add_exemption(self, channel_id: str, start: float, end: float, reason: str,
                      now: float) -> int: ...
    def exemptions(self, start: float | None = None, end: float | None = None,
                   channel_ids: Iterable[str] | None = None) -> list[Exemption]: ...
    def remove_exemptions(self, channel_id: str, exemption_id: int | None = None) -> int: ...

    # alert outbox
    def enqueue(self, receiver: str, fingerprint: str, payload: dict[str, Any],
                now: float) -> int: ...
    def commit_outbox(self, items: Iterable[tuple[str, str, dict[str, Any]]], now: float,
                      meta: Mapping[str, Any]) -> None: ...
    def due(self, receiver: str, now: float, limit: int = 100) -> list[OutboxItem]: ...
    def mark_delivered(self, item_id: int, now: float) -> None: ...
    def mark_failed(self, item_id: int, error: str, next_attempt: float) -> None: ...
    def outbox_depth(self, receiver: str | None = None) -> int: ...

    # small key/value state (alert engine state, last sweep time, ...)
    def get_meta(self, key: str) -> Any: ...
    def set_meta(self, key: str, value: Any) -> None: ...

    # --- repair tickets (维修工单, camwatch.repairs) ----------------------------------------------
    # A ticket is a JSON document (Ticket.as_dict) with a few columns to query by; every change
    # is an event. commit_tickets writes tickets, their events and their outbox items in one
    # transaction, like commit_outbox for alerts.
    def commit_tickets(self, tickets: Iterable[Ticket], events: Iterable[TicketEvent],
                       items: Iterable[tuple[str, str, dict[str, Any]]], now: float) -> None: ...
    def tickets(self, *, open_only: bool = False, since: float | None = None,
                until: float | None = None) -> list[Ticket]:
        """Tickets by number: ``open_only`` the open ones; ``since``/``until`` those opened
        before ``until`` that were open at some time at or after ``since``."""
        ...
    def ticket(self, no: int) -> Ticket | None: ...
    def ticket_events(self, no: int) -> list[TicketEvent]: ...
    def last_ticket_no(self) -> int: ...
