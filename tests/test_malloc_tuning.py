"""The daemon's malloc settings (camwatch.engine.tune_malloc): with glibc's dynamic mmap
threshold, a large block freed once makes later large blocks come from the heap, where the
holes they leave stay resident; tuned, they are mapped and go back to the kernel."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, sys
class MI2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MI2
if sys.argv[1] == "tuned":
    from camwatch.engine import tune_malloc
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
