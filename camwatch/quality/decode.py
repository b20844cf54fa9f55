"""Keyframes into pictures: PyAV (FFmpeg's decoders, in-process) to a downscaled RGB array,
and the thumbnail JPEG. No ffmpeg subprocess: a process per channel sample would cost more
than the decode itself.

Everything here is synchronous and CPU-bound; :class:`DecodePool` runs it in a bounded pool of
threads off the event loop (PyAV releases the GIL while FFmpeg decodes and scales, numpy while
it works on whole arrays), with a queue bound so that a slow pool makes the sampler wait
rather than pile work up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fractions
import threading
from collections.abc import Callable
from typing import TypeVar, cast

import av
import av.error
import numpy as np
from av.video.codeccontext import VideoCodecContext

from camwatch.errors import CamwatchError
from camwatch.probes.rtp import Keyframe
from camwatch.quality.checks import Frame, Grey, Rgb

__all__ = ["DecodeError", "DecodePool", "Picture", "decode", "decode_grey", "jpeg",
           "thumbnail_jpeg"]

T = TypeVar("T")
_DECODERS = {"H264": "h264", "H265": "hevc"}
MAX_PIXELS = 8192 * 8192  # a claimed picture size beyond this is refused before scaling


class DecodeError(CamwatchError):
    """The keyframe did not decode to a picture (corrupt, truncated, unsupported)."""


class Picture:
    """A decoded keyframe: its real size, the downscaled frame the checks look at, and the
    decoder's picture itself (the thumbnail JPEG is scaled from it)."""

    __slots__ = ("decoded", "frame", "height", "width")

    def __init__(self, frame: Frame, width: int, height: int,
                 decoded: av.VideoFrame | None = None) -> None:
        self.frame = frame
        self.width = width
        self.height = height
        self.decoded = decoded


# Strict errors (``err_detect=explode``): a corrupt keyframe is a :class:`DecodeError`, not a
# concealed picture the checks would misjudge.
_STRICT = {"err_detect": "explode"}


class _Decoders(threading.local):
    """Each pool thread's open decoders, one per codec, kept from one keyframe to the next. A
    decoder opened per keyframe allocated its picture pools and tables anew each time: under
    the daemon's malloc settings (:func:`camwatch.malloc.tune_malloc`: blocks over 256 KiB are
    mapped, and unmapped when freed) that was ~4,900 page faults and 20-25 ms of a 1080p H.265
    sample's two decodes. 5-10 MiB each at 1080p: at most two a thread.

    Both keyframes of a sample go through the same decoder, in-loop filters and all. Skipping
    the filters for the second one (it only feeds the freeze check's cell means) saved 1-2 ms
    of a 1080p H.265 decode, not worth a second decoder's memory per codec and thread."""

    def __init__(self) -> None:
        self.open: dict[str, VideoCodecContext] = {}


_DECODERS_OPEN = _Decoders()


def _decoder(name: str) -> VideoCodecContext:
    ctx = _DECODERS_OPEN.open.get(name)
    if ctx is None:
        ctx = cast(VideoCodecContext, av.CodecContext.create(name, "r"))
        ctx.options = dict(_STRICT)
        ctx.thread_count = 1  # one picture: threads would only add latency; the pool parallelises
        _DECODERS_OPEN.open[name] = ctx
    return ctx


def _frame(kf: Keyframe) -> av.VideoFrame:
    """The keyframe's picture, by this thread's decoder for its codec. The decoder is drained
    and reset after each keyframe, so that no picture of one keyframe reaches the next (each
    keyframe carries its own parameter sets: the assembler's rule); one that failed is
    dropped, the next keyframe gets a new one."""
    name = _DECODERS.get(kf.codec)
    if name is None:
        raise DecodeError(f"no decoder for {kf.codec}")
    ctx = _decoder(name)
    try:
        frames = list(ctx.decode(av.Packet(kf.data)))
        frames += list(ctx.decode(None))  # flush: the decoder may hold the picture back
        ctx.flush_buffers()  # out of draining, ready for the next keyframe
    except (av.error.FFmpegError, ValueError) as exc:
        _DECODERS_OPEN.open.pop(name, None)
        raise DecodeError(f"{kf.codec} keyframe does not decode: {exc}") from None
    if not frames:
        raise DecodeError(f"{kf.codec} keyframe of {len(kf.data)} bytes gave no picture")
    vf = frames[0]
    w, h = vf.width, vf.height
    if w <= 0 or h <= 0 or w * h > MAX_PIXELS:
        _DECODERS_OPEN.open.pop(name, None)  # nor keep the pools of such a picture
        raise DecodeError(f"implausible picture size {w}x{h}")
    return vf


def _size(vf: av.VideoFrame, width: int) -> tuple[int, int]:
    """``width`` pixels wide or the picture's own width if less, aspect kept, both even."""
    w, h = vf.width, vf.height
    out_w = min(width, w) // 2 * 2 or 2
    return out_w, max(2, round(h * out_w / w / 2) * 2)


def _grey(vf: av.VideoFrame, out_w: int, out_h: int) -> Grey:
    # the decoder's own luma, scaled by swscale (0.4 ms from 1080p against 0.9 ms for the
    # BT.601 sum over the RGB picture; full range 0-255 like it, 1-2 levels apart from it)
    g = vf.reformat(width=out_w, height=out_h, format="gray", interpolation="AREA")
    return cast(Grey, g.to_ndarray().astype(np.float32))


def decode(kf: Keyframe, width: int = 640) -> Picture:
    """Decode one Annex B keyframe and scale it to ``width`` pixels wide (aspect kept, even
    height): RGB for the colour checks and the thumbnail, the luma for the others."""
    vf = _frame(kf)
    out_w, out_h = _size(vf, width)
    # AREA: the right filter to shrink by 2-3x, and the fastest of swscale's here (2.7 ms
    # from 1080p against 12 ms bicubic)
    rgb = cast(Rgb, vf.reformat(width=out_w, height=out_h, format="rgb24",
                                interpolation="AREA").to_ndarray())
    return Picture(Frame(np.ascontiguousarray(rgb), _grey(vf, out_w, out_h)),
                   vf.width, vf.height, vf)


def decode_grey(kf: Keyframe, width: int = 640) -> Grey:
    """The luma alone, as :func:`decode` gives it, of a keyframe that only feeds the freeze
    check: no RGB."""
    vf = _frame(kf)
    return _grey(vf, *_size(vf, width))


def jpeg(rgb: Rgb, qscale: int = 8) -> bytes:
    """A JPEG of an RGB picture (FFmpeg's MJPEG encoder; ``qscale`` 2 best .. 31 smallest)."""
    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    if h == 0 or w == 0:
        raise DecodeError("no picture to encode")
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24")
    return _mjpeg(vf.reformat(format="yuvj420p"), qscale)


def thumbnail_jpeg(pic: Picture, qscale: int = 8) -> bytes:
    """The kept thumbnail: a JPEG of half the checked picture's size (320 px wide, ~10 KB),
    scaled by swscale straight from the decoder's picture to the encoder's pixel format
    (0.5 ms from 1080p, against 1.3 ms for a 2×2 mean of the RGB picture and 0.3 ms more to
    convert that back to YUV)."""
    h, w = pic.frame.rgb.shape[0] // 2 // 2 * 2, pic.frame.rgb.shape[1] // 2 // 2 * 2
    if pic.decoded is None or h < 8 or w < 8:
        return jpeg(pic.frame.rgb, qscale)
    return _mjpeg(pic.decoded.reformat(width=w, height=h, format="yuvj420p",
                                       interpolation="AREA"), qscale)


def _mjpeg(vf: av.VideoFrame, qscale: int) -> bytes:
    ctx = cast(VideoCodecContext, av.CodecContext.create("mjpeg", "w"))
    ctx.width, ctx.height = vf.width, vf.height
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = fractions.Fraction(1, 1)
    ctx.qmin = ctx.qmax = qscale
    vf.pts = 0
    packets = list(ctx.encode(vf)) + list(ctx.encode(None))
    return b"".join(bytes(p) for p in packets)


class DecodePool:
    """At most ``workers`` decodes at once in threads, at most ``workers`` more waiting."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="camwatch-decode")
        self._slots = threading.BoundedSemaphore(2 * workers)
        self._sem: asyncio.Semaphore | None = None

    async def run(self, fn: Callable[[], T]) -> T:
        if self._sem is None:
            self._sem = asyncio.Semaphore(2 * self.workers)
        async with self._sem:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, fn)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
