"""A shard taken over: what applying it costs the instance that takes it.

    python bench/bench_cluster_takeover.py [--channels 30000] [--shards 16] [--taken 5]

Starts a PostgreSQL cluster of its own (tests/peers/postgres.py), commits a state row for
every channel of a ``--channels`` inventory (the dead instance's and the taker's), builds an
engine owning all shards but ``--taken`` of them, then applies the takeover of those as the
daemon does (:meth:`ClusterMember.reshard`: the committed states read, seeded into the book,
the filtered inventory planned in a worker thread and swapped in slices). Prints the wall time
of the reshard, the channels added, and the longest the event loop was held meanwhile (a
ticker task every 5 ms; the GIL switch interval the daemon sets); checks that every added
channel starts from its committed state. No probing: the engine is not run, only reshaped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from camwatch.cluster.member import ClusterMember
from camwatch.cluster.shard import split
from camwatch.config import parse_config
from camwatch.daemon import GIL_SWITCH_S
from camwatch.engine import Engine, no_full_collection
from camwatch.inventory import Channel, Inventory
from camwatch.secrets import Secret
from camwatch.store.base import ChannelState
from camwatch.store.postgres import PostgresStore
from camwatch.store.writer import StoreWriter


def fleet(n: int) -> list[Channel]:
    return [Channel(id=f"41162800001321{i:06d}", klass=1 + i % 3, project="雪亮工程",
                    county="鹿邑县", county_code="411628", township=f"镇{i % 150}",
                    township_code=f"411628{i % 150:03d}", village=f"村{i % 900}",
                    operator="移动", installed=True, connected=True,
                    rtsp_url=f"rtsp://127.{1 + i // 60000}.{i // 250 % 240}.{1 + i % 250}:554/ch",
                    host=f"nvr{i // 32}", row=i + 2)
            for i in range(n)]


async def takeover(engine: Engine, member: ClusterMember, all_shards: frozenset[int]) -> tuple[
        float, float]:
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.005)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    member.ownership.owned = all_shards  # what tick() returns after the claims
    t0 = time.perf_counter()
    with no_full_collection():  # as ClusterMember.run does
        await member.reshard(engine)
    wall = time.perf_counter() - t0
    done = True
    await tick
    return wall, worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, default=30_000)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--taken", type=int, default=5, help="shards taken over")
    args = ap.parse_args()

    from tests.peers.postgres import PgServer, binaries

    bindir = binaries()
    if bindir is None:
        sys.exit("no PostgreSQL binaries in /usr/lib/postgresql/*/bin (Debian postgresql)")
    server = PgServer(bindir, fsync=True)
    tmp = Path(tempfile.mkdtemp(prefix="camwatch-bench-"))
    try:
        with server.database() as dsn:
            (tmp / "dsn").write_text(dsn)
            cfg = parse_config({
                "inventory": {"path": "inv.csv"}, "alerts": {"enabled": False},
                "store": {"backend": "postgresql", "dsn_file": str(tmp / "dsn")},
                "cluster": {"enabled": True, "shards": args.shards, "instance": "bench"}},
                base_dir=tmp)
            chans = fleet(args.channels)
            inv = Inventory("bench", chans, rows_read=len(chans))
            t = 1_800_000_000.0
            store = PostgresStore(Secret(dsn))
            store.write_batch([ChannelState(c.id, "offline" if i % 20 == 0 else "online",
                                            "timeout" if i % 20 == 0 else None, since=t - i,
                                            last_probe=t, fails=3 if i % 20 == 0 else 0,
                                            oks=0 if i % 20 == 0 else 1)
                               for i, c in enumerate(chans)], [])
            parts = split(chans, "township", args.shards)
            taken = frozenset(sorted(parts)[:args.taken])
            member = ClusterMember(cfg, Secret(dsn), "127.0.0.1:0")
            member.ownership.owned = frozenset(range(args.shards)) - taken
            writer = StoreWriter(PostgresStore(Secret(dsn)))
            engine = Engine(cfg, member.mine(inv).part, store, writer, forget=member.forget)
            before = len(engine.channels)
            sys.setswitchinterval(GIL_SWITCH_S)  # as the daemon runs
            wall, worst = asyncio.run(takeover(engine, member, frozenset(range(args.shards))))
            added = len(engine.channels) - before
            stored = store.load_states()
            seeded = sum(1 for cid in engine.channels
                         if engine.book.state(cid) == stored[cid])
            assert seeded == len(engine.channels), (seeded, len(engine.channels))
            print(f"channels {args.channels}, shards {args.shards}: takeover of {args.taken} "
                  f"shards = {added} channels added to {before}: reshard {wall:.3f} s wall, "
                  f"longest loop stall {worst * 1000:.1f} ms; every added channel starts "
                  f"from its committed state ({seeded}/{len(engine.channels)})")
            engine.close()
            writer.close()
            writer.store.close()
            store.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
