"""Terminal output: tables that line up with Chinese text, and a progress line that shows
only on a terminal."""

from __future__ import annotations

import sys
import time
import unicodedata
from collections.abc import Sequence
from typing import TextIO


def width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(width(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        parts = []
        for i, c in enumerate(r):
            pad = widths[i] - width(c)
            # numbers right-aligned, text left-aligned
            right = (n > 0 and c[:1].isdigit()) or (c[:1] == "-" and c[1:2].isdigit())
            parts.append(" " * pad + c if right else c + " " * pad)
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


class Progress:
    """``done/total`` on one line of stderr, redrawn at most 10 times a second; silent when
    stderr is not a terminal (piped output stays clean)."""

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        pct = 100.0 * done / total if total else 100.0
        bar = "#" * int(pct / 4)
        self.stream.write(f"\r{self.label} [{bar:<25}] {done}/{total} {pct:5.1f}%")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()
