"""The picture checks, each on a synthetic picture made to have its fault, and a natural-looking
textured picture that has none. Pure functions: no decoder, no network."""

from __future__ import annotations

import math

import numpy as np
import pytest

from camwatch.quality import checks as C
from camwatch.quality.checks import Check, Frame, Thresholds, diagnose
from camwatch.quality.config import QualityConfig
from camwatch.quality.names import CHECK_ZH
from tests import quality_images as qi

NATURAL = qi.scene()
NEXT = qi.scene(shift=5)  # the same view a few seconds later, panned a little
REF = C.thumbnail(C.to_grey(NATURAL))


@pytest.mark.parametrize("seed", [1, 7, 11, 23])
def test_natural_pictures_have_no_fault(seed: int) -> None:
    pic = qi.scene(seed=seed)
    d = diagnose(Frame.of(pic), previous=Frame.of(qi.scene(seed=seed, shift=4)),
                 reference=C.thumbnail(C.to_grey(pic)))
    assert d.ok, d.faults
    assert set(d.scores) == set(Check)  # every check ran


FAULTS = {
    "blue screen": (qi.solid((0, 0, 200)), {Check.SIGNAL_LOST, Check.TOO_DARK}),
    "black screen": (qi.solid((0, 0, 0)), {Check.SIGNAL_LOST, Check.TOO_DARK}),
    "grey screen": (qi.solid((128, 128, 128)), {Check.SIGNAL_LOST}),
    "dark": (qi.scale(NATURAL, 0.2), {Check.TOO_DARK}),
    "bright": (qi.scale(NATURAL, 0.5, 160), {Check.TOO_BRIGHT}),
    "low contrast": (qi.scale(NATURAL, 0.15, 110), {Check.LOW_CONTRAST}),
    "blurred": (qi.gaussian_blur(NATURAL, 2.0), {Check.BLUR}),
    "snow": (qi.snow(), {Check.NOISE}),
    "sepia": (qi.sepia(NATURAL), {Check.COLOR_CAST}),
    "green": (qi.tint(NATURAL, (0.7, 1.2, 0.7)), {Check.COLOR_CAST}),
    "half covered": (qi.cover(NATURAL, 0.55), {Check.OCCLUDED}),
    "turned": (qi.scene(seed=99), {Check.SCENE_CHANGED}),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_each_fault_is_found_and_nothing_else(name: str) -> None:
    pic, expected = FAULTS[name]
    d = diagnose(Frame.of(pic), previous=Frame.of(NEXT), reference=REF)
    assert d.fault_names == expected, d.scores


def test_a_blue_screen_with_a_caption_is_still_signal_lost() -> None:
    pic = qi.solid((0, 0, 200))
    pic[150:170, 200:440] = 255  # "无视频信号" in white: 2 % of the screen
    assert Check.SIGNAL_LOST in diagnose(Frame.of(pic)).fault_names


def test_frozen_needs_two_identical_pictures() -> None:
    f = Frame.of(NATURAL)
    assert diagnose(f, previous=Frame.of(NATURAL.copy())).fault_names == {Check.FROZEN}
    assert diagnose(f, previous=Frame.of(NEXT)).ok
    # re-encoding noise (2-3 levels a pixel) on a frozen picture is still frozen ...
    rng = np.random.default_rng(5)
    recoded = np.clip(NATURAL + rng.normal(0, 3.0, NATURAL.shape), 0, 255).astype(np.uint8)
    assert C.frozen(C.to_grey(NATURAL), C.to_grey(recoded)) < Thresholds().frozen
    # ... and one person walking through (a 30x90 px figure moved 40 px) is not
    walker = NATURAL.copy()
    walker[200:290, 300:330] = 30
    moved = NATURAL.copy()
    moved[200:290, 340:370] = 30
    assert C.frozen(C.to_grey(walker), C.to_grey(moved)) > Thresholds().frozen
    assert diagnose(f).scores.keys() == set(Check) - {Check.FROZEN, Check.SCENE_CHANGED}


def test_frozen_of_different_sizes_is_not_frozen() -> None:
    assert C.frozen(np.zeros((4, 4), np.float32), np.zeros((4, 5), np.float32)) == math.inf


# Each check's boundary, at its default threshold: (check, score just inside, just outside).
BOUNDARIES = [
    (Check.SIGNAL_LOST, 0.95, 0.951),
    (Check.TOO_DARK, 40.0, 39.9),
    (Check.TOO_BRIGHT, 215.0, 215.1),
    (Check.LOW_CONTRAST, 0.06, 0.059),
    (Check.BLUR, 0.02, 0.0199),
    (Check.FROZEN, 3.0, 2.99),
    (Check.COLOR_CAST, 1.5, 1.51),
    (Check.NOISE, 12.0, 12.1),
    (Check.OCCLUDED, 0.4, 0.41),
    (Check.SCENE_CHANGED, 0.5, 0.49),
]


@pytest.mark.parametrize(("check", "ok", "fault"), BOUNDARIES, ids=[b[0] for b in BOUNDARIES])
def test_threshold_boundaries(check: str, ok: float, fault: float) -> None:
    th = Thresholds()
    assert not C.is_fault(check, ok, th)
    assert C.is_fault(check, fault, th)


def test_precedence_hides_consequences() -> None:
    # a flat screen is not also blurred, low-contrast and occluded
    d = diagnose(Frame.of(qi.solid((0, 0, 200))), reference=REF)
    assert d.scores[Check.BLUR] == 0.0 and d.scores[Check.OCCLUDED] == 1.0
    assert d.fault_names == {Check.SIGNAL_LOST, Check.TOO_DARK}
    # occlusion changes the view: scene_changed would only repeat it
    d = diagnose(Frame.of(qi.cover(NATURAL, 0.55)), reference=REF)
    assert d.scores[Check.SCENE_CHANGED] < Thresholds().scene_changed
    assert d.fault_names == {Check.OCCLUDED}


def test_thresholds_and_switches_come_from_config() -> None:
    blurred = Frame.of(qi.gaussian_blur(NATURAL, 2.0))
    cfg = QualityConfig(thresholds={"blur": 0.001})
    assert diagnose(blurred, cfg.thresholds.thresholds()).ok
    off = QualityConfig(checks={"blur": False})
    d = diagnose(blurred, enabled=off.checks)
    assert d.ok and Check.BLUR not in d.scores


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="too_dark"):
        QualityConfig(thresholds={"too_dark": 220})
    with pytest.raises(ValueError, match="interval 5s is below 10s"):
        QualityConfig(interval="5s")
    with pytest.raises(ValueError, match=r"overrides\[0\].interval 1s is below"):
        QualityConfig(overrides=[{"class": 1, "interval": "1s"}])
    with pytest.raises(ValueError):
        QualityConfig(checks={"sharpness": False})  # no such check


def test_scene_correlation() -> None:
    assert C.scene_changed(REF, REF) == pytest.approx(1.0)
    assert C.scene_changed(REF, 255 - REF) == pytest.approx(-1.0)
    assert C.scene_changed(np.zeros_like(REF), REF) == 0.0  # flat: no correlation at all
    assert C.thumbnail(C.to_grey(qi.scene(width=704, height=576))).shape == (36, 64)
    assert C.thumbnail(np.zeros((10, 10), np.float32)).shape == (36, 64)


def test_tiny_and_empty_pictures_do_not_crash() -> None:
    for shape in [(0, 0, 3), (1, 1, 3), (2, 7, 3), (17, 3, 3)]:
        pic = np.zeros(shape, np.uint8)
        d = diagnose(Frame.of(pic))
        assert set(d.scores) >= {Check.SIGNAL_LOST, Check.BLUR}


def test_fault_names_in_chinese() -> None:
    assert set(CHECK_ZH) == set(Check)
    assert CHECK_ZH[Check.NOISE] == "雪花干扰"


def test_blur_against_the_channel_baseline() -> None:
    slight = Frame.of(qi.gaussian_blur(NATURAL, 0.7))  # above the floor, far below its usual
    assert C.blur(slight.grey) > Thresholds().blur
    assert diagnose(slight).ok  # no baseline yet: only the absolute floor
    usual = C.blur(C.to_grey(NATURAL))
    d = diagnose(slight, blur_baseline=usual)
    assert d.fault_names == {Check.BLUR}
    assert diagnose(Frame.of(NATURAL), blur_baseline=usual).ok
    # a channel whose view is soft anyway (baseline low) is not flagged for being itself
    assert diagnose(slight, blur_baseline=C.blur(slight.grey) * 1.1).ok


# (baseline before, new sharp score) -> baseline after: the mean of the first three, then a
# moving average giving each new sample a quarter
BASELINES = [
    (None, 0.4, (0.4, 1)),
    ((0.4, 1), 0.2, (0.3, 2)),
    ((0.3, 2), 0.6, (0.4, 3)),
    ((0.4, 3), 0.8, (0.5, 4)),
    ((0.5, 4), 0.1, (0.4, 5)),
]


@pytest.mark.parametrize(("before", "score", "after"), BASELINES)
def test_update_baseline(before: tuple[float, int] | None, score: float,
                         after: tuple[float, int]) -> None:
    value, n = C.update_baseline(before, score)
    assert (round(value, 6), n) == after


def test_baseline_counts_from_three_samples() -> None:
    assert C.baseline_value(None) is None
    assert C.baseline_value((0.3, 2)) is None
    assert C.baseline_value((0.3, 3)) == 0.3


# The textbook forms of three measures whose fast forms are less obvious: block means as a mean
# over both block axes, sRGB -> Lab with the transfer function and the cube root per pixel, and
# the share of pixels near the median colour by differences. The fast forms must agree.
def _thumbnail_plain(grey: np.ndarray) -> np.ndarray:
    by, bx = grey.shape[0] // C.THUMB_H, grey.shape[1] // C.THUMB_W
    cells = grey[:by * C.THUMB_H, :bx * C.THUMB_W].astype(np.float64)
    return cells.reshape(C.THUMB_H, by, C.THUMB_W, bx).mean(axis=(1, 3))


def _color_cast_plain(rgb: np.ndarray) -> float:
    f = rgb[::4, ::4].astype(np.float64) / 255.0
    lin = np.where(f <= 0.04045, f / 12.92, ((f + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                  [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    eps, k = 216 / 24389, 24389 / 27
    fxyz = np.where(xyz > eps, np.cbrt(xyz), (k * xyz + 16) / 116)
    a = 500 * (fxyz[..., 0] - fxyz[..., 1])
    b = 200 * (fxyz[..., 1] - fxyz[..., 2])
    d = math.hypot(a.mean(), b.mean())
    return d / max(math.hypot(np.abs(a - a.mean()).mean(), np.abs(b - b.mean()).mean()), 2.0)


def _signal_lost_plain(rgb: np.ndarray) -> float:
    sub = rgb[::4, ::4].reshape(-1, 3).astype(np.int64)
    med = np.array([np.sort(sub[:, c])[(len(sub) - 1) // 2] for c in range(3)])
    return float((np.abs(sub - med).max(axis=1) <= 10).mean())


@pytest.mark.parametrize("name", ["natural", "sepia", "tinted", "blue caption", "snow", "odd size"])
def test_fast_measures_agree_with_their_textbook_forms(name: str) -> None:
    pic = {"natural": NATURAL, "sepia": qi.sepia(NATURAL),
           "tinted": qi.tint(NATURAL, (0.7, 1.0, 0.7)), "snow": qi.snow(),
           "blue caption": qi.cover(qi.solid((0, 0, 200)), 0.04, 235),
           "odd size": qi.scene()[:357, :635].copy()}[name]
    grey = C.to_grey(pic)
    assert np.abs(C.thumbnail(grey) - _thumbnail_plain(grey)).max() < 1e-3
    assert C.color_cast(pic) == pytest.approx(_color_cast_plain(pic), rel=1e-4, abs=1e-4)
    assert C.signal_lost(pic) == pytest.approx(_signal_lost_plain(pic), abs=1e-9)
    assert C.low_contrast(grey) == pytest.approx(float(grey.astype(np.float64).std()) / 255,
                                                 rel=1e-5)
