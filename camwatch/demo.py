"""``camwatch demo``: the embedded default. A simulated county (2,000 channels by default, a
few faults, one township losing its uplink for a while) on loopback, and the daemon watching
it with the SQLite store and no broker; with GB/T 28181 lower platforms (the county's own
and two operator clouds with 300 channels reached only through them, one cloud going silent
for a while: :mod:`camwatch.gb28181.demo`). Prints where to look and a status line as it
goes; Ctrl-C stops both."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import socket
import sys
import time
from pathlib import Path

import yaml

from camwatch.config import HttpConfig, check_listen
from camwatch.daemon import Daemon
from camwatch.errors import CamwatchError
from camwatch.reports.period import zone
from camwatch.rules.rates import format_rate
from camwatch.sim.fleet import Fleet, FleetConfig
from camwatch.sim.inventory_gen import InventorySpec, plan_inventory
from camwatch.sim.model import Fault
from camwatch.sim.pictures import Picture
from camwatch.sim.scenario import Scenario, TimedEvent

DEFAULT_FIRST_HOST = InventorySpec().first_host  # 127.1.0.1
DEFAULT_PORT = 9780  # the daemon's, as http.listen's default
DEFAULT_SIP_PORT = 5060  # gb28181.listen's default


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channels", type=int, default=2000,
                   help="connected channels to simulate (default 2000)")
    p.add_argument("--dir", default="camwatch-demo",
                   help="where the generated inventory, config and store go "
                        "(default ./camwatch-demo)")
    p.add_argument("--first-host", type=_device_address, default=DEFAULT_FIRST_HOST,
                   metavar="127.X.Y.Z",
                   help="loopback address of the first simulated device; the others follow "
                        f"it (default {DEFAULT_FIRST_HOST}; another demo or simulator "
                        "needs another, e.g. 127.2.0.1)")
    p.add_argument("--port", type=int, default=None,
                   help=f"the daemon's HTTP port on 127.0.0.1 (default {DEFAULT_PORT}; 0: a "
                        "free one)")
    p.add_argument("--listen", default=None, metavar="HOST:PORT",
                   help=f"the daemon's HTTP address (default 127.0.0.1:{DEFAULT_PORT}); "
                        "--port changes only the port")
    p.add_argument("--interval", default="20s", help="probe interval (default 20s, for a "
                                                      "lively demo; production default 60s)")
    p.add_argument("--outage-at", type=float, default=120.0,
                   help="seconds until one township loses its uplink (default 120)")
    p.add_argument("--outage-for", type=float, default=300.0,
                   help="how long the outage lasts, seconds (default 300)")
    p.add_argument("--gb-channels", type=int, default=300,
                   help="channels reached only through the two simulated operator clouds "
                        "(GB/T 28181 lower platforms; default 300, 0: no platforms)")
    p.add_argument("--platform-down-at", type=float, default=200.0,
                   help="seconds until one operator cloud stops its keepalives (default 200)")
    p.add_argument("--platform-down-for", type=float, default=300.0,
                   help="how long it stays silent, seconds (default 300)")
    p.add_argument("--quality-interval", default="10m",
                   help="how often each camera's picture is sampled (default 10m; at least "
                        "10s; a picture costs ~40 ms of CPU)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop by itself after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--seed", type=int, default=1,
                   help="random seed of the simulated county and its faults (default 1)")


def _device_address(text: str) -> str:
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a loopback address like 127.2.0.1, got "
                                         f"{text!r}") from None
    if not addr.is_loopback or int(addr) >> 8 == 0x7F0000:
        raise argparse.ArgumentTypeError(f"expected an address in 127.0.1.0-127.255.255.254 "
                                         f"(127.0.0.x is the control API's), got {text}")
    return text


def listen_address(args: argparse.Namespace) -> str:
    """The daemon's ``HOST:PORT`` from ``--listen`` and ``--port``."""
    host, _, port = (args.listen or f"127.0.0.1:{DEFAULT_PORT}").rpartition(":")
    if args.port is not None:
        port = str(args.port)
    return f"{host}:{port}"


def _free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (with SO_REUSEADDR, as asyncio's
    servers do, so a port in TIME_WAIT counts as free)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError:
            return False
        return True


def _free_sip(port: int) -> bool:
    """Whether UDP and TCP ``127.0.0.1:port`` are both free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return _free("127.0.0.1", port)


def sip_listen() -> str:
    """``gb28181.listen`` for the demo: 127.0.0.1:5060 when free, else the next free port
    (another demo, or a real SIP server, may hold 5060)."""
    # below the ephemeral range (32768-): the simulated platforms' own sockets, bound to
    # port 0 just before the daemon binds, must not be handed the port the daemon wants
    for port in range(DEFAULT_SIP_PORT, DEFAULT_SIP_PORT + 1000):
        if _free_sip(port):
            return f"127.0.0.1:{port}"
    raise CamwatchError("camwatch demo: found no free loopback port for GB/T 28181 (SIP)")


def check_addresses(args: argparse.Namespace) -> None:
    """Refuse to start, with the flags to pass, when another demo or a leftover simulator
    holds the first device address or the daemon's port (rather than the bind error of
    device 127.1.0.1 halfway through start-up). Suggests addresses that are free now."""
    spec = InventorySpec()
    problems, advice = [], []
    first = args.first_host
    if not (_free(first, spec.rtsp_port) and _free(first, spec.onvif_port)):
        problems.append(f"{first} (ports {spec.rtsp_port}/{spec.onvif_port}) is taken, by "
                        f"another camwatch demo or simulator")
        base = int(ipaddress.IPv4Address(first)) >> 16 & 0xFF
        for k in (*range(base + 1, 255), *range(2, base)):
            host = f"127.{k}.0.1"
            if _free(host, spec.rtsp_port) and _free(host, spec.onvif_port):
                advice.append(f"--first-host {host}")
                break
        if Path(args.dir).exists():  # the other demo's files and store: keep them apart
            advice.append(f"--dir {args.dir.rstrip('/')}-2")
    listen = listen_address(args)
    host, _, port_text = listen.rpartition(":")
    port = int(port_text)
    if port and not _free(host, port):
        problems.append(f"{listen} is taken")
        for candidate in range(port + 1, min(port + 100, 65536)):
            if _free(host, candidate):
                advice.append(f"--port {candidate}")
                break
        else:
            advice.append("--port 0")
    if problems:
        raise CamwatchError(
            f"camwatch demo cannot start: {'; '.join(problems)}. Stop the other one, or run "
            f"`camwatch demo {' '.join(advice)}`")


def fleet_config(args: argparse.Namespace) -> tuple[FleetConfig, str]:
    from camwatch.gb28181 import demo as gb_demo

    if args.gb_channels < 0:
        raise CamwatchError(f"camwatch demo: --gb-channels must be 0 or more, got "
                            f"{args.gb_channels}")
    spec = InventorySpec(connected=args.channels, seed=args.seed, first_host=args.first_host,
                         gb_channels=args.gb_channels,
                         gb_listen=sip_listen() if args.gb_channels else "127.0.0.1:5060")
    try:
        townships = plan_inventory(spec).county.townships
    except ValueError as exc:  # a --first-host too high for the fleet, or not an address
        raise CamwatchError(f"camwatch demo: --first-host {args.first_host}: {exc}") from None
    victim = townships[min(2, len(townships) - 1)]
    # a few faults of each kind, and one township's uplink going down for a while
    scenario = Scenario(dead=0.01, hung=0.005, auth_fail=0.005, not_found=0.005,
                        flapping=0.002, clock_skew=0.01,
                        # real pictures, about 2 % of them degraded (视频质量诊断, 完好率)
                        pictures=True, picture_faults=DEMO_PICTURE_FAULTS,
                        events=(TimedEvent(at_s=args.outage_at, for_s=args.outage_for,
                                           fault=Fault.REFUSED, township=victim.code),))
    return FleetConfig(inventory=spec, scenario=scenario, out_dir=Path(args.dir),
                       control="127.0.0.1:0", gb_keepalive_s=gb_demo.KEEPALIVE_S,
                       gb_down_at=args.platform_down_at,
                       gb_down_for=args.platform_down_for), victim.name


DEMO_PICTURE_FAULTS = ((Picture.FROZEN, 0.004), (Picture.SIGNAL_LOST, 0.004),
                       (Picture.BLUR, 0.003), (Picture.TOO_DARK, 0.002),
                       (Picture.OCCLUDED, 0.002), (Picture.COLOR_CAST, 0.002),
                       (Picture.NOISE, 0.001), (Picture.SCENE_CHANGED, 0.001))


def _tune_config(path: Path, interval: str, quality_interval: str = "10m") -> None:
    """The generated config, with the demo's shorter interval (and the repair desk and the
    picture sampling on)."""
    from camwatch.configbase import parse_duration
    from camwatch.gb28181 import demo as gb_demo
    from camwatch.repairs.demo import demo_config

    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc.setdefault("probing", {})["interval"] = interval
    doc["probing"]["timeout"] = "3s"
    doc["quality"] = {"enabled": True, "interval": quality_interval, "timeout": "8s"}
    demo_config(doc, parse_duration(interval))
    gb_demo.demo_config(doc)
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")


async def _status_lines(daemon: Daemon, start: float) -> None:
    eng = daemon.engine
    while not await eng.wait(10.0):
        counts = {"online": 0, "offline": 0, "unknown": 0, **eng.book.counts()}
        by_class = [r for r in eng.rates if not r.scope and r.klass is not None]
        classes = "  ".join(
            f"{r.label()} {format_rate(r.rate)}{'' if r.meets_target is not False else '✗'}"
            for r in by_class)
        judged = counts["online"] + counts["offline"]
        t = int(time.monotonic() - start)
        print(f"t+{t // 60:02d}:{t % 60:02d}  online {counts['online']}  offline "
              f"{counts['offline']}  unknown {counts['unknown']}  在线率 "
              f"{format_rate(counts['online'] / judged if judged else None)}  {classes}  "
              f"画面异常 {len(eng.quality.degraded)}", flush=True)


async def run(args: argparse.Namespace) -> int:
    start = time.monotonic()
    check_addresses(args)
    listen = listen_address(args)
    check_listen(HttpConfig(), listen, "camwatch demo --listen")  # the demo has no auth
    fleet_cfg, victim = fleet_config(args)
    from camwatch.gb28181 import demo as gb_demo
    from camwatch.repairs import demo as repairs_demo

    def say(line: str) -> None:
        print(line, flush=True)

    watched: set[str] = set()  # the story's ticket, whose messages the demo prints
    async with Fleet.start(fleet_cfg) as fleet, \
            repairs_demo.maintainers_group(say, watched), gb_demo.duty_group(say):
        assert fleet.files is not None
        config = fleet.files.config
        _tune_config(config, args.interval, args.quality_interval)
        def banner(d: Daemon) -> None:
            assert fleet.files is not None
            host = listen.rpartition(":")[0]
            base = f"http://{host}:{d.port}"
            # the month where the bulletin's months begin (report.timezone), not the machine's
            month = dt.datetime.now(zone(d.cfg.report.timezone)).strftime("%Y-%m")
            gb_lines = gb_story = ""
            if fleet.gb is not None and d.engine.gb is not None:
                sip = f"{d.engine.gb.server.host}:{d.engine.gb.server.port}"
                gb_lines = (f"  platforms  {base}/api/platforms   (GB/T 28181 on {sip}: "
                            f"{', '.join(fleet.gb.names.values())})\n"
                            f"  reconcile  {base}/api/reconciliation   (台账核对)\n")
                down = fleet.plan.clouds[-1].name
                gb_story = (f"\n{down} stops its keepalives {args.platform_down_at:g}s from "
                            f"now for {args.platform_down_for:g}s.")
            degraded = sum(n for k, n in fleet.picture_counts().items() if k != "ok")
            print(f"""camwatch demo: {fleet.channel_count} simulated channels of {fleet.county.name}
  inventory  {fleet.files.inventory}
  config     {config}
  metrics    {base}/metrics
  health     {base}/healthz
  status     {base}/api/status   (offline channels: {base}/api/channels?state=offline)
  rates      {base}/api/rates
  simulator  {fleet.control_url}/api/devices   (devices from {args.first_host})
  report     camwatch report -c {config} --month {month} --format html -o report.html
  pictures   {base}/api/channels?quality=degraded   ({degraded} cameras show a picture fault;
             each picture is sampled every {args.quality_interval}, 完好率 in /api/rates)
{gb_lines}{victim} loses its uplink {args.outage_at:g}s from now for {args.outage_for:g}s.{gb_story}
Ctrl-C or SIGTERM stops the demo; SIGHUP re-reads {config.name} and the inventory.
""", flush=True)

        daemon = Daemon(str(config), listen=listen, on_ready=banner)
        status = asyncio.create_task(_status_lines(daemon, start), name="demo-status")

        async def stop_later() -> None:
            if args.duration is not None:
                await asyncio.sleep(args.duration)  # the demo's own run time, on request
                daemon.engine.stop()

        timer = asyncio.create_task(stop_later(), name="demo-timer")
        # a repair ticket's life: opened, dispatched, rejected at verification, closed
        victim_code = fleet.township_code(victim) or ""
        cid = repairs_demo.pick_channel(fleet, victim_code)
        ticket = asyncio.create_task(
            repairs_demo.story(daemon, fleet, cid, say, watched)
            if cid else asyncio.sleep(0), name="demo-ticket")
        platforms = asyncio.create_task(gb_demo.story(daemon, fleet, say), name="demo-gb")
        try:
            rc = await daemon.run()
        finally:
            status.cancel()
            timer.cancel()
            ticket.cancel()
            platforms.cancel()
        print("camwatch demo: stopped", file=sys.stderr)
        return rc
