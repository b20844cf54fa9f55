"""One event, one row: the bulletin's outages grouped into events (离线事件).

When a township's uplink or a village's NVR fails, 159 channels go offline within a minute
or two; the printed bulletin shows that as one row (the place, how many channels, when, how
long, why), not 159. The grouping uses the ``mass_outage`` alert rule's figures
(``alerts.rules.mass_outage.window`` and ``min_channels``), so an alert and the bulletin
agree on what was one event:

* outages are taken per township, in order of their start;
* those starting within ``window`` seconds of the first one are a candidate group; when it
  has at least ``min_channels`` distinct channels and at least ``share`` of the township's
  connected channels, spread over several villages, it is one township event;
* else the first outage's village: its outages in the group are one village event on the
  same test against the village's channels;
* else, when the first outage is ``host_down`` (the NVR or uplink in front of it is down),
  the group's ``host_down`` outages of that village, at least ``min_channels`` of them, are
  one event: the inventory snapshot keeps no host (it holds no address), but an NVR's
  channels are in one village;
* else the first outage is an event of its own, and the others wait for the next group.

Outages whose start is not in the log (offline since before it began) are never grouped.
The per-channel list stays in the CSV (``outages.csv``) and JSON (``outages``) versions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from camwatch.inventory import Channel
from camwatch.model import Why, reason_zh


@dataclass(frozen=True, slots=True)
class OutageRow:
    channel: Channel
    start: float | None
    end: float | None  # None: still offline at the period end
    seconds: float | None  # until ``end`` or the period end; None when the start is unknown
    reason: str | None


@dataclass(frozen=True, slots=True)
class OutageEvent:
    """One row of 离线事件: a channel's outage, or a village's or township's mass outage."""

    level: str  # "channel", "host" (host_down channels of one village), "village", "township"
    outages: tuple[OutageRow, ...]
    start: float | None  # the first outage's start
    end: float | None  # the last recovery; None while any channel is still offline
    seconds: float | None  # from start to end (or the period end)
    total: int = 0  # connected channels of the village or township (0: not known)

    @property
    def grouped(self) -> bool:
        """A mass outage (several channels), not one channel's."""
        return self.level != "channel"

    @property
    def first(self) -> Channel:
        return self.outages[0].channel

    @property
    def channels(self) -> int:
        return len({o.channel.id for o in self.outages})

    @property
    def still_offline(self) -> int:
        return len({o.channel.id for o in self.outages if o.end is None})

    @property
    def channel_seconds(self) -> float:
        """Σ each outage's seconds: how much watching was lost."""
        return sum(o.seconds or 0.0 for o in self.outages)

    @property
    def place(self) -> str:
        """Where, as a reader says it: the township, its village, or the channel's name."""
        ch = self.first
        if self.level == "township":
            return ch.township
        if self.level == "village":
            return f"{ch.township} {ch.village}"
        if self.level == "host":
            return f"{ch.township} {ch.village} 上级设备"
        return ch.name or ch.id

    def reasons(self) -> list[tuple[str, int]]:
        """(Chinese reason, channels), most frequent first."""
        counts = Counter(reason_zh(o.reason) for o in self.outages)
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))

    def cause(self) -> str:
        """``拒绝连接`` for one reason, ``拒绝连接 120、上级设备离线 39`` for a group."""
        items = self.reasons()
        if self.level == "channel" or len(items) == 1:
            return "、".join(r for r, _ in items)
        return "、".join(f"{r} {n}" for r, n in items)


def _single(o: OutageRow, end: float) -> OutageEvent:
    """One channel's outage as an event (the common case: kept cheap)."""
    start, stop = o.start, o.end
    seconds = None if start is None else (stop if stop is not None else end) - start
    return OutageEvent("channel", (o,), start, stop, seconds)


def _event(level: str, items: Sequence[OutageRow], end: float, total: int = 0) -> OutageEvent:
    starts = [o.start for o in items if o.start is not None]
    start = min(starts) if len(starts) == len(items) else None
    ends = [o.end for o in items]
    stop = None if any(e is None for e in ends) else max(e for e in ends if e is not None)
    seconds = None if start is None else (stop if stop is not None else end) - start
    return OutageEvent(level, tuple(items), start, stop, seconds, total)


def group_outages(outages: Sequence[OutageRow], end: float, window: float,
                  min_channels: int, share: float = 0.0,
                  totals: Mapping[tuple[str, ...], int] | None = None) -> list[OutageEvent]:
    """The outages as events (see the module docstring), in order of their start (unknown
    starts first). ``end`` is the period end (for outages still running); ``totals`` the
    connected channels per ``(county, township)`` and ``(county, township, village)``, for
    the ``share`` test (a place without a total passes it)."""
    totals = totals or {}
    events: list[OutageEvent] = []
    by_township: dict[tuple[str, str], list[OutageRow]] = {}
    for o in outages:
        ch = o.channel
        if o.start is None or not ch.township:
            events.append(_single(o, end))
        else:
            by_township.setdefault((ch.county, ch.township), []).append(o)

    def enough(items: Sequence[OutageRow], total: int) -> bool:
        n = len({o.channel.id for o in items})
        return n >= min_channels and (not total or n >= share * total)

    for (county, township), items in by_township.items():
        items.sort(key=lambda o: (o.start or 0.0, o.channel.id))
        n = len(items)
        taken = [False] * n
        total = totals.get((county, township), 0)
        for i in range(n):
            if taken[i]:
                continue
            head = items[i]
            first = head.start or 0.0
            window_ix = []
            j = i
            while j < n and (items[j].start or 0.0) - first <= window:
                if not taken[j]:
                    window_ix.append(j)
                j += 1
            if len(window_ix) < min_channels:  # the common case: an outage of its own
                taken[i] = True
                events.append(_single(head, end))
                continue
            group = [items[k] for k in window_ix]
            if enough(group, total) and len({o.channel.village for o in group}) > 1:
                events.append(_event("township", group, end, total))
                chosen = window_ix
            else:
                # Not the township: a village, or the channels behind one host in a village
                # (the book marks those host_down), or the head alone. The others wait for
                # the next candidate group.
                village = head.channel.village
                same = [k for k in window_ix if village and items[k].channel.village == village]
                vtotal = totals.get((county, township, village), 0)
                behind = [k for k in same if items[k].reason == Why.HOST_DOWN]
                if same and enough([items[k] for k in same], vtotal):
                    chosen = same
                    events.append(_event("village", [items[k] for k in same], end, vtotal))
                elif head.reason == Why.HOST_DOWN and enough([items[k] for k in behind], 0):
                    chosen = behind
                    events.append(_event("host", [items[k] for k in behind], end))
                else:
                    chosen = [i]
                    events.append(_single(head, end))
            for k in chosen:
                taken[k] = True
    events.sort(key=lambda e: (e.start is not None, e.start or 0.0, e.first.id))
    return events


def by_impact(events: Sequence[OutageEvent]) -> list[OutageEvent]:
    """Worst first: groups before single channels, then by channel-hours lost."""
    return sorted(events, key=lambda e: (e.level == "channel", -e.channel_seconds,
                                         e.start or 0.0, e.first.id))
