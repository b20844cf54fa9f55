"""camwatch's domain types, in one place: what every layer (scheduler, channel book, evaluator,
store, sinks, reports) passes to the next.

- :class:`State` and :class:`Why` are closed ``StrEnum``\\ s: their values are what the store
  holds, what metric labels and alert payloads carry, and what the JSON API returns, so they
  never change; code compares against the members, never against string literals.
- :data:`REASON_ZH` is the one table of the Chinese names people read (bulletin, robot
  messages, ``camwatch status``, Grafana legends).
- :class:`Source` says where a verdict came from, deepest evidence first; the rule that
  combines sources lives in :mod:`camwatch.rules.sources`.
- :class:`Verdict`, :class:`ChannelState`, :class:`Transition`: a judgement of one channel,
  what the book keeps of each channel, and one change of state (the log the bulletin reads).

Nothing here does I/O or imports another camwatch module but the probes' result type.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from camwatch.probes.result import ProbeResult, Reason


class State(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"  # never judged, or camwatch could not judge (left out of rates)


class Quality(enum.StrEnum):
    """A channel's picture, beside its :class:`State` (video quality diagnosis, 视频质量诊断).
    Separate on purpose: a degraded picture is an online camera (在线率) that is not intact
    (完好率); a picture that could not be sampled is ``unknown``, never a reason for offline."""

    OK = "ok"
    DEGRADED = "degraded"
    UNKNOWN = "unknown"


class Why(enum.StrEnum):
    """Why a channel is offline or unknown: every probe :class:`~camwatch.probes.Reason`,
    plus what the book concludes beyond one probe."""

    # a probe's own reasons (camwatch.probes.Reason)
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
    LOCAL = "local"
    # the book's conclusions
    HOST_DOWN = "host_down"  # the NVR/uplink in front of the channel is down
    FLAPPING = "flapping"  # held offline while its verdicts keep changing
    PROBER_UNHEALTHY = "prober_unhealthy"  # unknown: camwatch's own trouble
    # a GB/T 28181 lower platform's word (camwatch.gb28181)
    GB_OFF = "gb_off"  # the platform lists the channel OFF
    VIDEO_LOST = "video_lost"  # catalog event VLOST
    GB_DEFECT = "gb_defect"  # catalog event DEFECT
    PLATFORM_DOWN = "platform_down"  # the platform it is reached through stopped keepalives


#: The Chinese name of every reason, wherever a person reads one.
REASON_ZH: dict[str, str] = {
    Why.TIMEOUT: "超时",
    Why.REFUSED: "拒绝连接",
    Why.UNREACHABLE: "网络不可达",
    Why.AUTH: "认证失败",
    Why.PROTOCOL: "协议异常",
    Why.NOT_FOUND: "地址不存在",
    Why.NO_MEDIA: "无视频流",
    Why.BUSY: "设备繁忙",
    Why.CLOCK_SKEW: "时钟偏差",
    Why.INTERNAL: "camwatch 内部错误",
    Why.LOCAL: "监测端资源不足",
    Why.HOST_DOWN: "上级设备离线",
    Why.FLAPPING: "频繁上下线",
    Why.PROBER_UNHEALTHY: "监测端异常",
    Why.GB_OFF: "平台报告离线",
    Why.VIDEO_LOST: "视频丢失",
    Why.GB_DEFECT: "设备故障",
    Why.PLATFORM_DOWN: "下级平台离线",
}

#: Probe reasons that say nothing about the camera: camwatch itself is in trouble (a bug, or
#: out of file descriptors). A failure for one of them leaves the channel unjudged.
OWN_TROUBLE = frozenset({Reason.INTERNAL, Reason.LOCAL})
#: Probe reasons that are the network's, not the device's: they count towards a host being
#: down and towards the prober's own uplink being down.
CONNECTION_REASONS = frozenset({Reason.TIMEOUT, Reason.REFUSED, Reason.UNREACHABLE})


def reason_zh(reason: str | None) -> str:
    """``"refused"`` -> ``"拒绝连接"``; an unknown code is shown as it is; None as ``-``."""
    if not reason:
        return "-"
    return REASON_ZH.get(reason, reason)


# Scope dimensions of the rates, coarse to fine. A scope is a tuple of these keys' values.
SCOPES: tuple[tuple[str, ...], ...] = (
    (),
    ("county",),
    ("county", "township"),
    ("county", "township", "village"),
    ("operator",),
    ("county", "operator"),
    ("county", "township", "operator"),
)

CLASS_NAMES: dict[int, str] = {1: "一类", 2: "二类", 3: "三类", 4: "公安内部", 9: "其他"}


class Source(enum.IntEnum):
    """Where a verdict came from. The value is the depth of the evidence: a decoded picture
    beats a first RTP packet beats a DESCRIBE beats ONVIF beats a platform's status beats a
    TCP connect (see :mod:`camwatch.rules.sources`)."""

    TCP = 10
    GB28181 = 20
    ONVIF = 30
    DESCRIBE = 40
    STREAM = 50
    QUALITY = 60

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Verdict:
    """One judgement of one channel: ``ok`` True/False, or None for "could not judge".

    ``result`` is the probe's full result when there was one (phases, latency, detail for the
    transition log); sources without a probe leave it None and fill ``detail``/``latency_s``.
    """

    ok: bool | None
    reason: str | None = None
    result: ProbeResult | None = None
    source: Source = Source.DESCRIBE
    detail: str = ""
    # the source already applied its own hysteresis (a platform's OFF): offline at once
    firm: bool = False

    @classmethod
    def of(cls, result: ProbeResult, source: Source = Source.DESCRIBE,
           host_down: bool = False) -> Verdict:
        if result.ok:
            return cls(True, None, result, source)
        if result.reason in OWN_TROUBLE:
            return cls(None, Why.PROBER_UNHEALTHY, result, source)
        reason = Why.HOST_DOWN if host_down else (result.reason.value if result.reason
                                                  else None)
        return cls(False, reason, result, source)


#: "Could not judge": the prober itself is unhealthy.
UNJUDGED = Verdict(None, Why.PROBER_UNHEALTHY)


# the info of a state with none: one read-only object instead of an empty dict per channel
# (6 MB at 100,000 channels)
NO_INFO: Mapping[str, Any] = MappingProxyType({})


@dataclass(slots=True)
class ChannelState:
    """The current verdict of one channel, as the book keeps it and the store persists it."""

    channel_id: str
    state: str = State.UNKNOWN
    reason: str | None = None
    since: float | None = None  # when ``state`` began
    last_probe: float | None = None
    last_ok: float | None = None
    fails: int = 0  # consecutive failed verdicts
    oks: int = 0  # consecutive successful verdicts
    latency_ms: float | None = None
    clock_drift_s: float | None = None
    flapping: bool = False
    detail: str = ""
    # device info, media; replaced whole, never changed in place (states share NO_INFO)
    info: Mapping[str, Any] = field(default_factory=lambda: NO_INFO)

    def copy(self) -> ChannelState:
        """A shallow copy, as ``dataclasses.replace(self)`` makes it, at a fifth of its cost:
        the store writer gets copies of the changed states every second and of all 100,000 at
        a full flush."""
        return ChannelState(self.channel_id, self.state, self.reason, self.since,
                            self.last_probe, self.last_ok, self.fails, self.oks,
                            self.latency_ms, self.clock_drift_s, self.flapping, self.detail,
                            self.info)


@dataclass(frozen=True, slots=True)
class Transition:
    channel_id: str
    ts: float
    from_state: str
    to_state: str
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


# A transition without its detail, as a plain tuple: (channel_id, ts, from_state, to_state,
# reason). What bulk readers (the monthly bulletin) stream: no object and no JSON per row.
TransitionRow = tuple[str, float, str, str, str | None]

#: A state's slot in per-scope counters: online 0, offline 1, anything else (unknown) 2.
STATE_INDEX: dict[str, int] = {State.ONLINE: 0, State.OFFLINE: 1}


def state_index(state: str) -> int:
    return STATE_INDEX.get(state, 2)
