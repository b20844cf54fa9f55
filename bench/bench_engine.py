"""One full sweep of the Engine vs Prometheus' blackbox_exporter on the same simulated fleet.

    python bench/bench_engine.py [--channels 10000,100000] [--timeout 2] [--profile]

For each fleet size:

1. ``camwatch simulate`` in its own process (2 % of channels on refused devices, 1 % hung;
   above 40,000 channels, NVRs of 32-64 channels make it fit a 20,000-fd limit), so the
   simulator's CPU is never counted as camwatch's.
2. camwatch, in a fresh (spawned) process under uvloop: load the config and inventory the
   simulator wrote, build an :class:`~camwatch.engine.Engine` with an injected clock moved
   one interval ahead so that every channel is due at once, and ``scheduler.run_due()`` at the
   ``describe`` level (ONVIF lane off), timeout ``--timeout``. Measured: wall time of the sweep,
   CPU seconds (``getrusage(RUSAGE_SELF)`` deltas: user + system), peak RSS (``ru_maxrss`` of
   that process, inventory loading included).
3. ``/usr/bin/prometheus-blackbox-exporter`` with a ``tcp`` module that sends an RTSP
   ``OPTIONS`` and expects ``RTSP/1.0``, driven the way Prometheus would: one
   ``/probe?module=rtsp_options&target=host:port`` per channel, ``--bb-concurrency`` (500) at
   a time, from an aiohttp client in this process. Measured: the exporter's CPU
   (``/proc/<pid>/stat`` utime + stime deltas), its peak RSS (VmHWM) and the wall time.

Prints one table and the camwatch / blackbox ratio of CPU per probe. The two do not do the
same work: camwatch's describe probe is OPTIONS + DESCRIBE with Digest authentication (a 401
round trip, so three requests) and SDP parsing, then the state machine; blackbox's is one
OPTIONS on a fixed URL (a module cannot vary the URL per target, so channel-level hangs on
NVRs do not hang it). Loopback only; every wait is bounded; prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import multiprocessing as mp
import os
import pstats
import queue
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
FIRST_HOST = "127.71.0.1"  # away from the tests' and soak.py's addresses
SIM_START_TIMEOUT_S = 600.0
SWEEP_TIMEOUT_S = 900.0


@dataclass(slots=True)
class Row:
    who: str
    channels: int
    probes: int
    wall_s: float
    cpu_s: float
    rss_mb: float
    outcomes: str

    @property
    def cpu_us_per_probe(self) -> float:
        return self.cpu_s / max(1, self.probes) * 1e6


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


def start_simulator(channels: int, out: Path,
                    first_host: str = FIRST_HOST) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "camwatch", "--log-level", "warning", "simulate",
            "--channels", str(channels), "--dead", "0.02", "--hung", "0.01",
            "--first-host", first_host, "--out", str(out)]
    if channels > 40_000:  # two listening sockets per device: pack channels into NVRs
        argv += ["--nvr-share", "0.25", "--nvr-channels", "32-64"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                            stderr=open(out.parent / f"sim-{channels}.log", "w"),  # noqa: SIM115
                            text=True)
    try:
        for line in read_until(proc, "Ctrl-C", SIM_START_TIMEOUT_S):
            if "faults:" in line:
                print(f"  simulator {line.strip()}", flush=True)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def read_until(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    """Lines of ``proc``'s stdout up to the first containing ``needle``, within ``timeout``.
    A thread reads (and keeps draining) the pipe, so a silent process cannot block us."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="sim-stdout", daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"simulator not ready within {timeout:.0f} s") from None
        if line is None:
            raise RuntimeError(f"simulator exited with {proc.wait()}: {''.join(seen)}")
        seen.append(line)
        if needle in line:
            return seen


def stop_process(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def bench_config(sim_dir: Path, timeout: float, concurrency: int) -> Path:
    doc = yaml.safe_load((sim_dir / "camwatch.yaml").read_text(encoding="utf-8"))
    doc["probing"].update({"level": "describe", "interval": "60s", "timeout": f"{timeout:g}s",
                           "concurrency": concurrency, "onvif": False})
    doc["store"] = {"path": "bench.db"}
    path = sim_dir / "bench.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# camwatch, in a fresh process
# --------------------------------------------------------------------------------------------


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _camwatch_child(config: str, profile: bool, conn: Connection) -> None:
    """Runs in a spawned process: what it allocates is camwatch's alone."""
    _raise_fd_limit()
    import uvloop

    from camwatch.daemon import load_all
    from camwatch.engine import Engine
    from camwatch.log import configure
    from camwatch.store import open_store

    configure("error", json=True)  # the sweep's WARNING per offline channel is not the point
    t_load = time.perf_counter()
    cfg, inv = load_all(config)
    store = open_store(cfg.store.path)
    clock = _Clock(time.time())
    engine = Engine(cfg, inv, store, clock=clock)
    load_s = time.perf_counter() - t_load
    clock.t += cfg.probing.interval  # every channel's first due time is within one interval
    rss_before = _proc_status_kib(os.getpid(), "VmRSS")
    prof = cProfile.Profile() if profile else None

    async def sweep() -> int:
        if prof is not None:
            prof.enable()
        try:
            async with asyncio.timeout(SWEEP_TIMEOUT_S):
                return await engine.scheduler.run_due()
        finally:
            if prof is not None:
                prof.disable()

    ru0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    probed = uvloop.run(sweep())
    w1, ru1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    outcomes: Counter[str] = Counter()
    for (_, reason), n in engine.scheduler.stats.probes.items():
        outcomes[reason] += n
    shortcut = len(engine.channels) - probed
    if shortcut:
        outcomes["host_down (not probed)"] = shortcut
    profile_text = ""
    if prof is not None:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(30)
        profile_text = out.getvalue()
    store.close()
    conn.send({"channels": len(engine.channels), "probed": probed, "wall": w1 - w0, "cpu": cpu,
               "user": ru1.ru_utime - ru0.ru_utime, "sys": ru1.ru_stime - ru0.ru_stime,
               "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               "rss_before_kib": rss_before, "load_s": load_s,
               "outcomes": dict(outcomes.most_common()), "profile": profile_text})


def run_camwatch(config: Path, profile: bool) -> tuple[Row, dict[str, Any]]:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_camwatch_child,
                                           args=(str(config), profile, child), daemon=True)
    proc.start()
    try:
        if not parent.poll(SWEEP_TIMEOUT_S + 300):
            raise RuntimeError("camwatch sweep did not report in time")
        res: dict[str, Any] = parent.recv()
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    outcomes = ", ".join(f"{k} {v:,}" for k, v in res["outcomes"].items())
    row = Row("camwatch", res["channels"], res["probed"], res["wall"], res["cpu"],
              res["maxrss_kib"] / 1024, outcomes)
    return row, res


# --------------------------------------------------------------------------------------------
# blackbox_exporter
# --------------------------------------------------------------------------------------------


def blackbox_config(path: Path, timeout: float) -> None:
    # blackbox writes each ``send`` followed by "\n": the last CRLF is completed by it.
    path.write_text(
        "modules:\n"
        "  rtsp_options:\n"
        "    prober: tcp\n"
        f"    timeout: {timeout:g}s\n"
        "    tcp:\n"
        "      preferred_ip_protocol: ip4\n"
        "      query_response:\n"
        '        - send: "OPTIONS rtsp://camera/path RTSP/1.0\\r\\nCSeq: 1\\r\\n\\r"\n'
        '        - expect: "^RTSP/1.0"\n', encoding="utf-8")


def rtsp_targets(config: Path) -> list[str]:
    from urllib.parse import urlsplit

    from camwatch.daemon import load_all

    _, inv = load_all(str(config))
    out = []
    for ch in inv.channels:
        if ch.connected and ch.rtsp_url:
            u = urlsplit(ch.rtsp_url)
            out.append(f"{u.hostname}:{u.port or 554}")
    return out


async def _drive(port: int, targets: list[str], concurrency: int) -> Counter[str]:
    import aiohttp

    outcomes: Counter[str] = Counter()
    it = iter(targets)
    url = f"http://127.0.0.1:{port}/probe"
    # Prometheus' default scrape timeout; blackbox takes the smaller of it and the module's
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": "10"}

    async def worker(session: aiohttp.ClientSession) -> None:
        for target in it:
            try:
                async with session.get(url, params={"module": "rtsp_options",
                                                    "target": target}, headers=headers) as r:
                    body = await r.text()
                outcomes["ok" if "\nprobe_success 1" in body else "failed"] += 1
            except (aiohttp.ClientError, TimeoutError):
                outcomes["request error"] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session, \
            asyncio.timeout(SWEEP_TIMEOUT_S):
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return outcomes


async def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(30):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"blackbox_exporter exited with {proc.returncode}")
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                return
            except OSError:
                await asyncio.sleep(0.1)


def run_blackbox(work: Path, targets: list[str], timeout: float, concurrency: int) -> Row:
    import uvloop

    cfg = work / "blackbox.yml"
    blackbox_config(cfg, timeout)
    port = _free_port()
    log = open(work / "blackbox.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([BLACKBOX, f"--config.file={cfg}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=log)
    try:
        uvloop.run(_wait_listening(port, proc))
        uvloop.run(_drive(port, targets[:200], 50))  # warm-up, not measured
        cpu0, w0 = _proc_cpu_s(proc.pid), time.perf_counter()
        outcomes = uvloop.run(_drive(port, targets, concurrency))
        wall, cpu = time.perf_counter() - w0, _proc_cpu_s(proc.pid) - cpu0
        hwm = _proc_status_kib(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
    text = ", ".join(f"{k} {v:,}" for k, v in outcomes.most_common())
    return Row("blackbox", len(targets), len(targets), wall, cpu, hwm / 1024, text)


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", default="10000,100000",
                    help="comma-separated fleet sizes (default 10000,100000)")
    ap.add_argument("--timeout", type=float, default=2.0, help="probe timeout, s (default 2)")
    ap.add_argument("--concurrency", type=int, default=500, help="camwatch's global bound")
    ap.add_argument("--bb-concurrency", type=int, default=500,
                    help="concurrent /probe requests to blackbox_exporter (default 500)")
    ap.add_argument("--no-blackbox", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile camwatch's sweep")
    args = ap.parse_args()
    _raise_fd_limit()
    sizes = [int(x) for x in args.channels.split(",") if x]
    blackbox = not args.no_blackbox and Path(BLACKBOX).exists()
    if not args.no_blackbox and not blackbox:
        print(f"{BLACKBOX} not found: camwatch only (apt-get install prometheus-blackbox-exporter)")

    print(f"bench_engine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"timeout {args.timeout:g} s, camwatch concurrency {args.concurrency}, "
          f"blackbox concurrency {args.bb_concurrency}, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    rows: list[tuple[Row, Row | None]] = []
    work = Path(tempfile.mkdtemp(prefix="camwatch-bench-engine-"))
    try:
        for n in sizes:
            print(f"\n{n:,} channels", flush=True)
            sim_dir = work / f"sim-{n}"
            t0 = time.perf_counter()
            sim = start_simulator(n, sim_dir)
            try:
                print(f"  simulator up in {time.perf_counter() - t0:.1f} s", flush=True)
                config = bench_config(sim_dir, args.timeout, args.concurrency)
                sim_cpu0 = _proc_cpu_s(sim.pid)
                cw, res = run_camwatch(config, args.profile)
                sim_cpu = _proc_cpu_s(sim.pid) - sim_cpu0
                before = res["rss_before_kib"] / 1024
                print(f"  camwatch: load {res['load_s']:.1f} s, RSS {before:.0f} MB before the "
                      f"sweep; sweep {cw.wall_s:.1f} s, user {res['user']:.1f} s"
                      f" + sys {res['sys']:.1f} s; {cw.outcomes}; the simulator used "
                      f"{sim_cpu:.1f} CPU s meanwhile", flush=True)
                if res["profile"]:
                    print(res["profile"])
                bb = None
                if blackbox:
                    bb = run_blackbox(work, rtsp_targets(config), args.timeout,
                                      args.bb_concurrency)
                    print(f"  blackbox: {bb.wall_s:.1f} s, {bb.outcomes}", flush=True)
                rows.append((cw, bb))
            finally:
                stop_process(sim)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'':9} {'channels':>9} {'wall s':>7} {'CPU s':>7} {'CPU µs/probe':>13} "
          f"{'RSS MB':>7}")
    for cw, bb in rows:
        for r in (cw, bb):
            if r is not None:
                print(f"{r.who:9} {r.channels:9,} {r.wall_s:7.1f} {r.cpu_s:7.1f} "
                      f"{r.cpu_us_per_probe:13.0f} {r.rss_mb:7.0f}")
        if bb is not None:
            print(f"{'':9} CPU per probe camwatch / blackbox = "
                  f"{cw.cpu_us_per_probe / bb.cpu_us_per_probe:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
