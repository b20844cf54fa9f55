"""The picture diagnoses: each one a small pure function of numpy arrays returning a score.

Input is one decoded keyframe downscaled to about 640 px wide (:mod:`camwatch.quality.decode`):
``rgb`` (H×W×3 ``uint8``) and ``grey`` (H×W ``float32``, luma 0–255: the decoder's own scaled
to full range, or BT.601 from RGB by :meth:`Frame.of`). A score is a plain float; whether it
is a fault is decided against a threshold from :class:`Thresholds` (the
``quality.thresholds`` config section), in the direction the check's
:data:`CHECKS` entry gives. :func:`diagnose` runs every check and applies the one precedence
rule: a fault that makes other checks meaningless hides them (a uniform blue "无视频信号"
screen is ``signal_lost``, not also blurred, low-contrast and occluded).

Written by hand on numpy: each measure is a few array operations, and OpenCV or scikit-image
(hundreds of MB of wheels) would be pulled in for a Laplacian and a Lab conversion.

Where the defaults come from (``docs/quality.md`` explains how to tune them):

- ``blur``: variance of the Laplacian (Pech-Pacheco et al., "Diatom autofocusing in
  brightfield microscopy: a comparative study", ICPR 2000; the best general-purpose focus
  measure in Pertuz et al., "Analysis of focus measure operators for shape-from-focus",
  Pattern Recognition 46(5), 2013), divided by the picture's variance so that the score does
  not depend on contrast or exposure. No paper gives an absolute floor for CCTV; 0.02 was
  calibrated: natural textured pictures measure 0.1–0.6 after H.264, the same pictures through
  a Gaussian blur of σ ≥ 3 px (at 640 px) measure under 0.01. A scene's own sharpness varies
  more than that floor allows (a foggy valley, a wall close by), so each channel also has a
  baseline, day and night apart (:func:`update_baseline`: the mean of its first three sharp
  pictures, then a moving average); under ``blur_relative`` (0.4) of it is a fault too.
- ``noise``: Immerkær's fast noise estimate ("Fast noise variance estimation", CVIU 64(2),
  1996: σ = √(π/2) / (6(W−2)(H−2)) · Σ|I ∗ N|), over the pixels whose Sobel gradient is not in
  the top 10 % (Tai & Yang, "A fast method for image noise estimation using Laplacian operator
  and adaptive edge detection", ISCCSP 2008), so that texture and edges are not taken for
  noise. σ of a well-lit CCTV picture is 1–5 grey levels; 雪花 (snow) is tens: default 12.
- ``color_cast``: the "equivalent circle" of 徐晓昭 et al. (基于图像分析的偏色检测及颜色校正
  方法, 测控技术 27(5), 2008): in CIE Lab, D = distance of the mean (a, b) from neutral,
  M = mean absolute spread of (a, b) around it, K = D / M. A picture whose colours sit in a
  small circle far from grey has a cast. Default 1.5 (ours: colourful natural scenes stay
  under 1, a sepia or green-tinted picture measures 2 and more).
- ``too_dark`` / ``too_bright``: mean luma. ITU-R BT.601 puts video black at 16 and white at
  235 of 255; the defaults 40 and 215 leave room for dark-but-usable night scenes and for snow.
- ``low_contrast``: RMS contrast, the standard deviation of luma over 255 (Peli, "Contrast in
  complex images", JOSA A 7(10), 1990). Natural pictures measure 0.15–0.3; default 0.06.
- ``signal_lost``: the share of pixels within ±10 levels (per channel) of the picture's median
  colour. An encoder or NVR without input sends one flat colour (blue or black, sometimes with
  a caption): default 0.95, so that a caption of up to 5 % of the screen does not hide it.
- ``occluded``: the share of 16×16 blocks with almost no edges (mean absolute gradient < 2
  levels per pixel), the block method of camera-tampering detection (Ribnick et al.,
  "Real-time detection of camera tampering", AVSS 2006, compare edge content against the
  camera's own history; without history we judge the share). Default 0.4; a view with a large
  sky or a blank wall needs more (see ``docs/quality.md``).
- ``frozen``: two keyframes a few seconds apart compared cell by cell on 64×36 thumbnails
  (:func:`frozen`): an encoder re-coding one frozen picture stays under 1.6 levels, any motion
  bigger than a cell makes tens: default 3. A scene with no motion at all (an empty street at
  night) cannot be told from a frozen picture by two pictures alone: see ``docs/quality.md``.
- ``scene_changed``: Pearson correlation of a 64×36 thumbnail with the channel's reference
  thumbnail; a turned or moved camera correlates under 0.5 (default).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from camwatch.quality.names import CHECK_ZH as CHECK_ZH  # re-exported: its old home
from camwatch.quality.names import Check, Thresholds

__all__ = [
    "CHECKS",
    "Check",
    "Diagnosis",
    "Fault",
    "Frame",
    "Thresholds",
    "blur",
    "color_cast",
    "diagnose",
    "frozen",
    "low_contrast",
    "mean_luma",
    "noise",
    "occluded",
    "scene_changed",
    "signal_lost",
    "thumbnail",
    "to_grey",
]

Grey = npt.NDArray[np.float32]
Rgb = npt.NDArray[np.uint8]

THUMB_W, THUMB_H = 64, 36  # the reference thumbnail for scene_changed (16:9)
BLOCK = 16  # block size of the occlusion check, at ~640 px wide


#: Samples a channel needs (per day or night) before its blur baseline counts.
BASELINE_MIN_SAMPLES = 3
BASELINE_WEIGHT = 0.25  # of each new sample in the baseline's moving average


def update_baseline(base: tuple[float, int] | None, score: float) -> tuple[float, int]:
    """A channel's blur baseline, (moving average, samples), after one more sharp picture:
    the mean of the first ``BASELINE_MIN_SAMPLES``, then an exponential moving average (a
    slow focus drift moves it; a sudden blur is a fault and never enters it)."""
    if base is None:
        return score, 1
    value, n = base
    if n < BASELINE_MIN_SAMPLES:
        return (value * n + score) / (n + 1), n + 1
    return value + BASELINE_WEIGHT * (score - value), n + 1


def baseline_value(base: tuple[float, int] | None) -> float | None:
    """The baseline to judge against, once it has enough samples."""
    return base[0] if base is not None and base[1] >= BASELINE_MIN_SAMPLES else None


# --------------------------------------------------------------------------------------------
# The measures (pure: arrays in, a float out)
# --------------------------------------------------------------------------------------------


def to_grey(rgb: Rgb) -> Grey:
    """BT.601 luma of an RGB picture, as float32."""
    f = rgb.astype(np.float32)
    out: Grey = f[..., 0] * np.float32(0.299) + f[..., 1] * np.float32(0.587) \
        + f[..., 2] * np.float32(0.114)
    return out


def signal_lost(rgb: Rgb) -> float:
    """Share of pixels whose colour is within ±10 levels of the median colour."""
    if rgb.size == 0:
        return 1.0
    sub = rgb[::4, ::4].reshape(-1, 3)  # one pixel in 16 is plenty for a share
    near = np.ones(len(sub), dtype=bool)
    levels = np.arange(256)
    for c in range(3):
        col = sub[:, c]
        med = int(np.bincount(col, minlength=256).cumsum().searchsorted(len(sub) / 2))
        # a table of the levels within ±10 of the median, looked up per pixel: cheaper than
        # the difference of every pixel in int16
        near &= (np.abs(levels - med) <= 10)[col]
    return float(near.mean())


def mean_luma(grey: Grey) -> float:
    """Mean luma, 0–255 (``too_dark`` and ``too_bright``)."""
    return float(grey.mean()) if grey.size else 0.0


def low_contrast(grey: Grey, var: float | None = None) -> float:
    """RMS contrast: standard deviation of luma / 255 (``var``: ``grey``'s variance, when
    the caller has it already)."""
    if not grey.size:
        return 0.0
    return math.sqrt(float(grey.var()) if var is None else var) / 255.0


def _laplacian(grey: Grey) -> Grey:
    g = grey
    lap: Grey = (g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1]
                 - np.float32(4.0) * g[1:-1, 1:-1])
    return lap


def blur(grey: Grey, var: float | None = None) -> float:
    """Variance of the Laplacian over the variance of the picture (contrast-free sharpness:
    the share of the picture's energy at the highest frequencies). Low = blurred. ``var``:
    ``grey``'s variance, when the caller has it already."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    var = float(grey.var()) if var is None else var
    if var < 1e-6:
        return 0.0
    return float(_laplacian(grey).var()) / var


def noise(grey: Grey) -> float:
    """Immerkær's σ over the non-edge pixels (top 10 % of Sobel magnitude left out)."""
    if grey.shape[0] < 4 or grey.shape[1] < 3:
        return 0.0
    # every other row: the estimate is a mean, half the rows give the same figure at half cost
    g = grey[: grey.shape[0] // 2 * 2 - 1] if grey.shape[0] % 2 == 0 else grey
    # Immerkær's mask [[1,-2,1],[-2,4,-2],[1,-2,1]] as the difference of two Laplacians
    # (it is insensitive to linear ramps, so only texture finer than 2 px and noise remain)
    c = g[1:-1:2, 1:-1]
    n = g[:-2:2, 1:-1]
    s = g[2::2, 1:-1]
    w = g[1:-1:2, :-2]
    e = g[1:-1:2, 2:]
    nw, ne, sw, se = g[:-2:2, :-2], g[:-2:2, 2:], g[2::2, :-2], g[2::2, 2:]
    resp = np.abs((nw + ne + sw + se) - np.float32(2.0) * (n + s + w + e) + np.float32(4.0) * c)
    gx = (ne + np.float32(2.0) * e + se) - (nw + np.float32(2.0) * w + sw)
    gy = (sw + np.float32(2.0) * s + se) - (nw + np.float32(2.0) * n + ne)
    mag = np.abs(gx) + np.abs(gy)
    sample = mag[::2, ::2].ravel()
    cut = np.partition(sample, int(len(sample) * 0.9))[int(len(sample) * 0.9)]
    keep = mag <= cut
    count = int(keep.sum())
    if count == 0:
        return 0.0
    return float(math.sqrt(math.pi / 2.0) * float(resp[keep].sum()) / (6.0 * count))


def _srgb_linear() -> npt.NDArray[np.float32]:
    f = np.arange(256, dtype=np.float32) / np.float32(255.0)
    lin: npt.NDArray[np.float32] = np.where(
        f <= 0.04045, f / np.float32(12.92),
        ((f + np.float32(0.055)) / np.float32(1.055)) ** np.float32(2.4))
    return lin


# sRGB's transfer function for each of the 256 levels (IEC 61966-2-1): a table lookup per
# pixel instead of a power per pixel
_LINEAR = _srgb_linear()
# linear sRGB -> XYZ (D65), each row divided by the white point's X, Y, Z (CIE 15)
_TO_XYZN = (np.array([[0.4124, 0.3576, 0.1805],
                      [0.2126, 0.7152, 0.0722],
                      [0.0193, 0.1192, 0.9505]])
            / np.array([[0.95047], [1.0], [1.08883]])).T.astype(np.float32)


def _lab_ab(rgb: Rgb) -> tuple[Grey, Grey]:
    """CIE a* and b* (D65) of an sRGB picture, one pixel in 4×4 (a mean and a spread need no
    more: 14,400 pixels at 640×360, 0.8 ms instead of 3.2 ms at 2×2). The standard sRGB →
    XYZ → Lab formulas (IEC 61966-2-1, CIE 15)."""
    xyz = _LINEAR[rgb[::4, ::4]] @ _TO_XYZN
    eps, k = np.float32(216.0 / 24389.0), np.float32(24389.0 / 27.0)
    # the cube root as exp(log(t) / 3): numpy's float32 cbrt is a scalar loop, 3x slower than
    # its vectorised exp and log (the two agree to 3e-7); t is floored at eps, where the
    # linear branch takes over, so the logarithm never sees 0
    root = np.exp(np.log(np.maximum(xyz, eps)) * np.float32(1.0 / 3.0))
    f: Grey = np.where(xyz > eps, root, (k * xyz + np.float32(16.0)) / np.float32(116.0))
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return (500.0 * (fx - fy)).astype(np.float32), (200.0 * (fy - fz)).astype(np.float32)


def color_cast(rgb: Rgb) -> float:
    """K = D / M of the equivalent circle in the a*b* plane (see the module docstring). M is
    floored at 2 so that a nearly grey picture (tiny D, tiny M) is not called cast."""
    if rgb.size == 0:
        return 0.0
    a, b = _lab_ab(rgb)
    da, db = float(a.mean()), float(b.mean())
    d = math.hypot(da, db)
    m = math.hypot(float(np.abs(a - da).mean()), float(np.abs(b - db).mean()))
    return d / max(m, 2.0)


def occluded(grey: Grey, block: int = BLOCK, edge_floor: float = 2.0) -> float:
    """Share of ``block``×``block`` blocks whose mean absolute gradient is under
    ``edge_floor`` levels per pixel."""
    h, w = grey.shape[0] // block * block, grey.shape[1] // block * block
    if h == 0 or w == 0:
        return 1.0
    g = grey[:h, :w]
    grad = np.zeros((h, w), dtype=np.float32)
    grad[:, 1:] += np.abs(np.diff(g, axis=1))
    grad[1:, :] += np.abs(np.diff(g, axis=0))
    per_block = _block_means(grad, block, block)
    return float((per_block < edge_floor).mean())


def frozen(a: Grey, b: Grey) -> float:
    """How much two pictures of one channel differ: the 99th percentile of the absolute
    differences of their 64×36 thumbnails' cells (inf when the sizes differ: the stream
    changed, so it is not frozen).

    Thumbnails, not pixels: an encoder coding the same frozen picture twice at different
    quantisers makes pixel differences of 2–3 levels (x264 at 3 Mbit/s), as large as a live
    scene's sensor noise; cell means average that away (measured: p99 1.2–1.3, max 1.6) and
    keep any movement bigger than a cell (a walking person: tens of levels). The 99th
    percentile, not the maximum, so that one flickering cell does not hide a freeze."""
    if a.shape != b.shape or a.size == 0:
        return math.inf
    return _frozen_cells(thumbnail(a), thumbnail(b))


def _frozen_cells(a: Grey, b: Grey) -> float:
    return float(np.quantile(np.abs(a - b), 0.99))


def thumbnail(grey: Grey) -> Grey:
    """A 64×36 block-mean thumbnail of a grey picture (the scene_changed reference)."""
    h, w = grey.shape
    by, bx = h // THUMB_H, w // THUMB_W
    if by == 0 or bx == 0:
        out = np.zeros((THUMB_H, THUMB_W), dtype=np.float32)
        out[:min(h, THUMB_H), :min(w, THUMB_W)] = grey[:THUMB_H, :THUMB_W]
        return out
    # block means; the few rows and columns beyond a whole block are left out
    return _block_means(grey[:by * THUMB_H, :bx * THUMB_W], by, bx)


def _block_means(a: Grey, by: int, bx: int) -> Grey:
    """Means of the ``by``×``bx`` blocks of ``a`` (its sides whole multiples of them). The
    rows of a block are summed first, whole rows at a time, and only then the columns: 6x
    faster than numpy's mean over both block axes at once, which steps through the picture
    ``bx`` floats at a time."""
    h, w = a.shape
    rows = a.reshape(h // by, by, w).sum(axis=1, dtype=np.float32)
    sums = rows.reshape(h // by, w // bx, bx).sum(axis=2, dtype=np.float32)
    out: Grey = sums * np.float32(1.0 / (by * bx))
    return out


def scene_changed(thumb: Grey, reference: Grey) -> float:
    """Pearson correlation of two thumbnails (1 = same scene). A flat thumbnail correlates 0."""
    if thumb.shape != reference.shape:
        return 0.0
    a = thumb.astype(np.float64).ravel()
    b = reference.astype(np.float64).ravel()
    a -= a.mean()
    b -= b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 1e-9 else 0.0


# --------------------------------------------------------------------------------------------
# All of them
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded, downscaled picture, as the checks take it."""

    rgb: Rgb
    grey: Grey

    @classmethod
    def of(cls, rgb: Rgb) -> Frame:
        return cls(rgb, to_grey(rgb))


@dataclass(frozen=True, slots=True)
class Fault:
    check: str
    score: float


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Every score measured, and the faults among them (after precedence)."""

    scores: dict[str, float]
    faults: tuple[Fault, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.faults

    @property
    def fault_names(self) -> set[str]:
        return {f.check for f in self.faults}


# check -> (fault when the score is "below" or "above" its threshold)
CHECKS: dict[str, str] = {
    Check.SIGNAL_LOST: "above",
    Check.TOO_DARK: "below",
    Check.TOO_BRIGHT: "above",
    Check.LOW_CONTRAST: "below",
    Check.BLUR: "below",
    Check.FROZEN: "below",
    Check.COLOR_CAST: "above",
    Check.NOISE: "above",
    Check.OCCLUDED: "above",
    Check.SCENE_CHANGED: "below",
}

# A fault hides the checks it makes meaningless: a flat screen has no edges, contrast, noise
# or colour of its own, and is the same screen every time (not a frozen picture); a picture
# too dark or too bright has lost its edges and contrast.
_HIDES: dict[str, frozenset[str]] = {
    Check.SIGNAL_LOST: frozenset({Check.LOW_CONTRAST, Check.BLUR, Check.COLOR_CAST,
                                  Check.NOISE, Check.OCCLUDED, Check.SCENE_CHANGED,
                                  Check.FROZEN}),
    Check.TOO_DARK: frozenset({Check.LOW_CONTRAST, Check.BLUR, Check.OCCLUDED,
                               Check.COLOR_CAST, Check.SCENE_CHANGED}),
    Check.TOO_BRIGHT: frozenset({Check.LOW_CONTRAST, Check.BLUR, Check.OCCLUDED,
                                 Check.COLOR_CAST, Check.SCENE_CHANGED}),
    # snow is all edges and no picture: neither blurred nor occluded, colour meaningless
    Check.NOISE: frozenset({Check.BLUR, Check.COLOR_CAST, Check.SCENE_CHANGED}),
    # an object over the lens changes the view: that is the occlusion, not a moved camera
    Check.OCCLUDED: frozenset({Check.SCENE_CHANGED}),
}


def is_fault(check: str, score: float, thresholds: Thresholds) -> bool:
    limit = float(getattr(thresholds, check))
    return score < limit if CHECKS[check] == "below" else score > limit


def diagnose(frame: Frame, thresholds: Thresholds | None = None, *,
             previous: Frame | Grey | None = None, reference: Grey | None = None,
             enabled: Mapping[str, bool] | None = None,
             blur_baseline: float | None = None, thumb: Grey | None = None) -> Diagnosis:
    """Run every check on ``frame`` (``frozen`` only with a ``previous`` picture: its
    :class:`Frame` or just its grey, made the same way as ``frame``'s,
    ``scene_changed`` only with a ``reference`` thumbnail); checks turned off in ``enabled``
    are skipped. ``blur`` is judged against its absolute floor and, given the channel's
    ``blur_baseline`` (its usual sharpness at this time of day), against
    ``blur_relative`` × that baseline too. ``thumb``: ``frame``'s :func:`thumbnail`, when
    the caller has made it already (it is made once, not per check). Pure."""
    th = thresholds or Thresholds()
    on = enabled or {}
    grey, rgb = frame.grey, frame.rgb
    luma = mean_luma(grey)
    var = float(grey.var()) if grey.size else 0.0  # blur's and the contrast's, made once
    measures: dict[str, Callable[[], float]] = {
        Check.SIGNAL_LOST: lambda: signal_lost(rgb),
        Check.TOO_DARK: lambda: luma,
        Check.TOO_BRIGHT: lambda: luma,
        Check.LOW_CONTRAST: lambda: low_contrast(grey, var),
        Check.BLUR: lambda: blur(grey, var),
        Check.COLOR_CAST: lambda: color_cast(rgb),
        Check.NOISE: lambda: noise(grey),
        Check.OCCLUDED: lambda: occluded(grey),
    }
    cells: list[Grey] = [] if thumb is None else [thumb]

    def own() -> Grey:
        if not cells:
            cells.append(thumbnail(grey))
        return cells[0]

    if previous is not None:
        before = previous.grey if isinstance(previous, Frame) else previous
        measures[Check.FROZEN] = lambda: (
            _frozen_cells(thumbnail(before), own())
            if before.shape == grey.shape and grey.size else frozen(before, grey))
    if reference is not None:
        measures[Check.SCENE_CHANGED] = lambda: scene_changed(own(), reference)
    scores = {name: round(fn(), 4) for name, fn in measures.items() if on.get(name, True)}
    failing = [c for c in CHECKS if c in scores and (
        is_fault(c, scores[c], th) or (c == Check.BLUR and blur_baseline is not None
                                       and scores[c] < th.blur_relative * blur_baseline))]
    hidden: set[str] = set()
    for c in failing:
        hidden |= _HIDES.get(c, frozenset())
    faults = tuple(Fault(c, scores[c]) for c in failing if c not in hidden)
    return Diagnosis(scores, faults)
