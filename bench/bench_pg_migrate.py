"""How long ``camwatch store migrate`` keeps a county's daemon stopped.

    python bench/bench_pg_migrate.py [--channels 100000] [--transitions 1000000]

Builds a SQLite store like a 100,000-channel county's after a month or two (every state row,
``--transitions`` transitions with details, two monthly inventory snapshots, a day of rate
snapshots, some outbox items), starts a PostgreSQL cluster of its own (tests/peers/postgres.py,
fsync on), and times :func:`camwatch.store.migrate.migrate`: the copy (one transaction) and
the row-by-row check, wall and CPU (this process; the server's is not counted). Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from camwatch.secrets import Secret
from camwatch.store.base import ChannelState, RateSnapshot, Transition
from camwatch.store.migrate import migrate
from camwatch.store.sqlite import SqliteStore

T0 = 1_800_000_000.0


def build(path: Path, channels: int, transitions: int) -> None:
    store = SqliteStore(path)
    ids = [f"41162800001321{i:06d}" for i in range(channels)]
    store.write_batch([ChannelState(cid, "online", since=T0, last_probe=T0 + 60, last_ok=T0,
                                    latency_ms=20.0, info={"vendor": "海康威视"})
                       for cid in ids], [])
    batch: list[Transition] = []
    for k in range(transitions):
        batch.append(Transition(ids[(k * 7919) % channels], T0 + k * 2.5, "online", "offline",
                                "timeout", {"latency_ms": 3000, "attempts": 3}))
        if len(batch) == 50_000:
            store.write_batch([], batch)
            batch = []
    store.write_batch([], batch)
    for month in ("2026-10", "2026-11"):
        store.save_inventory_snapshot(month, ({"id": cid, "name": f"点位{i}", "class": 1 + i % 3,
                                               "county": "鹿邑县", "township": f"镇{i % 20}"}
                                              for i, cid in enumerate(ids)))
    store.add_rate_snapshots(RateSnapshot(T0 + m * 300, {"county": "鹿邑县", "township": f"镇{t}"},
                                          k, None, 95, 100)
                             for m in range(288) for t in range(20) for k in (1, 2, 3))
    for i in range(1000):
        store.enqueue("wecom", f"fp{i}", {"alert": "x", "i": i}, T0 + i)
    store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, default=100_000)
    ap.add_argument("--transitions", type=int, default=1_000_000)
    args = ap.parse_args()
    from tests.peers.postgres import PgServer, binaries

    bindir = binaries()
    if bindir is None:
        sys.exit("no PostgreSQL binaries in /usr/lib/postgresql/*/bin (Debian postgresql)")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "camwatch.db"
        w0 = time.perf_counter()
        build(src, args.channels, args.transitions)
        print(f"SQLite store built in {time.perf_counter() - w0:.1f} s: "
              f"{src.stat().st_size / 1e6:.0f} MB")
        server = PgServer(bindir, fsync=True)
        try:
            with server.database() as dsn:
                marks: list[tuple[str, float, float]] = []

                def progress(msg: str) -> None:
                    marks.append((msg, time.perf_counter(), time.process_time()))

                w0, c0 = time.perf_counter(), time.process_time()
                counts = migrate(src, Secret(dsn), progress)
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                copied = [m for m in marks if "rows copied" in m[0]][-1]  # the last table
        finally:
            server.stop()
    rows = sum(counts.values())
    print(f"{rows:,} rows in {len(counts)} tables: "
          + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    print(f"copy (one transaction): {copied[1] - w0:.1f} s wall; copy + check: {wall:.1f} s "
          f"wall, {cpu:.1f} s CPU; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
