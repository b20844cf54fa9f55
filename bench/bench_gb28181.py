"""CPU of the GB/T 28181 upper platform: 100 lower platforms × 1,000 channels, and one
10,000-item catalog.

    python3 bench/bench_gb28181.py [--platforms 100] [--channels 1000] [--per-message 20]
                                   [--big 10000] [--keepalive 0.5] [--window 10]

camwatch's side (a real :class:`~camwatch.engine.Engine` over a synthetic inventory holding
every catalog channel, and a :class:`~camwatch.gb28181.GbService` on 127.0.0.1 UDP) runs in
this process; the lower platforms (:class:`camwatch.sim.gb_platform.SimPlatform`) run in a
child process, so their CPU is not counted. The engine's probe scheduler is not started: the
figures are the GB/T 28181 side alone (SIP, MANSCDP, verdicts into the channel book).

1. every platform registers (Digest) and answers the first catalog query (``--per-message``
   items a MESSAGE): wall time and CPU of the round;
2. keepalives from every platform every ``--keepalive`` s for ``--window`` s: CPU per
   keepalive (ticks included), scaled to the real cadence (one a minute per platform);
3. a second catalog round (all platforms asked at once): CPU per round, scaled to one round
   per 10 minutes;
4. one platform with a ``--big``-item catalog: from the query to the catalog applied, the CPU
   it took and the largest event-loop lag meanwhile (a 5 ms ticker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from camwatch.config import parse_config
from camwatch.engine import Engine
from camwatch.gb28181 import GbService
from camwatch.inventory import Channel, Inventory
from camwatch.sim.gb_platform import SimChannel, SimPlatform
from camwatch.store import open_store

PASSWORD = "bench-gb-pw"
BIG_ID = "34020000002000099999"


def platform_id(p: int) -> str:
    return f"340200000020000{p:05d}"


def channel_id(p: int, k: int) -> str:
    return f"3412000000132{p:03d}{k:04d}"


# --- the lower platforms (child process) --------------------------------------------------------

async def child(port: int, platforms: int, channels: int, per_message: int, keepalive: float,
                duration: float, big: int) -> None:
    server = ("127.0.0.1", port)
    if big:
        sims = [SimPlatform(BIG_ID, PASSWORD, server, per_message=per_message, wait_s=120,
                            channels=[SimChannel(channel_id(900 + k // 10_000, k % 10_000))
                                      for k in range(big)])]
    else:
        sims = [SimPlatform(platform_id(p), PASSWORD, server, per_message=per_message, wait_s=120,
                            channels=[SimChannel(channel_id(p, k), status="ON" if k % 50
                                                 else "OFF") for k in range(channels)])
                for p in range(platforms)]
    for s in sims:
        await s.start()
    sem = asyncio.Semaphore(20)

    async def register(s: SimPlatform) -> None:
        async with sem:
            assert await s.register() == 200

    await asyncio.gather(*(register(s) for s in sims))
    end = time.monotonic() + duration

    async def keepalives(s: SimPlatform, phase: float) -> None:
        await asyncio.sleep(phase)
        while time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                await s.keepalive()
            await asyncio.sleep(keepalive)

    await asyncio.gather(*(keepalives(s, keepalive * i / len(sims))
                           for i, s in enumerate(sims)))


# --- camwatch (this process) --------------------------------------------------------------------

def engine(tmp: Path, platforms: int, channels: int, big: int) -> Engine:
    (tmp / "pw").write_text(PASSWORD, encoding="utf-8")
    peers = {platform_id(p): {} for p in range(platforms)}
    peers[BIG_ID] = {}
    cfg = parse_config({
        "inventory": {"path": "unused.csv"}, "store": {"path": "state.db"},
        "probing": {"onvif": False},
        "gb28181": {"enabled": True, "listen": "127.0.0.1:0", "transport": "udp",
                    "password_file": "pw", "peers": peers, "keepalive_timeout": "1h",
                    "catalog_timeout": "5m"},
    }, base_dir=tmp)
    ids = [channel_id(p, k) for p in range(platforms) for k in range(channels)]
    ids += [channel_id(900 + k // 10_000, k % 10_000) for k in range(big)]
    chans = [Channel(id=cid, klass=1 + i % 3, project="雪亮工程", county="鹿邑县",
                     township=f"镇{i % 20}", operator="移动", installed=True, connected=True,
                     rtsp_url=f"rtsp://127.0.0.1:9/{i}", host=f"h{i}")
             for i, cid in enumerate(ids)]
    return Engine(cfg, Inventory("bench", chans, len(chans)), open_store(tmp / "state.db"))


async def until(cond: object, deadline: float) -> float:
    start = time.monotonic()
    while not cond():  # type: ignore[operator]
        if time.monotonic() - start > deadline:
            raise TimeoutError("bench: timed out")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as d:
        eng = engine(Path(d), args.platforms, args.channels, args.big)
        gb = GbService(eng.cfg.gb28181, eng)
        eng.gb = gb
        await gb.start()
        ticker = asyncio.create_task(gb.server.run(eng.stopping))
        me = [sys.executable, __file__, "--child", str(gb.server.port)]
        common = ["--per-message", str(args.per_message), "--keepalive", str(args.keepalive)]
        duration = 3 * args.window + 120
        proc = await asyncio.create_subprocess_exec(
            *me, *common, "--platforms", str(args.platforms), "--channels", str(args.channels),
            "--duration", str(duration), "--big", "0")
        try:
            n = args.platforms
            cpu0 = time.process_time()
            try:
                wall = await until(lambda: sum(1 for p in gb.peers.values()
                                               if p.catalog.at is not None) == n, 300)
            except TimeoutError:
                for p in gb.peers.values():
                    if p.catalog.at is None:
                        print(p.id, {sn: (a.sum_num, len(a.items), a.messages)
                                     for sn, a in p.assemblies.items()}, p.messages)
                print(len(gb.peers), dict(gb.server.counters))
                raise
            cpu = time.process_time() - cpu0
            items = sum(len(p.catalog.channels) for p in gb.peers.values())
            print(f"registration + first catalogs: {n} platforms, {items:,} channels in "
                  f"{wall:.1f} s wall, {cpu:.2f} s CPU ({cpu / items * 1e6:.0f} µs/item)")

            kas0 = sum(p.keepalives for p in gb.peers.values())
            cpu0, t0 = time.process_time(), time.monotonic()
            await asyncio.sleep(args.window)
            cpu, span = time.process_time() - cpu0, time.monotonic() - t0
            kas = sum(p.keepalives for p in gb.peers.values()) - kas0
            per_ka = cpu / max(kas, 1)
            ka_share = per_ka * n / 60.0
            print(f"keepalives: {kas} in {span:.1f} s, {cpu:.3f} s CPU, {per_ka * 1e6:.0f} µs "
                  f"each (ticks included) -> {ka_share * 100:.3f} % of a core at one a "
                  f"minute per platform")

            done = gb.server.counters["catalogs"]
            now = time.time()
            for p in gb.peers.values():
                p.next_catalog = now
            cpu0 = time.process_time()
            wall = await until(lambda: gb.server.counters["catalogs"] >= done + n, 300)
            cpu = time.process_time() - cpu0
            cat_share = cpu / 600.0
            print(f"catalog round: {n} catalogs in {wall:.1f} s wall, {cpu:.2f} s CPU "
                  f"-> {cat_share * 100:.3f} % of a core at one round per 10 min")
            print(f"average: {(ka_share + cat_share) * 100:.2f} % of a core "
                  f"(goal: <= 5 %)")
        finally:
            proc.kill()
            await proc.wait()

        if args.big:
            lags: list[float] = []

            async def lag() -> None:
                while True:
                    t = time.perf_counter()
                    await asyncio.sleep(0.005)
                    lags.append(time.perf_counter() - t - 0.005)

            lagger = asyncio.create_task(lag())
            proc = await asyncio.create_subprocess_exec(*me, *common, "--duration", "600",
                                                        "--big", str(args.big))
            try:
                await until(lambda: BIG_ID in gb.peers and gb.peers[BIG_ID].catalog.at
                            is not None, 300)  # the first one: warms up
                peer = gb.peers[BIG_ID]
                first = peer.catalog.at
                lags.clear()
                cpu0, t0 = time.process_time(), time.monotonic()
                gb.server.query_catalog(peer)
                await until(lambda: peer.catalog.at != first, 300)
                wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
                print(f"{args.big:,}-item catalog in {args.big // args.per_message} MESSAGEs: "
                      f"{wall:.2f} s from query to applied, {cpu:.2f} s CPU, largest loop "
                      f"lag {max(lags) * 1000:.1f} ms (goal: <= 1 s, lag <= 50 ms)")
            finally:
                proc.kill()
                await proc.wait()
                lagger.cancel()
        eng.stop()
        await ticker
        await gb.server.close()
        eng.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platforms", type=int, default=100)
    ap.add_argument("--channels", type=int, default=1000)
    ap.add_argument("--per-message", type=int, default=20)
    ap.add_argument("--big", type=int, default=10_000)
    ap.add_argument("--keepalive", type=float, default=0.5)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--duration", type=float, default=60.0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        os.nice(0)
        asyncio.run(child(a.child, a.platforms, a.channels, a.per_message, a.keepalive,
                          a.duration, a.big))
    else:
        asyncio.run(main(a))
