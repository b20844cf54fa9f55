"""camwatch.pacing: background work in a worker thread pauses, releasing the GIL, every few
hundred items, and loses or reorders none of them."""

from __future__ import annotations

import time

from camwatch.pacing import paced


def test_every_item_in_order_with_a_pause_after_every_batch() -> None:
    start = time.monotonic()
    out = list(paced(range(1000), every=100, pause_s=0.005))
    took = time.monotonic() - start
    assert out == list(range(1000))
    assert took >= 10 * 0.005  # ten pauses: a sleep is never shorter than asked


def test_no_pause_before_a_batch_is_full() -> None:
    """A flush of a few dozen changed states (every second) is not slowed at all."""
    start = time.monotonic()
    assert list(paced(range(99), every=100, pause_s=30.0)) == list(range(99))
    assert time.monotonic() - start < 30.0  # no pause was taken


def test_off_it_is_the_items_themselves() -> None:
    """Not paced (the same work run on the loop): no generator in between, no pause."""
    items = list(range(1000))
    assert paced(items, every=1, pause_s=30.0, on=False) is items
