"""Background work in a worker thread, paced so that the event loop keeps its own pace.

A worker thread running Python takes the GIL in turns with the event loop (every 0.2 ms, see
``daemon.GIL_SWITCH_S``): while it runs flat out the loop gets at most half of a core. At
100,000 channels the loop's probing needs more than that, so a second of such work (the month's
inventory snapshot after a reload, a full flush of every channel's state, the metrics caches
rebuilt for a new inventory) left it behind by up to ~200 ms (``bench/bench_loop.py``). None of
that work is urgent: it pauses briefly every few hundred items, and the loop catches up then.

Only for worker threads: a pause on the event loop's own thread would stall it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

EVERY = 500  # items between pauses: ~0.5-1 ms of Python each for the users below
PAUSE_S = 0.002  # the thread uses at most about a third of a core meanwhile


def paced(items: Iterable[T], every: int = EVERY, pause_s: float = PAUSE_S, *,
          on: bool = True) -> Iterable[T]:
    """``items``, with a pause of ``pause_s`` (the GIL released) after every ``every``;
    ``items`` themselves when not ``on`` (the same work run on the loop, or where no loop
    waits)."""
    return _paced(items, every, pause_s) if on else items


def _paced(items: Iterable[T], every: int, pause_s: float) -> Iterator[T]:
    for i, item in enumerate(items, 1):
        yield item
        if i % every == 0:
            time.sleep(pause_s)
