"""The daemon's quality lane: one picture per channel per ``quality.interval``, on its own
cadence beside the probes.

Each channel keeps a fixed phase within its interval (the same stable hash the probe scheduler
uses, :func:`~camwatch.scheduler.first_due`), so 10,000 channels at an hour are ~3 samples a
second, evenly, never a herd. At most ``quality.max_concurrency`` samples run at once, and one
per host (an NVR's channels are sampled one after another: each sample holds an RTSP session
and a second or more of its encoder's output). Channels currently offline are not sampled
(their quality stays as it was; they do not count as intact anyway). The decoding runs in a
:class:`~camwatch.quality.decode.DecodePool` of ``quality.decode_workers`` threads.

Besides its cadence a channel is sampled when asked (:meth:`QualitySampler.request`): now,
for ``POST /api/channels/{id}/sample``; and, for a repair ticket claimed fixed, at the claim and
then every ``repairs.verify_for`` while the claim is being verified (the engine asks), so that
a repaired picture is verified in minutes rather than at the next samples of the cadence. Such
a sample does not move the channel's phase; a channel offline when its turn comes is not
sampled (a follow-up is still planned).

A stop cancels the samples in flight: a sample may wait up to ``quality.timeout`` for a
keyframe, longer than a shutdown may take.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
    from camwatch.quality.sample import QualityVerdict
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
# reasons of an unknown sample that a retry would only repeat
PERMANENT = frozenset({NO_RTSP_URL, "no_media"})
IDLE_S = 5.0  # how often a disabled or empty lane looks at its config again
LAG_WARN_S = 60.0  # a sample starting later than this (and 10 % of its interval): warned
# Requests waiting at most (one per channel; a request for a channel already waiting
# replaces it): what an API client can queue is bounded.
MAX_REQUESTS = 10_000
# The same channel is sampled on an API request at most once this often (a client asking in a
# loop would otherwise keep the camera streaming: a sample holds an RTSP session for seconds)
SAMPLE_SPACING_S = 10.0


@dataclass(slots=True)
class _Request:
    """A sample asked for out of the channel's cadence (:meth:`QualitySampler.request`)."""

    token: int  # the heap entry that is this request's (a newer request outdates older ones)
    every: float | None  # sampled again this long after each sample ...
    still: Callable[[str], bool] | None  # ... while this holds for the channel
    retry: bool = False  # the second try of a sample that could not be taken


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
        # samples asked for out of cadence: (due, token, channel id), and each channel's request
        self._asked: list[tuple[float, int, str]] = []
        self._requests: dict[str, _Request] = {}
        self._tokens = itertools.count()
        self.requested_total = 0  # samples taken on request
        self.lag_s = 0.0  # how late the last sample of the cadence started (0: keeping up)
        self._warned = -math.inf  # monotonic time of the last "behind" warning
        self._api_asked: dict[str, float] = {}  # channel -> when the API last asked for it
        self._woken = asyncio.Event()

    def asked_recently(self, cid: str) -> float:
        """Seconds until ``cid`` may be asked for by the API again (0: now)."""
        last = self._api_asked.get(cid)
        return 0.0 if last is None else max(0.0, last + SAMPLE_SPACING_S - self.clock())

    def request(self, ids: Iterable[str], *, every: float | None = None,
                still: Callable[[str], bool] | None = None, api: bool = False,
                after: float = 0.0, retry: bool = False) -> int:
        """Sample ``ids`` now, besides their cadence; with ``every``, again ``every`` seconds
        after each of those samples for as long as ``still(id)`` holds (asked when each is
        due, and after it). A channel already waiting for a request gets this one instead,
        except that a one-off request only brings a series' next sample forward (the series
        goes on after it). Returns how many were queued: ids not in the inventory, and any
        beyond :data:`MAX_REQUESTS` waiting, are not. Taken only while sampling is on.
        ``api``: asked by a client (:meth:`asked_recently` spaces those); ``after``: that much
        later than now; ``retry``: the second try of a sample that failed (not retried)."""
        if not self.engine.cfg.quality.enabled:
            return 0
        due = self.clock() + after
        n = 0
        for cid in ids:
            if cid not in self.engine.book.channels or (
                    cid not in self._requests and len(self._requests) >= MAX_REQUESTS):
                continue
            token = next(self._tokens)
            old = self._requests.get(cid)
            if old is not None and old.every is not None and every is None:
                old.token = token  # a series (a repair claim's): sooner, and it goes on after
            else:
                self._requests[cid] = _Request(token, every, still, retry)
            heapq.heappush(self._asked, (due, token, cid))
            n += 1
            if api:
                if len(self._api_asked) >= MAX_REQUESTS:  # bounded: the oldest go
                    cutoff = due - SAMPLE_SPACING_S
                    self._api_asked = {k: t for k, t in self._api_asked.items() if t > cutoff}
                self._api_asked[cid] = due
        if n:
            self.wake()  # the lane may be waiting for its next cadence sample
        return n

    def requested(self, cid: str) -> bool:
        """Whether a sample of ``cid`` is asked for: waiting, in flight, or a follow-up."""
        return cid in self._requests

    def _next_asked(self, now: float) -> tuple[str, _Request] | None:
        """The asked-for sample due at ``now``, if any (outdated heap entries dropped)."""
        while self._asked and self._asked[0][0] <= now:
            _, token, cid = heapq.heappop(self._asked)
            req = self._requests.get(cid)
            if req is None or req.token != token:
                continue
            if req.still is not None and not req.still(cid):
                del self._requests[cid]
                continue
            return cid, req
        return None

    def _again(self, cid: str, req: _Request, after: float) -> None:
        """After an asked-for sample: the next one ``req.every`` later, or none."""
        if self._requests.get(cid) is not req:
            return  # asked again meanwhile: the newer request stands
        if req.every is None or (req.still is not None and not req.still(cid)):
            del self._requests[cid]
            return
        req.token = next(self._tokens)
        heapq.heappush(self._asked, (after + req.every, req.token, cid))

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
                    self._asked, self._requests = [], {}
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
                asked = self._next_asked(now)
                if asked is not None:
                    cid, req = asked
                    ch = eng.book.channels.get(cid)
                    if ch is None:
                        del self._requests[cid]
                    elif eng.book.state_of(cid) == State.OFFLINE:
                        self._again(cid, req, now)
                    else:
                        await sem.acquire()
                        self._start(ch, q, now, sem, (cid, req))
                    continue
                nxt = min(self._heap[0][0] if self._heap else now + IDLE_S,
                          self._asked[0][0] if self._asked else now + IDLE_S)
                if nxt > now:
                    self.lag_s = 0.0  # nothing due: the lane keeps up
                    if await self._nap(min(IDLE_S, nxt - now)):
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
                self._behind(self.clock() - due, q, interval)
                self._start(ch, q, now, sem)
        finally:
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._pool is not None:
                await asyncio.to_thread(self._pool.close)
                self._pool = None
            self._malloc_for(None)

    def _behind(self, late: float, q: QualityConfig, interval: float) -> None:
        """Note how late a sample of the cadence starts (``camwatch_quality_lag_seconds``);
        warn, at most hourly, when the lane falls behind its cadence: every sample holds an
        RTSP session for seconds (two GOPs: 2-5 s), so ``quality.max_concurrency`` bounds the
        samples an hour (4 sessions of ~2.6 s: ~5,500), not the CPU."""
        self.lag_s = max(0.0, late)
        if self.lag_s <= max(LAG_WARN_S, 0.1 * interval):
            return
        now = time.monotonic()
        if now - self._warned < 3600.0:
            return
        self._warned = now
        log.warning("quality lane behind its cadence: raise quality.max_concurrency (each "
                    "sample holds an RTSP session for seconds) or the interval",
                    lag_s=round(self.lag_s, 1), max_concurrency=q.max_concurrency,
                    channels=len(self.engine.book.channels), interval_s=interval)

    def _start(self, ch: Channel, q: QualityConfig, now: float, sem: asyncio.Semaphore,
               asked: tuple[str, _Request] | None = None) -> None:
        task = asyncio.create_task(self._one(ch, q, now, sem, asked), name=f"quality:{ch.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def wake(self) -> None:
        """Look at the lane again now (a request came, or the engine is stopping)."""
        self._woken.set()

    async def _nap(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until :meth:`wake`; True when the engine is stopping."""
        if not self._woken.is_set():
            try:
                async with asyncio.timeout(max(0.01, seconds)):
                    await self._woken.wait()
            except TimeoutError:
                pass
        self._woken.clear()
        return self.engine.stopping.is_set()

    def _retry_later(self, v: QualityVerdict, q: QualityConfig,
                     asked: tuple[str, _Request] | None) -> None:
        """A sample that could not be taken (a timeout, a busy camera, a keyframe that did
        not decode) is tried once more ``quality.retry`` later rather than left unknown for
        a whole interval. Not a retry's retry, nor one of a series of follow-ups (a repair
        claim's: the next comes anyway), nor for a channel with no RTSP URL or no H.264 /
        H.265 video (trying again changes nothing), nor over another request waiting."""
        serving = asked[1] if asked is not None else None
        waiting = self._requests.get(v.channel_id)
        if (v.quality is not Quality.UNKNOWN or q.retry <= 0 or v.reason in PERMANENT
                or (serving is not None and (serving.retry or serving.every is not None))
                or (waiting is not None and waiting is not serving)):
            return
        self.request([v.channel_id], after=q.retry, retry=True)

    def _malloc_for(self, width: int | None) -> None:
        """The daemon's mmap threshold raised while pictures ``width`` wide are checked, and
        put back when sampling stops (:func:`camwatch.malloc.set_picture_threshold`)."""
        if width != self._picture_width:
            set_picture_threshold(width)
            self._picture_width = width

    async def _one(self, ch: Channel, q: QualityConfig, now: float, sem: asyncio.Semaphore,
                   asked: tuple[str, _Request] | None = None) -> None:
        from camwatch.quality.sample import QualityVerdict, SampleSettings, sample

        self.in_flight += 1
        taken = now
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
            taken = v.ts
            self.engine.quality.record(v, period)
            self._retry_later(v, q, asked)
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
            if asked is not None:
                self.requested_total += 1
                self._again(*asked, taken)
