"""Start a 100,000-channel simulated fleet and report start-up time, memory and fds.

    python3 bench/bench_sim.py [--channels 100000] [--nvr-share 0.25] [--nvr-channels 32-64]
                               [--probe 2000] [--uvloop]

Devices get one 127.x.y.z each with an RTSP and an ONVIF listener, so the fd budget is two per
device; 100,000 channels fit this machine's 20,000-fd hard limit only when packed into about
8,000 devices (a quarter of them NVRs of 32-64 channels). ``--probe N`` then DESCRIBEs N random
channels with camwatch's RTSP probe from the same process, to show the fleet answers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from camwatch.probes import ProbeSettings, Target, get_prober
from camwatch.secrets import Secret
from camwatch.sim.fleet import Fleet, FleetConfig
from camwatch.sim.inventory_gen import InventorySpec


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def probe_sample(fleet: Fleet, n: int) -> str:
    ids = random.Random(1).sample(fleet.channel_ids(), min(n, fleet.channel_count))
    probe = get_prober("describe")
    settings = ProbeSettings(timeout_s=5.0)
    sem = asyncio.Semaphore(200)
    ok = 0

    async def one(cid: str) -> None:
        nonlocal ok
        dev, _ = fleet.channel(cid)
        async with sem:
            r = await probe(Target(cid, dev.host, rtsp_url=fleet.rtsp_url(cid), username="admin",
                                   password=Secret(fleet.password)), settings)
        ok += r.ok

    start = time.perf_counter()
    await asyncio.gather(*(one(c) for c in ids))
    took = time.perf_counter() - start
    return f"{len(ids):,} DESCRIBE probes in {took:.2f} s ({len(ids) / took:,.0f}/s), {ok:,} ok"


async def main(args: argparse.Namespace) -> None:
    lo, _, hi = args.nvr_channels.partition("-")
    spec = InventorySpec(connected=args.channels, nvr_share=args.nvr_share,
                         nvr_channels=(int(lo), int(hi)), first_host="127.100.0.1",
                         rtsp_port=args.rtsp_port, onvif_port=args.onvif_port)
    gc.collect()
    rss0, fd0 = rss_bytes(), fds()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        async with Fleet.start(FleetConfig(inventory=spec, out_dir=Path(out))) as fleet:
            wall = time.perf_counter() - start
            gc.collect()
            rss1, fd1 = rss_bytes(), fds()
            n, d = fleet.channel_count, len(fleet.devices)
            nvrs = sum(1 for x in fleet.devices.values() if len(x.channels) > 1)
            print(f"channels          {n:,} on {d:,} devices ({nvrs:,} NVRs)")
            print(f"start-up          {wall:.2f} s (plan, {2 * d:,} listeners, inventory "
                  f"{fleet.files.rows if fleet.files else 0:,} rows, control)")
            print(f"RSS               {rss0 / 2**20:.1f} MiB before, {rss1 / 2**20:.1f} MiB "
                  f"running (+{(rss1 - rss0) / 2**20:.1f} MiB)")
            print(f"bytes per channel {(rss1 - rss0) / n:,.0f} "
                  f"({(rss1 - rss0) / d:,.0f} per device)")
            print(f"fds               {fd1:,} open ({fd1 - fd0:,} by the fleet), "
                  f"budget {2 * d + 1024:,}")
            if args.probe:
                print(f"probe sample      {await probe_sample(fleet, args.probe)}")
                print(f"RSS after probes  {rss_bytes() / 2**20:.1f} MiB")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=100_000)
    p.add_argument("--nvr-share", type=float, default=0.25)
    p.add_argument("--nvr-channels", default="32-64")
    p.add_argument("--rtsp-port", type=int, default=8554)
    p.add_argument("--onvif-port", type=int, default=8080)
    p.add_argument("--probe", type=int, default=2000)
    p.add_argument("--uvloop", action="store_true")
    a = p.parse_args()
    if a.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(a))
