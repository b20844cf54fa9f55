"""What the stores' rows hold, for both backends: the column lists and the conversions between
rows and the domain objects. The SQL around them differs (placeholders, dialect); the rows do
not, since `camwatch store migrate` copies one backend's rows into the other's tables
column by column."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from camwatch.model import NO_INFO, ChannelState, Transition
from camwatch.repairs.model import Ticket, TicketEvent
from camwatch.store.base import (
    OutboxItem,
    QualityChange,
    QualityState,
    RateSnapshot,
    Recording,
)

STATE_COLUMNS = ("channel_id, state, reason, since, last_probe, last_ok, fails, oks, "
                 "latency_ms, clock_drift_s, flapping, detail, info")
OUTBOX_COLUMNS = ("id, receiver, fingerprint, created, payload, attempts, next_attempt, "
                  "last_error")
EVENT_COLUMNS = "id, no, ts, kind, from_state, to_state, by, note, data"
QUALITY_COLUMNS = ("channel_id, quality, ts, since, streak, faults, scores, reason, detail, "
                   "width, height, codec, latency_ms, baselines, jpeg, jpeg_ts, scene_ref, "
                   "fault_jpeg, fault_ts")
# the upsert's SET list: the pictures only when the row brings one
QUALITY_UPDATE = ", ".join(
    f"{c}=COALESCE(excluded.{c}, quality_state.{c})"
    if c in ("jpeg", "jpeg_ts", "scene_ref", "fault_jpeg", "fault_ts") else f"{c}=excluded.{c}"
    for c in QUALITY_COLUMNS.split(", ")[1:])
QUALITY_CHANGE_COLUMNS = "channel_id, ts, from_quality, to_quality, faults"
CATALOG_COLUMNS = "month, platform_id, at, data"
RECORDING_COLUMNS = "day, channel_id, platform_id, recorded_s, period_s, partial, at"


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def state_row(s: ChannelState) -> tuple[Any, ...]:
    return (s.channel_id, s.state, s.reason, s.since, s.last_probe, s.last_ok, s.fails, s.oks,
            s.latency_ms, s.clock_drift_s, int(s.flapping), s.detail,
            to_json(s.info) if s.info else "{}")


def state_of(r: Sequence[Any]) -> ChannelState:
    """A :data:`STATE_COLUMNS` row."""
    return ChannelState(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
                        bool(r[10]), r[11], json.loads(r[12]) or NO_INFO)


def transition_row(t: Transition) -> tuple[Any, ...]:
    return (t.channel_id, t.ts, t.from_state, t.to_state, t.reason, to_json(t.detail))


def transition_of(r: Sequence[Any], with_detail: bool = True) -> Transition:
    """An ``id, channel_id, ts, from_state, to_state, reason, detail`` row."""
    return Transition(r[1], r[2], r[3], r[4], r[5], json.loads(r[6]) if with_detail else {},
                      id=r[0])


def snapshot_row(r: RateSnapshot) -> tuple[Any, ...]:
    """A ``rate_snapshots`` row (``ts, scope, class, project, online, connected``)."""
    return (r.ts, json.dumps(r.scope, ensure_ascii=False, sort_keys=True), r.klass, r.project,
            r.online, r.connected)


def snapshot_of(r: Sequence[Any]) -> RateSnapshot:
    return RateSnapshot(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5])


def outbox_rows(items: Iterable[tuple[str, str, dict[str, Any]]],
                now: float) -> list[tuple[Any, ...]]:
    """``receiver, fingerprint, created, payload, next_attempt`` rows of new items."""
    return [(r, fp, now, to_json(p), now) for r, fp, p in items]


def outbox_item(r: Sequence[Any]) -> OutboxItem:
    """An :data:`OUTBOX_COLUMNS` row."""
    return OutboxItem(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7])


def meta_rows(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(k, to_json(v)) for k, v in meta.items()]


def ticket_row(t: Ticket) -> tuple[Any, ...]:
    """A ``repair_tickets`` row: the columns queried by, and the ticket as JSON."""
    return (t.no, t.state, t.opened, t.final_ts, to_json(t.as_dict()))


def event_row(e: TicketEvent) -> tuple[Any, ...]:
    """A ``repair_events`` row without its id."""
    return (e.no, e.ts, e.kind, e.from_state, e.to_state, e.by, e.note, to_json(e.data))


def event_of(r: Sequence[Any]) -> TicketEvent:
    """An :data:`EVENT_COLUMNS` row."""
    return TicketEvent(r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), id=r[0])


def quality_row(q: QualityState) -> tuple[Any, ...]:
    """A :data:`QUALITY_COLUMNS` row: faults, scores and baselines as JSON, pictures as
    bytes."""
    return (q.channel_id, q.quality, q.ts, q.since, q.streak,
            to_json([[c, s] for c, s in q.faults]), to_json(q.scores), q.reason, q.detail,
            q.width, q.height, q.codec, q.latency_ms,
            to_json({k: list(v) for k, v in q.baselines.items()}), q.jpeg, q.jpeg_ts,
            q.reference, q.fault_jpeg, q.fault_ts)


def quality_of(r: Sequence[Any]) -> QualityState:
    """A :data:`QUALITY_COLUMNS` row (pictures may be NULL: read without them)."""
    def blob(v: Any) -> bytes | None:
        return None if v is None else bytes(v)

    return QualityState(
        r[0], r[1], r[2], r[3], r[4], tuple((str(c), float(s)) for c, s in json.loads(r[5])),
        {str(k): float(v) for k, v in json.loads(r[6]).items()}, r[7], r[8], r[9], r[10],
        r[11], r[12], {str(k): (float(v[0]), int(v[1])) for k, v in json.loads(r[13]).items()},
        blob(r[14]), r[15], blob(r[16]), blob(r[17]), r[18])


def quality_change_row(c: QualityChange) -> tuple[Any, ...]:
    """A :data:`QUALITY_CHANGE_COLUMNS` row; the faults as ``check,check``."""
    return (c.channel_id, c.ts, c.from_quality, c.to_quality, ",".join(c.faults))


def quality_change_of(r: Sequence[Any]) -> QualityChange:
    """An ``id, channel_id, ts, from_quality, to_quality, faults`` row."""
    return QualityChange(r[1], r[2], r[3], r[4], tuple(f for f in r[5].split(",") if f),
                         id=r[0])
def catalog_row(month: str, platform_id: str, at: float,
                data: Mapping[str, Any]) -> tuple[Any, ...]:
    """A ``gb_catalogs`` row (:data:`CATALOG_COLUMNS`): a platform's catalog of the month,
    ``data`` = ``{"name", "partial", "declared", "channels": {id: name}}``."""
    return (month, platform_id, at, to_json(dict(data)))


def catalog_of(r: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """A :data:`CATALOG_COLUMNS` row as (platform id, its data with ``at``)."""
    return r[1], {**json.loads(r[3]), "at": r[2]}


def recording_row(r: Recording) -> tuple[Any, ...]:
    """A ``gb_recordings`` row (:data:`RECORDING_COLUMNS`)."""
    return (r.day, r.channel_id, r.platform_id, r.recorded_s, r.period_s, int(r.partial), r.at)


def recording_of(r: Sequence[Any]) -> Recording:
    return Recording(r[1], r[2], r[0], r[3], r[4], bool(r[5]), r[6])
