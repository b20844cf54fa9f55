"""One quality sample of one channel: keyframe(s) over RTSP, decode, every check, a verdict.

The fetch runs on the event loop (it is I/O); decoding, scaling, the checks and the thumbnail
JPEG run together as one job in the :class:`~camwatch.quality.decode.DecodePool`. Never
raises for a camera-side problem: a sample that could not be taken is ``unknown`` with the
reason (the probe's, or ``decode`` for a keyframe that does not decode).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from camwatch.model import Quality, Source
from camwatch.probes import ProbeSettings, Target
from camwatch.probes.keyframe import fetch_keyframes
from camwatch.probes.rtp import Keyframe
from camwatch.quality.checks import Diagnosis, Fault, Grey, Thresholds, diagnose, thumbnail
from camwatch.quality.config import QualityConfig
from camwatch.quality.decode import DecodeError, DecodePool, decode, decode_grey, thumbnail_jpeg

__all__ = ["DECODE", "QualityVerdict", "SampleSettings", "sample"]

DECODE = "decode"  # the reason of a sample whose keyframe did not decode


@dataclass(frozen=True, slots=True)
class SampleSettings:
    thresholds: Thresholds = field(default_factory=Thresholds)
    enabled: Mapping[str, bool] = field(default_factory=dict)
    width: int = 640
    second_frame: bool = True
    max_bytes: int = 4 * 1024 * 1024
    jpeg_qscale: int = 8

    @classmethod
    def of(cls, q: QualityConfig) -> SampleSettings:
        return cls(q.thresholds.thresholds(), {str(k): v for k, v in q.checks.items()}, q.width,
                   q.second_frame,
                   q.max_bytes, q.thumbnail_quality)


@dataclass(slots=True)
class QualityVerdict:
    """The outcome of one sample (``source`` is always :attr:`Source.QUALITY`)."""

    channel_id: str
    quality: Quality
    ts: float
    faults: tuple[Fault, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)
    reason: str | None = None  # why unknown
    detail: str = ""
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    latency_ms: float = 0.0
    frames: int = 0
    jpeg: bytes | None = None
    thumb: Grey | None = None  # the 64x36 thumbnail (the scene reference, when it is the first)
    source: Source = Source.QUALITY

    def json(self) -> dict[str, Any]:
        """The ``camwatch diagnose --json`` / API form."""
        out: dict[str, Any] = {
            "id": self.channel_id, "quality": self.quality.value,
            "faults": [{"check": f.check, "score": f.score} for f in self.faults],
            "width": self.width, "height": self.height, "codec": self.codec,
            "latency_ms": round(self.latency_ms, 1),
        }
        if self.reason:
            out["reason"] = self.reason
            out["detail"] = self.detail
        if self.scores:
            out["scores"] = dict(self.scores)
        return out


def _process(frames: list[Keyframe], s: SampleSettings, reference: Grey | None,
             blur_baseline: float | None = None) -> tuple[Diagnosis, int, int, bytes, Grey]:
    """Runs in a pool thread: decode, scale, check, thumbnail."""
    first = decode(frames[0], s.width)
    previous = None
    if len(frames) > 1:
        try:
            previous = decode_grey(frames[1], s.width)
        except DecodeError:
            previous = None  # the first picture still stands; only the freeze check is lost
    thumb = thumbnail(first.frame.grey)
    # ``previous`` is the later picture here; frozen() is symmetric
    d = diagnose(first.frame, s.thresholds, previous=previous, reference=reference,
                 enabled=s.enabled, blur_baseline=blur_baseline, thumb=thumb)
    return d, first.width, first.height, thumbnail_jpeg(first, s.jpeg_qscale), thumb


async def sample(target: Target, probe: ProbeSettings, s: SampleSettings, pool: DecodePool,
                 *, reference: Grey | None = None, blur_baseline: float | None = None,
                 now: float | None = None) -> QualityVerdict:
    ts = time.time() if now is None else now
    t0 = time.perf_counter()
    fetched = await fetch_keyframes(target, probe, count=2 if s.second_frame else 1,
                                    max_bytes=s.max_bytes)
    r = fetched.result
    if not r.ok:
        return QualityVerdict(target.channel_id, Quality.UNKNOWN, ts,
                              reason=r.reason.value if r.reason else None, detail=r.detail,
                              codec=fetched.codec, latency_ms=r.latency_s * 1000.0)
    frames = fetched.keyframes
    try:
        d, w, h, jpg, thumb = await pool.run(
            lambda: _process(frames, s, reference, blur_baseline))
    except DecodeError as exc:
        return QualityVerdict(target.channel_id, Quality.UNKNOWN, ts, reason=DECODE,
                              detail=str(exc)[:200], codec=fetched.codec,
                              latency_ms=(time.perf_counter() - t0) * 1000.0)
    return QualityVerdict(
        target.channel_id, Quality.OK if d.ok else Quality.DEGRADED, ts, faults=d.faults,
        scores=d.scores, width=w, height=h, codec=fetched.codec,
        latency_ms=(time.perf_counter() - t0) * 1000.0, frames=len(frames), jpeg=jpg,
        thumb=thumb)
