"""Counters the prober keeps for the metrics: probes by outcome, phase-duration histograms.
Plain data, moved on the probe path in O(1) and read by :mod:`camwatch.sinks.metrics` at
scrape time (no I/O, no prometheus-client objects on the hot path)."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from camwatch.probes.result import ProbeResult, Reason

PHASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """A Prometheus histogram's state: one counter per bucket, the sum and the count.

    ``observe`` is O(log buckets); rendering is O(buckets), whatever the number of samples."""

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: Sequence[float] = PHASE_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf only
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` for every bucket, ending with ``+Inf``."""
        out = []
        total = 0
        for le, n in zip((*map(str, self.buckets), "+Inf"), self.counts, strict=True):
            total += n
            out.append((le, total))
        return out


class PhaseHistograms(dict[str, Histogram]):
    """Probe phase durations, one :class:`Histogram` per phase name."""

    def observe(self, phase: str, seconds: float) -> None:
        h = self.get(phase)
        if h is None:
            h = self[phase] = Histogram()
        h.observe(seconds)



@dataclass(slots=True)
class ProbeStats:
    """What the scheduler counts of the probes it runs."""

    probes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, reason|"ok")
    phase_seconds: PhaseHistograms = field(default_factory=PhaseHistograms)
    in_flight: int = 0

    def count(self, r: ProbeResult) -> None:
        self.probes[(r.kind, "ok" if r.ok else (r.reason or Reason.INTERNAL).value)] += 1
        for phase, secs in r.phases.items():
            self.phase_seconds.observe(phase, secs)
