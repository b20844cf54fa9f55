"""The picture checks' names and thresholds, without numpy: the config reads them, and every
command that loads a config would otherwise import numpy (~60 ms) for them. The checks
themselves, and where each default comes from: :mod:`camwatch.quality.checks`."""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields


class Check(enum.StrEnum):
    SIGNAL_LOST = "signal_lost"
    TOO_DARK = "too_dark"
    TOO_BRIGHT = "too_bright"
    LOW_CONTRAST = "low_contrast"
    BLUR = "blur"
    FROZEN = "frozen"
    COLOR_CAST = "color_cast"
    NOISE = "noise"
    OCCLUDED = "occluded"
    SCENE_CHANGED = "scene_changed"


#: Chinese names, as 运维 platforms call these faults.
CHECK_ZH: dict[str, str] = {
    Check.SIGNAL_LOST: "信号缺失",
    Check.TOO_DARK: "画面过暗",
    Check.TOO_BRIGHT: "画面过亮",
    Check.LOW_CONTRAST: "对比度低",
    Check.BLUR: "清晰度异常",
    Check.FROZEN: "画面冻结",
    Check.COLOR_CAST: "偏色",
    Check.NOISE: "雪花干扰",
    Check.OCCLUDED: "遮挡",
    Check.SCENE_CHANGED: "场景变换",
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The fault threshold of every check (see the module docstring for where each comes
    from). ``quality.thresholds`` in the config overrides them one by one."""

    signal_lost: float = 0.95  # uniform share above
    too_dark: float = 40.0  # mean luma below
    too_bright: float = 215.0  # mean luma above
    low_contrast: float = 0.06  # RMS contrast below
    blur: float = 0.02  # var(Laplacian) / var(luma) below
    # blur also when under this share of the channel's own baseline (see blur_baseline)
    blur_relative: float = 0.4
    frozen: float = 3.0  # p99 |a - b| of thumbnail cells below
    color_cast: float = 1.5  # K = D / M above
    noise: float = 12.0  # Immerkær σ above
    occluded: float = 0.4  # share of edgeless blocks above
    scene_changed: float = 0.5  # correlation with the reference below

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
