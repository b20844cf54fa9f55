"""Real pictures for simulated cameras: short H.264/H.265 clips, each showing one picture fault
(or none), encoded with PyAV at first use and kept for the process, then sent as RTP over the
RTSP connection (RFC 6184 / RFC 7798: parameter sets aggregated, big NAL units fragmented).

A clip is :data:`FRAMES` pictures of 640×360, every one a keyframe with its parameter sets, sent
at :data:`FPS` and looped, so a sampler gets two different keyframes half a second apart: the
``ok`` scene pans (motion), ``frozen`` repeats one picture. The scene is synthetic but
natural-looking (a 1/f^1.3 amplitude spectrum, hard-edged objects, mild colour), so that every
check of :mod:`camwatch.quality.checks` finds the ``ok`` clip fault-free and each fault clip
at fault for its own check (tests/test_sim_pictures.py samples each one).

Encoding all of them takes about a second; :func:`prepare` does it ahead (in a thread), else
the first PLAY of each kind pays for its clip. Written apart from the depacketiser of
:mod:`camwatch.probes.rtp`, so that one misreading of the RFCs cannot hide itself on both sides.
"""

from __future__ import annotations

import enum
import fractions
import functools
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["FPS", "FRAMES", "Clip", "Picture", "clip", "frames", "prepare", "rtp_packets"]

Rgb = npt.NDArray[np.uint8]
FPS = 2
FRAMES = 4
WIDTH, HEIGHT = 640, 360
MTU = 1400
_START = re.compile(b"\x00\x00\x01")


class Picture(enum.StrEnum):
    """What a simulated camera shows: a usable picture, or one fault named as the check that
    finds it."""

    OK = "ok"
    SIGNAL_LOST = "signal_lost"  # an encoder without input: a flat blue screen
    TOO_DARK = "too_dark"
    TOO_BRIGHT = "too_bright"
    LOW_CONTRAST = "low_contrast"
    BLUR = "blur"
    FROZEN = "frozen"
    COLOR_CAST = "color_cast"
    NOISE = "noise"  # 雪花: snow
    OCCLUDED = "occluded"
    # a camera turned or moved: its first PLAY shows its usual view (the sampler's scene
    # reference), every later one another view (the RTSP server counts the PLAYs)
    SCENE_CHANGED = "scene_changed"


def _scene(seed: int, shift: int) -> npt.NDArray[np.float64]:
    """A natural-looking street-like picture, panned by ``shift`` pixels (a copy)."""
    return _wide_scene(seed)[:, shift % 64:shift % 64 + WIDTH].copy()


@functools.cache
def _wide_scene(seed: int) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    big_w = WIDTH + 64
    fy = np.fft.fftfreq(HEIGHT)[:, None]
    fx = np.fft.fftfreq(big_w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    out = np.empty((HEIGHT, big_w, 3), dtype=np.float64)
    base = None
    for ch in range(3):
        field = np.real(np.fft.ifft2((rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape))
                                     / f ** 1.3))
        field = (field - field.mean()) / field.std()
        if base is None:
            base = field
        out[..., ch] = 0.85 * base + 0.35 * field
    img = 120.0 + 45.0 * out
    for _ in range(14):  # buildings, poles, windows
        x0, y0 = int(rng.integers(0, big_w - 60)), int(rng.integers(0, HEIGHT - 60))
        w, h = int(rng.integers(8, 90)), int(rng.integers(8, 90))
        img[y0:y0 + h, x0:x0 + w] += rng.uniform(-60, 60, size=3)
    img += rng.normal(0.0, 1.5, size=img.shape)
    img.flags.writeable = False
    return img


def _u8(img: npt.NDArray[np.float64]) -> Rgb:
    out: Rgb = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _blur(img: npt.NDArray[np.float64], sigma: float) -> npt.NDArray[np.float64]:
    r = int(3 * sigma) + 1
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    k /= k.sum()
    pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    tmp = sum(k[i] * pad[:, i:i + img.shape[1]] for i in range(2 * r + 1))
    out: npt.NDArray[np.float64] = sum(
        k[i] * tmp[i:i + img.shape[0]] for i in range(2 * r + 1))
    return out


_SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])


def frames(kind: Picture, seed: int = 1) -> list[Rgb]:
    """The clip's pictures (RGB, 640×360)."""
    out = []
    for i in range(FRAMES):
        shift = 0 if kind is Picture.FROZEN else 16 * i
        # the turned camera's other view: another street, panning as the usual one does
        img = _scene(seed + 6 if kind is Picture.SCENE_CHANGED else seed, shift)
        if kind is Picture.SIGNAL_LOST:
            img = np.zeros_like(img) + np.array([16.0, 32.0, 200.0])
        elif kind is Picture.TOO_DARK:
            img = img * 0.15
        elif kind is Picture.TOO_BRIGHT:
            img = img * 0.3 + 200.0
        elif kind is Picture.LOW_CONTRAST:
            img = img * 0.12 + 110.0
        elif kind is Picture.BLUR:
            img = _blur(img, 4.0)
        elif kind is Picture.COLOR_CAST:
            img = img @ _SEPIA.T
        elif kind is Picture.NOISE:
            grey = np.random.default_rng(seed + i).integers(0, 256, size=(HEIGHT, WIDTH))
            img = np.repeat(grey[..., None].astype(np.float64), 3, axis=2)
        elif kind is Picture.OCCLUDED:
            img[:, int(WIDTH * 0.4):] = 20.0  # a lens cap or a bag over 60 % of the view
        out.append(_u8(img))
    return out


@dataclass(frozen=True, slots=True)
class Clip:
    kind: Picture
    codec: str  # H264 | H265
    access_units: tuple[bytes, ...]  # Annex B, each a keyframe with its parameter sets


def encode(pictures: list[Rgb], codec: str = "H264", gop: int = 1,
           fps: int = FPS) -> tuple[bytes, ...]:
    """Annex B access units of ``pictures`` (RGB, all one size) from FFmpeg's libx264 /
    libx265, an IDR with its parameter sets every ``gop`` pictures (the simulator's clips:
    every one; the RTP tests: every fourth)."""
    import av  # FFmpeg's encoders (camwatch's quality lane decodes with the same library)

    name = "libx265" if codec == "H265" else "libx264"
    ctx = av.CodecContext.create(name, "w")
    height, width = pictures[0].shape[:2]
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"  # type: ignore[attr-defined]
    ctx.time_base = fractions.Fraction(1, fps)
    opts = {"preset": "ultrafast", "tune": "zerolatency", "g": str(gop)}
    if codec == "H265":
        opts["x265-params"] = f"log-level=none:keyint={gop}:repeat-headers=1"
    else:
        opts["x264-params"] = f"keyint={gop}:repeat-headers=1"
    ctx.options = opts
    out: list[bytes] = []
    for i, img in enumerate(pictures):
        vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        vf.pts = i
        out += [bytes(p) for p in ctx.encode(vf)]  # type: ignore[attr-defined]
    out += [bytes(p) for p in ctx.encode(None)]  # type: ignore[attr-defined]
    return tuple(out)


@functools.cache
def clip(kind: Picture, codec: str = "H264") -> Clip:
    """The clip of ``kind`` (encoded once per process; ~50-150 ms each)."""
    c = "H265" if codec.upper() in ("H265", "HEVC") else "H264"
    return Clip(kind, c, encode(frames(kind), c))


def prepare(kinds: Iterable[Picture], codecs: Iterable[str] = ("H264",)) -> None:
    """Encode the clips ahead (blocking: run it in a thread)."""
    for codec in codecs:
        for kind in kinds:
            clip(kind, codec)


def _nal_units(au: bytes) -> list[bytes]:
    return [p.rstrip(b"\x00") for p in _START.split(au) if p.rstrip(b"\x00")]


def _is_parameter_set(codec: str, nal: bytes) -> bool:
    if codec == "H264":
        return nal[0] & 0x1F in (7, 8)  # SPS, PPS
    return (nal[0] >> 1) & 0x3F in (32, 33, 34)  # VPS, SPS, PPS


def _payloads(codec: str, au: bytes) -> list[bytes]:
    """One access unit's RTP payloads: parameter sets in one STAP-A (H.264) / AP (H.265),
    NAL units above the MTU in FU-A / FU fragments, the others single."""
    nals = _nal_units(au)
    params = [n for n in nals if _is_parameter_set(codec, n)]
    out: list[bytes] = []
    if params:
        agg = b"".join(struct.pack("!H", len(n)) + n for n in params)
        out.append((bytes([0x18 | (params[0][0] & 0x60)]) if codec == "H264"
                    else bytes([48 << 1, 1])) + agg)
    for n in nals:
        if _is_parameter_set(codec, n):
            continue
        if len(n) <= MTU:
            out.append(n)
            continue
        if codec == "H264":
            head, kind, body, size = bytes([(n[0] & 0xE0) | 28]), n[0] & 0x1F, n[1:], MTU - 2
        else:
            head, kind, body, size = bytes([(49 << 1) | (n[0] & 0x81), n[1]]), \
                (n[0] >> 1) & 0x3F, n[2:], MTU - 3
        for i in range(0, len(body), size):
            flags = (0x80 if i == 0 else 0) | (0x40 if i + size >= len(body) else 0)
            out.append(head + bytes([flags | kind]) + body[i:i + size])
    return out


def rtp_packets(c: Clip, index: int, seq: int, ssrc: int = 0x1A2B3C4D, pt: int = 96
                ) -> tuple[list[bytes], int]:
    """The RTP packets of the clip's ``index``-th picture (looped; the timestamp keeps
    growing), from sequence number ``seq`` + 1; returns them and the last sequence number."""
    au = c.access_units[index % len(c.access_units)]
    ts = (index * 90000 // FPS) & 0xFFFFFFFF
    payloads = _payloads(c.codec, au)
    out = []
    for k, payload in enumerate(payloads):
        seq = (seq + 1) & 0xFFFF
        marker = 0x80 if k == len(payloads) - 1 else 0
        out.append(struct.pack("!BBHII", 0x80, marker | pt, seq, ts, ssrc) + payload)
    return out, seq
