"""``camwatch simulate``: run a simulated county of cameras on loopback until Ctrl-C / SIGTERM.

Writes the matching inventory, camwatch config and password file to ``--out`` and prints where
they and the control endpoint are, so ``camwatch`` can be pointed at the fleet at once.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from dataclasses import replace
from pathlib import Path

from camwatch.errors import CamwatchError
from camwatch.sim.fleet import Fleet, FleetConfig
from camwatch.sim.inventory_gen import InventorySpec
from camwatch.sim.pictures import Picture
from camwatch.sim.scenario import Scenario, load_scenario, parse_duration

# flag -> Scenario attribute; None (the default) leaves the scenario file's value.
_SHARE_FLAGS = ("dead", "hung", "auth_fail", "not_found", "flapping", "clock_skew")


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text}")
    return value


def _range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        pair = (int(lo), int(hi if sep else lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH such as 4-32, got {text}") from None
    if not 1 <= pair[0] <= pair[1]:
        raise argparse.ArgumentTypeError(f"expected 1 <= LOW <= HIGH, got {text}")
    return pair


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _picture_fault(text: str) -> tuple[Picture, float]:
    kind, sep, share = text.partition("=")
    names = ", ".join(p.value for p in Picture if p is not Picture.OK)
    try:
        picture = Picture(kind.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown picture fault {kind!r}; expected one of "
                                         f"{names}") from None
    if not sep or picture is Picture.OK:
        raise argparse.ArgumentTypeError(f"expected KIND=SHARE such as frozen=0.01, got "
                                         f"{text!r}")
    return picture, _share(share)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("fleet")
    g.add_argument("--channels", type=int, default=2000,
                   help="connected (served) channels (default 2000)")
    g.add_argument("--installed", type=int, help="installed channels (default: seed ratio)")
    g.add_argument("--planned", type=int, help="planned channels (default: seed ratio)")
    g.add_argument("--seed", type=int, help="random seed (default: the scenario's, else 0)")
    g.add_argument("--nvr-share", type=_share, default=0.10,
                   help="share of devices that are NVRs (default 0.10)")
    g.add_argument("--nvr-channels", type=_range, default=(4, 32), metavar="LOW-HIGH",
                   help="channels per NVR (default 4-32)")
    g.add_argument("--addressing", choices=("hosts", "ports"), default="hosts",
                   help="hosts: one 127.x.y.z per device (default); ports: 127.0.0.1 and a "
                        "port range starting at --port-base")
    g.add_argument("--first-host", default="127.1.0.1", help="first device address")
    g.add_argument("--rtsp-port", type=int, default=8554, help="RTSP port per address")
    g.add_argument("--onvif-port", type=int, default=8080, help="ONVIF port per address")
    g.add_argument("--port-base", type=int, default=20000, help="first port for --addressing ports")
    g.add_argument("--county-code", default="411628", help="6-digit GB/T 2260 county code")
    g.add_argument("--county-name", default="鹿邑县", help="county name (default 鹿邑县)")
    g.add_argument("--townships", type=int, default=20,
                   help="townships of the county (default 20)")
    g.add_argument("--out", type=Path, default=Path("camwatch-sim"),
                   help="directory for inventory, camwatch.yaml and sim-password.txt")
    g.add_argument("--format", choices=("csv", "xlsx"), default="csv", help="inventory format")
    g.add_argument("--control", default="127.0.0.1:0",
                   help="control endpoint HOST:PORT (default 127.0.0.1:0, a free port)")
    gb = parser.add_argument_group("GB/T 28181 lower platforms (docs/gb28181.md)")
    gb.add_argument("--gb-channels", type=int, default=0,
                    help="channels reached only through two simulated operator clouds that "
                         "register with camwatch over GB/T 28181, beside the county platform "
                         "that lists the simulated cameras (default 0: no platforms)")
    gb.add_argument("--gb-listen", default="127.0.0.1:5060", metavar="HOST:PORT",
                    help="camwatch's gb28181.listen, where the platforms register (written to "
                         "camwatch.yaml; default 127.0.0.1:5060)")
    gb.add_argument("--gb-keepalive", type=_duration, default=60.0,
                    help="keepalive period of the platforms (default 60s)")
    gb.add_argument("--gb-down-at", type=_duration,
                    help="when the last operator cloud stops its keepalives (e.g. 5m)")
    gb.add_argument("--gb-down-for", type=_duration,
                    help="how long it stays silent (default: until stopped)")
    s = parser.add_argument_group("scenario (flags override --scenario)")
    s.add_argument("--scenario", type=Path, help="scenario YAML (shares and timed events)")
    s.add_argument("--dead", type=_share, help="share of channels on refused devices")
    s.add_argument("--hung", type=_share, help="share of channels that accept and never answer")
    s.add_argument("--auth-fail", type=_share, help="share of channels rejecting credentials")
    s.add_argument("--not-found", type=_share, help="share of channels answering 404")
    s.add_argument("--flapping", type=_share, help="share of channels on flapping devices")
    s.add_argument("--flap-period", type=_duration, help="flapping period (default 5m)")
    s.add_argument("--clock-skew", type=_share, help="share of channels on skewed clocks")
    s.add_argument("--clock-skew-seconds", type=_duration, help="clock skew (default 600s)")
    s.add_argument("--pictures", action="store_true", default=None,
                   help="cameras send real pictures (H.264/H.265 clips) for the quality lane; "
                        "the scenario's picture_faults say which are degraded")
    s.add_argument("--picture-fault", action="append", default=[], metavar="KIND=SHARE",
                   type=_picture_fault,
                   help="share of cameras showing a picture fault, e.g. frozen=0.01 (repeat "
                        "for several; implies --pictures)")


def config_from_args(args: argparse.Namespace) -> FleetConfig:
    """Raises :class:`camwatch.errors.ConfigError` for a bad scenario file."""
    scenario = load_scenario(args.scenario) if args.scenario is not None else Scenario()
    overrides: dict[str, object] = {k: getattr(args, k) for k in _SHARE_FLAGS
                                    if getattr(args, k) is not None}
    if args.flap_period is not None:
        overrides["flap_period_s"] = args.flap_period
    if args.clock_skew_seconds is not None:
        overrides["clock_skew_s"] = args.clock_skew_seconds
    if args.pictures is not None:
        overrides["pictures"] = args.pictures
    if args.picture_fault:
        overrides["picture_faults"] = tuple(args.picture_fault)
    scenario = replace(scenario, **overrides)  # type: ignore[arg-type]
    seed = args.seed if args.seed is not None else (scenario.seed or 0)
    if args.seed is not None:
        scenario = replace(scenario, seed=args.seed)
    if args.gb_channels < 0:
        raise ValueError(f"--gb-channels must be 0 or more, got {args.gb_channels}")
    spec = InventorySpec(
        connected=args.channels, installed=args.installed, planned=args.planned,
        county_code=args.county_code, county_name=args.county_name, townships=args.townships,
        nvr_share=args.nvr_share, nvr_channels=args.nvr_channels, addressing=args.addressing,
        first_host=args.first_host, rtsp_port=args.rtsp_port, onvif_port=args.onvif_port,
        port_base=args.port_base, seed=seed, gb_channels=args.gb_channels,
        gb_listen=_gb_listen(args.gb_listen))
    return FleetConfig(inventory=spec, scenario=scenario, out_dir=args.out,
                       inventory_format=args.format, control=args.control or None,
                       gb_keepalive_s=args.gb_keepalive, gb_down_at=args.gb_down_at,
                       gb_down_for=args.gb_down_for)


def _gb_listen(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--gb-listen: expected HOST:PORT like 127.0.0.1:5060, got {text!r}")
    return text


def _summary(fleet: Fleet) -> str:
    keys = list(fleet.devices)
    lines = [f"camwatch simulate: {fleet.channel_count:,} channels on {len(keys):,} devices "
             f"({keys[0]} .. {keys[-1]}), started in {fleet.started_s:.1f} s"
             if keys else "camwatch simulate: no devices"]
    if fleet.control_url:
        lines.append(f"  control:   {fleet.control_url}  (GET /api/devices, "
                     f"POST /api/channels/{{id}}/fault {{\"fault\": \"hang\"}}, POST /api/reset)")
    if fleet.files is not None:
        lines += [f"  inventory: {fleet.files.inventory} ({fleet.files.rows:,} rows)",
                  f"  config:    {fleet.files.config}",
                  f"  password:  {fleet.files.password}"]
        if fleet.files.gb_password is not None:
            lines.append(f"  gb pass:   {fleet.files.gb_password} (the platforms' registration)")
    counts = ", ".join(f"{k} {v:,}" for k, v in sorted(fleet.fault_counts().items()))
    lines.append(f"  faults:    {counts}")
    if fleet.config.scenario.serves_pictures:
        shown = ", ".join(f"{k} {v:,}" for k, v in sorted(fleet.picture_counts().items()))
        lines.append(f"  pictures:  {shown}  (enable quality: in the config to sample them; "
                     f"POST /api/channels/{{id}}/picture {{\"picture\": \"frozen\"}})")
    for ev in fleet.config.scenario.events:
        lines.append(f"  event:     {ev.describe()}")
    if fleet.gb is not None:
        spec, cfg = fleet.config.inventory, fleet.config
        lines.append(f"  platforms: {', '.join(fleet.gb.names.values())} (GB/T 28181, "
                     f"{spec.gb_channels:,} channels through the clouds) register with "
                     f"camwatch at {spec.gb_listen}, keepalive every {cfg.gb_keepalive_s:g}s")
        if cfg.gb_down_at is not None:
            until = "" if cfg.gb_down_for is None else f" for {cfg.gb_down_for:g}s"
            lines.append(f"  event:     at {cfg.gb_down_at:g}s {fleet.plan.clouds[-1].name} "
                         f"stops its keepalives{until}")
    lines.append("  Ctrl-C or SIGTERM stops the fleet")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM; 0 after a clean stop, 2 when the fleet cannot start."""
    try:
        config = config_from_args(args)
    except (CamwatchError, ValueError) as exc:
        print(f"camwatch simulate: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    try:
        async with Fleet.start(config) as fleet:
            print(_summary(fleet), flush=True)
            await stop.wait()
            print("camwatch simulate: stopping", file=sys.stderr, flush=True)
    except (CamwatchError, ValueError) as exc:
        print(f"camwatch simulate: {exc}", file=sys.stderr)
        return 2
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m camwatch.sim.cli``, until the lead wires ``camwatch simulate``."""
    parser = argparse.ArgumentParser(prog="camwatch simulate", description=__doc__)
    add_arguments(parser)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
