"""TCP connect probe: the cheapest reachability check (blackbox_exporter's ``tcp`` without a
query). Port comes from the RTSP URL (default 554), else the ONVIF URL (default 80)."""

from __future__ import annotations

import asyncio
import errno
import time
from urllib.parse import urlsplit

from camwatch.probes import ProbeSettings, Target
from camwatch.probes.result import ProbeResult, Reason

KIND = "tcp"


def endpoint(target: Target) -> tuple[str, int] | None:
    """The (host, port) to check, or None when the channel has no address."""
    for url, default in ((target.rtsp_url, 554), (target.onvif_url, 80)):
        if url:
            parts = urlsplit(url)
            if parts.hostname:
                return parts.hostname, parts.port or default
    return None


# Errors that say camwatch itself is short of something (file descriptors: the process's or
# the system's limit; socket buffers; kernel memory), not that the camera cannot be reached.
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def classify_os_error(exc: OSError) -> Reason:
    """Map a socket error to a reason. Shared by every probe that connects."""
    if exc.errno in LOCAL_ERRNOS:
        return Reason.LOCAL
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return Reason.REFUSED
    if isinstance(exc, TimeoutError) or exc.errno == errno.ETIMEDOUT:
        return Reason.TIMEOUT
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN,
                     errno.EADDRNOTAVAIL):
        return Reason.UNREACHABLE
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return Reason.PROTOCOL
    return Reason.UNREACHABLE


async def probe(target: Target, settings: ProbeSettings) -> ProbeResult:
    ep = endpoint(target)
    if ep is None:
        return ProbeResult.failure(KIND, Reason.INTERNAL, "channel has no RTSP or ONVIF address")
    start = time.perf_counter()
    try:
        async with asyncio.timeout(settings.timeout_s):
            _reader, writer = await asyncio.open_connection(*ep)
    except TimeoutError:
        took = time.perf_counter() - start
        return ProbeResult.failure(KIND, Reason.TIMEOUT, f"connect to {ep[0]}:{ep[1]} timed out",
                                   latency_s=took, phases={"connect": took})
    except OSError as exc:
        took = time.perf_counter() - start
        return ProbeResult.failure(KIND, classify_os_error(exc),
                                   f"connect to {ep[0]}:{ep[1]}: {exc.strerror or exc}",
                                   latency_s=took, phases={"connect": took})
    took = time.perf_counter() - start
    writer.transport.abort()  # no need for a FIN handshake: we only wanted the connect
    return ProbeResult.success(KIND, latency_s=took, phases={"connect": took})
