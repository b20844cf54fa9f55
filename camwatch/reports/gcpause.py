"""Pausing Python's cyclic garbage collector while the bulletin is built.

Computing a bulletin allocates a few million small lists, tuples and objects, none of them in a
reference cycle; each allocation burst triggers a collection that walks every live container
(the whole inventory and timeline), which cost ~1.4 s of the ~5 s of computing 100,000
channels. Reference counting still frees everything as usual while paused; a collection runs
again as soon as the collector is re-enabled. Process-wide: other threads see it paused too,
for the few seconds the report takes.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block (re-enabled after it only if it was
    enabled before, so blocks nest)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
