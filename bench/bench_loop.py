"""Event-loop lag of the real daemon at scale, through what used to stall it.

    python bench/bench_loop.py [--channels 100000] [--minutes 10]

``camwatch simulate`` serves the fleet (2 % dead, 1 % hung, NVRs of 32-64 channels above
40,000 channels to fit the fd limit) and ``camwatch run`` watches it (interval 60 s, timeout
2 s, describe level, ONVIF lane off, SQLite store), both as subprocesses on 127.0.0.0/8. While
it runs, this script scrapes ``/metrics`` every 15 s as Prometheus would, sends SIGHUP at
t+120 s (a full reload), rewrites the inventory file at t+240 s (the watcher's reload), and
the daemon does its own full state flush every 5 minutes and evaluates alerts every 15 s.

At the end it reads the daemon's loop-lag histogram (``camwatch_event_loop_lag_seconds``, one
sample every 0.25 s) and prints its p99 (the upper bound of the bucket holding it) and the
largest lag seen (``camwatch_loop_lag_max_seconds``), the daemon's RSS and CPU, and its CPU
per probe over the steady part of the run. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import read_until  # reads a child's stdout with a deadline
from soak import cpu_seconds, free_port, rss_kib, start_daemon, stop

FIRST_HOST = "127.62.0.1"  # away from the tests', the soak's and bench_engine's addresses
START_TIMEOUT_S = 600.0


def scrape(port: int) -> dict[str, float]:
    """Every sample of /metrics as ``name{labels}`` -> value."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line and not line.startswith("#"):
                    key, _, value = line.rpartition(" ")
                    with contextlib.suppress(ValueError):
                        out[key] = float(value)
    except OSError:
        pass
    return out


def p99(metrics: dict[str, float], name: str) -> tuple[float, int]:
    """The upper bound of the bucket holding the 99th percentile, and the sample count."""
    buckets = sorted(((float(k.split('le="')[1].rstrip('"}')), v) for k, v in metrics.items()
                      if k.startswith(name + "_bucket")), key=lambda b: b[0])
    total = metrics.get(name + "_count", 0.0)
    for le, n in buckets:
        if n >= 0.99 * total:
            return le, int(total)
    return float("inf"), int(total)


def lags_above(metrics: dict[str, float], name: str) -> list[tuple[float, int]]:
    """(bucket bound, samples above it), for the histogram's finite bounds."""
    buckets = sorted(((float(k.split('le="')[1].rstrip('"}')), v) for k, v in metrics.items()
                      if k.startswith(name + "_bucket")), key=lambda b: b[0])
    total = metrics.get(name + "_count", 0.0)
    return [(le, int(total - n)) for le, n in buckets if le != float("inf")]


def probes(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("camwatch_probes_total{"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=100_000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--stall-trace", metavar="FILE",
                    help="run the daemon under bench/stalltrace.py, writing what its loop was "
                         "doing during each stall to FILE (lengthens the stalls a little)")
    ap.add_argument("--mem-trace", metavar="FILE",
                    help="run the daemon under bench/memtrace.py and have it write what its "
                         "memory is made of to FILE at t+100 s and at the end")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="camwatch-loop-"))
    sim_dir = work / "sim"
    camwatch = [sys.executable, "-m", "camwatch", "--log-level", "warning"]
    sim_args = ["--channels", str(args.channels), "--dead", "0.02", "--hung", "0.01",
                "--first-host", FIRST_HOST, "--out", str(sim_dir)]
    if args.channels > 40_000:
        sim_args += ["--nvr-share", "0.25", "--nvr-channels", "32-64"]
    sim: subprocess.Popen[str] | None = None
    daemon: subprocess.Popen[str] | None = None
    try:
        sim = subprocess.Popen([*camwatch, "simulate", *sim_args], stdout=subprocess.PIPE,
                               stderr=open(work / "sim.log", "w"), text=True)  # noqa: SIM115
        read_until(sim, "Ctrl-C", START_TIMEOUT_S)
        doc = yaml.safe_load((sim_dir / "camwatch.yaml").read_text(encoding="utf-8"))
        port = free_port()
        doc["probing"].update({"interval": "60s", "timeout": "2s", "onvif": False})
        doc["http"] = {"listen": f"127.0.0.1:{port}"}
        doc.setdefault("inventory", {})["max_drop"] = "100%"
        cfg = sim_dir / "loop.yaml"
        cfg.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False),
                       encoding="utf-8")
        inventory = Path(doc["inventory"]["path"])
        if not inventory.is_absolute():
            inventory = sim_dir / inventory
        t_start = time.monotonic()
        runner = camwatch
        if args.stall_trace:
            runner = [sys.executable, str(Path(__file__).with_name("stalltrace.py")),
                      str(Path(args.stall_trace).resolve()), *camwatch[3:]]
        elif args.mem_trace:  # a census on SIGUSR1, sent after the first sweep and at the end
            runner = [sys.executable, str(Path(__file__).with_name("memtrace.py")),
                      str(Path(args.mem_trace).resolve()), *camwatch[3:]]
        daemon = start_daemon(runner, cfg, work, port, START_TIMEOUT_S)
        t0 = time.monotonic()
        print(f"bench_loop: {args.channels:,} channels, {args.minutes:g} min; daemon listening "
              f"after {t0 - t_start:.1f} s; work dir {work}", flush=True)
        end = t0 + args.minutes * 60.0
        hup_at, touch_at = t0 + 120.0, t0 + 240.0
        census_at = t0 + 100.0 if args.mem_trace else 0.0
        rss_between: list[float] = []  # MiB, once a second from t+90 s, 3 s or more after a scrape
        scraped_at = t0
        steady: tuple[float, float, float] | None = None  # (t, cpu, probes) after sweep 1
        above_before = 0  # lag samples over 50 ms at the previous scrape
        nxt = t0
        last: dict[str, float] = {}
        while time.monotonic() < end and daemon.poll() is None:
            now = time.monotonic()
            if hup_at and now >= hup_at:
                daemon.send_signal(signal.SIGHUP)
                print(f"t+{now - t0:.0f}s SIGHUP", flush=True)
                hup_at = 0.0
            if census_at and now >= census_at:
                daemon.send_signal(signal.SIGUSR1)
                census_at = 0.0
            if touch_at and now >= touch_at:
                inventory.write_bytes(inventory.read_bytes())  # a new mtime: the watcher
                print(f"t+{now - t0:.0f}s inventory file rewritten", flush=True)
                touch_at = 0.0
            if now >= nxt:
                last = scrape(port)
                cpu = cpu_seconds(daemon.pid)
                if steady is None and now - t0 >= 90.0:
                    steady = (now, cpu, probes(last))
                above = dict(lags_above(last, "camwatch_event_loop_lag_seconds")).get(0.05, 0)
                new_above, above_before = above - above_before, above
                lag = last.get("camwatch_loop_lag_seconds", -1)
                top = last.get("camwatch_loop_lag_max_seconds", -1)
                ok = last.get('camwatch_config_reloads_total{result="ok"}', 0)
                print(f"t+{now - t0:4.0f}s RSS {rss_kib(daemon.pid) / 1024:6.1f} MiB  CPU "
                      f"{cpu:6.1f} s  loop lag now {lag:.3f} s  max {top:.3f} s  "
                      f"reloads {ok:.0f}  lag samples > 50 ms since the last line "
                      f"{new_above}", flush=True)
                nxt += 15.0
                scraped_at = time.monotonic()
            elif now - t0 >= 90.0 and now - scraped_at >= 3.0:
                rss_between.append(rss_kib(daemon.pid) / 1024)  # away from a scrape's peak
            time.sleep(max(0.0, min(nxt, end, time.monotonic() + 1.0) - time.monotonic()))
        if daemon.poll() is not None:
            print(f"daemon exited early with {daemon.returncode}; see {work}/daemon.log")
            return 1
        last = scrape(port)
        cpu = cpu_seconds(daemon.pid)
        if args.mem_trace:
            trace = Path(args.mem_trace)
            done = trace.read_text(encoding="utf-8").count("census took")
            daemon.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 120.0
            while (trace.read_text(encoding="utf-8").count("census took") == done
                   and time.monotonic() < deadline):
                time.sleep(0.5)  # the census runs in the daemon for seconds
        q, n = p99(last, "camwatch_event_loop_lag_seconds")
        print(f"loop lag over {n} samples: p99 <= {q * 1000:.0f} ms, max "
              f"{last.get('camwatch_loop_lag_max_seconds', -1) * 1000:.0f} ms")
        print("  samples above: " + ", ".join(
            f"{le * 1000:g} ms {above}" for le, above in
            lags_above(last, "camwatch_event_loop_lag_seconds") if le >= 0.025))
        if rss_between:
            rss_between.sort()
            mid = rss_between[len(rss_between) // 2]
            print(f"RSS between scrapes from t+90 s: median {mid:.1f} MiB, max "
                  f"{rss_between[-1]:.1f} MiB ({len(rss_between)} samples)")
        print(f"RSS at the end {rss_kib(daemon.pid) / 1024:.1f} MiB; daemon CPU {cpu:.1f} s "
              f"over {time.monotonic() - t0:.0f} s")
        if steady is not None:
            dt_cpu, dn = cpu - steady[1], probes(last) - steady[2]
            if dn:
                print(f"steady state from t+90 s: {dn:,.0f} probes, {dt_cpu:.1f} CPU s, "
                      f"{dt_cpu / dn * 1e6:.0f} µs per probe (reloads, flushes, scrapes and "
                      f"evaluations included)")
    finally:
        rc = stop(daemon)
        print(f"daemon: SIGTERM -> exit {rc}")
        stop(sim)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
