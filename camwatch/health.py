"""camwatch's own health: can its verdicts be trusted right now?

When camwatch itself is in trouble, failures are not the cameras' and must not be reported as
theirs. :class:`SelfHealth` watches

- the event loop's lag (measured by a task that sleeps a quarter second and sees how late it
  wakes). A late loop makes *timeouts* unreliable, nothing else: a refused connection is a
  refused connection however late it is read;
- the sweep's lag behind its schedule (the scheduler reports each probe's delay);
- the uplink: with ``probing.uplink_check`` configured, TCP connects to those addresses decide;
  otherwise, the recent results failing with timeout/unreachable in every area at once look
  like camwatch's own uplink going down, and such failures are not believed;
- the store: writes failing (disk full, read-only, locked) are a problem to report, though
  verdicts are still right.

:meth:`SelfHealth.problems` says why camwatch cannot be trusted (for ``/healthz``, the metrics
and the ``prober_unhealthy`` alert); :meth:`SelfHealth.distrusts` whether one failure must be
left unjudged.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence

import structlog

from camwatch.probes import ProbeSettings, Reason, Target
from camwatch.stats import Histogram

log = structlog.get_logger(__name__)

LOOP_LAG_LIMIT_S = 1.0
LOOP_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_UPLINK_REASONS = frozenset({Reason.TIMEOUT.value, Reason.UNREACHABLE.value})


class SelfHealth:
    def __init__(self, interval: float, uplink_check: Sequence[str] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.interval = interval
        self.uplink_check = tuple(uplink_check)
        self.clock = clock
        self.loop_lag_s = 0.0
        self.max_loop_lag_s = 0.0  # the largest since start
        self.loop_lags = Histogram(LOOP_LAG_BUCKETS)  # every sample, for its p99
        self._lags: deque[float] = deque(maxlen=500)  # probes' delays behind their due time
        # (time, area, ok, reason) of the latest results, for the uplink heuristic
        self._recent: deque[tuple[float, str, bool, str | None]] = deque(maxlen=5000)
        self._uplink_ok: bool | None = None  # None: not checked (yet)
        self._judged_at = float("-inf")
        self._judged: list[str] = []
        # other components' problems: name -> a function returning a text or None
        self._extra: dict[str, Callable[[], str | None]] = {}

    def configure(self, interval: float, uplink_check: Sequence[str]) -> None:
        self.interval = interval
        self.uplink_check = tuple(uplink_check)
        self._judged_at = float("-inf")

    def watch(self, name: str, problem: Callable[[], str | None]) -> None:
        """Report ``problem()`` (when not None) among the problems, e.g. the store's."""
        self._extra[name] = problem

    # --- what the scheduler and the pipeline report --------------------------------------------

    def probe_delay(self, seconds: float) -> None:
        self._lags.append(max(0.0, seconds))

    def result(self, now: float, area: str, ok: bool, reason: str | None) -> None:
        self._recent.append((now, area, ok, reason))

    # --- judgements ----------------------------------------------------------------------------

    def sweep_lag(self) -> float:
        """Median delay of a probe behind its due time, over the latest 500."""
        if not self._lags:
            return 0.0
        ordered = sorted(self._lags)
        return ordered[len(ordered) // 2]

    def distrusts(self, reason: str | None, now: float) -> bool:
        """Must a failure for ``reason`` be left unjudged (camwatch's trouble, not the
        camera's)?"""
        if reason not in _UPLINK_REASONS and reason != Reason.REFUSED:
            return False
        problems = self._verdict_problems(now)
        if not problems:
            return False
        if reason == Reason.TIMEOUT:
            return True  # a late loop, a lagging sweep or a dead uplink all make timeouts
        # refused / unreachable: only the uplink being down explains them
        return any("uplink" in p for p in problems)

    def unhealthy(self, now: float) -> bool:
        return bool(self._verdict_problems(now))

    def verdict_problems(self, now: float | None = None) -> list[str]:
        """Why failures cannot be believed right now (the prober's own health, without the
        store's and other components' problems)."""
        return list(self._verdict_problems(self.clock() if now is None else now))

    def _verdict_problems(self, now: float) -> list[str]:
        # at 1,700 results a second, judged once a second
        if now - self._judged_at >= 1.0 or now < self._judged_at:
            self._judged_at = now
            self._judged = self._compute(now)
        return self._judged

    def problems(self, now: float | None = None) -> list[str]:
        """Everything wrong with camwatch right now (empty when healthy)."""
        now = self.clock() if now is None else now
        self._judged_at = now
        self._judged = self._compute(now)
        out = list(self._judged)
        for problem in self._extra.values():
            text = problem()
            if text:
                out.append(text)
        return out

    def _compute(self, now: float) -> list[str]:
        problems = []
        if self.loop_lag_s > LOOP_LAG_LIMIT_S:
            problems.append(f"event loop lagging {self.loop_lag_s:.1f}s")
        lag = self.sweep_lag()
        if lag > self.interval:
            problems.append(f"sweep {lag:.0f}s behind its {self.interval:g}s interval")
        if self.uplink_check:
            # an explicit check decides: a county-wide outage with our uplink fine is real
            if self._uplink_ok is False:
                problems.append("uplink check failed: none of "
                                f"{', '.join(self.uplink_check)} reachable")
            return problems
        # no check configured: judge from the results. The last ones (at most 5,000, at most
        # one interval old) failing in every area at once look like our own uplink.
        window = [r for r in self._recent if r[0] >= now - max(30.0, self.interval)]
        if len(window) >= 50:
            areas = {r[1] for r in window}
            failing = {r[1] for r in window if not r[2] and r[3] in _UPLINK_REASONS}
            bad = sum(1 for r in window if not r[2] and r[3] in _UPLINK_REASONS)
            if bad / len(window) >= 0.9 and len(areas) >= 2 and failing == areas:
                problems.append(f"{bad} of {len(window)} recent probes in every area failed "
                                f"with timeout/unreachable: own uplink down?")
        return problems

    # --- the tasks -----------------------------------------------------------------------------

    async def watch_loop(self, stop: asyncio.Event, step: float = 0.25) -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            await asyncio.sleep(step)
            self.loop_lag_s = max(0.0, time.monotonic() - t0 - step)
            self.max_loop_lag_s = max(self.max_loop_lag_s, self.loop_lag_s)
            self.loop_lags.observe(self.loop_lag_s)

    async def check_uplink(self, settings: ProbeSettings) -> bool:
        """TCP-connect to the ``probing.uplink_check`` addresses; the uplink is fine when any
        answers (refused counts as reached: a host answered)."""
        from camwatch.probes import tcp

        async def reach(address: str) -> bool:
            host, _, port = address.rpartition(":")
            target = Target(channel_id=f"uplink:{address}", host=host.strip("[]"),
                            rtsp_url=f"rtsp://{host}:{port}/")
            r = await tcp.probe(target, settings)
            return r.ok or r.reason is Reason.REFUSED

        results = await asyncio.gather(*(reach(a) for a in self.uplink_check))
        ok = any(results)
        if ok != self._uplink_ok:
            (log.info if ok else log.warning)("uplink check", reachable=ok)
        self._uplink_ok = ok
        self._judged_at = float("-inf")  # judge afresh on the next result
        return ok

