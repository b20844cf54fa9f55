"""Run camwatch with a watchdog that says what its event loop was doing while it stalled.

``python bench/stalltrace.py OUT [camwatch arguments...]``, e.g. ``bench_loop.py --stall-trace
OUT``: a callback on the loop notes the time every 5 ms; a thread wakes every 5 ms and, while
that note is more than 40 ms old, samples the main thread's Python stack (and the other
threads'). When the loop catches up it appends to OUT the stall's length and its most frequent
stacks; garbage collections longer than 10 ms are listed too, and a summary of all of them every
minute; ``CAMWATCH_BENCH_GC0=N`` in the environment tries another young-generation threshold.
A diagnostic for benchmarks only: the sampling itself takes the GIL, so stalls come out
somewhat longer than without it.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import sys
import threading
import time
import traceback
from typing import Any, TextIO

LATE_S = 0.040  # a stall: the loop this much behind its 5 ms note
STEP_S = 0.005


def _where(frame: Any, depth: int) -> str:
    return " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                      for f in reversed(traceback.extract_stack(frame)[-depth:]))


def _gc_timer(out: TextIO) -> None:
    """Logs collections over 10 ms of wall time, and every minute a summary of all of them
    by generation in CPU time of the collecting thread (what a loaded machine does not
    inflate): count, total, median, largest, and for generation 0 the net new objects that
    set it off."""
    started = [0.0, 0.0, 0]
    cpu: dict[int, list[float]] = {0: [], 1: [], 2: []}
    seen: dict[int, int] = {0: 0, 1: 0, 2: 0}
    summary_at = [time.monotonic() + 60.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        gen = info["generation"]
        if phase == "start":
            started[0], started[1] = time.monotonic(), time.thread_time()
            started[2] = gc.get_count()[0]
            return
        cpu[gen].append((time.thread_time() - started[1]) * 1000)
        seen[gen] += started[2]
        if (took := time.monotonic() - started[0]) > 0.010:
            out.write(f"{time.time():.3f} GC gen{gen} {took * 1000:.0f} ms\n")
        if time.monotonic() >= summary_at[0]:
            summary_at[0] += 60.0
            for g, ms in cpu.items():
                if ms:
                    ms.sort()
                    new = f"; {seen[g] / len(ms):,.0f} net new objects each" if g == 0 else ""
                    out.write(f"{time.time():.3f} GC-SUMMARY gen{g} n={len(ms)} cpu total "
                              f"{sum(ms):.0f} ms median {ms[len(ms) // 2]:.1f} max "
                              f"{ms[-1]:.1f} ms{new}; thresholds {gc.get_threshold()}\n")
                ms.clear()
                seen[g] = 0

    gc.callbacks.append(on_gc)


def install(loop: asyncio.AbstractEventLoop, out: TextIO) -> None:
    beat = [time.monotonic()]

    def tick() -> None:
        beat[0] = time.monotonic()
        loop.call_later(STEP_S, tick)

    loop.call_soon(tick)
    main = threading.main_thread().ident

    def watch() -> None:
        started: float | None = None
        mains: collections.Counter[str] = collections.Counter()
        others: collections.Counter[str] = collections.Counter()
        while True:
            time.sleep(STEP_S)
            if time.monotonic() - beat[0] > LATE_S:
                if started is None:
                    started = time.time() - LATE_S
                    mains.clear()
                    others.clear()
                for tid, frame in sys._current_frames().items():
                    if tid == main:
                        mains[_where(frame, 6)] += 1
                    elif tid != threading.get_ident():
                        others[_where(frame, 4)] += 1
            elif started is not None:
                out.write(f"{started:.3f} STALL {(time.time() - started) * 1000:.0f} ms\n")
                out.writelines(f"  main x{n}: {s}\n" for s, n in mains.most_common(4))
                out.writelines(f"  other x{n}: {s}\n" for s, n in others.most_common(3))
                started = None

    threading.Thread(target=watch, daemon=True, name="stalltrace").start()


def main() -> None:
    out = open(sys.argv[1], "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (for the run)
    _gc_timer(out)
    import uvloop

    run = uvloop.run

    def new_event_loop() -> uvloop.Loop:
        loop = uvloop.new_event_loop()
        install(loop, out)
        return loop

    def traced_run(coro: Any, **kw: Any) -> Any:  # camwatch's cli runs its daemon with it
        return run(coro, loop_factory=new_event_loop, **kw)

    uvloop.run = traced_run
    if gc0 := os.environ.get("CAMWATCH_BENCH_GC0"):  # try another young-generation threshold
        import camwatch.sweep

        camwatch.sweep.GC_THRESHOLD0 = int(gc0)
    from camwatch.cli import main as camwatch

    sys.argv = ["camwatch", *sys.argv[2:]]
    sys.exit(camwatch())


if __name__ == "__main__":
    main()
