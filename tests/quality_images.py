"""Synthetic pictures for the quality checks: a natural-looking textured scene and each fault
made from it. Shared by the unit tests (``test_quality_checks.py``) and the GStreamer fault
table (``test_quality_gst.py``), which serves the scene as PNG frames."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Rgb = npt.NDArray[np.uint8]


def scene(width: int = 640, height: int = 360, seed: int = 1, shift: int = 0) -> Rgb:
    """A natural-looking picture: a luminance field whose amplitude spectrum falls as
    1/f^1.3 (natural images: 1/f^0.8 to 1/f^1.5, Field 1987; van der Schaaf & van Hateren
    1996), with a few hard-edged objects and mildly coloured regions; ``shift`` pans it by
    that many pixels (a moving camera view)."""
    rng = np.random.default_rng(seed)
    big_w, big_h = width + 64, height
    fy = np.fft.fftfreq(big_h)[:, None]
    fx = np.fft.fftfreq(big_w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    out = np.empty((big_h, big_w, 3), dtype=np.float64)
    base = None
    for ch in range(3):
        spec = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** 1.3
        field = np.real(np.fft.ifft2(spec))
        field = (field - field.mean()) / field.std()
        if base is None:
            base = field
        # channels share most of the structure (luminance), each with a little of its own
        out[..., ch] = 0.85 * base + 0.35 * field
    img = 120.0 + 45.0 * out
    # objects: buildings, poles and windows (hard edges, as a street scene has)
    for _ in range(14):
        x0, y0 = int(rng.integers(0, big_w - 60)), int(rng.integers(0, big_h - 60))
        w, h = int(rng.integers(8, 90)), int(rng.integers(8, 90))
        img[y0:y0 + h, x0:x0 + w] += rng.uniform(-60, 60, size=3)
    img += rng.normal(0.0, 1.5, size=img.shape)  # sensor noise
    img = img[:, shift % 64:shift % 64 + width]
    return np.clip(img, 0, 255).astype(np.uint8)


def gaussian_blur(rgb: Rgb, sigma: float) -> Rgb:
    """Separable Gaussian blur (numpy only)."""
    r = int(3 * sigma) + 1
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    k /= k.sum()
    f = rgb.astype(np.float64)
    pad = np.pad(f, ((r, r), (r, r), (0, 0)), mode="edge")
    tmp = sum(k[i] * pad[:, i:i + f.shape[1]] for i in range(2 * r + 1))
    out = sum(k[i] * tmp[i:i + f.shape[0]] for i in range(2 * r + 1))
    return np.clip(out, 0, 255).astype(np.uint8)


def solid(rgb: tuple[int, int, int], width: int = 640, height: int = 360) -> Rgb:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (height, width, 3)).copy()


def snow(width: int = 640, height: int = 360, seed: int = 3) -> Rgb:
    rng = np.random.default_rng(seed)
    grey = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def scale(rgb: Rgb, gain: float, offset: float = 0.0) -> Rgb:
    return np.clip(rgb.astype(np.float64) * gain + offset, 0, 255).astype(np.uint8)


def tint(rgb: Rgb, mul: tuple[float, float, float]) -> Rgb:
    return np.clip(rgb.astype(np.float64) * np.array(mul), 0, 255).astype(np.uint8)


def sepia(rgb: Rgb) -> Rgb:
    """The classic sepia matrix (a brown cast)."""
    m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
    return np.clip(rgb.astype(np.float64) @ m.T, 0, 255).astype(np.uint8)


def cover(rgb: Rgb, share: float, value: int = 20) -> Rgb:
    """A flat dark object over the right ``share`` of the picture (a bag, a lens cap)."""
    out = rgb.copy()
    w = rgb.shape[1]
    out[:, int(w * (1 - share)):] = value
    return out
