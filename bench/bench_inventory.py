"""Loading a large inventory: wall time, CPU and peak memory of ``load_inventory``.

    python bench/bench_inventory.py [--rows 100000] [--format csv|xlsx]

The inventory is generated first (by the simulator's generator, Chinese headers, realistic
values) in a temporary directory; the load is measured in a fresh child process so that its
peak RSS is the loader's own. Prints one line of figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _load(path: str, out: mp.Queue) -> None:  # type: ignore[type-arg]
    from camwatch.config import InventoryConfig
    from camwatch.inventory import load_inventory

    before = resource.getrusage(resource.RUSAGE_SELF)
    rss0 = before.ru_maxrss
    t0 = time.perf_counter()
    inv = load_inventory(InventoryConfig(path=Path(path)))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    out.put({"rows": inv.rows_read, "channels": len(inv.channels), "wall_s": wall,
             "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
             "peak_rss_mb": after.ru_maxrss / 1024, "rss_before_mb": rss0 / 1024})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000, help="connected channels to generate")
    ap.add_argument("--format", choices=["csv", "xlsx"], default="csv")
    args = ap.parse_args()

    from camwatch.sim.inventory_gen import InventorySpec, plan_inventory, write_inventory

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"inventory.{args.format}"
        t0 = time.perf_counter()
        spec = InventorySpec(connected=args.rows, addressing="ports", port_base=20000,
                             nvr_share=0.25, nvr_channels=(32, 64))
        write_inventory(plan_inventory(spec), path, args.format)
        gen = time.perf_counter() - t0
        ctx = mp.get_context("spawn")
        q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        p = ctx.Process(target=_load, args=(str(path), q))
        p.start()
        r = q.get(timeout=600)
        p.join()
        r.update(format=args.format, file_mb=path.stat().st_size / 1e6, generate_s=gen)
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()},
                         ensure_ascii=False))


if __name__ == "__main__":
    main()
