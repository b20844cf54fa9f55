"""Channel states from probe results: hysteresis, host_down, flapping, unknown.

One pure function, :func:`apply`, moves a channel's :class:`ChannelState` on by one verdict
and returns the :class:`Transition` it caused, if any. No I/O, no clock: ``now`` is passed in,
so the engine's tests drive time.

Rules (the domain notes' definitions of online, offline and unknown):
- offline after ``fail_threshold`` consecutive failures (default 3); online again after
  ``recover_threshold`` successes (default 1). A never-probed channel is ``unknown`` and goes
  online on its first success, offline only after the threshold like any other.
- a verdict of "could not judge" (the prober itself is unhealthy) makes the channel ``unknown``
  at once, resetting the counters: it is neither online nor offline for the rates.
- a channel whose state changes more than ``flap_max_changes`` times within ``flap_window`` is
  *flapping*: it is held offline with reason ``flapping`` (one transition, not a storm) until
  its verdicts have changed at most half as often for a whole window.
- the reason of an offline channel follows its latest failure without a new transition.
- a ``firm`` failure (a source that applied its own hysteresis, such as a GB/T 28181
  platform's OFF) takes the channel offline at once.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from camwatch.config import StatesConfig
from camwatch.model import UNJUDGED, ChannelState, State, Transition, Verdict, Why

ONLINE, OFFLINE, UNKNOWN = State.ONLINE, State.OFFLINE, State.UNKNOWN
HOST_DOWN = Why.HOST_DOWN
FLAPPING = Why.FLAPPING
PROBER = Why.PROBER_UNHEALTHY

__all__ = ["UNJUDGED", "Flaps", "Verdict", "apply"]


class Flaps:
    """Times at which a channel's raw verdict flipped, within the window (memory only: after
    a restart flapping detection starts afresh, which errs on the side of reporting)."""

    __slots__ = ("last_ok", "times")

    def __init__(self) -> None:
        # Made at the first flip: most channels never flip, and an empty deque costs 760
        # bytes (one block), 76 MB over 100,000 channels.
        self.times: deque[float] | None = None
        self.last_ok: bool | None = None

    def record(self, ok: bool, now: float, window: float) -> int:
        times = self.times
        if self.last_ok is not None and ok != self.last_ok:
            if times is None:
                times = self.times = deque()
            times.append(now)
        self.last_ok = ok
        if times is None:
            return 0
        while times and times[0] < now - window:
            times.popleft()
        return len(times)


def _details(v: Verdict) -> dict[str, Any]:
    r = v.result
    if r is None:  # a source without a probe result (a platform's status ...)
        return {"reason": v.reason, **({"detail": v.detail} if v.detail else {})}
    out: dict[str, Any] = {"kind": r.kind, "latency_ms": round(r.latency_s * 1000, 1)}
    if r.reason is not None:
        out["probe_reason"] = r.reason.value
    if r.detail:
        out["detail"] = r.detail
    if r.phases:
        out["phases_ms"] = {k: round(v * 1000, 1) for k, v in r.phases.items()}
    return out


def _move(st: ChannelState, to: str, reason: str | None, now: float,
          v: Verdict) -> Transition:
    t = Transition(st.channel_id, now, st.state, to, reason, _details(v))
    st.state, st.reason, st.since = to, reason, now
    return t


def apply(st: ChannelState, v: Verdict, now: float, policy: StatesConfig,
          flaps: Flaps | None = None) -> Transition | None:
    """Move ``st`` on by verdict ``v`` at time ``now``; return the transition, if any."""
    r = v.result
    if r is not None:
        st.last_probe = now
        st.latency_ms = round(r.latency_s * 1000, 1)
        st.detail = r.detail
        if r.clock_drift_s is not None:
            st.clock_drift_s = r.clock_drift_s
    if v.ok is None:
        st.fails = st.oks = 0
        if st.state != UNKNOWN:
            return _move(st, UNKNOWN, v.reason, now, v)
        st.reason = v.reason
        return None

    if v.ok:
        st.oks += 1
        st.fails = 0
        st.last_ok = now
    else:
        st.fails += 1
        st.oks = 0

    if flaps is not None:
        changes = flaps.record(v.ok, now, policy.flap_window)
        if not st.flapping and changes > policy.flap_max_changes:
            st.flapping = True
            if st.state != OFFLINE or st.reason != FLAPPING:
                return _move(st, OFFLINE, FLAPPING, now, v)
            return None
        if st.flapping:
            if changes > policy.flap_max_changes // 2:
                return None  # still flapping: held offline, no transition
            st.flapping = False  # calm again: fall through to the normal rules

    if v.ok:
        if st.state != ONLINE and (st.state == UNKNOWN or st.oks >= policy.recover_threshold):
            return _move(st, ONLINE, None, now, v)
        return None
    if st.state == OFFLINE:
        st.reason = v.reason  # follow the latest cause (timeout -> auth ...) quietly
        return None
    if st.fails >= policy.fail_threshold or v.firm:
        return _move(st, OFFLINE, v.reason, now, v)
    return None
