"""The ``quality:`` config section: when and how pictures are sampled, and each check's
threshold (defaults and where they come from: :mod:`camwatch.quality.checks`; the names
and defaults themselves in :mod:`camwatch.quality.names`, which needs no numpy)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from camwatch.configbase import Duration, PositiveInt, _Model
from camwatch.quality.names import Check, Thresholds

_DEFAULT = Thresholds()
MIN_INTERVAL_S = 10.0


class QualityThresholds(_Model):
    """One key per check; the direction (fault below or above) is the check's own."""

    signal_lost: Annotated[float, Field(gt=0, le=1)] = _DEFAULT.signal_lost
    too_dark: Annotated[float, Field(ge=0, le=255)] = _DEFAULT.too_dark
    too_bright: Annotated[float, Field(ge=0, le=255)] = _DEFAULT.too_bright
    low_contrast: Annotated[float, Field(ge=0, le=1)] = _DEFAULT.low_contrast
    blur: Annotated[float, Field(ge=0)] = _DEFAULT.blur
    blur_relative: Annotated[float, Field(ge=0, le=1)] = _DEFAULT.blur_relative
    frozen: Annotated[float, Field(ge=0, le=255)] = _DEFAULT.frozen
    color_cast: Annotated[float, Field(gt=0)] = _DEFAULT.color_cast
    noise: Annotated[float, Field(gt=0)] = _DEFAULT.noise
    occluded: Annotated[float, Field(gt=0, le=1)] = _DEFAULT.occluded
    scene_changed: Annotated[float, Field(ge=-1, le=1)] = _DEFAULT.scene_changed

    @model_validator(mode="after")
    def _dark_below_bright(self) -> QualityThresholds:
        if self.too_dark >= self.too_bright:
            raise ValueError(f"too_dark ({self.too_dark:g}) must be below too_bright "
                             f"({self.too_bright:g})")
        return self

    def thresholds(self) -> Thresholds:
        return Thresholds(**self.model_dump())


class QualityOverride(_Model):
    """A cadence for the channels of one project and/or class (like probing.overrides)."""

    project: str | None = None
    class_: int | None = Field(default=None, alias="class")
    interval: Duration


class QualityConfig(_Model):
    enabled: bool = Field(default=False, description="sample pictures in the daemon")
    interval: Duration = Field(default=3600.0, description="one sample per channel per interval")
    overrides: tuple[QualityOverride, ...] = ()
    # samples in flight: each holds an RTSP session for about two GOPs (2-5 s), so this, not
    # the CPU, bounds the samples an hour (8 sessions of ~2.6 s: ~11,000)
    max_concurrency: Annotated[int, Field(gt=0, le=1000)] = 8
    decode_workers: Annotated[int, Field(gt=0, le=64)] = 2
    timeout: Duration = Field(default=15.0, description="fetching one sample, keyframes included")
    max_bytes: PositiveInt = Field(default=4 * 1024 * 1024,
                                   description="RTP bytes read for one keyframe at most")
    retry: Duration = Field(
        default=300.0, description="a sample that could not be taken (unknown) is tried once "
                                   "more this much later, not only at the next interval; 0s: not")
    second_frame: bool = Field(default=True,
                               description="wait for a second keyframe (the frozen check)")
    width: Annotated[int, Field(ge=64, le=1920)] = 640
    thumbnail_budget: PositiveInt = Field(
        default=64 * 1024 * 1024,
        description="bytes of thumbnail JPEGs kept in memory in all (oldest fault-free first)")
    thumbnail_quality: Annotated[int, Field(ge=2, le=31)] = Field(
        default=8, description="JPEG qscale of the kept thumbnail (2 best .. 31 smallest)")
    checks: dict[Check, bool] = Field(default_factory=dict,
                                      description="turn a check off: {blur: false}")
    thresholds: QualityThresholds = QualityThresholds()

    @model_validator(mode="after")
    def _sane(self) -> QualityConfig:
        for where, value in [("interval", self.interval),
                             *((f"overrides[{i}].interval", o.interval)
                               for i, o in enumerate(self.overrides))]:
            if value < MIN_INTERVAL_S:
                raise ValueError(f"{where} {value:g}s is below {MIN_INTERVAL_S:g}s: sampling "
                                 "decodes a picture, it is not a liveness probe")
        return self
