"""The PostgreSQL write path: what the store writer thread spends on 100,000 channels.

    python bench/bench_pg_write.py [--channels 100000] [--churn 0.05] [--interval 60]
                                   [--repeat 3] [--dsn-env NAME]

Starts a PostgreSQL cluster of its own (tests/peers/postgres.py: initdb + pg_ctl in a
temporary directory, loopback, fsync on as in production) unless ``--dsn-env`` names a DSN,
and for each driver, in a new database:

1. **full flush**: every channel's state row at once (the engine's full-state write every
   5 minutes, and the first write after a start): wall and CPU seconds of the calling thread
   (``time.thread_time``: the driver's protocol work and camwatch's row building; the server's
   CPU is not counted), median of ``--repeat``.
2. **steady interval**: ``--churn`` of the channels change state within ``--interval``
   seconds (5 % of 100,000 = 5,000 state rows and 5,000 transitions), written as the engine
   does, one batch a second (``interval`` batches); the CPU of the interval's batches over the
   interval's length is the share of a core the writer needs at that churn.

Drivers: camwatch's :class:`~camwatch.store.postgres.PostgresStore` (psycopg 3, sync: COPY +
one upsert above ``COPY_ABOVE`` rows, a pipelined ``executemany`` below); the same with
``executemany`` only; asyncpg (``copy_records_to_table`` into a temporary table + the same
upsert, ``executemany`` below the same threshold), its coroutines run on an event loop of the
writer thread's own, as an async driver would have to be under the one writer thread; and the
SQLite store, for reference. Every driver builds the same row tuples (JSON included). Prints one
table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from camwatch.secrets import Secret
from camwatch.store import postgres as pg
from camwatch.store.base import ChannelState, Transition
from camwatch.store.sqlite import SqliteStore

T0 = 1_800_000_000.0
Writer = Callable[[list[ChannelState], list[Transition]], None]


def states(n: int, t: float) -> list[ChannelState]:
    return [ChannelState(f"41162800001321{i:06d}", "online" if i % 20 else "offline",
                         None if i % 20 else "timeout", since=t - i, last_probe=t,
                         last_ok=t if i % 20 else t - 3600, fails=0 if i % 20 else 3, oks=i % 5,
                         latency_ms=12.5 + i % 40, clock_drift_s=None,
                         info={"vendor": "海康威视", "model": "DS-2CD3T46"})
            for i in range(n)]


def transitions(ids: list[str], t: float) -> list[Transition]:
    return [Transition(cid, t, "online", "offline", "timeout", {"latency_ms": 3000})
            for cid in ids]


class AsyncpgWriter:
    """The same write_batch on asyncpg, on a loop owned by the calling (writer) thread."""

    def __init__(self, dsn: str) -> None:
        import asyncpg

        self.loop = asyncio.new_event_loop()
        self.conn: Any = self.loop.run_until_complete(asyncpg.connect(dsn))
        self.loop.run_until_complete(self.conn.execute(
            "CREATE TEMPORARY TABLE channel_state_in (LIKE channel_state INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"))

    def __call__(self, st: list[ChannelState], tr: list[Transition]) -> None:
        state_rows = [
            (s.channel_id, s.state, s.reason, s.since, s.last_probe, s.last_ok, s.fails, s.oks,
             s.latency_ms, s.clock_drift_s, int(s.flapping), s.detail,
             json.dumps(s.info, ensure_ascii=False)) for s in st]
        trans_rows = [(t.channel_id, t.ts, t.from_state, t.to_state, t.reason,
                       json.dumps(t.detail, ensure_ascii=False)) for t in tr]
        self.loop.run_until_complete(self._write(state_rows, trans_rows))

    async def _write(self, state_rows: list[tuple[Any, ...]],
                     trans_rows: list[tuple[Any, ...]]) -> None:
        cols = [c.strip() for c in pg._STATE_COLUMNS.split(",")]
        async with self.conn.transaction():
            if len(state_rows) > pg.COPY_ABOVE:
                await self.conn.copy_records_to_table("channel_state_in", records=state_rows,
                                                      columns=cols)
                await self.conn.execute(
                    f"INSERT INTO channel_state ({pg._STATE_COLUMNS}) SELECT "
                    f"{pg._STATE_COLUMNS} FROM channel_state_in {pg._STATE_UPDATE}")
            elif state_rows:
                marks = ",".join(f"${i}" for i in range(1, 14))
                await self.conn.executemany(
                    f"INSERT INTO channel_state ({pg._STATE_COLUMNS}) VALUES ({marks}) "
                    f"{pg._STATE_UPDATE}", state_rows)
            if trans_rows:
                await self.conn.copy_records_to_table(
                    "transitions", records=trans_rows,
                    columns=["channel_id", "ts", "from_state", "to_state", "reason", "detail"])

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


def measure(write: Writer, n: int, churn: float, interval: int,
            repeat: int) -> tuple[float, float, float, float]:
    """(full flush wall s, full flush CPU s, steady CPU share of a core, steady wall s)."""
    walls, cpus = [], []
    for r in range(repeat):
        rows = states(n, T0 + r)
        w0, c0 = time.perf_counter(), time.thread_time()
        write(rows, [])
        walls.append(time.perf_counter() - w0)
        cpus.append(time.thread_time() - c0)
    changed = int(n * churn)
    per_batch = max(1, changed // interval)
    ids = [f"41162800001321{i:06d}" for i in range(0, n, max(1, n // changed))][:changed]
    w0, c0 = time.perf_counter(), time.thread_time()
    for b in range(interval):
        chunk = ids[b * per_batch:(b + 1) * per_batch]
        t = T0 + 100 + b
        write([ChannelState(cid, "offline", "timeout", since=t, last_probe=t, fails=3)
               for cid in chunk], transitions(chunk, t))
    steady_cpu = time.thread_time() - c0
    steady_wall = time.perf_counter() - w0
    return (statistics.median(walls), statistics.median(cpus), steady_cpu / interval,
            steady_wall)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, default=100_000)
    ap.add_argument("--churn", type=float, default=0.05,
                    help="share of the channels changing state per interval")
    ap.add_argument("--interval", type=int, default=60, help="seconds (= batches)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dsn-env", help="environment variable with the DSN of a server to use "
                                      "(a database where the bench may create databases)")
    args = ap.parse_args()

    server: Any = None
    if args.dsn_env:
        admin = os.environ[args.dsn_env]
    else:
        from tests.peers.postgres import PgServer, binaries

        bindir = binaries()
        if bindir is None:
            sys.exit("no PostgreSQL binaries in /usr/lib/postgresql/*/bin (Debian postgresql)")
        server = PgServer(bindir, fsync=True)
        admin = server.dsn()
    import psycopg

    def new_db(name: str) -> str:
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())
            db.execute(f"CREATE DATABASE {name}".encode())
        info = psycopg.conninfo.conninfo_to_dict(admin)  # as a URL: asyncpg takes no other
        return (f"postgresql://{quote(str(info['user']), safe='')}:"
                f"{quote(str(info.get('password', '')), safe='')}@{info.get('host', '')}:"
                f"{info.get('port', 5432)}/{name}")

    results: list[tuple[str, tuple[float, float, float, float]]] = []
    try:
        dsn = new_db("bench_psycopg")
        store = pg.PostgresStore(Secret(dsn))
        results.append(("psycopg 3, camwatch (COPY + upsert)",
                        measure(store.write_batch, args.channels, args.churn, args.interval,
                                args.repeat)))
        store.close()

        dsn = new_db("bench_psycopg_many")
        store = pg.PostgresStore(Secret(dsn))
        saved, pg.COPY_ABOVE = pg.COPY_ABOVE, 10**9
        try:
            results.append(("psycopg 3, executemany only",
                            measure(store.write_batch, args.channels, args.churn,
                                    args.interval, args.repeat)))
        finally:
            pg.COPY_ABOVE = saved
        store.close()

        try:
            import asyncpg  # noqa: F401
        except ImportError:
            print("asyncpg not installed: pip install asyncpg to compare it", file=sys.stderr)
        else:
            dsn = new_db("bench_asyncpg")
            pg.PostgresStore(Secret(dsn)).close()  # the schema
            writer = AsyncpgWriter(dsn)
            results.append(("asyncpg (copy_records_to_table + upsert)",
                            measure(writer, args.channels, args.churn, args.interval,
                                    args.repeat)))
            writer.close()
    finally:
        if server is not None:
            server.stop()

    with tempfile.TemporaryDirectory() as tmp:
        lite = SqliteStore(Path(tmp) / "bench.db")
        results.append(("SQLite (reference)", measure(lite.write_batch, args.channels,
                                                      args.churn, args.interval,
                                                      args.repeat)))
        lite.close()

    print(f"{args.channels:,} channels; full flush = {args.channels:,} state rows, median of "
          f"{args.repeat}; steady = {args.churn:.0%} churn per {args.interval} s "
          f"({int(args.channels * args.churn):,} states + transitions in {args.interval} "
          f"batches)")
    print(f"{'driver':44} {'flush wall s':>12} {'flush CPU s':>12} {'steady CPU':>11} "
          f"{'steady wall s':>14}")
    for name, (fw, fc, share, sw) in results:
        print(f"{name:44} {fw:12.2f} {fc:12.2f} {share:10.1%} {sw:14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
