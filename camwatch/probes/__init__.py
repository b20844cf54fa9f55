"""Probes: how camwatch talks to a device.

One module per kind (``tcp``, ``rtsp``, ``onvif``), all with the same signature::

    async def probe(target: Target, settings: ProbeSettings) -> ProbeResult

A probe makes exactly one attempt, never retries and never raises for a camera-side failure:
it returns a :class:`ProbeResult` whose ``reason`` is one of :class:`Reason`. The caller (the
scheduler or ``camwatch sweep``) owns the overall timeout and wraps every call in
``asyncio.timeout``, except the RTSP probes', which run their whole exchange under that same
deadline themselves (``sweep.SELF_TIMED``: one timer per probe, not two); probes additionally
bound every read in bytes and time so that a hostile device cannot hold memory or a socket.

``PROBERS`` maps each :class:`Level` to the function that judges a channel at that level.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from camwatch.probes.result import Level, ProbeResult, Reason
from camwatch.secrets import Secret

__all__ = [
    "PROBERS",
    "Level",
    "ProbeResult",
    "ProbeSettings",
    "Prober",
    "Reason",
    "Target",
    "get_prober",
]


@dataclass(frozen=True, slots=True)
class Target:
    """One channel as a probe sees it: addresses and resolved credentials, nothing else."""

    channel_id: str
    host: str
    rtsp_url: str | None = None  # never carries user:pass@ (see secrets.split_userinfo)
    onvif_url: str | None = None  # e.g. http://127.0.0.5:8080/onvif/device_service
    username: str | None = None
    password: Secret | None = None


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """Knobs shared by every probe; built once from the validated config."""

    timeout_s: float = 5.0
    max_header_bytes: int = 64 * 1024
    max_sdp_bytes: int = 64 * 1024
    max_soap_bytes: int = 1024 * 1024
    user_agent: str = "camwatch"
    clock_skew_threshold_s: float = 5.0
    onvif_device_info: bool = True


Prober = Callable[[Target, ProbeSettings], Awaitable[ProbeResult]]


def _load(level: Level) -> Prober:
    """Import only the module ``level`` needs: the ONVIF probe brings aiohttp (~0.15 CPU s),
    which a sweep or a daemon probing RTSP alone does not use."""
    if level is Level.ONVIF:
        import camwatch.probes.onvif as onvif_probe

        return onvif_probe.probe
    if level is Level.TCP:
        from camwatch.probes import tcp

        return tcp.probe
    from camwatch.probes import rtsp

    return rtsp.probe if level is Level.DESCRIBE else rtsp.probe_stream


PROBERS: dict[Level, Prober] = {}  # filled as levels are first asked for


def get_prober(level: Level | str) -> Prober:
    """The probe function for ``level``; ``ValueError`` for an unknown name (config validation
    rejects those at load, so this only fires on a programming error)."""
    level = Level(level)
    prober = PROBERS.get(level)
    if prober is None:
        prober = PROBERS[level] = _load(level)
    return prober
