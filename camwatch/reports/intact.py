"""The bulletin's 完好率 (intact rate) over a period, from the two logs the store keeps: the
online transitions and the picture quality changes (``quality_transitions``), in one pass.

Definition (the live one of :func:`camwatch.quality.rates.intact_state`, over time): at every
instant a counted channel (connected, from its counting start, outside its exemptions) is

- **intact** when it is online and its last picture was ``ok``;
- **not intact** when it is offline, or online with a ``degraded`` last picture;
- **not judged** when its online state is unknown, or it is online but its picture has no
  verdict (never sampled, or the last sample failed: quality ``unknown``).

Time-weighted 完好率 = Σ intact time / Σ judged (intact + not intact) time, summed per channel
and then per scope, never an average of ratios; snapshot 完好率 = channels intact / channels
judged at the period end. The picture's quality stays what its last sample said until the
next sample (offline channels are not sampled: their last verdict stands for when they come
back). Time is counted in integer milliseconds, as the online rate's.

The transitions are read a second time for this (the online rate's pass,
:func:`camwatch.reports.timeline.scan`, is left as fast as it is), and only when the store
holds quality changes at all: a county that never sampled pictures pays nothing.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from camwatch.model import Quality, State
from camwatch.reports.timeline import exempted
from camwatch.store.base import QualityChangeRow, TransitionRow

__all__ = [
    "DEGRADED",
    "EXEMPT",
    "INTACT",
    "NOT_JUDGED",
    "OFFLINE",
    "IntactTimeline",
    "QualityCursor",
    "intact_slot",
    "scan_intact",
]

# where a channel's time goes: the 完好率's numerator is INTACT, its denominator INTACT +
# OFFLINE + DEGRADED (not intact = offline, or online with a degraded picture)
INTACT, OFFLINE, DEGRADED, NOT_JUDGED, EXEMPT = 0, 1, 2, 3, 4
_ACC = 6  # a channel's list: state, quality, faults, mark, window, exemptions, then the sums


def intact_slot(state: str, quality: str) -> int:
    """Where a moment of a channel in ``state`` with a picture of ``quality`` counts."""
    if state == State.OFFLINE:
        return OFFLINE
    if state != State.ONLINE or quality == Quality.UNKNOWN:
        return NOT_JUDGED
    return INTACT if quality == Quality.OK else DEGRADED


@dataclass(frozen=True, slots=True)
class QualityCursor:
    """A channel's picture quality at a moment: what its last change left."""

    quality: str
    faults: tuple[str, ...] = ()
    since: float | None = None  # when this quality (or these faults) began


@dataclass(slots=True)
class IntactTimeline:
    # channel -> [intact, offline, degraded, not judged, exempt] milliseconds
    ms: dict[str, list[int]]
    states: dict[str, str]  # online state at the period end, counted channels
    quality: dict[str, QualityCursor]  # picture quality at the period end, every channel known
    # the faults a channel had while degraded within the period, in the order first seen
    faults_seen: dict[str, list[str]] = field(default_factory=dict)
    changes_read: int = 0


def _account(c: list[Any], a: float, b: float) -> int:
    """Add ``[a, b)`` of the channel ``c`` to its slot; returns the slot and leaves the
    exempted part in EXEMPT; -1 when nothing was added."""
    if b <= a:
        return -1
    d = b - a
    ex = c[5]
    if ex:
        covered = exempted(a, b, ex)
        c[_ACC + EXEMPT] += covered
        d -= covered
    slot = intact_slot(c[0], c[1])
    c[_ACC + slot] += d
    return slot if d > 0 else -1


def scan_intact(transitions: Iterable[TransitionRow], changes: Iterable[QualityChangeRow],
                start: float, end: float, windows: Mapping[str, float],
                states: Mapping[str, str], quality: Mapping[str, QualityCursor],
                exempt: Mapping[str, list[tuple[float, float]]]) -> IntactTimeline:
    """Replay both logs (each with ``start <= ts < end``, in time order) over the counted
    channels (``windows``: channel -> its counting start, as for
    :func:`~camwatch.reports.timeline.scan`). ``states`` and ``quality`` are the channels'
    online state and picture quality at ``start``; neither is modified."""
    chans: dict[str, list[Any]] = {}

    def get(cid: str, from_state: str | None = None) -> list[Any] | None:
        c = chans.get(cid)
        if c is None:
            w = windows.get(cid)
            if w is None:
                return None
            q = quality.get(cid)
            c = chans[cid] = [states.get(cid, from_state or State.UNKNOWN),
                              q.quality if q else Quality.UNKNOWN, q.faults if q else (),
                              w, w, exempt.get(cid), 0.0, 0.0, 0.0, 0.0, 0.0]
        return c

    seen: dict[str, list[str]] = {}

    def note(cid: str, c: list[Any], slot: int) -> None:
        if slot == DEGRADED:
            known = seen.setdefault(cid, [])
            known.extend(f for f in c[2] if f not in known)

    end_quality = dict(quality)
    tagged = heapq.merge(((r[1], 0, r) for r in transitions),
                         ((r[1], 1, r) for r in changes), key=lambda x: (x[0], x[1]))
    n = 0
    for ts, kind, r in tagged:
        cid = r[0]
        if kind == 1:
            n += 1
            faults = tuple(f for f in (r[4] or "").split(",") if f)
            prev = end_quality.get(cid)
            # new faults of a picture still degraded: the same run, its start kept
            since = prev.since if prev is not None and prev.quality == r[3] else ts
            end_quality[cid] = QualityCursor(r[3], faults, since)
        c = get(cid, r[2] if kind == 0 else None)
        if c is None:
            continue
        if ts > c[3]:
            note(cid, c, _account(c, c[3], ts))
            c[3] = ts
        if kind == 0:
            c[0] = r[3]
        else:
            c[1], c[2] = r[3], end_quality[cid].faults
    ms: dict[str, list[int]] = {}
    out_states: dict[str, str] = {}
    for cid in windows:
        c = get(cid)
        assert c is not None
        note(cid, c, _account(c, c[3], end))
        ms[cid] = [round(c[_ACC + i] * 1000) for i in range(5)]
        out_states[cid] = c[0]
    return IntactTimeline(ms, out_states, end_quality, seen, n)
