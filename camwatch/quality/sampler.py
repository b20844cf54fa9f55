"""The daemon's quality lane: one picture per channel per ``quality.interval``, on its own
cadence beside the probes.

Each channel keeps a fixed phase within its interval (the same stable hash the probe scheduler
uses, :func:`~camwatch.scheduler.first_due`), so 10,000 channels at an hour are ~3 samples a
second, evenly, never a herd. At most ``quality.max_concurrency`` samples run at once, and one
per host (an NVR's channels are sampled one after another: each sample holds an RTSP session
and a second or more of its encoder's output). Channels currently offline are not sampled
(their quality stays as it was; they do not count as intact anyway). The decoding runs in a
:class:`~camwatch.quality.decode.DecodePool` of ``quality.decode_workers`` threads.

A stop cancels the samples in flight: a sample may wait up to ``quality.timeout`` for a
keyframe, longer than a shutdown may take.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import structlog

from camwatch.inventory import Channel
from camwatch.malloc import set_picture_threshold
from camwatch.model import Quality, State
from camwatch.probes import ProbeSettings, Target
from camwatch.quality.config import QualityConfig
from camwatch.reports.period import zone
from camwatch.scheduler import first_due

if TYPE_CHECKING:
    from camwatch.book import ChannelBook
    from camwatch.config import Config
    from camwatch.quality.book import QualityBook
    from camwatch.quality.decode import DecodePool
    from camwatch.scheduler import Scheduler


class Engine(Protocol):
    """What the sampler needs of :class:`camwatch.engine.Engine` (which holds the sampler:
    a protocol here, not an import, keeps the two from importing each other)."""

    book: ChannelBook
    cfg: Config
    quality: QualityBook
    scheduler: Scheduler
    stopping: asyncio.Event

    async def wait(self, seconds: float | None) -> bool: ...

log = structlog.get_logger(__name__)

__all__ = ["NO_RTSP_URL", "QualitySampler", "interval_for", "period_of"]

NO_RTSP_URL = "no_rtsp_url"
IDLE_S = 5.0  # how often a disabled or empty lane looks at its config again


def period_of(ts: float, tz: dt.tzinfo) -> str:
    """``day`` (07:00-19:00 local time) or ``night``: a camera's sharpness differs between
    its colour day picture and its infrared night one, so each has its own blur baseline."""
    return "day" if 7 <= dt.datetime.fromtimestamp(ts, tz).hour < 19 else "night"


def interval_for(q: QualityConfig, ch: Channel) -> float:
    for o in q.overrides:
        if (o.project is None or o.project == ch.project) and \
                (o.class_ is None or o.class_ == ch.klass):
            return o.interval
    return q.interval


class QualitySampler:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self._heap: list[tuple[float, str]] = []
        self._planned: set[str] = set()
        self._generation = -1
        self._planned_cfg: QualityConfig | None = None
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._pool: DecodePool | None = None
        self._picture_width: int | None = None  # the width the malloc threshold is set for
        self._tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0

    def _plan(self, q: QualityConfig, now: float) -> None:
        """Give every channel not yet in the heap its first due time; a changed quality
        config plans everything afresh."""
        book = self.engine.book
        if q is not self._planned_cfg:
            self._heap, self._planned = [], set()
            self._planned_cfg = q
        for cid, ch in book.channels.items():
            if cid not in self._planned:
                self._planned.add(cid)
                heapq.heappush(self._heap, (first_due(cid, now, interval_for(q, ch)), cid))
        self._generation = book.generation

    async def run(self) -> None:
        eng = self.engine
        sem: asyncio.Semaphore | None = None
        limit = 0
        try:
            while not eng.stopping.is_set():
                q = eng.cfg.quality
                if not q.enabled:
                    self._planned_cfg = None
                    self._malloc_for(None)
                    if await eng.wait(IDLE_S):
                        return
                    continue
                if self._pool is None or self._pool.workers != q.decode_workers:
                    # PyAV and numpy (~35 MB) load here, once sampling is enabled
                    from camwatch.quality.decode import DecodePool

                    old, self._pool = self._pool, DecodePool(q.decode_workers)
                    if old is not None:
                        await asyncio.to_thread(old.close)
                self._malloc_for(q.width)
                if sem is None or limit != q.max_concurrency:
                    sem, limit = asyncio.Semaphore(q.max_concurrency), q.max_concurrency
                now = self.clock()
                if q is not self._planned_cfg or eng.book.generation != self._generation:
                    self._plan(q, now)
                if not self._heap or self._heap[0][0] > now:
                    wait = IDLE_S if not self._heap else min(IDLE_S, self._heap[0][0] - now)
                    if await eng.wait(max(0.01, wait)):
                        return
                    continue
                due, cid = heapq.heappop(self._heap)
                ch = eng.book.channels.get(cid)
                if ch is None:
                    self._planned.discard(cid)
                    continue
                interval = interval_for(q, ch)
                # the next round keeps the phase; a lane far behind starts again from now
                heapq.heappush(self._heap, (due + interval if due + interval > now
                                            else now + interval, cid))
                if eng.book.state_of(cid) == State.OFFLINE:
                    continue
                await sem.acquire()
                task = asyncio.create_task(self._one(ch, q, now, sem), name=f"quality:{cid}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._pool is not None:
                await asyncio.to_thread(self._pool.close)
                self._pool = None
            self._malloc_for(None)

    def _malloc_for(self, width: int | None) -> None:
        """The daemon's mmap threshold raised while pictures ``width`` wide are checked, and
        put back when sampling stops (:func:`camwatch.malloc.set_picture_threshold`)."""
        if width != self._picture_width:
            set_picture_threshold(width)
            self._picture_width = width

    async def _one(self, ch: Channel, q: QualityConfig, now: float, sem: asyncio.Semaphore
                   ) -> None:
        from camwatch.quality.sample import QualityVerdict, SampleSettings, sample

        self.in_flight += 1
        period = period_of(now, zone(self.engine.cfg.report.timezone))
        try:
            sched = self.engine.scheduler.schedule
            target: Target | None = sched.targets.get(ch.id) if sched is not None else None
            if target is None or not target.rtsp_url:
                v = QualityVerdict(ch.id, Quality.UNKNOWN, now, reason=NO_RTSP_URL,
                                   detail="no RTSP URL to sample a picture from")
            else:
                host = self._hosts.setdefault(ch.host, asyncio.Semaphore(1))
                async with host:
                    assert self._pool is not None
                    book = self.engine.quality
                    v = await sample(target, ProbeSettings(timeout_s=q.timeout,
                                                           user_agent=self.engine.cfg.probing
                                                           .user_agent),
                                     SampleSettings.of(q), self._pool,
                                     reference=book.reference(ch.id),
                                     blur_baseline=book.blur_baseline(ch.id, period),
                                     now=self.clock())
            self.engine.quality.record(v, period)
            if v.quality is Quality.DEGRADED:
                log.info("picture degraded", channel=ch.id, county=ch.county,
                         township=ch.township, faults=[f.check for f in v.faults])
            else:
                log.debug("picture sampled", channel=ch.id, quality=v.quality.value,
                          reason=v.reason)
        except Exception as exc:  # a camwatch bug: logged, the lane goes on
            log.error("quality sample failed internally", channel=ch.id,
                      error=type(exc).__name__, exc_info=True)
        finally:
            self.in_flight -= 1
            sem.release()
