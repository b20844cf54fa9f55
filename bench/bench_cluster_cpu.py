"""Three instances × 30,000 channels on one machine: CPU per probe against one instance's.

    python bench/bench_cluster_cpu.py [--channels 30000] [--instances 3] [--interval 60]
                                      [--minutes 5]

The issue's figure (docs/scale-out.md, Sizing): per-probe CPU of each instance of a cluster
within 10 % of a single instance's. Needs a quiet machine (it loads both cores for about
``2 × (2 × interval + minutes)``); run it alone.

Starts a PostgreSQL cluster of its own (tests/peers/postgres.py, fsync on, as in production)
and ``camwatch simulate`` with ``--channels × --instances`` channels (2 % dead, 1 % hung,
loopback 127.73.x.y). The inventory is split into ``4 × --instances`` shards by township and
each instance may own 4 of them (``cluster.max_shards_per_instance``), so that each probes
about ``--channels`` channels (as even as the townships allow). Two phases on the same fleet
and database:

1. **single**: one ``camwatch run`` (a member of the cluster, alone: it owns its share of the
   shards and probes only those; the others stay unowned);
2. **cluster**: ``--instances`` of them side by side, each owning its share.

In each phase, after a warm-up of two intervals, each instance's CPU (``/proc/<pid>/stat``
utime + stime) over the measured minutes is divided by the probes it made
(``camwatch_probes_total``, its own ``/metrics`` scraped every 15 s as Prometheus would).
Prints the figures per instance and the ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_engine  # the simulator helpers
from bench_loop import probes, scrape
from soak import cpu_seconds, free_port, start_daemon, stop

bench_engine.FIRST_HOST = "127.73.0.1"  # away from the tests' and the other benches' addresses
SCRAPE_EVERY_S = 15.0
SHARDS_PER_INSTANCE = 4


def instance_config(base: dict[str, Any], work: Path, name: str, dsn_file: Path,
                    instances: int) -> tuple[Path, int]:
    doc = yaml.safe_load(yaml.safe_dump(base))
    port = free_port()
    doc["http"] = {"listen": f"127.0.0.1:{port}"}
    doc["store"] = {"backend": "postgresql", "dsn_file": str(dsn_file)}
    doc["cluster"] = {"enabled": True, "shard_by": "township",
                      "shards": SHARDS_PER_INSTANCE * instances,
                      "max_shards_per_instance": SHARDS_PER_INSTANCE, "takeover": "30s",
                      "instance": name}
    doc.pop("gb28181", None)
    doc.pop("repairs", None)
    path = work / "sim" / f"{name}.yaml"  # beside the simulator's inventory it names
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path, port


def measure(procs: list[tuple[str, subprocess.Popen[str], int]], interval: float,
            minutes: float) -> list[tuple[str, float, float, float]]:
    """(name, probes, CPU s, channels) per instance over ``minutes`` after two intervals."""
    warm_until = time.monotonic() + 2 * interval
    while time.monotonic() < warm_until:
        for _, _, port in procs:
            scrape(port)  # as Prometheus would, during the warm-up too
        time.sleep(min(SCRAPE_EVERY_S, max(0.0, warm_until - time.monotonic())))
    start = {name: (cpu_seconds(p.pid), probes(scrape(port))) for name, p, port in procs}
    until = time.monotonic() + minutes * 60.0
    while time.monotonic() < until:
        time.sleep(min(SCRAPE_EVERY_S, max(0.0, until - time.monotonic())))
        for _, _, port in procs:
            scrape(port)
    out = []
    for name, p, port in procs:
        metrics = scrape(port)
        cpu0, n0 = start[name]
        channels = metrics.get("camwatch_cluster_shards_owned", 0.0)
        total = sum(v for k, v in metrics.items() if k.startswith("camwatch_channels{"))
        out.append((name, probes(metrics) - n0, cpu_seconds(p.pid) - cpu0, total or channels))
    return out


def report(phase: str, rows: list[tuple[str, float, float, float]]) -> float:
    """Per instance, and returns the phase's CPU per probe in µs: all CPU over all probes
    (shards are as even as the townships: an average of the instances' ratios would weigh a
    small instance's fixed costs like a big one's)."""
    print(f"  {phase}:")
    for name, n, cpu, channels in rows:
        us = cpu / max(1.0, n) * 1e6
        print(f"    {name}: {channels:,.0f} channels judged, {n:,.0f} probes, {cpu:.1f} CPU s, "
              f"{us:.0f} µs per probe")
    return sum(r[2] for r in rows) / max(1.0, sum(r[1] for r in rows)) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, default=30_000, help="per instance")
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--interval", type=float, default=60.0)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args()
    bench_engine._raise_fd_limit()

    from tests.peers.postgres import PgServer, binaries

    bindir = binaries()
    if bindir is None:
        sys.exit("no PostgreSQL binaries in /usr/lib/postgresql/*/bin (Debian postgresql)")
    server = PgServer(bindir, fsync=True)
    work = Path(tempfile.mkdtemp(prefix="camwatch-cluster-cpu-"))
    sim_dir = work / "sim"
    sim = None
    running: list[tuple[str, subprocess.Popen[str], int]] = []
    try:
        with server.database() as dsn:
            dsn_file = work / "dsn"
            dsn_file.write_text(dsn + "\n")
            dsn_file.chmod(0o600)
            sim = bench_engine.start_simulator(args.channels * args.instances, sim_dir)
            base = yaml.safe_load(bench_engine.bench_config(sim_dir, args.timeout, 500)
                                  .read_text(encoding="utf-8"))
            base["probing"]["interval"] = f"{args.interval:g}s"
            camwatch = [sys.executable, "-m", "camwatch", "--log-level", "warning"]
            print(f"bench_cluster_cpu: {args.instances} × ~{args.channels:,} channels every "
                  f"{args.interval:g} s, {args.minutes:g} min measured after "
                  f"{2 * args.interval:g} s of warm-up", flush=True)

            def start(name: str) -> None:
                cfg, port = instance_config(base, work, name, dsn_file, args.instances)
                log_dir = work / name
                log_dir.mkdir()
                proc = start_daemon(camwatch, cfg, log_dir, port)
                if proc.poll() is not None:
                    tail = (log_dir / "daemon.log").read_text(errors="replace")[-2000:]
                    raise SystemExit(f"{name} exited with {proc.returncode}:\n{tail}")
                running.append((name, proc, port))

            start("single")
            single = report("one instance alone", measure(running, args.interval,
                                                          args.minutes))
            stop(running.pop()[1])
            for i in range(args.instances):
                start(f"cw-{i}")
            many = report(f"{args.instances} instances side by side",
                          measure(running, args.interval, args.minutes))
            print(f"  cluster / single, CPU per probe: {many / single:.2f} (goal ≤ 1.10)")
    finally:
        for _, proc, _ in running:
            stop(proc)
        if sim is not None:
            bench_engine.stop_process(sim)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
