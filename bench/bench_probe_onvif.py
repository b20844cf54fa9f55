"""Benchmark the ONVIF probe: CPU per probe and memory per client, ours vs onvif-zeep-async.

Run on demand (not part of the tests)::

    python3 bench/bench_probe_onvif.py [--n 5000] [--concurrency 300] [--devices 50]

The simulated devices run in a separate process on 127.0.0.1 so that their CPU is not
counted. CPU is this process's ``time.process_time()`` (all threads) divided by the number of
probes. Modes: ``gsdt`` = GetSystemDateAndTime only (no credentials), ``gsdt+gdi`` = plus
GetDeviceInformation with digest auth. The onvif-zeep-async variant creates, calls and closes
one ``ONVIFService`` per probe, as a per-round prober would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import structlog

from camwatch.probes import ProbeSettings, Target
from camwatch.probes.onvif import probe
from camwatch.secrets import Secret
from camwatch.sim.model import Fault, SimDevice
from camwatch.sim.onvif_server import start_onvif_server

PASSWORD = "bench-Pw-1"


async def _serve(count: int) -> None:
    """``count`` healthy devices, then one whose replies never end (Fault.OVERSIZED)."""
    faults = [Fault.NONE] * count + [Fault.OVERSIZED]
    servers = [await start_onvif_server(SimDevice(host="127.0.0.1", rtsp_port=554,
                                                  onvif_port=0, password=PASSWORD, fault=f),
                                        "127.0.0.1") for f in faults]
    print(json.dumps([s.port for s in servers]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until parent ends
    for s in servers:
        await s.close()


Runner = Callable[[str, bool], Awaitable[bool]]


async def _raw(url: str, auth: bool) -> bool:
    t = Target("bench", "127.0.0.1", onvif_url=url, username="admin" if auth else None,
               password=Secret(PASSWORD) if auth else None)
    return (await probe(t, ProbeSettings(timeout_s=10.0))).ok


def _zeep_factory() -> tuple[Runner, Callable[[str, bool], Awaitable[Any]]]:
    from onvif.client import _WSDL_PATH, ONVIFService
    from onvif.definition import SERVICES

    d = SERVICES["devicemgmt"]
    wsdl = os.path.join(_WSDL_PATH, d["wsdl"])
    binding = f"{{{d['ns']}}}{d['binding']}"

    async def make(url: str, auth: bool) -> Any:
        svc = ONVIFService(url, "admin" if auth else None, PASSWORD if auth else None, wsdl,
                           binding_name=binding, no_cache=True)
        await svc.setup()
        return svc

    async def run(url: str, auth: bool) -> bool:
        svc = await make(url, auth)
        try:
            await svc.authless_GetSystemDateAndTime()
            if auth:
                await svc.GetDeviceInformation()
            return True
        except Exception:
            return False
        finally:
            await svc.close()

    return run, make


async def _measure(name: str, fn: Runner, urls: list[str], auth: bool, n: int,
                   concurrency: int) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> bool:
        async with sem:
            return await fn(urls[i % len(urls)], auth)

    await asyncio.gather(*(one(i) for i in range(min(n, 200))))  # warm-up
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"impl": name, "mode": "gsdt+gdi" if auth else "gsdt", "n": n,
            "ok": Counter(results)[True], "cpu_us_per_probe": round(cpu / n * 1e6),
            "probes_per_s": round(n / wall)}


async def _memory(make: Callable[[str, bool], Awaitable[Any]], url: str,
                  k: int) -> dict[str, Any]:
    await (await make(url, True)).close()  # WSDL parsed once per process, before measuring
    gc.collect()
    tracemalloc.start()
    m0 = tracemalloc.get_traced_memory()[0]
    cpu0 = time.process_time()
    clients = [await make(url, True) for _ in range(k)]
    cpu = time.process_time() - cpu0
    m1 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    for c in clients:
        await c.close()
    return {"zeep_client_create_us": round(cpu / k * 1e6),
            "zeep_client_kib": round((m1 - m0) / k / 1024, 1)}


async def _raw_memory(url: str, concurrency: int) -> dict[str, Any]:
    """Peak traced memory per probe in flight (the hand-written path keeps no client)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    await asyncio.gather(*(_raw(url, True) for _ in range(concurrency)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"raw_kib_per_probe_in_flight": round((peak - base) / concurrency / 1024, 1)}


async def _oversized(fn: Runner, url: str, name: str, timeout_s: float) -> dict[str, Any]:
    """Peak traced memory of one probe against an endless reply, cut at ``timeout_s``."""
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await fn(url, False)
    took = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"impl": name, "oversized_peak_mib": round(peak / 2**20, 1),
            "oversized_s": round(took, 2)}


async def _main(args: argparse.Namespace, ports: list[int]) -> None:
    *ports, oversized_port = ports
    urls = [f"http://127.0.0.1:{p}/onvif/device_service" for p in ports]
    oversized = f"http://127.0.0.1:{oversized_port}/onvif/device_service"
    zeep_run, zeep_make = _zeep_factory()
    rows = []
    for auth in (False, True):
        rows.append(await _measure("camwatch", _raw, urls, auth, args.n, args.concurrency))
        if not args.no_zeep:
            rows.append(await _measure("onvif-zeep-async", zeep_run, urls, auth,
                                       min(args.n, args.zeep_n), args.concurrency))
    for row in rows:
        print(json.dumps(row))
    print(json.dumps(await _raw_memory(urls[0], args.concurrency)))
    if not args.no_zeep:
        print(json.dumps(await _memory(zeep_make, urls[0], 500)))
    print(json.dumps(await _oversized(_raw, oversized, "camwatch", 3.0)))
    if not args.no_zeep:
        print(json.dumps(await _oversized(zeep_run, oversized, "onvif-zeep-async", 3.0)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--zeep-n", type=int, default=2000, help="probes for the slower zeep runs")
    ap.add_argument("--concurrency", type=int, default=300)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--no-zeep", action="store_true")
    ap.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger().setLevel(logging.WARNING)  # onvif-zeep-async sets INFO at import
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    # the simulated devices: another process, so that their CPU is not counted
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve",
                             str(args.devices)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        asyncio.run(_main(args, json.loads(proc.stdout.readline())))
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
