"""Benchmark of the monthly bulletin: N channels (default 100,000) with two months of
transition history (the month reported and the month before, for 环比), in a SQLite store on
disk. Prints the seconds of each stage and the peak RSS. Run on demand:

    python3 bench/bench_report.py [--channels 100000] [--outages-per-channel 3] [--quality]

The goal is under 30 s for computing and writing the report of 100,000 channels. With
``--quality`` the store also holds a picture-quality log (every connected channel's first
sample ok within the first hour, 5 % of them with degraded spells, two on average): the
bulletin then has its 完好率 for both months (the 环比) and the degraded cameras.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from camwatch.config import TargetsConfig  # noqa: E402
from camwatch.inventory import Channel  # noqa: E402
from camwatch.reports import csvjson, html, inventory_rows, xlsx  # noqa: E402
from camwatch.reports.compute import ReportSettings, compute_bulletin  # noqa: E402
from camwatch.reports.period import Period, zone  # noqa: E402
from camwatch.reports.rows import channels_from_rows  # noqa: E402
from camwatch.rules.rates import format_rate  # noqa: E402
from camwatch.store.base import QualityChange, Transition  # noqa: E402
from camwatch.store.sqlite import SqliteStore  # noqa: E402

REASONS = ("timeout", "refused", "unreachable", "auth", "no_media", "not_found")
OPERATORS = ("移动", "联通", "电信")


def make_channels(n: int, rng: random.Random) -> list[Channel]:
    out = []
    for i in range(n):
        t = i % 40
        v = i % 400
        connected = rng.random() < 0.95
        out.append(Channel(
            id=f"41162800001320{i:06d}", name=f"点位{i}", klass=rng.choice((1, 2, 3, 3, 3)),
            project=rng.choice(("雪亮工程", "数字乡村")), county="鹿邑县", county_code="411628",
            township=f"乡镇{t:02d}", township_code=f"411628{100 + t:03d}",
            village=f"村{v:03d}", village_code=f"411628{100 + t:03d}{v:03d}",
            operator=OPERATORS[i % 3], installed=connected or rng.random() < 0.5,
            connected=connected,
            connected_date=dt.date(2026, 11, rng.randint(2, 28)) if rng.random() < 0.02
            else None,
            longitude=115.5 if rng.random() < 0.97 else None, latitude=33.9))
    return out


def make_history(channels: list[Channel], start: float, end: float, per_channel: float,
                 rng: random.Random) -> list[Transition]:
    out = []
    for ch in channels:
        if not ch.connected:
            continue
        out.append(Transition(ch.id, start, "unknown", "online"))
        t, state = start, "online"
        rate = per_channel / (end - start)
        # 1 % break down for good somewhere in the two months (the long-offline list)
        stop = rng.uniform(start, end) if rng.random() < 0.01 else end
        while True:
            t += rng.expovariate(rate) if state == "online" else rng.expovariate(1 / 7200.0)
            if t >= stop:
                if stop < end and state == "online":
                    out.append(Transition(ch.id, stop, state, "offline", "unreachable"))
                break
            if state == "online":
                new = "offline" if rng.random() < 0.95 else "unknown"
                out.append(Transition(ch.id, t, state, new, rng.choice(REASONS)
                                      if new == "offline" else "internal"))
            else:
                new = "online"
                out.append(Transition(ch.id, t, state, new))
            state = new
    out.sort(key=lambda x: x.ts)
    return out


def make_quality(channels: list[Channel], start: float, end: float, rng: random.Random
                 ) -> list[QualityChange]:
    """Each connected channel's picture: ok from its first sample in the first hour; 5 % of
    them degraded for spells of a day on average, two per channel over the two months."""
    out = []
    for ch in channels:
        if not ch.connected:
            continue
        t = start + rng.uniform(0, 3600)
        out.append(QualityChange(ch.id, t, "unknown", "ok"))
        if rng.random() >= 0.05:
            continue
        for _ in range(rng.randint(1, 3)):
            t += rng.expovariate(2 / (end - start))
            if t >= end:
                break
            fault = rng.choice(("blur", "frozen", "signal_lost", "occluded"))
            out.append(QualityChange(ch.id, t, "ok", "degraded", (fault,)))
            t += rng.expovariate(1 / 86400.0)
            if t >= end:
                break
            out.append(QualityChange(ch.id, t, "degraded", "ok"))
    out.sort(key=lambda x: x.ts)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=100_000)
    ap.add_argument("--outages-per-channel", type=float, default=3.0,
                    help="mean outages per channel per two months")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quality", action="store_true",
                    help="a picture-quality log too: the 完好率 and its 环比")
    ap.add_argument("--make", metavar="DB", help=argparse.SUPPRESS)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tz = zone("Asia/Shanghai")
    period = Period.month("2026-11", tz)
    prev = period.previous()

    if args.make:
        t0 = time.perf_counter()
        channels = make_channels(args.channels, rng)
        history = make_history(channels, prev.start, period.end, args.outages_per_channel, rng)
        store = SqliteStore(args.make)
        store.write_batch([], history)
        store.save_inventory_snapshot("2026-11", inventory_rows(channels))
        if args.quality:
            store.write_quality([], make_quality(channels, prev.start, period.end, rng))
        for ch in rng.sample(channels, 200):
            store.add_exemption(ch.id, period.start + 86400 * 3, period.start + 86400 * 8,
                                "道路施工", now=period.start)
        store.close()
        print(f"setup: {len(history)} transitions written in {time.perf_counter() - t0:.1f}s "
              f"(separate process, not part of the report)")
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        subprocess.run([sys.executable, __file__, "--make", str(db), "--channels",
                        str(args.channels), "--outages-per-channel",
                        str(args.outages_per_channel), "--seed", str(args.seed),
                        *(["--quality"] if args.quality else [])], check=True)
        t0 = time.perf_counter()
        c0 = time.process_time()
        store = SqliteStore(db)
        snap = channels_from_rows(store.iter_inventory_snapshot("2026-11"))
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        b = compute_bulletin(store, snap, period, ReportSettings(targets=TargetsConfig()),
                             now=period.end + 86400)
        t_compute = time.perf_counter() - t0
        cpu_compute = time.process_time() - c0
        timings = {}
        for name, write in (("xlsx", lambda: xlsx.write_xlsx(b, Path(tmp) / "r.xlsx")),
                            ("html", lambda: html.write_html(b, Path(tmp) / "r.html")),
                            ("json", lambda: csvjson.write_json(b, Path(tmp) / "r.json"))):
            t1, c1 = time.perf_counter(), time.process_time()
            write()
            timings[name] = (time.perf_counter() - t1, time.process_time() - c1)
        store.close()

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    s = b.summary
    print(f"channels {args.channels}, transitions read {b.transitions_read}, "
          f"outages in the month {len(b.outages)}, long offline {len(b.long_offline)}")
    print(f"wall: load snapshot {t_load:.2f}s, compute {t_compute:.2f}s, "
          + ", ".join(f"write {k} {v[0]:.2f}s" for k, v in timings.items()))
    print(f"cpu: load + compute {cpu_compute:.2f}s, "
          + ", ".join(f"write {k} {v[1]:.2f}s" for k, v in timings.items()))
    for k, (wall, cpu) in timings.items():
        print(f"report as {k}: {t_load + t_compute + wall:.2f}s wall, "
              f"{cpu_compute + cpu:.2f}s cpu")
    print(f"peak RSS {rss_mb:.0f} MB")
    print(f"安装率 {format_rate(s.install_rate)}, 上云率 {format_rate(s.cloud_rate)}, "
          f"在线率 {format_rate(s.tw.rate)} (时间加权) {format_rate(s.snap.rate)} (快照)")
    if b.intact:
        print(f"完好率 {format_rate(s.intact_rate)} (环比 {s.intact_change_pp:+.2f} pp), "
              f"degraded cameras {len(b.degraded)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
