"""The C heap of a long-running daemon (glibc's malloc, through ctypes; elsewhere these do
nothing): arenas and the mmap threshold set once at start, the threshold raised while pictures
are sampled, free pages given back after big frees."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

__all__ = ["ARENA_MAX", "MMAP_THRESHOLD", "picture_threshold", "release_free_memory",
           "set_picture_threshold", "tune_malloc"]


def _libc(name: str, argtypes: list[type], restype: type) -> Callable[..., int] | None:
    try:
        fn = getattr(ctypes.CDLL(None), name)  # glibc only; musl and others lack these
    except (AttributeError, OSError):
        return None
    fn.argtypes, fn.restype = argtypes, restype
    out: Callable[..., int] = fn
    return out


_MALLOC_TRIM = _libc("malloc_trim", [ctypes.c_size_t], ctypes.c_int)
_MALLOPT = _libc("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 * 1024
TRIM_THRESHOLD = 128 * 1024  # glibc's default, fixed with the mmap threshold
ARENA_MAX = 2
_tuned = False  # whether tune_malloc fixed the threshold (else glibc's own adjusts it)


def tune_malloc() -> bool:
    """For a long-running daemon with worker threads (glibc only; call before they start):

    * at most two malloc arenas: each thread otherwise gets one of its own (up to 8 per core),
      which keeps what that thread freed (a reload's planning, a scrape's exposition);
    * a fixed mmap threshold of 256 KiB: glibc's own rises to up to 32 MB after the first large
      block is freed, and from then on the daemon's large blocks (dict tables of 100,000
      channels, a 36 MB exposition) come from the heap and leave holes that stay resident;
      mapped, they go back to the kernel when freed.

    Returns whether glibc took both settings."""
    global _tuned
    if _MALLOPT is None:
        return False
    _tuned = bool(_MALLOPT(_M_ARENA_MAX, ARENA_MAX)) and \
        bool(_MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return _tuned


def picture_threshold(width: int) -> int:
    """The mmap threshold while pictures ``width`` pixels wide are checked: above one float32
    plane of a square picture that wide (a 16:9 640-px picture's luma is 0.9 MB, each of the
    checks' temporaries as big), so that they come from the heap and are used again."""
    return max(MMAP_THRESHOLD, width * width * 4 + 64 * 1024)


def set_picture_threshold(width: int | None) -> bool:
    """Raise the fixed threshold for pictures ``width`` wide (the quality sampler, while it
    samples), or put it back (``None``). Mapped, each of those arrays was a fresh mapping and
    a page fault per 4 KiB: ~3,600 faults a 1080p sample, its checks 15 ms instead of 7 ms
    (bench/README.md). The trim threshold goes up with it, or the heap's freed top would go
    back to the kernel after each picture and fault in again. Does nothing unless
    :func:`tune_malloc` fixed the threshold: glibc's own already rises to such sizes."""
    if not _tuned or _MALLOPT is None:
        return False
    limit = MMAP_THRESHOLD if width is None else picture_threshold(width)
    return bool(_MALLOPT(_M_MMAP_THRESHOLD, limit)) and \
        bool(_MALLOPT(_M_TRIM_THRESHOLD, TRIM_THRESHOLD if width is None else 8 * limit))


def release_free_memory() -> None:
    """Give the C heap's free pages back to the kernel. What a 100,000-channel sweep or a
    reload frees (transition details, the old inventory's tables) otherwise stays in the
    process as free heap: 25 MB of RSS at 100,000 channels, for about 2 ms (ctypes releases
    the GIL for the call)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
