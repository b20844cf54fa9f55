"""The daemon's heart: schedules every channel once per interval, turns results into states,
writes transitions, watches its own health. ``camwatch run`` builds an :class:`Engine`.

Scheduling: each channel has a fixed phase within the interval (a stable hash of its id plus
a little jitter), so 100,000 channels at 60 s are ~1,700 probes a second, evenly, never a herd
at :00. One heap of due times; the scheduler starts a probe only when fewer than
``2 × concurrency`` are pending, so memory stays bounded however far behind it falls. The
global and per-host bounds are :class:`~camwatch.sweep.ProbeRunner`'s.

A multi-channel host (an NVR, an uplink) whose channels keep failing at connection level is
*down*: its channels go offline with reason ``host_down`` without each being probed, and the
host is re-checked through one channel with a growing back-off (interval × 2ⁿ, at most 10 min).

Self-health: when the event loop lags, the sweep falls far behind, or nearly every channel of
every township fails at once with timeout/unreachable (our own uplink is down), failures are
not believed: those channels become ``unknown`` (reason ``prober_unhealthy``) and
``Engine.problems`` says why, for ``/healthz``, the metrics and the ``prober_unhealthy`` alert.

Writes: state changes and transitions are queued in memory and committed by one writer task
about once a second (``store.write_batch`` in a thread), so a probe never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import random
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from camwatch.config import Config
from camwatch.inventory import Channel, Inventory
from camwatch.probes import Level, ProbeResult, Reason, Target
from camwatch.rules.rates import RateIndex, RateRow, Targets
from camwatch.rules.states import HOST_DOWN, OFFLINE, ONLINE, UNJUDGED, Flaps, Verdict, apply
from camwatch.sinks.metrics import PhaseHistograms
from camwatch.store.base import ChannelState, RateSnapshot, Store, Transition
from camwatch.sweep import ProbeRunner, make_target, probe_settings, resolve_credentials

log = structlog.get_logger(__name__)

CONNECTION_REASONS = frozenset({Reason.TIMEOUT, Reason.REFUSED, Reason.UNREACHABLE})
HOST_BACKOFF_MAX_S = 600.0
LOOP_LAG_LIMIT_S = 1.0
RATE_SNAPSHOT_EVERY_S = 300.0
FULL_FLUSH_EVERY_S = 300.0  # every state row, timestamps included (see Engine._durable)
# Probes due within this much are started together: the loop then wakes for a batch of
# connections instead of once per probe (1,700 probes/s at 100,000 channels a minute).
SCHEDULE_AHEAD_S = 0.1


@dataclass(slots=True)
class HostHealth:
    channels: int = 0
    conn_fails: int = 0  # consecutive connection-level failures over all its channels
    last_reason: str | None = None
    down: bool = False
    next_check: float = 0.0
    backoff: float = 0.0


@dataclass(slots=True)
class Stats:
    """Counters the metrics endpoint reads (no I/O at scrape time)."""

    probes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, reason|"ok")
    phase_seconds: PhaseHistograms = field(default_factory=PhaseHistograms)
    transitions: Counter[str] = field(default_factory=Counter)  # to_state
    store_write_errors: int = 0
    reloads: Counter[str] = field(default_factory=Counter)  # ok | failed
    loop_lag_s: float = 0.0
    sweep_lag_s: float = 0.0
    last_sweep_duration_s: float = 0.0
    probes_in_flight: int = 0


GC_THRESHOLD0 = 20_000


def _tune_gc() -> None:
    """Keep the cyclic collector off the probe path (bench/bench_engine.py: it took a fifth
    to a third of the CPU of a 100,000-channel sweep).

    * What lives as long as the engine (inventory, targets, states, config) is frozen out of
      its sight, so full collections stop re-scanning objects that cannot be garbage.
      Unfreezing first lets this collection reclaim cycles frozen at the previous (re)load
      that died since, so reloads do not pile anything up.
    * The youngest generation is collected after 20,000 net new objects rather than 700:
      a thousand probes in flight, each holding a few dozen objects for a few milliseconds,
      otherwise trigger a collection every few probes that finds nothing.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    t0, t1, t2 = gc.get_threshold()
    if t0:  # 0: collection disabled by whoever owns the process; leave it so
        gc.set_threshold(max(t0, GC_THRESHOLD0), t1, t2)


class Engine:
    def __init__(self, cfg: Config, inventory: Inventory, store: Store, *,
                 clock: Callable[[], float] = time.time,
                 config_path: str | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.config_path = config_path
        self.stats = Stats()
        self.problems: list[str] = []
        self.started = clock()
        self.states: dict[str, ChannelState] = store.load_states()
        self.flaps: dict[str, Flaps] = {}
        self.hosts: dict[str, HostHealth] = {}
        self.channels: dict[str, Channel] = {}
        self.targets: dict[str, Target] = {}
        self._heap: list[tuple[float, int, str, str]] = []  # (due, seq, lane, key)
        self._onvif_groups: dict[str, list[str]] = {}  # ONVIF URL -> the channels behind it
        self._seq = 0
        self._dirty: dict[str, ChannelState] = {}
        self._transitions: list[Transition] = []
        self._new_transitions: list[Transition] = []  # since the last evaluation
        self._recent: deque[tuple[float, str, bool, str | None]] = deque(maxlen=5000)
        self._lags: deque[float] = deque(maxlen=500)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._last_snapshot = 0.0
        self._health_at = float("-inf")
        self._uplink_ok: bool | None = None  # None: not checked (yet)
        self.rates: list[RateRow] = []
        self.runner = self._make_runner()
        self.alerts: Any = None  # an AlertEvaluator, when alerts are configured
        self.dispatcher: Any = None
        # called with (channel id, main-lane verdict?) after a channel's state changed
        self.change_hooks: list[Callable[[str, bool], None]] = []
        self._set_inventory(inventory, first=True)

    # --- inventory ------------------------------------------------------------------------------

    def _make_runner(self) -> ProbeRunner:
        return ProbeRunner(probe_settings(self.cfg), self.cfg.probing.concurrency,
                           self.cfg.probing.per_host_concurrency)

    def _set_inventory(self, inventory: Inventory, first: bool = False) -> None:
        creds = resolve_credentials(self.cfg, inventory.channels)
        old = self.channels
        self.inventory = inventory
        self.channels = {c.id: c for c in inventory.channels if c.connected}
        self._rate_index = RateIndex(self.channels.values())
        self._targets = Targets(self.cfg.targets)
        self.targets = {cid: make_target(c, creds) for cid, c in self.channels.items()}
        hosts: Counter[str] = Counter(c.host for c in self.channels.values())
        self.hosts = {h: self.hosts.get(h, HostHealth()) for h in hosts}
        for h, n in hosts.items():
            self.hosts[h].channels = n
        gone = [cid for cid in self.states if cid not in self.channels]
        for cid in gone:  # no longer connected / in the inventory: not ours to judge
            self.states.pop(cid)
            self.flaps.pop(cid, None)
        if gone:
            self.store.delete_states(gone)
        for cid in self.channels:
            self.states.setdefault(cid, ChannelState(cid))
        now = self.clock()
        interval = self.cfg.probing.interval
        if first:
            self._heap = []
        scheduled = {(e[2], e[3]) for e in self._heap}
        for cid in self.channels:
            if cid in old and ("main", cid) in scheduled:
                continue  # unchanged channel keeps its place
            self._push(self._first_due(cid, now, interval), "main", cid)
        # The ONVIF lane (clock drift, device info) asks each device once, not once per
        # channel: the 64 channels of an NVR share its ONVIF address and its clock.
        self._onvif_groups = {}
        if self.cfg.probing.onvif and self.cfg.probing.level is not Level.ONVIF:
            for cid, ch in self.channels.items():
                if ch.onvif_url:
                    self._onvif_groups.setdefault(ch.onvif_url, []).append(cid)
        for url in self._onvif_groups:
            if ("onvif", url) not in scheduled:
                self._push(self._first_due(url, now, self.cfg.probing.onvif_interval),
                           "onvif", url)
        self._wake.set()
        _tune_gc()

    def _first_due(self, cid: str, now: float, interval: float) -> float:
        phase = (zlib.crc32(cid.encode()) % 100_000) / 100_000.0
        jitter = random.uniform(0.0, min(1.0, interval * 0.01))
        # the first round is spread over one interval, starting now
        return now + (phase * interval + jitter) % interval

    def _push(self, due: float, lane: str, cid: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, lane, cid))

    def interval_for(self, ch: Channel) -> float:
        for o in self.cfg.probing.overrides:
            if (o.project is None or o.project == ch.project) and \
                    (o.class_ is None or o.class_ == ch.klass):
                return o.interval
        return self.cfg.probing.interval

    def reload(self, cfg: Config, inventory: Inventory) -> None:
        """Swap in a validated config and inventory; unchanged channels keep their state."""
        self.cfg = cfg
        self.runner = self._make_runner()
        self._set_inventory(inventory)
        self.stats.reloads["ok"] += 1
        log.info("reloaded", channels=len(self.channels))

    # --- probing --------------------------------------------------------------------------------

    def _pop_due(self, now: float, ahead: float = 0.0) -> tuple[str, Channel] | None:
        """The next probe due by ``now + ahead``, rescheduled for its next round; None when
        nothing is due."""
        while self._heap and self._heap[0][0] <= now + ahead:
            due, _, lane, key = heapq.heappop(self._heap)  # key: a channel id or ONVIF URL
            if lane == "onvif":
                group = self._onvif_groups.get(key)
                ch = self.channels.get(group[0]) if group else None
            else:
                ch = self.channels.get(key)
            if ch is None:
                continue  # removed by a reload
            interval = self.interval_for(ch) if lane == "main" else \
                self.cfg.probing.onvif_interval
            nxt = due + interval
            if nxt < now:  # far behind: do not queue a burst of catch-up probes
                nxt = now + random.uniform(0, interval * 0.1)
            self._push(nxt, lane, key)
            self._lags.append(max(0.0, now - due))
            if lane == "main" and self._host_shortcut(ch, now):
                continue
            return lane, ch
        return None

    async def _scheduler(self) -> None:
        loop = asyncio.get_running_loop()
        pending = asyncio.Semaphore(self.cfg.probing.concurrency * 2)
        async with asyncio.TaskGroup() as tg:
            while not self._stop.is_set():
                now = self.clock()
                item = self._pop_due(now, SCHEDULE_AHEAD_S)
                if item is None:
                    # sleep until the next due time, a reload or stop(): a timer and one
                    # future, not the two tasks of _wait(), as this runs once per batch
                    self._wake.clear()
                    timer = loop.call_later(self._heap[0][0] - now, self._wake.set) \
                        if self._heap else None
                    await self._wake.wait()
                    if timer is not None:
                        timer.cancel()
                    continue
                await pending.acquire()
                lane, ch = item
                tg.create_task(self._probe(ch, lane, pending), name=f"{lane}:{ch.id}")
            # stopping: in-flight probes are bounded by the probe timeout; let them finish

    async def run_due(self) -> int:
        """Run every probe due at ``clock()`` and wait for them: a deterministic step for
        tests and for ``camwatch sweep``-like use with an injected clock."""
        pending = asyncio.Semaphore(self.cfg.probing.concurrency * 2)
        n = 0
        async with asyncio.TaskGroup() as tg:
            while (item := self._pop_due(self.clock())) is not None:
                await pending.acquire()
                tg.create_task(self._probe(item[1], item[0], pending))
                n += 1
        return n

    async def _wait(self, event: asyncio.Event, seconds: float | None) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        woke = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({stop, woke}, timeout=seconds,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            woke.cancel()

    def _host_shortcut(self, ch: Channel, now: float) -> bool:
        """For a host that is down, judge its channels without probing them, until the host's
        back-off expires and this channel is sent to check it."""
        h = self.hosts.get(ch.host)
        if h is None or not h.down:
            return False
        if now >= h.next_check:
            h.next_check = now + h.backoff  # this probe is the check; others wait for it
            return False
        # counted in the health window like the probe it replaces, so a prober whose own
        # uplink is down keeps seeing it even after every host is backed off
        self._recent.append((now, ch.township or ch.county, False, h.last_reason))
        self._judge(ch, UNJUDGED if self._unhealthy(now) else Verdict(False, HOST_DOWN, None),
                    now)
        return True

    async def _probe(self, ch: Channel, lane: str, pending: asyncio.Semaphore) -> None:
        try:
            level = self.cfg.probing.level if lane == "main" else Level.ONVIF
            self.stats.probes_in_flight += 1
            try:
                result = await self.runner.run(level, self.targets[ch.id])
            finally:
                self.stats.probes_in_flight -= 1
            self._count(result)
            now = self.clock()
            if lane == "onvif":
                for cid in self._onvif_groups.get(ch.onvif_url, [ch.id]):
                    if cid in self.states:
                        self._onvif_info(cid, result)
                return
            self._recent.append((now, ch.township or ch.county, result.ok,
                                 result.reason.value if result.reason else None))
            if not result.ok and result.reason in CONNECTION_REASONS and self._unhealthy(now):
                verdict = UNJUDGED  # our own trouble, not the camera's: neither up nor down
            else:
                verdict = Verdict.of(result, host_down=self._host_update(ch, result, now))
            self._judge(ch, verdict, now)
        except Exception:  # never let one channel take the daemon down
            log.exception("internal error handling a probe", channel=ch.id)
        finally:
            pending.release()

    def _count(self, r: ProbeResult) -> None:
        self.stats.probes[(r.kind, "ok" if r.ok else (r.reason or Reason.INTERNAL).value)] += 1
        for phase, secs in r.phases.items():
            self.stats.phase_seconds.observe(phase, secs)

    def _onvif_info(self, cid: str, r: ProbeResult) -> None:
        st = self.states[cid]
        if r.clock_drift_s is not None:
            st.clock_drift_s = r.clock_drift_s
        device = r.info.get("device")
        if device:
            st.info = {**st.info, "device": device}
        self._dirty[cid] = st
        for hook in self.change_hooks:
            hook(cid, False)

    def _host_update(self, ch: Channel, r: ProbeResult, now: float) -> bool:
        h = self.hosts.get(ch.host)
        if h is None or h.channels < 2:
            return False
        if r.ok or r.reason not in CONNECTION_REASONS:
            if h.down:
                log.info("host recovered", host=ch.host, channels=h.channels)
            h.conn_fails, h.down, h.backoff = 0, False, 0.0
            return False
        h.conn_fails += 1
        h.last_reason = r.reason.value if r.reason else None
        if not h.down and h.conn_fails >= max(self.cfg.states.fail_threshold,
                                             min(h.channels, 3)):
            h.down = True
            h.backoff = self.cfg.probing.interval
            h.next_check = now + h.backoff
            log.warning("host down", host=ch.host, channels=h.channels,
                        reason=r.reason.value if r.reason else None)
        elif h.down:
            h.backoff = min(h.backoff * 2, HOST_BACKOFF_MAX_S)
            h.next_check = now + h.backoff
        return h.down

    def _judge(self, ch: Channel, v: Verdict, now: float) -> None:
        st = self.states[ch.id]
        flaps = self.flaps.get(ch.id)
        if flaps is None:
            flaps = self.flaps[ch.id] = Flaps()
        before = self._durable(st)
        t = apply(st, v, now, self.cfg.states, flaps)
        if self._durable(st) != before:
            self._dirty[ch.id] = st
        for hook in self.change_hooks:
            hook(ch.id, True)
        if t is not None:
            self._transitions.append(t)
            self._new_transitions.append(t)
            self.stats.transitions[t.to_state] += 1
            if t.to_state == OFFLINE:
                log.warning("channel offline", channel=ch.id, county=ch.county,
                            township=ch.township, reason=t.reason)
            elif t.to_state == ONLINE and t.from_state == OFFLINE:
                log.info("channel recovered", channel=ch.id, county=ch.county,
                         township=ch.township)

    # --- self-health ----------------------------------------------------------------------------

    def _unhealthy(self, now: float) -> bool:
        # health() scans the recent window: at 1,700 probes/s, judge it once a second
        if now - self._health_at >= 1.0 or now < self._health_at:
            self._health_at = now
            self.health(now)
        return bool(self.problems)

    def health(self, now: float | None = None) -> list[str]:
        """Why the prober cannot be trusted right now (empty when healthy)."""
        now = self.clock() if now is None else now
        problems = []
        if self.stats.loop_lag_s > LOOP_LAG_LIMIT_S:
            problems.append(f"event loop lagging {self.stats.loop_lag_s:.1f}s")
        lag = self.sweep_lag()
        if lag > self.cfg.probing.interval:
            problems.append(f"sweep {lag:.0f}s behind its {self.cfg.probing.interval:g}s "
                            f"interval")
        if self.cfg.probing.uplink_check:
            # an explicit check decides: a county-wide outage with our uplink fine is real
            if self._uplink_ok is False:
                problems.append("uplink check failed: none of "
                                f"{', '.join(self.cfg.probing.uplink_check)} reachable")
            self.problems = problems
            return problems
        # no check configured: judge from the results. The last ones (at most 5,000, at most
        # one interval old) failing in every area at once look like our own uplink.
        window = [r for r in self._recent if r[0] >= now - max(30.0, self.cfg.probing.interval)]
        if len(window) >= 50:
            areas = {r[1] for r in window}
            failing = {r[1] for r in window if not r[2] and r[3] in ("unreachable", "timeout")}
            bad = sum(1 for r in window if not r[2] and r[3] in ("unreachable", "timeout"))
            if bad / len(window) >= 0.9 and len(areas) >= 2 and failing == areas:
                problems.append(f"{bad} of {len(window)} recent probes in every area failed "
                                f"with timeout/unreachable: own uplink down?")
        self.problems = problems
        return problems

    async def check_uplink(self) -> bool:
        """TCP-connect to the ``probing.uplink_check`` addresses; the uplink is fine when any
        answers (refused counts as reached: a host answered)."""
        from camwatch.probes import tcp

        async def reach(address: str) -> bool:
            host, _, port = address.rpartition(":")
            target = Target(channel_id=f"uplink:{address}", host=host.strip("[]"),
                            rtsp_url=f"rtsp://{host}:{port}/")
            r = await tcp.probe(target, self.runner.settings)
            return r.ok or r.reason is Reason.REFUSED

        results = await asyncio.gather(*(reach(a) for a in self.cfg.probing.uplink_check))
        ok = any(results)
        if ok != self._uplink_ok:
            (log.info if ok else log.warning)("uplink check", reachable=ok)
        self._uplink_ok = ok
        self._health_at = float("-inf")  # judge health afresh on the next result
        return ok

    async def _uplink_loop(self) -> None:
        while not self._stop.is_set():
            if self.cfg.probing.uplink_check:
                await self.check_uplink()
            await self._wait(asyncio.Event(), 10.0)

    def sweep_lag(self) -> float:
        if not self._lags:
            return 0.0
        ordered = sorted(self._lags)
        return ordered[len(ordered) // 2]

    async def _loop_lag(self) -> None:
        step = 0.25
        while not self._stop.is_set():
            t0 = time.monotonic()
            await asyncio.sleep(step)
            self.stats.loop_lag_s = max(0.0, time.monotonic() - t0 - step)
            self.stats.sweep_lag_s = self.sweep_lag()

    # --- persistence and evaluation -------------------------------------------------------------

    def _durable(self, st: ChannelState) -> tuple[object, ...]:
        """What a restart needs of a channel's state, to go on exactly where it was: a change
        in it is written within a second. The rest (last probe time, latency, a success
        count past the threshold) is written with everything else every few minutes and at
        shutdown: writing 100,000 rows a minute only to move timestamps is not worth it."""
        p = self.cfg.states
        return (st.state, st.reason, st.since, min(st.fails, p.fail_threshold),
                min(st.oks, p.recover_threshold), st.flapping)

    def flush(self, everything: bool = False) -> tuple[list[ChannelState], list[Transition]]:
        """Take the pending writes: copies of the changed states (the writer thread must not
        read objects the loop is changing) and the transitions."""
        if everything:
            self._dirty.update(self.states)
        states = [replace(s) for s in self._dirty.values()]
        trans = self._transitions
        self._dirty = {}
        self._transitions = []
        return states, trans

    async def _writer(self) -> None:
        last_full = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            full = stopping or time.monotonic() - last_full >= FULL_FLUSH_EVERY_S
            if full:
                last_full = time.monotonic()
            states, trans = self.flush(everything=full)
            if states or trans:
                try:
                    await asyncio.to_thread(self.store.write_batch, states, trans)
                except Exception as exc:
                    self.stats.store_write_errors += 1
                    log.error("store write failed; will retry", error=repr(exc))
                    for s in states:  # put them back: nothing is lost
                        self._dirty.setdefault(s.channel_id, s)
                    self._transitions[:0] = trans
            if stopping:
                return
            await self._wait(asyncio.Event(), 1.0)

    def state_of(self, cid: str) -> str:
        st = self.states.get(cid)
        return st.state if st else "unknown"

    def evaluate(self) -> list[Any]:
        """Rates now, a periodic rate snapshot, and the alert rules. Returns alert events."""
        now = self.clock()
        self.rates = self._rate_index.compute(self.state_of, self._targets)
        problems = self.health(now)
        if now - self._last_snapshot >= RATE_SNAPSHOT_EVERY_S:
            self._last_snapshot = now
            rows = [RateSnapshot(now, r.scope_dict(), r.klass, r.project, r.online,
                                 r.connected) for r in self.rates if len(r.scope) <= 2]
            try:
                self.store.add_rate_snapshots(rows)
            except Exception as exc:
                self.stats.store_write_errors += 1
                log.error("rate snapshot failed", error=repr(exc))
        new, self._new_transitions = self._new_transitions, []
        events: list[Any] = []
        if self.alerts is not None:
            events = self.alerts.evaluate(now, list(self.channels.values()), self.states,
                                          self.rates, new, problems)
            if events and self.dispatcher is not None:
                self.dispatcher.notify()
        return events

    async def _evaluator(self) -> None:
        every = max(1.0, min(15.0, self.cfg.probing.interval / 4))
        while not self._stop.is_set():
            await self._wait(asyncio.Event(), every)
            try:
                self.evaluate()
                if self.dispatcher is not None:
                    # best effort, and never holds up a shutdown
                    await self._until_stopped(self.dispatcher.publish_rates(self.rates))
            except Exception:
                log.exception("evaluation failed")

    async def _until_stopped(self, coro: Any) -> None:
        """Await ``coro``, or cancel it as soon as the engine is told to stop."""
        task = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            elif not task.cancelled() and (exc := task.exception()) is not None:
                raise exc

    # --- running --------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()  # the scheduler sleeps on it

    async def run(self, extra: Sequence[Callable[[], Any]] = ()) -> None:
        """Run until :meth:`stop`; then finish in-flight probes and writes, and return."""
        log.info("engine starting", channels=len(self.channels), hosts=len(self.hosts),
                 level=self.cfg.probing.level.value, interval=self.cfg.probing.interval)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._writer(), name="writer")
            tg.create_task(self._loop_lag(), name="loop-lag")
            tg.create_task(self._uplink_loop(), name="uplink-check")
            tg.create_task(self._evaluator(), name="evaluator")
            for factory in extra:
                tg.create_task(factory(), name=getattr(factory, "__name__", "extra"))
            await self._scheduler()
        log.info("engine stopped")
