"""``camwatch demo``: the embedded default. A simulated county (2,000 channels by default, a
few faults, one township losing its uplink for a while) on loopback, and the daemon watching
it with the SQLite store and no broker. Prints where to look and a status line as it goes;
Ctrl-C stops both."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import yaml

from camwatch.config import HttpConfig, check_listen
from camwatch.daemon import Daemon
from camwatch.rules.rates import format_rate
from camwatch.sim.fleet import Fleet, FleetConfig
from camwatch.sim.inventory_gen import InventorySpec, plan_inventory
from camwatch.sim.model import Fault
from camwatch.sim.scenario import Scenario, TimedEvent


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channels", type=int, default=2000,
                   help="connected channels to simulate (default 2000)")
    p.add_argument("--dir", default="camwatch-demo",
                   help="where the generated inventory, config and store go")
    p.add_argument("--listen", default="127.0.0.1:9780",
                   help="the daemon's HTTP address (loopback: the demo has no authentication)")
    p.add_argument("--interval", default="20s", help="probe interval (default 20s, for a "
                                                      "lively demo; production default 60s)")
    p.add_argument("--outage-at", type=float, default=120.0,
                   help="seconds until one township loses its uplink (default 120)")
    p.add_argument("--outage-for", type=float, default=300.0,
                   help="how long the outage lasts, seconds (default 300)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop by itself after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--seed", type=int, default=1)


def fleet_config(args: argparse.Namespace) -> tuple[FleetConfig, str]:
    spec = InventorySpec(connected=args.channels, seed=args.seed)
    townships = plan_inventory(spec).county.townships
    victim = townships[min(2, len(townships) - 1)]
    # a few faults of each kind, and one township's uplink going down for a while
    scenario = Scenario(dead=0.01, hung=0.005, auth_fail=0.005, not_found=0.005,
                        flapping=0.002, clock_skew=0.01,
                        events=(TimedEvent(at_s=args.outage_at, for_s=args.outage_for,
                                           fault=Fault.REFUSED, township=victim.code),))
    return FleetConfig(inventory=spec, scenario=scenario, out_dir=Path(args.dir),
                       control="127.0.0.1:0"), victim.name


def _tune_config(path: Path, interval: str) -> None:
    """The generated config, with the demo's shorter interval."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc.setdefault("probing", {})["interval"] = interval
    doc["probing"]["timeout"] = "3s"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")


async def _status_lines(daemon: Daemon, start: float) -> None:
    eng = daemon.engine
    while not eng._stop.is_set():
        await eng._wait(asyncio.Event(), 10.0)
        counts = {"online": 0, "offline": 0, "unknown": 0}
        for st in eng.states.values():
            counts[st.state] = counts.get(st.state, 0) + 1
        by_class = [r for r in eng.rates if not r.scope and r.klass is not None]
        classes = "  ".join(
            f"{r.label()} {format_rate(r.rate)}{'' if r.meets_target is not False else '✗'}"
            for r in by_class)
        judged = counts["online"] + counts["offline"]
        t = int(time.monotonic() - start)
        print(f"t+{t // 60:02d}:{t % 60:02d}  online {counts['online']}  offline "
              f"{counts['offline']}  unknown {counts['unknown']}  在线率 "
              f"{format_rate(counts['online'] / judged if judged else None)}  {classes}",
              flush=True)


async def run(args: argparse.Namespace) -> int:
    start = time.monotonic()
    check_listen(HttpConfig(), args.listen, "camwatch demo --listen")  # the demo has no auth
    fleet_cfg, victim = fleet_config(args)
    async with Fleet.start(fleet_cfg) as fleet:
        assert fleet.files is not None
        config = fleet.files.config
        _tune_config(config, args.interval)
        def banner(d: Daemon) -> None:
            assert fleet.files is not None
            host = args.listen.rpartition(":")[0]
            base = f"http://{host}:{d.port}"
            month = time.strftime("%Y-%m")
            print(f"""camwatch demo: {fleet.channel_count} simulated channels of {fleet.county.name}
  inventory  {fleet.files.inventory}
  config     {config}
  metrics    {base}/metrics
  status     {base}/api/status   (offline channels: {base}/api/channels?state=offline)
  simulator  {fleet.control_url}/api/devices
  report     camwatch report -c {config} --month {month} --format html -o report.html
{victim} loses its uplink {args.outage_at:g}s from now for {args.outage_for:g}s. Ctrl-C stops.
""", flush=True)

        daemon = Daemon(str(config), listen=args.listen, on_ready=banner)
        status = asyncio.create_task(_status_lines(daemon, start), name="demo-status")

        async def stop_later() -> None:
            if args.duration is not None:
                await asyncio.sleep(args.duration)  # the demo's own run time, on request
                daemon.engine.stop()

        timer = asyncio.create_task(stop_later(), name="demo-timer")
        try:
            rc = await daemon.run()
        finally:
            status.cancel()
            timer.cancel()
        print("camwatch demo: stopped", file=sys.stderr)
        return rc
