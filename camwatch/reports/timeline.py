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

from camwatch.store.base import Exemption, Transition

ONLINE, OFFLINE, UNKNOWN, EXEMPT = 0, 1, 2, 3
_INDEX = {"online": ONLINE, "offline": OFFLINE}


@dataclass(slots=True)
class Cursor:
    """A channel's state while the log is replayed."""

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


def _account(acc: list[float], state: str, a: float, b: float,
             ex: list[tuple[float, float]] | None) -> None:
    if b <= a:
        return
    d = b - a
    if ex:
        covered = 0.0
        for xs, xe in ex:
            lo, hi = max(a, xs), min(b, xe)
            if hi > lo:
                covered += hi - lo
        acc[EXEMPT] += covered
        d -= covered
    acc[_INDEX.get(state, UNKNOWN)] += d


def scan(transitions: Iterable[Transition], start: float, end: float,
         windows: Mapping[str, float], initial: Mapping[str, Cursor],
         exempt: Mapping[str, list[tuple[float, float]]]) -> Timeline:
    """Replay ``transitions`` (those with ``start <= ts < end``, in time order).

    ``windows`` maps each counted channel to the time its counting starts (>= ``start``);
    channels not in it are followed (their end state is kept for the next period) but not
    counted. ``initial`` is the state of channels at ``start``; it is not modified.
    """
    cur: dict[str, Cursor] = {cid: Cursor(c.state, c.since, c.reason)
                              for cid, c in initial.items()}
    acc: dict[str, list[float]] = {cid: [0.0, 0.0, 0.0, 0.0] for cid in windows}
    outages: list[Outage] = []
    n = 0
    for t in transitions:
        n += 1
        cid = t.channel_id
        c = cur.get(cid)
        if c is None:
            # No earlier transition: trust what this one says it left, from the period start.
            c = cur[cid] = Cursor(t.from_state, None, None)
        w = windows.get(cid)
        if w is not None:
            a = max(c.mark, w)
            _account(acc[cid], c.state, a, t.ts, exempt.get(cid))
            c.mark = max(t.ts, w)
            if c.state == "offline" and t.to_state != "offline" and t.ts > w:
                outages.append(Outage(cid, c.since, t.ts, c.reason))
        if t.to_state != c.state:
            c.state, c.since = t.to_state, t.ts
        c.reason = t.reason
    for cid, w in windows.items():
        c = cur.get(cid)
        if c is None:
            c = cur[cid] = Cursor("unknown", None, None)
        _account(acc[cid], c.state, max(c.mark, w), end, exempt.get(cid))
        if c.state == "offline":
            outages.append(Outage(cid, c.since, None, c.reason))
    ms = {cid: [round(v * 1000) for v in a] for cid, a in acc.items()}
    return Timeline(ms, cur, outages, n)
