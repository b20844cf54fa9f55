"""Soak: does the daemon's memory stay flat? ``python bench/soak.py [--minutes 30]``.

Runs ``camwatch simulate`` (20,000 channels, 2 % dead, 1 % hung, 0.5 % flapping, plus timed
events: two township outages and NVR reboots spread over the run) and the real
``camwatch run`` daemon against it, both as subprocesses, with interval 60 s and timeout 2 s.
Every ``--sample`` seconds it reads the daemon's VmRSS from ``/proc/<pid>/status`` and its
``/api/status`` (counts by state), prints the series, then the least-squares slope of RSS over
the whole run and over its second half (after the first sweep has filled every state).
With ``--quality INTERVAL`` the cameras send real H.264/H.265 pictures (1 % too dark, 1 %
frozen) and the daemon samples each one per INTERVAL, the picture counts printed with the
states. Everything is on 127.0.0.0/8; it stops both processes when done or interrupted. It prints
figures and never judges them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import read_until  # reads a child's stdout with a deadline

from camwatch.sim import cli as sim_cli
from camwatch.sim.inventory_gen import plan_inventory

FIRST_HOST = "127.61.0.1"  # away from the tests' and bench_engine's addresses
START_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sim_argv(channels: int, out: Path, scenario: Path | None, pictures: bool = False
             ) -> list[str]:
    argv = ["--channels", str(channels), "--dead", "0.02", "--hung", "0.01",
            "--flapping", "0.005", "--first-host", FIRST_HOST, "--out", str(out)]
    if scenario is not None:
        argv += ["--scenario", str(scenario)]
    if pictures:  # real H.264/H.265 clips, 2 % of them with a fault the sampler finds
        argv += ["--picture-fault", "too_dark=0.01", "--picture-fault", "frozen=0.01"]
    return argv


def scenario_events(channels: int, minutes: float) -> list[dict[str, Any]]:
    """Township outages and NVR reboots, placed at the same fractions of any run length.
    The fleet is planned here exactly as ``camwatch simulate`` will plan it (same args), to
    name real townships and NVRs."""
    parser = argparse.ArgumentParser()
    sim_cli.add_arguments(parser)
    spec = sim_cli.config_from_args(
        parser.parse_args(sim_argv(channels, Path("unused"), None))).inventory
    plan = plan_inventory(spec)
    towns = plan.county.townships
    nvrs = [d.key for d in plan.devices if d.nvr]
    span = minutes * 60.0

    def at(fraction: float) -> str:
        return f"{fraction * span:.0f}s"

    events: list[dict[str, Any]] = [
        # a township loses its uplink: refused for a third of the run
        {"at": at(0.15), "for": at(0.30), "township": towns[1].code, "fault": "refused"},
        # another township's link blackholes: connections hang for a sixth of the run
        {"at": at(0.55), "for": at(0.15), "township": towns[2].code, "fault": "hang"},
    ]
    for i, key in enumerate(nvrs[:8]):  # NVR reboots: two minutes down, one every ~1/10th
        events.append({"at": at(0.08 + 0.1 * i), "for": "120s", "device": key,
                       "fault": "refused"})
    return events


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slope_mib_per_hour(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, KiB) in MiB per hour; 0 with fewer than 2 points."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(r for _, r in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    sxy = sum((t - mx) * (r - my) for t, r in points)
    return (sxy / sxx) * 3600 / 1024 if sxx else 0.0


def api_status(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
            return dict(json.loads(r.read()))
    except (OSError, ValueError):
        return {}


def pictures(port: int) -> dict[str, int]:
    """Channels by picture quality (``/api/channels?quality=``'s totals)."""
    out = {}
    for q in ("ok", "degraded"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/channels?quality={q}"
                                        f"&limit=1", timeout=5) as r:
                out[q] = int(json.loads(r.read())["total"])
        except (OSError, ValueError, KeyError):
            pass
    return out


def start_daemon(camwatch: list[str], cfg: Path, work: Path, port: int,
                 timeout: float = START_TIMEOUT_S) -> subprocess.Popen[str]:
    """``camwatch run -c cfg`` (its log in ``work/daemon.log``), returned once its API answers
    on ``port``, it exited, or ``timeout`` passed (loading the inventory takes seconds)."""
    run = [*camwatch, "run", "-c", str(cfg)]
    if os.geteuid() == 0:  # a bench box / container; production runs as its own user
        run.append("--allow-root")
    daemon = subprocess.Popen(run, stdout=subprocess.DEVNULL,
                              stderr=open(work / "daemon.log", "w"),  # noqa: SIM115
                              text=True)
    deadline = time.monotonic() + timeout
    while not api_status(port) and daemon.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)  # loading the inventory, then listening
    return daemon


def stop(proc: subprocess.Popen[str] | None, grace: float = 15.0) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--channels", type=int, default=20_000)
    ap.add_argument("--sample", type=float, default=30.0, help="seconds between RSS samples")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--quality", metavar="INTERVAL", default=None,
                    help="cameras send real pictures and the daemon samples each one per "
                         "INTERVAL (quality.enabled), e.g. 30m")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="camwatch-soak-"))
    sim_dir = work / "sim"
    scenario = work / "scenario.yaml"
    events = scenario_events(args.channels, args.minutes)
    scenario.write_text(yaml.safe_dump({"events": events}, allow_unicode=True),
                        encoding="utf-8")
    camwatch = [sys.executable, "-m", "camwatch", "--log-level", "warning"]
    sim: subprocess.Popen[str] | None = None
    daemon: subprocess.Popen[str] | None = None
    try:
        t_sim = time.monotonic()
        sim = subprocess.Popen(
            [*camwatch, "simulate", *sim_argv(args.channels, sim_dir, scenario,
                                              args.quality is not None)],
            stdout=subprocess.PIPE, stderr=open(work / "sim.log", "w"), text=True)  # noqa: SIM115
        summary = read_until(sim, "Ctrl-C", START_TIMEOUT_S)
        sim_ready = time.monotonic() - t_sim
        doc = yaml.safe_load((sim_dir / "camwatch.yaml").read_text(encoding="utf-8"))
        port = free_port()
        doc["probing"].update({"interval": "60s", "timeout": "2s"})
        doc["http"] = {"listen": f"127.0.0.1:{port}"}
        if args.quality is not None:
            doc["quality"] = {**doc.get("quality", {}), "enabled": True,
                              "interval": args.quality}
        cfg = sim_dir / "soak.yaml"
        cfg.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False),
                       encoding="utf-8")
        daemon = start_daemon(camwatch, cfg, work, port)
        t0 = time.monotonic()
        print(f"soak: {args.channels:,} channels, {args.minutes:g} min, interval 60 s, "
              f"timeout 2 s, sample every {args.sample:g} s; simulator up in {sim_ready:.1f} s; "
              f"work dir {work}")
        for line in summary:
            if "faults:" in line or "event:" in line:
                print("  " + line.strip())
        print(f"{'t s':>6} {'RSS MiB':>8}  states (api/status)")
        series: list[tuple[float, int]] = []
        end = t0 + args.minutes * 60.0
        nxt = t0
        while True:
            now = time.monotonic()
            if daemon.poll() is not None:
                print(f"daemon exited early with {daemon.returncode}; see {work}/daemon.log")
                break
            if now >= nxt:
                kib = rss_kib(daemon.pid)
                series.append((now - t0, kib))
                st = api_status(port)
                states = st.get("states", {})
                if args.quality is not None:
                    states = {**states, "pictures": pictures(port)}
                extra = (f" offline reasons {st.get('offline_reasons')}"
                         if st.get("offline_reasons") else "")
                print(f"{now - t0:6.0f} {kib / 1024:8.1f}  {states}{extra}", flush=True)
                nxt += args.sample
            if now >= end:
                break
            time.sleep(max(0.0, min(nxt, end) - time.monotonic()))
        if series:
            half = [p for p in series if p[0] >= series[-1][0] / 2]
            rss = [r for _, r in series]
            print(f"RSS: first {rss[0] / 1024:.1f} MiB, min {min(rss) / 1024:.1f}, "
                  f"max {max(rss) / 1024:.1f}, last {rss[-1] / 1024:.1f} MiB; slope "
                  f"{slope_mib_per_hour(series):+.2f} MiB/h over the run, "
                  f"{slope_mib_per_hour(half):+.2f} MiB/h over the second half")
        if daemon.poll() is None:
            cpu = cpu_seconds(daemon.pid)
            print(f"daemon CPU: {cpu:.1f} s over {time.monotonic() - t0:.0f} s "
                  f"({cpu / max(1.0, time.monotonic() - t0) * 100:.1f} % of one core)")
    finally:
        t_stop = time.monotonic()
        rc = stop(daemon)
        if daemon is not None:
            print(f"daemon: SIGTERM -> exit {rc} in {time.monotonic() - t_stop:.1f} s")
        stop(sim)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
