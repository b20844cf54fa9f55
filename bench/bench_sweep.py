"""``camwatch sweep --json`` end to end vs Prometheus' blackbox_exporter, CPU per channel.

    python bench/bench_sweep.py [--channels 10000] [--repeat 3] [--profile]

1. ``camwatch simulate`` serves the fleet in its own process, started as ``bench_engine.py``
   starts it (2 % of channels on refused devices, 1 % hung), here from 127.73.0.1.
2. The real CLI in a fresh process, as a user runs it: ``python -m camwatch sweep -c
   <the simulator's camwatch.yaml> --json > sweep.json``, at the probing level that config
   gives (``describe``: OPTIONS + DESCRIBE with Digest; timeout 5 s, concurrency 500, 4 per
   host; the ONVIF lane is only used for channels without an RTSP URL, there are none).
   Measured: the child's CPU (user + system from ``getrusage(RUSAGE_CHILDREN)`` deltas across
   its run, so interpreter start-up, imports, config and inventory load, the sweep and the
   JSON are all counted) and its wall time. The output must parse and hold ``--channels``
   probed (connected) channels, or the run fails; the simulator's inventory also lists
   installed and planned channels, which the JSON carries as ``unknown`` without a probe.
   CPU per channel divides by the probed channels, as blackbox's divides by its probes.
3. ``/usr/bin/prometheus-blackbox-exporter`` over the same fleet exactly as ``bench_engine.py``
   drives it (its ``run_blackbox``: a ``tcp`` module sending an RTSP ``OPTIONS``, one
   ``/probe`` per connected channel, 500 at a time, timeout 2 s); its CPU from ``/proc``.

Each of ``--repeat`` runs does 2 then 3 against the same simulator; prints µs of CPU per
channel for both, the camwatch / blackbox ratio per run and the medians. ``--profile`` adds
one run of the sweep under ``python -m cProfile`` and prints where its time went (not
counted in the figures). Once, after the runs, it also measures the CPU the CLI spends
before probing (``camwatch sweep --help``: start-up and imports; ``camwatch check-config``:
and the config and inventory loaded). Loopback only; every wait is bounded; prints figures,
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import (  # the simulator and blackbox_exporter as bench_engine runs them
    BLACKBOX,
    _proc_cpu_s,
    _raise_fd_limit,
    rtsp_targets,
    run_blackbox,
    start_simulator,
    stop_process,
)

ROOT = Path(__file__).resolve().parent.parent
#: the children import this checkout's camwatch, whatever the venv has installed
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
FIRST_HOST = "127.73.0.1"  # away from the tests', soak.py's, bench_loop's and bench_engine's
SWEEP_TIMEOUT_S = 900.0


@dataclass(slots=True)
class SweepRun:
    channels: int  # connected, hence probed: the simulator's --channels
    rows: int  # every channel of the JSON (installed and planned ones too, as "unknown")
    wall_s: float
    user_s: float
    sys_s: float
    json_bytes: int

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def sweep_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "camwatch", "sweep", "-c", str(config), "--json"]


def run_sweep(config: Path, out: Path, expect: int) -> SweepRun:
    """The CLI in a child process, stdout to ``out``; CPU from RUSAGE_CHILDREN (no other child
    of this process ends meanwhile: the simulator runs on, blackbox is not running)."""
    with out.open("wb") as f, (out.parent / "sweep.stderr").open("wb") as err:
        ru0, w0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        proc = subprocess.run(sweep_argv(config), stdout=f, stderr=err, cwd=config.parent,
                              env=CHILD_ENV, timeout=SWEEP_TIMEOUT_S, check=False)
        w1, ru1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = (out.parent / "sweep.stderr").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"camwatch sweep exited with {proc.returncode}: {tail}")
    raw = out.read_bytes()
    doc = json.loads(raw)
    probed = sum(1 for ch in doc["channels"] if ch["state"] != "unknown")
    if probed != expect:
        raise RuntimeError(f"sweep --json holds {probed:,} probed channels, expected {expect:,}")
    return SweepRun(probed, len(doc["channels"]), w1 - w0, ru1.ru_utime - ru0.ru_utime,
                    ru1.ru_stime - ru0.ru_stime, len(raw))


def child_cpu_s(argv: list[str], cwd: Path) -> float:
    """User + system CPU of one run of ``argv`` (its output discarded)."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd,
                   env=CHILD_ENV, timeout=SWEEP_TIMEOUT_S, check=True)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)


def fixed_costs(config: Path, runs: int = 3) -> tuple[float, float]:
    """The part of a sweep's CPU that is not probing, medians of ``runs``: the interpreter,
    camwatch's imports and its parser (``camwatch sweep --help``), and those plus loading the
    config and inventory (``camwatch check-config``, which also prints a short summary)."""
    cw = [sys.executable, "-m", "camwatch"]
    start = [child_cpu_s([*cw, "sweep", "--help"], config.parent) for _ in range(runs)]
    load = [child_cpu_s([*cw, "check-config", "-c", str(config)], config.parent)
            for _ in range(runs)]
    return statistics.median(start), statistics.median(load)


def profile_sweep(config: Path, work: Path, top: int = 25) -> None:
    """One more sweep under cProfile (slower than a plain one: not in the figures)."""
    prof = work / "sweep.prof"
    argv = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "camwatch", "sweep",
            "-c", str(config), "--json"]
    with (work / "profiled.json").open("wb") as f, (work / "profiled.stderr").open("wb") as e:
        subprocess.run(argv, stdout=f, stderr=e, cwd=config.parent, env=CHILD_ENV,
                       timeout=SWEEP_TIMEOUT_S, check=True)
    for key in ("cumulative", "tottime"):
        print(f"\n  cProfile of `camwatch sweep --json`, by {key}:")
        pstats.Stats(str(prof), stream=sys.stdout).sort_stats(key).print_stats(top)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=10_000, help="fleet size (default 10000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs (default 3)")
    ap.add_argument("--bb-timeout", type=float, default=2.0,
                    help="blackbox module timeout, s (default 2, as bench_engine.py)")
    ap.add_argument("--bb-concurrency", type=int, default=500,
                    help="concurrent /probe requests to blackbox_exporter (default 500)")
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile one sweep and print where its time goes")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if not Path(BLACKBOX).exists():
        print(f"{BLACKBOX} not found (apt-get install prometheus-blackbox-exporter)")
        return 2
    _raise_fd_limit()  # inherited by the sweep: 500 connections at a time
    print(f"bench_sweep: {args.channels:,} channels, {args.repeat} runs, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M %Z')}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="camwatch-bench-sweep-"))
    sim_dir = work / "sim"
    rows: list[tuple[SweepRun, float, float, int]] = []  # sweep, bb cpu, bb wall, bb targets
    try:
        t0 = time.perf_counter()
        sim = start_simulator(args.channels, sim_dir, first_host=FIRST_HOST)
        try:
            print(f"  simulator up in {time.perf_counter() - t0:.1f} s", flush=True)
            config = sim_dir / "camwatch.yaml"
            targets = rtsp_targets(config)
            for i in range(1, args.repeat + 1):
                sim0 = _proc_cpu_s(sim.pid)
                sw = run_sweep(config, work / "sweep.json", args.channels)
                sim_cpu = _proc_cpu_s(sim.pid) - sim0
                bb = run_blackbox(work, targets, args.bb_timeout, args.bb_concurrency)
                rows.append((sw, bb.cpu_s, bb.wall_s, bb.probes))
                cw_us = sw.cpu_s / sw.channels * 1e6
                print(f"  run {i}: camwatch sweep {sw.wall_s:.1f} s wall, user {sw.user_s:.2f}"
                      f" + sys {sw.sys_s:.2f} s = {cw_us:.0f} µs/channel "
                      f"({sw.rows:,} channels, {sw.json_bytes / 1e6:.1f} MB of JSON; "
                      f"simulator {sim_cpu:.1f} CPU s); "
                      f"blackbox {bb.wall_s:.1f} s wall, {bb.cpu_s:.2f} CPU s = "
                      f"{bb.cpu_us_per_probe:.0f} µs/probe ({bb.outcomes}); "
                      f"ratio {cw_us / bb.cpu_us_per_probe:.2f}", flush=True)
            start_s, load_s = fixed_costs(config)
            print(f"  fixed costs (median of 3): start-up, imports and parser (camwatch sweep "
                  f"--help) {start_s:.2f} CPU s; with config and inventory loaded (camwatch "
                  f"check-config) {load_s:.2f} CPU s, i.e. "
                  f"{load_s / args.channels * 1e6:.0f} µs per channel before any probe",
                  flush=True)
            if args.profile:
                profile_sweep(config, work)
        finally:
            stop_process(sim)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'run':>4} {'sweep wall s':>12} {'sweep CPU s':>11} {'µs/channel':>10} "
          f"{'bb wall s':>9} {'bb CPU s':>8} {'µs/probe':>8} {'ratio':>6}")
    ratios, cw_all, bb_all = [], [], []
    for i, (sw, bb_cpu, bb_wall, bb_n) in enumerate(rows, 1):
        cw_us, bb_us = sw.cpu_s / sw.channels * 1e6, bb_cpu / max(1, bb_n) * 1e6
        ratios.append(cw_us / bb_us)
        cw_all.append(cw_us)
        bb_all.append(bb_us)
        print(f"{i:>4} {sw.wall_s:12.1f} {sw.cpu_s:11.2f} {cw_us:10.0f} {bb_wall:9.1f} "
              f"{bb_cpu:8.2f} {bb_us:8.0f} {cw_us / bb_us:6.2f}")
    if rows:
        print(f"median: camwatch {statistics.median(cw_all):.0f} µs/channel, blackbox "
              f"{statistics.median(bb_all):.0f} µs/probe, ratio {statistics.median(ratios):.2f}"
              f" (goal ≤ 0.6)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
