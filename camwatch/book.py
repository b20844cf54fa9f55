"""The channel book: what camwatch believes about every channel, moved on by verdicts.

Pure and synchronous: no I/O, no clock, no event loop. Verdicts go in (:meth:`ChannelBook.judge`),
transitions come out; the rules of one channel are :func:`camwatch.rules.states.apply`
(hysteresis, flapping, unknown) and of several sources :func:`camwatch.rules.sources.admits`
(the deepest evidence wins). Beyond one channel the book keeps its *hosts*:

A multi-channel host (an NVR, an uplink) whose channels keep failing at connection level is
*down*: its channels go offline with reason ``host_down`` without each being probed
(:meth:`ChannelBook.admit` says whether to probe), and the host is re-checked through one
channel with a growing back-off (interval × 2ⁿ, at most ``HOST_BACKOFF_MAX_S``).

Everything else reads the book through its public API: the metrics and the HTTP API
(:meth:`state`, :attr:`channels`, :meth:`counts`, :meth:`subscribe`), the store writer
(:meth:`take_writes` / :meth:`restore_writes`), the evaluator (:meth:`changes` /
:meth:`release`). :attr:`generation` goes up at every inventory swap, so a reader's cache
knows when to rebuild.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import structlog

from camwatch.config import StatesConfig
from camwatch.inventory import Channel
from camwatch.model import (
    CONNECTION_REASONS,
    UNJUDGED,
    ChannelState,
    Source,
    State,
    Transition,
    Verdict,
    Why,
)
from camwatch.probes.result import ProbeResult
from camwatch.rules.sources import admits
from camwatch.rules.states import Flaps, apply

log = structlog.get_logger(__name__)

HOST_BACKOFF_MAX_S = 600.0

# (channel id, state before the verdict, a main-lane verdict?) -> None
Listener = Callable[[str, str, bool], None]


@dataclass(frozen=True, slots=True)
class SwapPlan:
    """An inventory swap worked out ahead (:meth:`ChannelBook.plan_swap`)."""

    generation: int  # the book's generation it was made against
    channels: dict[str, Channel]
    hosts: Counter[str]  # channels per host
    gone: list[str]
    new: list[str]


@dataclass(slots=True)
class HostHealth:
    channels: int = 0
    conn_fails: int = 0  # consecutive connection-level failures over all its channels
    last_reason: str | None = None
    down: bool = False
    next_check: float = 0.0
    backoff: float = 0.0


class ChannelBook:
    def __init__(self, policy: StatesConfig, interval: float, *,
                 states: Mapping[str, ChannelState] | None = None,
                 primary: Source = Source.DESCRIBE,
                 fresh_for: Mapping[Source, float] | None = None) -> None:
        self.policy = policy
        self.interval = interval  # the first back-off of a down host
        self.primary = primary  # the source of the main probe lane
        self.fresh_for: dict[Source, float] = dict(fresh_for or {})
        self._channels: dict[str, Channel] = {}
        self._states: dict[str, ChannelState] = dict(states or {})
        self._flaps: dict[str, Flaps] = {}
        self._hosts: dict[str, HostHealth] = {}
        # when each source last judged a channel, only for channels judged by more than one
        self._seen: dict[str, dict[Source, float]] = {}
        self._listeners: list[Listener] = []
        self._dirty: dict[str, ChannelState] = {}
        self._pending: list[Transition] = []  # for the store writer
        self._to_log: list[Transition] = []  # for the log (see take_log)
        # for the evaluator: transitions and changed channels, numbered by a cursor
        self._log_base = 0
        self._log: list[tuple[str, Transition | None]] = []
        self.offline: set[str] = {cid for cid, st in self._states.items()
                                  if st.state == State.OFFLINE}
        self.generation = 0
        self.transitions_total: Counter[str] = Counter()

    # --- read API ------------------------------------------------------------------------------

    @property
    def channels(self) -> Mapping[str, Channel]:
        return MappingProxyType(self._channels)

    def state(self, cid: str) -> ChannelState | None:
        return self._states.get(cid)

    def state_of(self, cid: str) -> str:
        st = self._states.get(cid)
        return st.state if st is not None else State.UNKNOWN

    @property
    def states(self) -> Mapping[str, ChannelState]:
        return MappingProxyType(self._states)

    def counts(self) -> Counter[str]:
        """Channels by state."""
        return Counter(self.state_of(cid) for cid in self._channels)

    def hosts(self) -> Mapping[str, HostHealth]:
        return MappingProxyType(self._hosts)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(channel_id, state_before, main_lane)`` after every verdict or device
        update of a channel (a few microseconds each: keep it cheap)."""
        self._listeners.append(listener)

    # --- the inventory -------------------------------------------------------------------------

    def plan_swap(self, channels: Mapping[str, Channel]) -> SwapPlan:
        """What :meth:`swap` to ``channels`` will change, worked out in O(channels) without
        changing anything: safe in a worker thread while verdicts land (only a swap changes
        which channels the book holds, and swaps do not overlap)."""
        chans = dict(channels)
        states = self._states
        return SwapPlan(self.generation, chans, Counter(c.host for c in chans.values()),
                        [cid for cid in states if cid not in chans],
                        [cid for cid in chans if cid not in states])

    def seed(self, states: Mapping[str, ChannelState]) -> None:
        """Committed states for channels a swap is about to add (a cluster's shard taken over
        from another instance): the swap then keeps them, as it keeps an unchanged channel's,
        instead of starting the channels unknown, so the next verdict continues the previous
        owner's history (no spurious transition, ``since`` and the counters kept). Channels
        the book holds already are left alone. Call it on the loop, before the swap's plan."""
        for cid, st in states.items():
            if cid in self._channels:
                continue
            self._states[cid] = st
            if st.state == State.OFFLINE:
                self.offline.add(cid)
            else:
                self.offline.discard(cid)

    def swap(self, channels: Mapping[str, Channel], plan: SwapPlan | None = None) -> list[str]:
        """Take a new set of connected channels in one step; unchanged channels keep their
        state, host health and flap history. With a :meth:`plan_swap` made for this book's
        current generation, the step costs O(changes + hosts), not O(channels). Returns the
        ids that left the book."""
        if plan is None or plan.generation != self.generation:
            plan = self.plan_swap(channels)
        self._channels = plan.channels
        old_hosts = self._hosts
        self._hosts = {h: old_hosts.get(h) or HostHealth() for h in plan.hosts}
        for h, n in plan.hosts.items():
            self._hosts[h].channels = n
        for cid in plan.gone:  # no longer connected / in the inventory: not ours to judge
            del self._states[cid]
            self._flaps.pop(cid, None)
            self._seen.pop(cid, None)
            self._dirty.pop(cid, None)
            self.offline.discard(cid)
        for cid in plan.new:
            self._states[cid] = ChannelState(cid)
        self.generation += 1
        return plan.gone

    # --- verdicts ------------------------------------------------------------------------------

    def admit(self, ch: Channel, now: float, trusted: bool = True) -> bool:
        """Should ``ch`` be probed now? False while its host is down and not yet due for a
        check: the channel is then judged ``host_down`` here, without a probe (or left
        unjudged when the prober cannot be ``trusted``)."""
        h = self._hosts.get(ch.host)
        if h is None or not h.down:
            return True
        if now >= h.next_check:
            h.next_check = now + h.backoff  # this probe is the check; the others wait for it
            return True
        self.judge(ch.id, Verdict(False, Why.HOST_DOWN, source=self.primary) if trusted
                   else UNJUDGED, now)
        return False

    def judge(self, cid: str, v: Verdict, now: float) -> Transition | None:
        """Move channel ``cid`` on by verdict ``v``; returns the transition, if any."""
        st = self._states.get(cid)
        if st is None:
            return None  # removed by a swap while its probe ran
        main = v.source == self.primary
        if not self._admitted(cid, v.source, now):
            return None
        # a main-lane probe's result counts towards its host (an unjudged one does not)
        host_down = main and v.result is not None and v.ok is not None and \
            self._host_update(self._channels[cid], v.result, now)
        if host_down and v.ok is False:
            v = replace(v, reason=Why.HOST_DOWN)
        flaps = self._flaps.get(cid)
        if flaps is None and v.ok is not None:
            # a flap history only once the verdict flips (most channels never do: 100,000
            # empty histories would cost 9 MB); the last verdict is in the counters
            last = True if st.oks else False if st.fails else None
            if (last is not None and last != v.ok) or st.flapping:  # (flapping: a restart)
                flaps = self._flaps[cid] = Flaps()
                flaps.last_ok = last
        before_state = st.state
        before = self._durable(st)
        t = apply(st, v, now, self.policy, flaps)
        if self._durable(st) != before:
            self._dirty[cid] = st
        if t is not None:
            self._pending.append(t)
            self._log.append((cid, t))
            self.transitions_total[t.to_state] += 1
            if t.to_state == State.OFFLINE:
                self.offline.add(cid)
            else:
                self.offline.discard(cid)
            self._to_log.append(t)
        elif before[1] != st.reason:
            self._log.append((cid, None))
        for listener in self._listeners:
            listener(cid, before_state, True)
        return t

    def device_info(self, cid: str, result: ProbeResult) -> None:
        """What an ONVIF-lane probe learnt of the device (clock drift, vendor/model), without
        judging the channel."""
        st = self._states.get(cid)
        if st is None:
            return
        if result.clock_drift_s is not None:
            st.clock_drift_s = result.clock_drift_s
        device = result.info.get("device")
        if device:
            st.info = {**st.info, "device": device}
        self._dirty[cid] = st
        self._log.append((cid, None))
        for listener in self._listeners:
            listener(cid, st.state, False)

    def _admitted(self, cid: str, source: Source, now: float) -> bool:
        seen = self._seen.get(cid)
        if source != self.primary and seen is None:
            st = self._states[cid]
            seen = self._seen[cid] = {} if st.last_probe is None else \
                {self.primary: st.last_probe}
        if seen is None:
            return True  # only the main lane judges this channel
        ok = admits(source, seen, now, self.fresh_for, default_fresh_s=3 * self.interval)
        seen[source] = now
        return ok

    def _host_update(self, ch: Channel, r: ProbeResult, now: float) -> bool:
        """Count a main-lane result towards its host; True while the host is down."""
        h = self._hosts.get(ch.host)
        if h is None or h.channels < 2:
            return False
        if r.ok or r.reason not in CONNECTION_REASONS:
            if h.down:
                log.info("host recovered", host=ch.host, channels=h.channels)
            h.conn_fails, h.down, h.backoff = 0, False, 0.0
            return False
        h.conn_fails += 1
        h.last_reason = r.reason.value if r.reason else None
        if not h.down and h.conn_fails >= max(self.policy.fail_threshold, min(h.channels, 3)):
            h.down = True
            h.backoff = self.interval
            h.next_check = now + h.backoff
            log.warning("host down", host=ch.host, channels=h.channels,
                        reason=h.last_reason)
        elif h.down:
            h.backoff = min(h.backoff * 2, HOST_BACKOFF_MAX_S)
            h.next_check = now + h.backoff
        return h.down

    def host_of(self, cid: str) -> HostHealth | None:
        ch = self._channels.get(cid)
        return self._hosts.get(ch.host) if ch is not None else None

    # --- persistence ---------------------------------------------------------------------------

    def _durable(self, st: ChannelState) -> tuple[object, ...]:
        """What a restart needs of a channel's state, to go on exactly where it was: a change
        in it is written within a second. The rest (last probe time, latency, a success
        count past the threshold) is written with everything else every few minutes and at
        shutdown: writing 100,000 rows a minute only to move timestamps is not worth it."""
        p = self.policy
        return (st.state, st.reason, st.since, min(st.fails, p.fail_threshold),
                min(st.oks, p.recover_threshold), st.flapping)

    def take_writes(self, everything: bool = False
                    ) -> tuple[list[ChannelState], list[Transition]]:
        """The pending writes: copies of the changed states (the writer thread must not read
        objects the loop is changing) and the transitions, in order. (The daemon takes a full
        flush in slices instead: :meth:`copy_states`.)"""
        if everything:
            self._dirty.update(self._states)
        states = [s.copy() for s in self._dirty.values()]
        trans = self._pending
        self._dirty = {}
        self._pending = []
        return states, trans

    def take_log(self) -> list[Transition]:
        """The transitions not yet logged (the engine logs them once a second, a mass outage
        as one line)."""
        out, self._to_log = self._to_log, []
        return out

    def state_ids(self) -> list[str]:
        return list(self._states)

    def copy_states(self, ids: Iterable[str]) -> list[ChannelState]:
        """Copies of these channels' states (a slice of a full flush; the ids that left since
        are skipped)."""
        states = self._states
        return [states[cid].copy() for cid in ids if cid in states]

    def restore_writes(self, states: Iterable[ChannelState],
                       transitions: list[Transition]) -> None:
        """Put back writes that failed, ahead of newer ones: nothing is lost."""
        for s in states:
            if s.channel_id in self._states:
                self._dirty.setdefault(s.channel_id, self._states[s.channel_id])
        self._pending[:0] = transitions

    # --- changes, for the evaluator ------------------------------------------------------------

    @property
    def cursor(self) -> int:
        return self._log_base + len(self._log)

    def changes(self, since: int) -> tuple[list[Transition], set[str], int]:
        """Transitions and changed channel ids after cursor ``since``, and the cursor now.
        Nothing is dropped until :meth:`release`: an evaluation that fails sees them again."""
        start = max(0, since - self._log_base)
        entries = self._log[start:]
        trans = [t for _, t in entries if t is not None]
        return trans, {cid for cid, _ in entries}, self.cursor

    def release(self, upto: int) -> None:
        """The evaluator has committed everything up to cursor ``upto``."""
        n = upto - self._log_base
        if n > 0:
            del self._log[:n]
            self._log_base = upto
