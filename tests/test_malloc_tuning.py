"""The daemon's malloc settings (camwatch.malloc.tune_malloc): with glibc's dynamic mmap
threshold, a large block freed once makes later large blocks come from the heap, where the
holes they leave stay resident; tuned, they are mapped and go back to the kernel."""

from __future__ import annotations

import subprocess
import sys

import pytest

MALLINFO = r"""
import ctypes, sys
class MI2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MI2
"""

PROBE = MALLINFO + r"""
if sys.argv[1] == "tuned":
    from camwatch.malloc import tune_malloc
    assert tune_malloc()
big = bytearray(8 << 20)   # mapped either way (above any threshold at start)
del big                    # untuned: the threshold rises to 8 MiB here
before = libc.mallinfo2().hblks
block = bytearray(1 << 20)  # 1 MiB: mapped only with the fixed threshold
print(libc.mallinfo2().hblks - before)
"""


def _mapped_blocks(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         timeout=60, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_large_blocks_stay_mapped_after_tuning() -> None:
    try:
        untuned = _mapped_blocks("untuned")
    except subprocess.CalledProcessError as exc:  # musl: no mallinfo2
        pytest.skip(f"not glibc: {exc.stderr.strip()[-200:]}")
    assert untuned == 0  # glibc's dynamic threshold: the 1 MiB block came from the heap
    assert _mapped_blocks("tuned") == 1


PICTURES = MALLINFO + r"""
from camwatch.malloc import set_picture_threshold, tune_malloc
assert not set_picture_threshold(640)  # untuned: glibc's own threshold is left alone
assert tune_malloc()
def mapped(size):
    libc.malloc_trim(0)  # no free heap left to take it from
    before = libc.mallinfo2().hblks
    block = bytearray(size)
    return libc.mallinfo2().hblks - before
print(mapped(921_600))                     # a 640x360 float32 picture: mapped
assert set_picture_threshold(640)
print(mapped(921_600), mapped(1_700_000))  # while sampling: from the heap, both
libc.malloc_trim(0)
before = libc.mallinfo2().arena
block = bytearray(1_700_000)
grown = libc.mallinfo2().arena
del block
print(int(libc.mallinfo2().arena >= grown > before))  # and kept when freed, not trimmed
assert set_picture_threshold(None)
print(mapped(921_600))                     # mapped again
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_pictures_come_from_the_heap_while_sampling() -> None:
    out = subprocess.run([sys.executable, "-c", PICTURES], capture_output=True, text=True,
                         timeout=60)
    if "mallinfo2" in out.stderr:
        pytest.skip("not glibc")
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.split() == ["1", "0", "0", "1", "1"]
