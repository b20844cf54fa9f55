"""The vocabulary of camwatch's config models: durations (``5s``), rates (``'98%'``), the
frozen base model that rejects unknown keys, and paths relative to the config file. Every
section's model (:mod:`camwatch.config`, :mod:`camwatch.rules.alert_config`,
:mod:`camwatch.sinks.config`) builds on it; it imports no other camwatch module."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo

__all__ = ["Duration", "Fraction", "PositiveInt", "_Model", "_resolve_path", "parse_duration",
           "parse_fraction"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """``500ms``, ``5s``, ``15m``, ``24h``, ``7d`` -> seconds. Bare numbers are refused: a
    unit-less ``60`` in an ops file is a guess waiting to go wrong."""
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _UNIT_S[m.group(2)]
    raise ValueError(f"expected a duration like '500ms', '5s', '15m' or '24h', got {value!r}")


def parse_fraction(value: object) -> float:
    """A target rate: ``'98%'`` or ``0.98``. ``98`` is refused (ambiguous)."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            with contextlib.suppress(ValueError):
                value = float(text[:-1]) / 100.0
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    raise ValueError(f"expected a rate like '98%' or 0.98, got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Fraction = Annotated[float, BeforeValidator(parse_fraction)]
PositiveInt = Annotated[int, Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    base = (info.context or {}).get("base_dir")
    if value is not None and base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


