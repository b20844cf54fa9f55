"""Time in each state per channel over a period, from the transition log, in one streaming pass.

For every counted channel the period is cut into segments by its transitions; each segment's
length goes to the state the channel was in (``online``, ``offline``, anything else counts as
``unknown``), minus the parts covered by an exemption (报备), which go to ``exempt``. Counting
starts at the channel's window start (the period start, or the day it was connected) and
stops at the period end. The pass is O(transitions + channels): transitions are read once, in
time order, and never held in memory.

Durations are integer milliseconds, so sums over any scope are exact and order-independent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from camwatch.store.base import Exemption, Transition, TransitionRow

ONLINE, OFFLINE, UNKNOWN, EXEMPT = 0, 1, 2, 3


class Cursor(NamedTuple):
    """A channel's state as of a period's end (or start): what the replay of the log left."""

    state: str
    since: float | None  # when ``state`` began; None when the log does not say
    reason: str | None
    mark: float = float("-inf")  # time accounted up to


@dataclass(frozen=True, slots=True)
class Outage:
    channel_id: str
    start: float | None  # None: offline since before the log begins
    end: float | None  # None: still offline at the period end
    reason: str | None


@dataclass(slots=True)
class Timeline:
    """What one pass over a period yields."""

    ms: dict[str, list[int]]  # channel -> [online, offline, unknown, exempt] milliseconds
    end_states: dict[str, Cursor]  # every channel the log knows, as of the period end
    outages: list[Outage] = field(default_factory=list)
    transitions_read: int = 0


def merge_intervals(items: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of half-open intervals, sorted; overlapping exemptions are not counted twice."""
    out: list[tuple[float, float]] = []
    for s, e in sorted(items):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def exemption_map(exemptions: Iterable[Exemption]) -> dict[str, list[tuple[float, float]]]:
    by_channel: dict[str, list[tuple[float, float]]] = {}
    for x in exemptions:
        by_channel.setdefault(x.channel_id, []).append((x.start, x.end))
    return {cid: merge_intervals(iv) for cid, iv in by_channel.items()}


def initial_cursors(last: Mapping[str, Transition]) -> dict[str, Cursor]:
    """Cursors at a period start from each channel's last transition before it."""
    return {cid: Cursor(t.to_state, t.ts, t.reason) for cid, t in last.items()}


# A channel in :func:`scan` is one list, so one dict look-up per transition: [0] state,
# [1] since, [2] reason, [3] mark (time accounted up to), [4] window start (None: not
# counted), [5] its exemptions, then the seconds online, offline, unknown, exempt at
# [_ACC + ONLINE] ... [_ACC + EXEMPT].
_ACC = 6
_SLOT = {"online": _ACC + ONLINE, "offline": _ACC + OFFLINE}


def exempted(a: float, b: float, ex: Iterable[tuple[float, float]]) -> float:
    """Seconds of ``[a, b)`` inside the exempted intervals ``ex`` (which do not overlap)."""
    covered = 0.0
    for xs, xe in ex:
        lo, hi = max(a, xs), min(b, xe)
        if hi > lo:
            covered += hi - lo
    return covered


def _account(c: list[Any], state: str, a: float, b: float,
             ex: list[tuple[float, float]] | None) -> None:
    if b <= a:
        return
    d = b - a
    if ex:
        covered = exempted(a, b, ex)
        c[_ACC + EXEMPT] += covered
        d -= covered
    c[_SLOT.get(state, _ACC + UNKNOWN)] += d


def scan(transitions: Iterable[TransitionRow], start: float, end: float,
         windows: Mapping[str, float], initial: Mapping[str, Cursor],
         exempt: Mapping[str, list[tuple[float, float]]], *,
         outages: bool = True) -> Timeline:
    """Replay ``transitions`` (those with ``start <= ts < end``, in time order), as
    ``(channel_id, ts, from_state, to_state, reason)`` tuples (:meth:`Store.transition_rows`).

    ``windows`` maps each counted channel to the time its counting starts (>= ``start``);
    channels not in it are followed (their end state is kept for the next period) but not
    counted. ``initial`` is the state of channels at ``start``; it is not modified.
    ``outages=False`` leaves :attr:`Timeline.outages` empty (the previous period's are not
    shown).

    The loop runs once per transition of the period (several hundred thousand), so each
    channel is one list (state, since, reason, mark, window, exemptions, four sums of seconds)
    found with one dict look-up, not objects; the arithmetic is :func:`_account`'s, term by
    term, so the sums are the same.
    """
    inf = float("-inf")
    get_window, get_exempt = windows.get, exempt.get
    cur: dict[str, list[Any]] = {
        cid: [c[0], c[1], c[2], inf, get_window(cid), get_exempt(cid), 0.0, 0.0, 0.0, 0.0]
        for cid, c in initial.items()}
    found: list[Outage] = []
    keep = found.append if outages else None
    slot = _SLOT
    unknown = _ACC + UNKNOWN
    n = 0
    get_cur = cur.get
    for cid, ts, from_state, to_state, reason in transitions:
        n += 1
        c = get_cur(cid)
        if c is None:
            # No earlier transition: trust what this one says it left, from the period start.
            c = cur[cid] = [from_state, None, None, inf, get_window(cid), get_exempt(cid),
                            0.0, 0.0, 0.0, 0.0]
        state = c[0]
        w = c[4]
        if w is not None:
            a = c[3]
            if w > a:
                a = w
            if ts > a:
                if c[5]:
                    _account(c, state, a, ts, c[5])
                else:
                    c[slot.get(state, unknown)] += ts - a
            c[3] = ts if ts > w else w
            if keep is not None and state == "offline" and to_state != "offline" and ts > w:
                keep(Outage(cid, c[1], ts, c[2]))
        if to_state != state:
            c[0] = to_state
            c[1] = ts
        c[2] = reason
    ms: dict[str, list[int]] = {}
    for cid, w in windows.items():
        c = get_cur(cid)
        if c is None:
            c = cur[cid] = ["unknown", None, None, inf, w, get_exempt(cid), 0.0, 0.0, 0.0, 0.0]
        _account(c, c[0], max(c[3], w), end, c[5])
        if keep is not None and c[0] == "offline":
            keep(Outage(cid, c[1], None, c[2]))
        ms[cid] = [round(c[6] * 1000), round(c[7] * 1000), round(c[8] * 1000),
                   round(c[9] * 1000)]
    states = {cid: Cursor(c[0], c[1], c[2], c[3]) for cid, c in cur.items()}
    return Timeline(ms, states, found, n)
