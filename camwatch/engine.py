"""The engine: the daemon's pipeline, wired. It holds no rule of its own.

    scheduler ──results──▶ channel book ──changes──▶ evaluator ──items──▶ outbox ──▶ sinks
        ▲                      │  ▲                       │                    (dispatcher)
        └── admit (host down) ─┘  └── verdicts trusted? ── self-health
    book ──▶ metrics, HTTP API          book, evaluator ──▶ store writer (one thread)

- :class:`~camwatch.scheduler.Scheduler`: when to probe what, and the probes; results out.
- :class:`~camwatch.book.ChannelBook`: verdicts in, transitions out (pure, synchronous).
- :class:`~camwatch.health.SelfHealth`: whether a failure is the camera's or camwatch's own.
- :class:`~camwatch.evaluator.Evaluator`: rates, alert rules, outbox items in one transaction.
- :class:`~camwatch.store.writer.StoreWriter`: the one thread that writes the store.

An inventory is *planned* off the event loop (:meth:`Engine.plan`: targets with credentials,
the schedule, rate cells, alert groups: seconds at 100,000 channels) and *applied* on it in
one step (:meth:`Engine.apply`: milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from camwatch.book import ChannelBook, SwapPlan
from camwatch.config import Config
from camwatch.evaluator import EvalInputs, Evaluator, plan_evaluation
from camwatch.health import SelfHealth
from camwatch.inventory import Channel, Inventory
from camwatch.malloc import release_free_memory
from camwatch.model import ChannelState, Quality, Source, State, Transition, Verdict, Why
from camwatch.pacing import paced
from camwatch.probes import Level, ProbeResult
from camwatch.quality.book import QualityBook
from camwatch.quality.sampler import QualitySampler
from camwatch.repairs.desk import RepairDesk, active_exemptions
from camwatch.repairs.model import QUALITY_FAULT, Ticket, TicketState
from camwatch.rules.alerts import META_KEY, Alert
from camwatch.rules.rates import RateRow
from camwatch.scheduler import MAIN, Schedule, Scheduler, plan_schedule
from camwatch.store.base import QualityChange, QualityState, Store
from camwatch.store.writer import StoreWriter
from camwatch.sweep import make_target, resolve_credentials, tune_gc

if TYPE_CHECKING:
    from camwatch.gb28181.service import GbService

log = structlog.get_logger(__name__)

FULL_FLUSH_EVERY_S = 300.0  # every state row, timestamps included (see ChannelBook._durable)
FULL_FLUSH_SLICE = 5_000  # states copied per turn of the loop in a full flush
MASS_LOG = 5  # channels of one township offline within a second: logged as one line
LEVEL_SOURCE = {Level.TCP: Source.TCP, Level.ONVIF: Source.ONVIF,
                Level.DESCRIBE: Source.DESCRIBE, Level.STREAM: Source.STREAM}


def _write_batch(states: list[ChannelState], transitions: list[Transition],
                 quality: tuple[list[QualityState], list[QualityChange]],
                 store: Store) -> None:
    store.write_batch(states, transitions)
    if quality[0] or quality[1]:
        store.write_quality(*quality)


@contextlib.contextmanager
def no_full_collection() -> Iterator[None]:
    """Around a reload: young collections go on (they are cheap), full ones wait. A full
    collection while a worker thread builds the new inventory would scan its million objects,
    holding the GIL (and so the event loop) for ~0.4 s at 100,000 channels; after the swap
    the new inventory is frozen out of the collector's sight (:func:`tune_gc`)."""
    a, b, t2 = gc.get_threshold()
    gc.set_threshold(a, b, max(t2, 1_000_000))
    try:
        yield
    finally:
        a, b, _ = gc.get_threshold()
        gc.set_threshold(a, b, t2)


def _keep_unchanged(new: list[Channel], running: Mapping[str, Channel],
                    pace: bool = False) -> None:
    """Put the running :class:`Channel` object in place of each reloaded one equal to it (the
    URL's password included), so that a reload keeps one copy of an unchanged inventory: the
    new copies die at once instead of living beside the old ones until the swap (in-process,
    three reloads of 100,000 channels: 399 MB without this, 318 MB with it; bench/README.md).
    ``pace``: in a worker thread (:mod:`camwatch.pacing`)."""
    for i, c in enumerate(paced(new, on=pace)):
        o = running.get(c.id)
        if o is not None and o is not c and o == c and o.url_password == c.url_password:
            new[i] = o


@dataclass(frozen=True, slots=True)
class Plan:
    """A config and inventory made ready to apply (see :meth:`Engine.plan`)."""

    cfg: Config
    inventory: Inventory
    channels: Mapping[str, Channel]
    schedule: Schedule
    evaluation: EvalInputs
    book: SwapPlan


class Engine:
    def __init__(self, cfg: Config, inventory: Inventory, store: Store,
                 writer: StoreWriter | None = None, *,
                 clock: Callable[[], float] = time.time,
                 forget: Callable[[list[str]], list[str]] | None = None) -> None:
        self.cfg = cfg
        # of the channels that left the book, those whose stored states go (a cluster member
        # keeps the states of channels that moved to another instance's shard)
        self.forget: Callable[[list[str]], list[str]] = forget or (lambda gone: gone)
        # more of /metrics (a cluster member's shards): each renders its families' lines
        self.extra_metrics: list[Callable[[bool], str]] = []
        self.store = store  # reads; every write goes through the writer
        self.writer = writer if writer is not None else StoreWriter(store)
        self.writer.start()
        self.clock = clock
        self.started = clock()
        self.stopping = asyncio.Event()
        self._drained = asyncio.Event()  # the scheduler returned: no verdict will follow
        self.reloads: Counter[str] = Counter()  # ok | failed
        self.health = SelfHealth(cfg.probing.interval, cfg.probing.uplink_check, clock)
        self.health.watch("store", lambda: self.writer.problem)
        self.book = ChannelBook(cfg.states, cfg.probing.interval, states=store.load_states(),
                                primary=LEVEL_SOURCE[cfg.probing.level])
        # the picture's quality, beside the online state and never mixed into it
        self.quality = QualityBook(cfg.quality.thumbnail_budget)
        if cfg.quality.enabled:  # the verdicts and runs survive a restart: nothing re-alerted
            self.quality.load(store.load_quality())
        self.sampler = QualitySampler(self, clock)
        self.scheduler = Scheduler(cfg, admit=self._admit, deliver=self._deliver,
                                   on_delay=self.health.probe_delay, clock=clock)
        self.evaluator = Evaluator(cfg, self.book, self.writer, self.health,
                                   saved_alerts=store.get_meta(META_KEY), clock=clock)
        self.evaluator.quality = self.quality if cfg.quality.enabled else None
        self.repairs = RepairDesk.from_store(cfg, store, self.writer)  # 维修工单
        self.inventory = inventory
        self.gb: GbService | None = None  # the GB/T 28181 upper platform, when enabled
        self._first_apply = True
        self.apply(self.plan(cfg, inventory))
        # a claim being verified when the daemon stopped gets its pictures sampled again
        self.repairs.on_fixed = self._recheck_pictures
        for t in list(self.repairs.tickets.values()):
            if t.state == TicketState.FIXED:
                self._recheck_pictures(t)

    # --- read API (HTTP, metrics) -----------------------------------------------------------------

    @property
    def channels(self) -> Mapping[str, Channel]:
        return self.book.channels

    @property
    def rates(self) -> list[RateRow]:
        return self.evaluator.rates

    def problems(self) -> list[str]:
        return self.health.problems()

    # --- the inventory ------------------------------------------------------------------------

    def plan(self, cfg: Config, inventory: Inventory, pace: bool = False) -> Plan:
        """Everything an inventory needs, built without touching the running pipeline: safe
        (and meant) to run in a worker thread; ``pace`` there, so that its passes over every
        channel (~1 s at 100,000) leave the loop its pace (:mod:`camwatch.pacing`)."""
        creds = resolve_credentials(cfg, inventory.channels)
        _keep_unchanged(inventory.channels, self.book.channels, pace)
        channels = {c.id: c for c in inventory.channels if c.connected}
        sched = self.scheduler.schedule
        old_targets = sched.targets if sched is not None else {}
        targets = {}
        for cid, c in paced(channels.items(), on=pace):
            t = make_target(c, creds)
            targets[cid] = t if (o := old_targets.get(cid)) is None or o != t else o
        schedule = plan_schedule(cfg, channels, targets, self.clock(), self.scheduler.schedule,
                                 pace)
        return Plan(cfg, inventory, channels, schedule, plan_evaluation(cfg, channels, pace),
                    self.book.plan_swap(channels))

    def reload(self, cfg: Config, inventory: Inventory) -> list[str]:
        """:meth:`plan` and :meth:`apply` in one call, on the calling thread (tests, and
        callers without a loop to keep responsive; the daemon plans in a worker thread)."""
        return self.apply(self.plan(cfg, inventory))

    async def apply_sliced(self, plan: Plan) -> list[str]:
        """:meth:`apply`, with the one O(channels) part left on the loop (counting the
        channels' states into the new rate cells) done first in slices between which probes go
        on; the swap itself is then O(changes). Returns the ids that left."""
        counts = await self.evaluator.count_for(plan.evaluation)
        return self.apply(plan, counts)

    def apply(self, plan: Plan, counts: list[list[int]] | None = None) -> list[str]:
        """Swap in a planned config and inventory, in one step on the loop; unchanged
        channels keep their state. ``counts``: the new rate cells' counts from
        :meth:`Evaluator.count_for`, made just before. Returns the ids that left."""
        cfg = plan.cfg
        if cfg is not self.cfg:
            self.cfg = cfg
            self.book.policy = cfg.states
            self.book.interval = cfg.probing.interval
            self.book.primary = LEVEL_SOURCE[cfg.probing.level]
            self.health.configure(cfg.probing.interval, cfg.probing.uplink_check)
            self.scheduler.configure(cfg)
            self.evaluator.configure(cfg)
            self.evaluator.quality = self.quality if cfg.quality.enabled else None
            self.repairs.configure(cfg)
        self.inventory = plan.inventory
        gone = self.book.swap(plan.channels, plan.book)
        self.quality.swap(plan.channels)
        self.quality.thumbnail_budget = cfg.quality.thumbnail_budget
        self.scheduler.swap(plan.schedule)
        self.evaluator.swap(plan.evaluation, counts)
        alerts = plan.evaluation.alerts
        self.repairs.swap(plan.channels, alerts.groups, alerts.key_of, alerts.levels)
        if forgotten := (self.forget(gone) if gone else gone):
            self.writer.submit(lambda s: s.delete_states(forgotten))  # retried at the next swap
        tune_gc(full=self._first_apply)
        self._first_apply = False
        return gone

    # --- results into verdicts ----------------------------------------------------------------

    def _admit(self, ch: Channel, now: float) -> bool:
        trusted = not self.health.unhealthy(now)
        if self.book.admit(ch, now, trusted):
            return True
        # judged without a probe: counted like the probe it replaces, so a prober whose own
        # uplink is down keeps seeing it even after every host is backed off
        host = self.book.host_of(ch.id)
        self.health.result(now, ch.township or ch.county, False,
                           host.last_reason if host is not None else None)
        return False

    def _deliver(self, lane: str, ch: Channel, result: ProbeResult, now: float) -> None:
        if lane != MAIN:
            sched = self.scheduler.schedule
            group = sched.onvif_groups.get(ch.onvif_url, [ch.id]) if sched else [ch.id]
            for cid in group:
                self.book.device_info(cid, result)
            return
        reason = result.reason.value if result.reason else None
        self.health.result(now, ch.township or ch.county, result.ok, reason)
        source = self.book.primary
        if not result.ok and self.health.distrusts(reason, now):
            verdict = Verdict(None, Why.PROBER_UNHEALTHY, result, source)
        else:
            verdict = Verdict.of(result, source)
        self.book.judge(ch.id, verdict, now)

    # --- the tasks ----------------------------------------------------------------------------

    async def wait(self, seconds: float | None) -> bool:
        """Sleep ``seconds`` or until the engine stops; True when stopping."""
        if self.stopping.is_set():
            return True
        try:
            async with asyncio.timeout(seconds):
                await self.stopping.wait()
        except TimeoutError:
            return False
        return True

    async def _writes(self) -> None:
        """Hand the book's pending writes to the writer about once a second; a failed write
        is put back and retried with the next."""
        last_full = time.monotonic()
        while True:
            stopping = self._drained.is_set()
            full = stopping or time.monotonic() - last_full >= FULL_FLUSH_EVERY_S
            if full:
                last_full = time.monotonic()
            self._log_transitions(self.book.take_log())
            states, trans = self.book.take_writes()
            if full:
                # every state, copied in slices between which probes go on: copying 100,000
                # at once held the loop for half a second every five minutes
                ids = self.book.state_ids()
                for i in range(0, len(ids), FULL_FLUSH_SLICE):
                    states += self.book.copy_states(ids[i:i + FULL_FLUSH_SLICE])
                    if not stopping:
                        await asyncio.sleep(0)
            quality = self.quality.take_writes()
            if states or trans or quality[0] or quality[1]:
                try:
                    await self.writer.run(functools.partial(_write_batch, states, trans,
                                                            quality))
                except Exception:  # counted and logged by the writer
                    self.book.restore_writes(states, trans)
                    self.quality.restore_writes(*quality)
            if stopping:
                return
            if full:  # the full flush's copies are gone, and a reload's old inventory
                del states, trans
                await asyncio.to_thread(release_free_memory)
            # the last flush waits for the probes in flight to be judged
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._drained.wait()

    def _log_transitions(self, transitions: Sequence[Transition]) -> None:
        """Each transition at INFO (the JSON log keeps them all); a WARNING per channel going
        offline, except where ``MASS_LOG`` or more of one township went offline within the
        second: one WARNING for the township then (a terminal during a township's outage shows
        one line, not hundreds)."""
        down: dict[tuple[str, str], list[Transition]] = {}
        for t in transitions:
            ch = self.book.channels.get(t.channel_id)
            county, township = (ch.county, ch.township) if ch is not None else ("", "")
            if t.to_state == State.OFFLINE:
                down.setdefault((county, township), []).append(t)
            elif t.to_state == State.ONLINE and t.from_state == State.OFFLINE:
                log.info("channel recovered", channel=t.channel_id, county=county,
                         township=township)
        for (county, township), group in down.items():
            many = len(group) >= MASS_LOG
            for t in group:
                (log.info if many else log.warning)(
                    "channel offline", channel=t.channel_id, county=county,
                    township=township, reason=t.reason)
            if many:
                reasons = Counter(t.reason or "unknown" for t in group)
                log.warning("channels offline", county=county, township=township,
                            count=len(group), reasons=dict(reasons.most_common()),
                            channels=[t.channel_id for t in group[:5]])

    async def evaluate(self) -> list[Alert]:
        return await self.evaluator.evaluate()

    async def repair_step(self) -> None:
        """Open, move on and dispatch repair tickets (``repairs.enabled``); raises when the
        store could not take the step (it is repeated at the next one)."""
        if not self.cfg.repairs.enabled:
            return
        now = self.clock()
        exempt = await asyncio.to_thread(active_exemptions, self.store, now)
        events = await self.repairs.step(now, self.book.states, self.book.offline, exempt,
                                         self.quality if self.cfg.quality.enabled else None)
        await self.repairs.refresh_assessment(self.store, now, bool(events))

    async def _evaluations(self, publish: Callable[[Sequence[RateRow]], Coroutine[Any, Any, None]]
                           | None) -> None:
        every = max(1.0, min(15.0, self.cfg.probing.interval / 4))
        while not await self.wait(every):
            try:
                await self.evaluator.evaluate()
            except Exception as exc:  # the store refused it: repeated at the next one
                log.error("evaluation not committed; it will be repeated", error=repr(exc))
                continue
            try:
                await self.repair_step()
            except Exception as exc:  # the same: nothing changed, repeated at the next one
                log.error("repair tickets not committed; repeated at the next evaluation",
                          error=repr(exc))
            if publish is not None:
                # best effort, and never holds up a shutdown
                job = asyncio.ensure_future(publish(self.evaluator.rates))
                stop = asyncio.ensure_future(self.stopping.wait())
                await asyncio.wait({job, stop}, timeout=every,
                                   return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if not job.done():
                    job.cancel()
                    await asyncio.gather(job, return_exceptions=True)
                elif not job.cancelled() and job.exception() is not None:
                    log.warning("publishing rates failed", error=repr(job.exception()))

    def _recheck_pictures(self, t: Ticket) -> None:
        """A ticket claimed fixed: its pictures (a quality ticket's channels, an online
        ticket's channels whose last picture was degraded) sampled now and then every
        ``repairs.verify_for`` while the claim is verified, instead of at the cadence's next
        turns, up to two ``quality.interval`` away (docs/repairs.md)."""
        if not (self.cfg.quality.enabled and self.cfg.repairs.enabled):
            return
        ids = t.channels if t.kind == QUALITY_FAULT else [
            c for c in t.channels if self.quality.quality_of(c) is Quality.DEGRADED]
        if ids:
            self.sampler.request(ids, every=self.cfg.repairs.verify_for,
                                 still=self.repairs.being_verified)

    async def _uplink(self) -> None:
        while True:
            if self.cfg.probing.uplink_check:
                await self.health.check_uplink(self.scheduler.runner.settings)
            if await self.wait(10.0):
                return

    def stop(self) -> None:
        self.stopping.set()
        self.scheduler.wake()
        self.sampler.wake()

    async def run(self, extra: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
                  publish: Callable[[Sequence[RateRow]], Coroutine[Any, Any, None]]
                  | None = None) -> None:
        """Run until :meth:`stop`; then finish in-flight probes and writes, and return."""
        log.info("engine starting", channels=len(self.book.channels),
                 hosts=len(self.book.hosts()), level=self.cfg.probing.level.value,
                 interval=self.cfg.probing.interval)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._writes(), name="writes")
            tg.create_task(self.health.watch_loop(self.stopping), name="loop-lag")
            tg.create_task(self._uplink(), name="uplink-check")
            tg.create_task(self._evaluations(publish), name="evaluator")
            tg.create_task(self.sampler.run(), name="quality-sampler")
            for factory in extra:
                tg.create_task(factory(), name=getattr(factory, "__name__", "extra"))
            await self.scheduler.run(self.stopping)
            self._drained.set()
        log.info("engine stopped")

    def close(self) -> None:
        """Stop the writer thread once everything queued is written."""
        self.writer.close()
