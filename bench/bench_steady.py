"""Steady-state CPU per probe: the running daemon against blackbox_exporter, same fleet, same run.

    python bench/bench_steady.py [--channels 10000] [--interval 20] [--minutes 5]

``camwatch simulate`` serves the fleet (2 % dead, 1 % hung). Then, side by side for the same
minutes on the same machine:

- ``camwatch run`` (describe level: OPTIONS + DESCRIBE with Digest, ONVIF lane off, SQLite
  store, every channel every ``--interval`` seconds), its ``/metrics`` scraped every 15 s as
  Prometheus would;
- Debian's ``prometheus-blackbox-exporter`` with a ``tcp`` module sending a bare RTSP
  ``OPTIONS`` and expecting ``RTSP/1.0``, asked for every channel's ``host:port`` once per
  interval, spread evenly, by an aiohttp client in this process (as Prometheus would scrape
  ``/probe`` targets).

After a warm-up of two intervals, each process's CPU (``/proc/<pid>/stat`` utime + stime) is
divided by the probes it made in the measured window: the daemon's from its
``camwatch_probes_total``, blackbox's as counted by the driver. Prints figures; asserts
nothing; loopback only (the simulator's devices on 127.72.x.y).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_engine  # the simulator and blackbox helpers
from bench_loop import probes, scrape
from soak import cpu_seconds, free_port, start_daemon, stop

bench_engine.FIRST_HOST = "127.72.0.1"  # away from the tests' and the other benches' addresses
SCRAPE_EVERY_S = 15.0


async def drive(port: int, targets: list[str], interval: float, until: float,
                counts: Counter[str], concurrency: int = 500) -> None:
    """Ask blackbox for every target once per ``interval``, evenly spread, until ``until``."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/probe"
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": str(interval)}
    slots = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, target: str) -> None:
        try:
            async with session.get(url, params={"module": "rtsp_options", "target": target},
                                   headers=headers) as r:
                body = await r.text()
            counts["ok" if "\nprobe_success 1" in body else "failed"] += 1
        except (aiohttp.ClientError, TimeoutError):
            counts["request error"] += 1
        finally:
            slots.release()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        start, k, n = time.monotonic(), 0, len(targets)
        while time.monotonic() < until:
            delay = start + k * interval / n - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            task = asyncio.create_task(one(session, targets[k % n]))
            running.add(task)
            task.add_done_callback(running.discard)
            k += 1
        if running:
            await asyncio.wait(running, timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=10_000)
    ap.add_argument("--interval", type=float, default=20.0)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args()
    bench_engine._raise_fd_limit()

    work = Path(tempfile.mkdtemp(prefix="camwatch-steady-"))
    sim_dir = work / "sim"
    sim = daemon = None
    blackbox: subprocess.Popen[bytes] | None = None
    try:
        sim = bench_engine.start_simulator(args.channels, sim_dir)
        cfg = bench_engine.bench_config(sim_dir, args.timeout, 500)
        doc = yaml.safe_load(cfg.read_text(encoding="utf-8"))
        port = free_port()
        doc["probing"]["interval"] = f"{args.interval:g}s"
        doc["http"] = {"listen": f"127.0.0.1:{port}"}
        cfg.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False),
                       encoding="utf-8")
        targets = bench_engine.rtsp_targets(cfg)
        camwatch = [sys.executable, "-m", "camwatch", "--log-level", "warning"]
        daemon = start_daemon(camwatch, cfg, work, port)
        if daemon.poll() is not None:
            print(f"daemon exited with {daemon.returncode}; see {work}/daemon.log")
            return 1

        bb_cfg, bb_port = work / "blackbox.yml", free_port()
        bench_engine.blackbox_config(bb_cfg, args.timeout)
        bb_log = open(work / "blackbox.log", "wb")  # noqa: SIM115
        blackbox = subprocess.Popen(
            [bench_engine.BLACKBOX, f"--config.file={bb_cfg}",
             f"--web.listen-address=127.0.0.1:{bb_port}"], stdout=bb_log, stderr=bb_log)

        warm = 2 * args.interval
        t0 = time.monotonic()
        until = t0 + warm + args.minutes * 60.0
        counts: Counter[str] = Counter()
        mark: dict[str, float] = {}

        async def scrapes() -> None:
            nxt = t0
            while time.monotonic() < until:
                now = time.monotonic()
                if now >= nxt:
                    metrics = await asyncio.to_thread(scrape, port)
                    if not mark and now - t0 >= warm:
                        assert blackbox is not None and daemon is not None
                        mark.update(t=now, cw_cpu=cpu_seconds(daemon.pid),
                                    cw_probes=probes(metrics),
                                    bb_cpu=bench_engine._proc_cpu_s(blackbox.pid),
                                    bb_probes=float(sum(counts.values())))
                    nxt += SCRAPE_EVERY_S
                await asyncio.sleep(max(0.0, min(nxt, until) - time.monotonic()))

        async def both() -> None:
            await bench_engine._wait_listening(bb_port, blackbox)  # type: ignore[arg-type]
            await asyncio.gather(drive(bb_port, targets, args.interval, until, counts),
                                 scrapes())

        import uvloop
        uvloop.run(both())
        end = time.monotonic()
        cw_cpu = cpu_seconds(daemon.pid) - mark["cw_cpu"]
        cw_n = probes(scrape(port)) - mark["cw_probes"]
        bb_cpu = bench_engine._proc_cpu_s(blackbox.pid) - mark["bb_cpu"]
        bb_n = sum(counts.values()) - mark["bb_probes"]
        span = end - mark["t"]
        cw_us, bb_us = cw_cpu / max(1.0, cw_n) * 1e6, bb_cpu / max(1.0, bb_n) * 1e6
        print(f"bench_steady: {len(targets):,} channels every {args.interval:g} s, measured "
              f"{span:.0f} s after a {warm:.0f} s warm-up")
        print(f"  camwatch run: {cw_n:,.0f} probes, {cw_cpu:.1f} CPU s, {cw_us:.0f} µs per "
              f"probe (scrapes, writes and evaluations included)")
        print(f"  blackbox_exporter: {bb_n:,.0f} probes, {bb_cpu:.1f} CPU s, {bb_us:.0f} µs "
              f"per probe ({', '.join(f'{k} {v:,}' for k, v in counts.most_common())})")
        print(f"  camwatch / blackbox: {cw_us / bb_us:.2f}")
    finally:
        stop(daemon)
        if blackbox is not None:
            blackbox.terminate()
            blackbox.wait(10)
        if sim is not None:
            bench_engine.stop_process(sim)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
