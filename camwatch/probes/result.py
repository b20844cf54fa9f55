"""The one result type every probe returns, and the closed set of failure reasons."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Reason(enum.StrEnum):
    """Why a probe failed. Closed: metric labels and alert texts rely on this exact set.

    ``internal`` (a camwatch bug) and ``local`` (camwatch out of file descriptors, memory ...)
    are never a camera fault: a channel failing for them is left unjudged.
    """

    TIMEOUT = "timeout"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    AUTH = "auth"
    PROTOCOL = "protocol"
    NOT_FOUND = "not_found"
    NO_MEDIA = "no_media"
    BUSY = "busy"
    CLOCK_SKEW = "clock_skew"
    INTERNAL = "internal"
    LOCAL = "local"  # camwatch's own resources ran out (e.g. no file descriptors left)


class Level(enum.StrEnum):
    """How deep a probe looks, cheapest first. A channel's verdict is taken at one level."""

    TCP = "tcp"
    ONVIF = "onvif"
    DESCRIBE = "describe"
    STREAM = "stream"


@dataclass(slots=True)
class ProbeResult:
    """The outcome of one attempt against one channel.

    ``phases`` maps a phase name (``connect``, ``options``, ``describe``, ``setup``, ``play``,
    ``first_packet``, ``soap`` ...) to its duration in seconds; phases that ran are recorded
    even when the probe failed. ``detail`` is a short, secret-free human text for logs and the
    API (never a metric label). ``info`` carries what was learnt: media, device info, drift.
    """

    ok: bool
    kind: str
    reason: Reason | None = None
    latency_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    detail: str = ""
    clock_drift_s: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def success(cls, kind: str, **kw: Any) -> ProbeResult:
        return cls(ok=True, kind=kind, **kw)

    @classmethod
    def failure(cls, kind: str, reason: Reason, detail: str = "", **kw: Any) -> ProbeResult:
        return cls(ok=False, kind=kind, reason=reason, detail=detail, **kw)
