"""The scheduler: when each channel is probed, and the probes themselves. It produces probe
results and knows nothing of channel states.

Each channel has a fixed phase within the interval (a stable hash of its id plus a little
jitter), so 100,000 channels at 60 s are ~1,700 probes a second, evenly, never a herd at :00.
One heap of due times; the scheduler starts a probe only when fewer than ``2 × concurrency``
are pending, so memory stays bounded however far behind it falls. The global and per-host
bounds are :class:`~camwatch.sweep.ProbeRunner`'s.

Two lanes: ``main`` probes each channel at ``probing.level``; ``onvif`` asks each ONVIF device
once per ``onvif_interval`` (clock drift, device information), not once per channel: the 64
channels of an NVR share its address and its clock.

Two callbacks connect it to the rest (:class:`~camwatch.engine.Engine` wires them):
``admit(channel, now)`` may veto a main-lane probe (its host is down and backed off), and
``deliver(lane, channel, result, now)`` receives every result.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from camwatch.config import Config
from camwatch.inventory import Channel
from camwatch.pacing import paced
from camwatch.probes import Level, ProbeResult, Target
from camwatch.stats import ProbeStats
from camwatch.sweep import ProbeRunner, probe_settings

log = structlog.get_logger(__name__)

# Probes due within this much are started together: the loop then wakes for a batch of
# connections instead of once per probe (1,700 probes/s at 100,000 channels a minute). Kept
# short: at 0.1 s, 170 probes started at once every tenth of a second, and their replies,
# parsed together, made the loop's turns 25-100 ms long (bench_loop's lag; bench/README.md).
LAUNCH_BURST = 64  # probes launched before the scheduler lets the loop run other work
SCHEDULE_AHEAD_S = 0.01

MAIN, ONVIF = "main", "onvif"
Entry = tuple[float, int, str, str]  # (due, seq, lane, key: a channel id or an ONVIF URL)


@dataclass(frozen=True, slots=True)
class Schedule:
    """What the scheduler needs of an inventory, built off the event loop (see
    :func:`plan_schedule`) and taken in one step by :meth:`Scheduler.swap`."""

    channels: Mapping[str, Channel]
    targets: Mapping[str, Target]
    onvif_groups: Mapping[str, list[str]]  # ONVIF URL -> the channels behind it
    new_entries: list[Entry]  # first due times of what the previous schedule did not have


def first_due(key: str, now: float, interval: float) -> float:
    phase = (zlib.crc32(key.encode()) % 100_000) / 100_000.0
    jitter = random.uniform(0.0, min(1.0, interval * 0.01))
    # the first round is spread over one interval, starting now
    return now + (phase * interval + jitter) % interval


def plan_schedule(cfg: Config, channels: Mapping[str, Channel], targets: Mapping[str, Target],
                  now: float, old: Schedule | None, pace: bool = False) -> Schedule:
    """The schedule of ``channels``: which are new since ``old`` (only those get a first due
    time; the others keep their place in the running heap). Pure: safe in a worker thread
    (``pace`` there: :mod:`camwatch.pacing`)."""
    interval = cfg.probing.interval
    entries: list[Entry] = []
    old_channels = old.channels if old is not None else {}
    seq = 0
    for cid, ch in paced(channels.items(), on=pace):
        if not (ch.rtsp_url or ch.onvif_url):
            continue  # reached only through a GB/T 28181 platform: nothing to probe
        old_ch = old_channels.get(cid)
        if old_ch is None or not (old_ch.rtsp_url or old_ch.onvif_url):
            seq += 1
            entries.append((first_due(cid, now, interval), -seq, MAIN, cid))
    groups: dict[str, list[str]] = {}
    if cfg.probing.onvif and cfg.probing.level is not Level.ONVIF:
        for cid, ch in channels.items():
            if ch.onvif_url:
                groups.setdefault(ch.onvif_url, []).append(cid)
    old_groups = old.onvif_groups if old is not None else {}
    for url in groups:
        if url not in old_groups:
            seq += 1
            entries.append((first_due(url, now, cfg.probing.onvif_interval), -seq, ONVIF, url))
    return Schedule(channels, targets, groups, entries)


class Scheduler:
    def __init__(self, cfg: Config, *,
                 admit: Callable[[Channel, float], bool],
                 deliver: Callable[[str, Channel, ProbeResult, float], None],
                 on_delay: Callable[[float], None],
                 clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.clock = clock
        self._admit = admit
        self._deliver = deliver
        self._on_delay = on_delay
        self.stats = ProbeStats()
        self.runner = self._make_runner()
        self.schedule: Schedule | None = None
        self._heap: list[Entry] = []
        self._seq = 0
        self._wake = asyncio.Event()

    def _make_runner(self) -> ProbeRunner:
        return ProbeRunner(probe_settings(self.cfg), self.cfg.probing.concurrency,
                           self.cfg.probing.per_host_concurrency)

    def configure(self, cfg: Config) -> None:
        """A reloaded config: new bounds, timeout and intervals from the next probe on."""
        self.cfg = cfg
        self.runner = self._make_runner()

    def swap(self, schedule: Schedule) -> None:
        """Take a schedule built by :func:`plan_schedule` against the current one."""
        self.schedule = schedule
        new = schedule.new_entries
        if new:
            if not self._heap:
                self._heap = sorted(new)
            elif len(new) * 8 < len(self._heap):  # a few added: O(k log n), not O(n)
                for entry in new:
                    heapq.heappush(self._heap, entry)
            else:
                self._heap.extend(new)
                heapq.heapify(self._heap)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def channels(self) -> Mapping[str, Channel]:
        return self.schedule.channels if self.schedule is not None else {}

    def interval_for(self, ch: Channel) -> float:
        for o in self.cfg.probing.overrides:
            if (o.project is None or o.project == ch.project) and \
                    (o.class_ is None or o.class_ == ch.klass):
                return o.interval
        return self.cfg.probing.interval

    def _push(self, due: float, lane: str, key: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, lane, key))

    def _pop_due(self, now: float, ahead: float = 0.0) -> tuple[str, Channel] | None:
        """The next probe due by ``now + ahead``, rescheduled for its next round; None when
        nothing is due."""
        sched = self.schedule
        if sched is None:
            return None
        while self._heap and self._heap[0][0] <= now + ahead:
            due, _, lane, key = heapq.heappop(self._heap)
            if lane == ONVIF:
                group = sched.onvif_groups.get(key)
                ch = sched.channels.get(group[0]) if group else None
            else:
                ch = sched.channels.get(key)
            if ch is None or (lane == MAIN and not (ch.rtsp_url or ch.onvif_url)):
                continue  # removed by a reload, or no longer has an address to probe
            interval = self.interval_for(ch) if lane == MAIN else \
                self.cfg.probing.onvif_interval
            nxt = due + interval
            if nxt < now:  # far behind: do not queue a burst of catch-up probes
                nxt = now + random.uniform(0, interval * 0.1)
            self._push(nxt, lane, key)
            self._on_delay(now - due)
            if lane == MAIN and not self._admit(ch, now):
                continue
            return lane, ch
        return None

    async def run(self, stop: asyncio.Event) -> None:
        """Probe until ``stop`` is set; then let the probes in flight finish (each is bounded
        by the probe timeout)."""
        loop = asyncio.get_running_loop()
        pending = asyncio.Semaphore(self.cfg.probing.concurrency * 2)
        launched = 0
        async with asyncio.TaskGroup() as tg:
            while not stop.is_set():
                if launched >= LAUNCH_BURST:
                    # a backlog (start-up, a reload's new channels, a loop that fell behind)
                    # would otherwise launch up to 2 x concurrency probes in one step of the
                    # loop, each tens of microseconds: tens of ms in which nothing else runs
                    launched = 0
                    await asyncio.sleep(0)
                now = self.clock()
                item = self._pop_due(now, SCHEDULE_AHEAD_S)
                if item is None:
                    # sleep until the next due time, a reload or stop: a timer and one
                    # future, as this runs once per batch
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
                launched += 1

    async def run_due(self) -> int:
        """Run every probe due at ``clock()`` and wait for them: a deterministic step for
        tests and benchmarks with an injected clock."""
        pending = asyncio.Semaphore(self.cfg.probing.concurrency * 2)
        n = 0
        async with asyncio.TaskGroup() as tg:
            while (item := self._pop_due(self.clock())) is not None:
                await pending.acquire()
                tg.create_task(self._probe(item[1], item[0], pending))
                n += 1
        return n

    async def _probe(self, ch: Channel, lane: str, pending: asyncio.Semaphore) -> None:
        try:
            sched = self.schedule
            target = sched.targets.get(ch.id) if sched is not None else None
            if target is None:
                return  # removed by a reload before it started
            level = self.cfg.probing.level if lane == MAIN else Level.ONVIF
            self.stats.in_flight += 1
            try:
                result = await self.runner.run(level, target)
            finally:
                self.stats.in_flight -= 1
            self.stats.count(result)
            self._deliver(lane, ch, result, self.clock())
        except Exception:  # never let one channel take the daemon down
            log.exception("internal error handling a probe", channel=ch.id)
        finally:
            pending.release()

