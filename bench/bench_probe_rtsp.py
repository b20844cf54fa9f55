"""CPU cost of the RTSP probes: ``python bench/bench_probe_rtsp.py [--n 20000] [--profile]``.

Starts the simulator's RTSP server in a separate process (so its CPU is not counted) with
several devices on 127.0.0.2..., then, in this process, runs ``--n`` probes at
``--concurrency`` for the levels tcp, describe (Digest, qop=auth) and stream, under the default
asyncio loop and under uvloop. Prints the prober's CPU time per probe (``time.process_time``
deltas: user + system of this process only) and probes per second. ``--profile`` runs the
describe level once more under cProfile and prints where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import multiprocessing as mp
import pstats
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from camwatch.probes import ProbeSettings, Target, rtsp, tcp
from camwatch.probes.result import ProbeResult
from camwatch.secrets import Secret
from camwatch.sim.model import SimChannel, SimDevice
from camwatch.sim.rtsp_server import start_rtsp_server

PASSWORD = "bench-Pw-1"
CHANNELS_PER_DEVICE = 16
Probe = Callable[[Target, ProbeSettings], Coroutine[Any, Any, ProbeResult]]


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _serve(devices: int, conn: Connection) -> None:
    """Server process: one RTSP server per device, ports sent back over ``conn``."""
    _raise_fd_limit()

    async def main() -> None:
        addrs = []
        servers = []
        for d in range(devices):
            host = f"127.0.0.{2 + d}"
            dev = SimDevice(host=host, rtsp_port=0, onvif_port=0, password=PASSWORD,
                            serial=f"BENCH{d:08d}")
            for c in range(CHANNELS_PER_DEVICE):
                path = f"/Streaming/Channels/{c + 1}01"
                dev.channels[path] = SimChannel(id=f"{d}-{c}", path=path)
            server = await start_rtsp_server(dev, host)
            servers.append(server)
            addrs.append((host, server.sockets[0].getsockname()[1]))
        conn.send(addrs)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)  # until the parent says stop
        for s in servers:
            s.close()

    try:
        import uvloop  # the server should not be the bottleneck

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def _targets(addrs: list[tuple[str, int]]) -> list[Target]:
    out = []
    for host, port in addrs:
        for c in range(CHANNELS_PER_DEVICE):
            out.append(Target(f"{host}-{c}", host,
                              f"rtsp://{host}:{port}/Streaming/Channels/{c + 1}01",
                              username="admin", password=Secret(PASSWORD)))
    return out


async def _run(probe: Probe, targets: list[Target], n: int, concurrency: int
               ) -> tuple[float, float, Counter[str]]:
    settings = ProbeSettings(timeout_s=10.0)
    outcomes: Counter[str] = Counter()
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            r = await probe(targets[i % len(targets)], settings)
            outcomes["ok" if r.ok else str(r.reason)] += 1

    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    return time.process_time() - cpu0, time.perf_counter() - wall0, outcomes


LEVELS: dict[str, Probe] = {"tcp": tcp.probe, "describe": rtsp.probe, "stream": rtsp.probe_stream}


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="probes per level and loop")
    ap.add_argument("--concurrency", type=int, default=500)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--levels", default="tcp,describe,stream")
    ap.add_argument("--loops", default="asyncio,uvloop")
    ap.add_argument("--profile", action="store_true", help="cProfile the describe level")
    args = ap.parse_args()
    _raise_fd_limit()

    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=_serve, args=(args.devices, child),
                                             daemon=True)
    server.start()
    try:
        addrs = parent.recv()
        targets = _targets(addrs)
        print(f"{len(addrs)} devices x {CHANNELS_PER_DEVICE} channels, n={args.n}, "
              f"concurrency={args.concurrency}, Python {sys.version.split()[0]}")
        print(f"{'loop':8} {'level':9} {'CPU µs/probe':>13} {'probes/s':>9}  outcomes")
        for loop_name in args.loops.split(","):
            for level in args.levels.split(","):
                with asyncio.Runner(loop_factory=_loop_factory(loop_name)) as runner:
                    runner.run(_run(LEVELS[level], targets, 500, args.concurrency))  # warm-up
                    cpu, wall, outcomes = runner.run(
                        _run(LEVELS[level], targets, args.n, args.concurrency))
                print(f"{loop_name:8} {level:9} {cpu / args.n * 1e6:13.0f} "
                      f"{args.n / wall:9.0f}  {dict(outcomes)}", flush=True)
        if args.profile:
            for loop_name in args.loops.split(","):
                prof = cProfile.Profile()
                with asyncio.Runner(loop_factory=_loop_factory(loop_name)) as runner:
                    prof.enable()
                    runner.run(_run(rtsp.probe, targets, min(args.n, 5000), args.concurrency))
                    prof.disable()
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(22)
                print(f"\n--- cProfile, describe level, {loop_name}, by own time ---")
                print(out.getvalue())
    finally:
        parent.send("stop")
        server.join(10)
        if server.is_alive():
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
