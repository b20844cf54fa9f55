"""One (or two) decodable keyframes of a channel over RTSP: the picture sampler's fetch.

The RTSP exchange is :mod:`camwatch.probes.rtsp`'s stream level (OPTIONS, DESCRIBE with
Digest/Basic, SETUP over TCP interleaved, PLAY), with one difference: after PLAY the RTP
payloads of the video track go to a :class:`~camwatch.probes.rtp.KeyframeAssembler` until it
gives a keyframe (H.264 IDR or H.265 IRAP with its parameter sets), and optionally a second
one, the next GOP's, for the freeze check. Then TEARDOWN.

Bounded like every probe: the whole fetch runs under ``settings.timeout_s``, the RTP bytes
read under ``max_bytes``; nothing is retried. A failure is a :class:`ProbeResult` with a
:class:`Reason`, never an exception: ``timeout`` (no keyframe in time), ``protocol`` (not RTP,
an endless fragment, no keyframe within the bytes), ``no_media`` (a codec other than H.264 or
H.265), and the RTSP probe's own reasons before PLAY. The sampler turns every one of them into
the quality state ``unknown``: a picture that could not be fetched says nothing of its quality.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from camwatch.probes import ProbeSettings, Target
from camwatch.probes import rtsp as _rtsp
from camwatch.probes.result import ProbeResult, Reason
from camwatch.probes.rtp import CODECS, Keyframe, KeyframeAssembler, RtpError, sprop_parameter_sets
from camwatch.probes.tcp import classify_os_error

__all__ = ["KIND", "Fetched", "fetch_keyframes"]

KIND = "keyframe"
# The second keyframe must come before this share of the timeout has passed; without it the
# sample goes on with one picture (the freeze check is then skipped, not failed).
SECOND_FRAME_SHARE = 0.85
# While no keyframe is being received, the socket is read at most this often (reading paused
# in between, the kernel buffers what comes): a 4 Mbit/s stream arrives in 25-40 reads a
# second otherwise, and each read costs ~100-300 µs of CPU beyond its packets (an event-loop
# turn with cold caches), most of the fetch's CPU. Two keyframes of the 1080p bench stream:
# 23-27 ms of CPU read as it comes, 15-16 ms every 0.1 s, 10-12 ms every 0.2 s (the wall time
# 0.1 s longer). 0.2 s of a 4-8 Mbit/s stream is 100-200 KB, within what Linux's receive
# buffer autotuning gives a reader that drains it; beyond that the camera waits a moment, as
# over any slow link. A keyframe's burst is read as it comes (no pause while one is in
# progress), and so is a stream faster than that: reading pauses only after a read that
# emptied the socket, one shorter than DRAINED (asyncio reads up to 256 KiB at a time, uvloop
# 250 KB; pausing after any read would cap the rate at one read per pause, ~10 Mbit/s).
READ_EVERY_S = 0.2
DRAINED = 128 * 1024


@dataclass(slots=True)
class Fetched:
    result: ProbeResult
    keyframes: list[Keyframe] = field(default_factory=list)
    codec: str | None = None
    # monotonic arrival time of each keyframe (the freeze check wants them seconds apart)
    arrived: list[float] = field(default_factory=list)


class _KeyframeProbe(_rtsp._Probe):
    def __init__(self, target: Target, settings: ProbeSettings, count: int, max_bytes: int
                 ) -> None:
        super().__init__(target, settings, stream=True)
        self.count = count
        self.max_bytes = max_bytes
        self.frames: list[Keyframe] = []
        self.arrived: list[float] = []
        self.codec: str | None = None
        self.assembler: KeyframeAssembler | None = None
        self.collect = self._collect

    @property
    def kind(self) -> str:
        return KIND

    async def _collect(self, conn: _rtsp._Conn, video: _rtsp.SdpMedia) -> None:
        codec = video.codec.upper()
        self.codec = codec
        if codec not in CODECS:
            raise _rtsp._Fail(Reason.NO_MEDIA,
                              f"video is {codec}: only H264 and H265 pictures are sampled")
        asm = KeyframeAssembler(codec, self.max_bytes, sprop_parameter_sets(codec, video.fmtp))
        self.assembler = asm

        loop = asyncio.get_running_loop()
        paused: asyncio.TimerHandle | None = None

        def resume() -> None:
            nonlocal paused
            paused = None
            if conn.transport is not None:
                conn.transport.resume_reading()

        def on_rtp(packet: bytes) -> None:
            if len(self.frames) >= self.count:
                return
            kf = asm.feed(packet)
            if kf is not None:
                self.frames.append(kf)
                self.arrived.append(time.monotonic())

        def after_read(size: int) -> None:
            nonlocal paused
            if (paused is None and size < DRAINED and len(self.frames) < self.count
                    and not asm.receiving_keyframe and conn.transport is not None):
                conn.transport.pause_reading()
                paused = loop.call_later(READ_EVERY_S, resume)

        # what came before PLAY's reply first (GStreamer sends the first keyframe then)
        early, conn.early = conn.early or [], None
        for packet in early:
            on_rtp(packet)
        conn.on_rtp = on_rtp
        conn.after_read = after_read
        self.mark("keyframe")
        await conn.until(lambda: len(self.frames) >= 1)
        if self.count > 1:
            self.mark("second_keyframe")
            deadline = self.t0 + self.settings.timeout_s * SECOND_FRAME_SHARE
            left = deadline - time.perf_counter()
            if left > 0:
                try:
                    async with asyncio.timeout(left):
                        await conn.until(lambda: len(self.frames) >= self.count)
                except TimeoutError:
                    pass  # one picture is still a sample
        conn.on_rtp = conn.after_read = None
        if paused is not None:
            paused.cancel()
            resume()
        self.mark("_teardown")


async def fetch_keyframes(target: Target, settings: ProbeSettings, *, count: int = 1,
                          max_bytes: int = 4 * 1024 * 1024) -> Fetched:
    """Up to ``count`` keyframes of ``target``'s video track, the first one required."""
    if not target.rtsp_url:
        return Fetched(ProbeResult.failure(KIND, Reason.INTERNAL, "channel has no RTSP URL"))
    p = _KeyframeProbe(target, settings, count, max_bytes)
    try:
        async with asyncio.timeout(settings.timeout_s):
            result = await p.run()
    except _rtsp._Fail as exc:
        result = p.failure(exc.reason, exc.detail, exc.info)
    except TimeoutError:
        what = "no keyframe" if p.phase == "keyframe" else f"{p.phase} not done"
        result = p.failure(Reason.TIMEOUT, f"{what} within {settings.timeout_s:g} s"
                           + _read(p))
    except RtpError as exc:
        result = p.failure(Reason.PROTOCOL, f"{p.phase}: {exc}")
    except _rtsp.RtspParseError as exc:
        result = p.failure(Reason.PROTOCOL, f"{p.phase}: {exc}")
    except _rtsp._PeerClosed:
        result = p.failure(Reason.PROTOCOL, f"{p.phase}: connection closed by the camera")
    except OSError as exc:
        result = p.failure(classify_os_error(exc),
                           f"{p.phase}: {exc.strerror or type(exc).__name__}")
    except Exception as exc:  # a camwatch bug: classified, never raised to the sampler
        _rtsp.log.error("keyframe fetch failed internally", channel=target.channel_id,
                        phase=p.phase, error=type(exc).__name__, exc_info=True)
        result = p.failure(Reason.INTERNAL, f"{p.phase}: internal error {type(exc).__name__}")
    finally:
        p.close()
    if result.ok and p.assembler is not None:
        result.info["rtp_bytes"] = p.assembler.bytes_read
    return Fetched(result, p.frames if result.ok else [], p.codec, p.arrived)


def _read(p: _KeyframeProbe) -> str:
    a = p.assembler
    return f" ({a.packets} RTP packets, {a.bytes_read} bytes)" if a is not None else ""
