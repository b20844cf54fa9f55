"""Run camwatch and, on SIGUSR1, write what its memory is made of.

``python bench/memtrace.py OUT [camwatch arguments...]``, e.g. ``bench_loop.py --mem-trace
OUT``. On each SIGUSR1 it appends to OUT the process's RSS, glibc's heap figures
(``mallinfo2``: in use and free), and a census of the live objects the cyclic GC and the
interpreter know (by type: count and ``sys.getsizeof`` total; strings and bytes are not
GC-tracked, so they are counted from the containers that hold them, once each). With
``CAMWATCH_MEMTRACE_TM=1`` in the environment it also traces allocations from the start
(``tracemalloc``, one frame: slows the daemon by ~2x) and lists the top lines by size. A
diagnostic for benchmarks only; the census holds the GIL for a few seconds.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import os
import signal
import sys
import time
import tracemalloc
from typing import Any, TextIO


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return -1.0


def _census(out: TextIO, top: int = 25) -> None:
    sizes: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    seen: set[int] = set()
    frozen = gc.get_freeze_count()
    gc.unfreeze()  # frozen objects are out of get_objects()' sight; frozen again below
    objects = gc.get_objects()
    if frozen:
        gc.freeze()
    for obj in objects:
        name = type(obj).__name__
        sizes[name] += sys.getsizeof(obj)
        counts[name] += 1
        for ref in gc.get_referents(obj):  # untracked leaves: str, bytes, int, float
            if type(ref) in (str, bytes, int, float) and id(ref) not in seen:
                seen.add(id(ref))
                t = type(ref).__name__
                sizes[t] += sys.getsizeof(ref)
                counts[t] += 1
    del objects
    total = sum(sizes.values())
    out.write(f"  objects reachable from GC-tracked containers: {total / 2**20:.1f} MiB\n")
    for name, size in sizes.most_common(top):
        out.write(f"  {size / 2**20:8.1f} MiB {counts[name]:>10,} {name}\n")


def dump(out: TextIO) -> None:
    out.write(f"=== {time.strftime('%H:%M:%S')} RSS {_rss_mib():.1f} MiB\n")
    try:
        m = ctypes.CDLL(None).mallinfo2
        m.restype = _Mallinfo2
        info = m()
        out.write(f"  glibc heap: in use {info.uordblks / 2**20:.1f} MiB, free "
                  f"{info.fordblks / 2**20:.1f} MiB, mmapped {info.hblkhd / 2**20:.1f} MiB\n")
    except (AttributeError, OSError):
        pass
    t0 = time.monotonic()
    _census(out)
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot()
        stats = snap.statistics("lineno")
        out.write(f"  traced: {sum(s.size for s in stats) / 2**20:.1f} MiB; top lines:\n")
        for s in stats[:40]:
            frame = s.traceback[0]
            out.write(f"  {s.size / 2**20:8.1f} MiB {s.count:>9,} "
                      f"{frame.filename.rsplit('/camwatch/', 1)[-1]}:{frame.lineno}\n")
    out.write(f"  (census took {time.monotonic() - t0:.1f} s)\n")
    out.flush()


def main() -> None:
    out = open(sys.argv[1], "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (for the run)
    if os.environ.get("CAMWATCH_MEMTRACE_TM") == "1":
        tracemalloc.start(1)

    def on_usr1(*_: Any) -> None:
        dump(out)

    signal.signal(signal.SIGUSR1, on_usr1)
    from camwatch.cli import main as camwatch

    sys.argv = ["camwatch", *sys.argv[2:]]
    sys.exit(camwatch())


if __name__ == "__main__":
    main()
