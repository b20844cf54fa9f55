"""Scrape cost of ``/metrics`` at 100,000 channels, and the event-loop stall it causes.

    python3 bench/bench_metrics.py [--channels 100000] [--scrapes 20] [--uvloop]

Builds a real :class:`~camwatch.scheduler.Engine` over a synthetic inventory (no cameras: the
verdicts are fed to ``ChannelBook.judge`` as the probes would), then measures:

1. building the caches from scratch (at start-up, and in the first scrape after a reload);
2. the hook cost per verdict (``judge`` with and without the metrics hook);
3. ``render()`` alone, repeated, with 1/4 of the channels re-judged between scrapes (what a
   60 s interval and a 15 s scrape interval give);
4. end to end over HTTP (aiohttp on 127.0.0.1, a client in another process, gzip and plain),
   while the loop runs a probe-like churn of verdicts and a 1 ms ticker that records how late
   it wakes up: the stall a scrape causes, against the same loop without scrapes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from camwatch.config import parse_config
from camwatch.engine import Engine
from camwatch.http import serve
from camwatch.inventory import Channel, Inventory
from camwatch.model import Verdict
from camwatch.probes import ProbeResult, Reason
from camwatch.sinks.metrics import CHUNK_LINES, MetricsRenderer, join_parts
from camwatch.store import open_store

CLIENT = """
import json, sys, time, urllib.request
url, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
times, size = [], 0
for _ in range(n):
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if mode == "gzip" else {})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
        assert (r.headers.get("Content-Encoding") == "gzip") == (mode == "gzip")
    times.append(time.perf_counter() - t0)
    size = len(body)
print(json.dumps({"times": times, "size": size}))
"""
PROJECTS = ("雪亮工程", "数字乡村", "智慧小区")
OPERATORS = ("移动", "联通", "电信")


def build_engine(n: int, tmp: Path) -> Engine:
    (tmp / "pw").write_text("pw", encoding="utf-8")
    cfg = parse_config({
        "inventory": {"path": "unused.csv"},
        "credentials": {"default": {"username": "admin", "password_file": "pw"}},
        "probing": {"interval": "60s", "onvif": False},
        "store": {"path": "state.db"},
    }, base_dir=tmp)
    channels = []
    for i in range(n):
        county = ("鹿邑县", "郸城县", "太康县", "淮阳区")[i % 4]
        channels.append(Channel(
            id=f"41162800001321{i:06d}", klass=1 + i % 3, project=PROJECTS[i % 3],
            county=county, township=f"{county}第{i // 7 % 60:02d}镇", operator=OPERATORS[i % 3],
            installed=True, connected=True, rtsp_url=f"rtsp://127.0.0.1:554/ch{i}",
            host=f"nvr{i // 32}", credentials="default"))
    inv = Inventory(source="bench", channels=channels, rows_read=n)
    return Engine(cfg, inv, open_store(cfg.store.path), clock=time.time)


def verdict(i: int, now: float) -> Verdict:
    if i % 37 == 0:
        return Verdict.of(ProbeResult.failure("rtsp", Reason.TIMEOUT, "bench", latency_s=1.0,
                                              phases={"connect": 1.0}))
    return Verdict.of(ProbeResult.success("rtsp", latency_s=0.02,
                                          phases={"connect": 0.001 * (i % 50),
                                                  "describe": 0.004}))


def judge_all(eng: Engine, channels: list[Channel], start: int = 0, step: int = 1) -> float:
    t0 = time.perf_counter()
    now = time.time()
    for i in range(start, len(channels), step):
        eng.book.judge(channels[i].id, verdict(i + int(now), now), now)
    return time.perf_counter() - t0


def ms(xs: list[float]) -> str:
    return (f"median {statistics.median(xs) * 1000:.1f} ms, max {max(xs) * 1000:.1f} ms "
            f"({len(xs)} runs)")


async def http_phase(eng: Engine, scrapes: int) -> None:
    runner = await serve(eng, "127.0.0.1", 0)
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/metrics"
    channels = list(eng.channels.values())
    stalls: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            stalls.append(time.perf_counter() - t0 - 0.001)

    async def churn() -> None:  # ~1,700 verdicts a second, as 100,000 channels at 60 s
        k = 0
        while not stop.is_set():
            now = time.time()
            for _ in range(17):
                k = (k + 1) % len(channels)
                eng.book.judge(channels[k].id, verdict(k, now), now)
            await asyncio.sleep(0.01)

    async def client(mode: str) -> tuple[list[float], int]:
        # in another process, so that reading 34 MB does not compete for this loop's GIL
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, url, mode, str(scrapes),
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        doc = json.loads(out)
        return doc["times"], doc["size"]

    def stall(xs: list[float]) -> str:
        return (f"p50 {statistics.median(xs) * 1000:.1f} ms, "
                f"p99 {statistics.quantiles(xs, n=100)[98] * 1000:.1f} ms, "
                f"max {max(xs) * 1000:.1f} ms")

    tick = asyncio.create_task(ticker())
    work = asyncio.create_task(churn())
    await asyncio.sleep(3)  # baseline: churn only
    print(f"  loop stall, probe churn only:       {stall(stalls)}")
    for mode in ("gzip", "plain"):
        stalls.clear()
        results, size = await client(mode)
        print(f"  loop stall, scraping back to back ({mode}): {stall(stalls)}")
        print(f"  HTTP scrape, {mode} ({size / 1e6:.1f} MB): {ms(results)}")
    stop.set()
    await asyncio.gather(tick, work)
    await runner.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--channels", type=int, default=100_000)
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--uvloop", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        eng = build_engine(args.channels, Path(d))
        channels = list(eng.channels.values())
        print(f"{args.channels} channels, engine built in {time.perf_counter() - t0:.1f} s")
        bare = judge_all(eng, channels)  # no renderer yet: the engine alone
        bare = judge_all(eng, channels)  # again, now that every channel has its Flaps
        t0 = time.perf_counter()
        renderer = MetricsRenderer(eng)  # builds the caches
        took = time.perf_counter() - t0
        body, _ = renderer.render()
        lines = body.count(b"\n")
        print(f"cache build (start-up, or first scrape after a reload): {took * 1000:.0f} ms; "
              f"exposition {len(body) / 1e6:.1f} MB, {lines} lines")
        hooked = judge_all(eng, channels)
        print(f"verdict cost: {bare / len(channels) * 1e6:.1f} µs without the metrics hook, "
              f"{hooked / len(channels) * 1e6:.1f} µs with it")
        snaps, joins = [], []
        for k in range(args.scrapes):
            judge_all(eng, channels, start=k % 4, step=4)  # a quarter re-judged between scrapes
            t0 = time.perf_counter()
            parts, _ = renderer.snapshot()
            t1 = time.perf_counter()
            body = join_parts(parts)
            joins.append(time.perf_counter() - t1)
            snaps.append(t1 - t0)
        print(f"snapshot() on the loop: {ms(snaps)}")
        print(f"formatting and joining every family in one go (served: on the loop, a slice "
              f"of {CHUNK_LINES:,} lines per turn): {ms(joins)}")
        om = []
        for _ in range(5):
            t0 = time.perf_counter()
            renderer.render("application/openmetrics-text; version=1.0.0")
            om.append(time.perf_counter() - t0)
        print(f"render() OpenMetrics: {ms(om)}")
        t0 = time.perf_counter()
        packed = gzip.compress(body, 1)
        print(f"gzip level 1 (in a worker thread when served): "
              f"{(time.perf_counter() - t0) * 1000:.0f} ms, {len(packed) / 1e6:.1f} MB")
        eng.book._listeners.remove(renderer.channel_changed)  # the HTTP app makes its own
        # A full collection walks every channel's state (~0.3 s at 100,000 channels) and
        # would dominate the stall figures whatever the scrape does; freeze what exists, as a
        # daemon can after loading its inventory, and count the collections that still happen.
        gc.collect()
        gc.freeze()
        full: list[float] = []
        started = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if info["generation"] == 2:
                if phase == "start":
                    started[0] = time.perf_counter()
                else:
                    full.append(time.perf_counter() - started[0])

        gc.callbacks.append(on_gc)
        if args.uvloop:
            import uvloop

            uvloop.run(http_phase(eng, args.scrapes))
        else:
            asyncio.run(http_phase(eng, args.scrapes))
        print(f"  (full GC collections during the HTTP phase: {len(full)}"
              + (f", longest {max(full) * 1000:.0f} ms)" if full else ")"))
        eng.store.close()


if __name__ == "__main__":
    main()
