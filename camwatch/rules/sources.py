"""How verdicts from several sources combine: the deepest evidence wins.

A channel may be judged by several sources at their own cadences: today the RTSP/ONVIF probes
at the configured level, next a GB/T 28181 platform's catalog status and the video-quality
diagnosis. Their evidence is not equal: a decoded picture proves more than a first RTP packet,
which proves more than a DESCRIBE answer, than an ONVIF reply, than a platform saying "ON",
than a TCP connect (:class:`~camwatch.model.Source` orders them so).

The rule, one pure function: a verdict moves the channel's state unless a *deeper* source
judged the channel recently (within that source's freshness window, about two of its
intervals). So a platform reporting OFF does not overrule a DESCRIBE that succeeded a minute
ago, and the platform's word counts again when the deeper probe stops (the channel lost its
RTSP address, or that lane was turned off).
"""

from __future__ import annotations

from collections.abc import Mapping

from camwatch.model import Source


def admits(source: Source, seen: Mapping[Source, float], now: float,
           fresh_for: Mapping[Source, float], default_fresh_s: float = 300.0) -> bool:
    """May a verdict from ``source`` at ``now`` move the state, given when each source last
    judged the channel (``seen``)?"""
    for other, ts in seen.items():
        if other > source and now - ts <= fresh_for.get(other, default_fresh_s):
            return False
    return True
