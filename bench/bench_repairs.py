"""The repair desk at a county's scale: what one step costs on the event loop (its draft),
and with its write, when nothing happens (the steady state), when a mass of tickets open at
once, and with many tickets open.

    python bench/bench_repairs.py --channels 100000 --offline 5000
    python bench/bench_repairs.py --channels 100000 --offline 0 --degraded 5000

``--degraded``: that many online channels whose picture the quality book holds degraded at
two samples in a row (quality tickets, ``quality.enabled``).

The channel book, the desk and a SQLite store (written through the store writer) are the
daemon's own; verdicts are fed directly (no probes). Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from camwatch.book import ChannelBook
from camwatch.model import Quality, Source, Verdict
from camwatch.probes.result import ProbeResult, Reason
from camwatch.quality.book import QualityBook
from camwatch.quality.checks import Fault
from camwatch.quality.sample import QualityVerdict
from camwatch.repairs.desk import MAX_OPEN_PER_STEP, RepairDesk
from camwatch.rules.alerts import alert_inputs
from camwatch.store.sqlite import SqliteStore
from camwatch.store.writer import StoreWriter
from tests.repairs_harness import channel, config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=100_000)
    ap.add_argument("--offline", type=int, default=5_000, help="channels down, one by one "
                    "(scattered: one ticket each)")
    ap.add_argument("--degraded", type=int, default=0, help="online channels with a "
                    "degraded picture (quality tickets)")
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    cfg = config()
    operators = ("移动", "联通", "电信")
    chans = [channel(f"4116{i:016d}", f"镇{i % 40}", f"村{i % 400}", operators[i % 3],
                     1 + i % 3) for i in range(args.channels)]
    by_id = {c.id: c for c in chans}
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "cw.db")
        writer = StoreWriter(store)
        writer.start()
        book = ChannelBook(cfg.states, 60.0)
        book.swap(by_id)
        desk = RepairDesk(cfg, writer, [], 0)
        desk.swap(by_id, alert_inputs(by_id, cfg.alerts.rules.mass_outage.levels).groups)
        t = 1_800_000_000.0
        ok = Verdict.of(ProbeResult.success("describe"), Source.DESCRIBE)
        bad = Verdict.of(ProbeResult.failure("describe", Reason.TIMEOUT), Source.DESCRIBE)
        down = {c.id for c in random.Random(1).sample(chans, args.offline)}
        for c in chans:
            book.judge(c.id, bad if c.id in down else ok, t)
        quality: QualityBook | None = None
        bad_pics: list[str] = []
        if args.degraded:
            quality = QualityBook()
            quality.swap(by_id)
            up = [c for c in chans if c.id not in down]
            bad_pics = [c.id for c in random.Random(2).sample(up, args.degraded)]

        def degrade(ts: float) -> None:  # one degraded sample of each
            if quality is None:
                return
            for cid in bad_pics:
                quality.record(QualityVerdict(cid, Quality.DEGRADED, ts,
                                              faults=(Fault("signal_lost", 1.0),)))

        degrade(t - 3600.0)  # one sample: not due yet (quality_after 2)
        wanted = len(book.offline) + args.degraded

        async def run() -> None:
            async def timed(now: float) -> tuple[float, float, int]:
                t0 = time.perf_counter()
                desk.draft(now, book.states, book.offline, set(), quality)
                t1 = time.perf_counter()
                evs = await desk.step(now, book.states, book.offline, set(), quality)
                return (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3, len(evs)

            quiet = [await timed(t + 60.0) for _ in range(args.steps)]
            print(f"{args.channels:,} channels, {len(book.offline):,} offline, "
                  f"{args.degraded:,} degraded, no ticket due: "
                  f"draft {statistics.median(q[0] for q in quiet):.2f} ms (median)")
            now = t + 3 * 3600.0
            degrade(now - 60.0)  # the second: quality tickets due
            d, s, n = await timed(now)
            print(f"opening {len(desk.tickets):,} tickets in one step ({n:,} events; at most "
                  f"{MAX_OPEN_PER_STEP} a step): draft {d:.0f} ms, step with its write "
                  f"{s:.0f} ms")
            steps = 1
            while len(desk.tickets) < wanted:
                now += 15.0
                await desk.step(now, book.states, book.offline, set(), quality)
                steps += 1
            print(f"all {len(desk.tickets):,} open after {steps} steps")
            busy = [await timed(now + 60.0 * (i + 1)) for i in range(args.steps)]
            print(f"{len(desk.tickets):,} open tickets, nothing changing: draft "
                  f"{statistics.median(b[0] for b in busy):.1f} ms, step "
                  f"{statistics.median(b[1] for b in busy):.1f} ms (medians)")

        asyncio.run(run())
        writer.close()
        store.close()


if __name__ == "__main__":
    main()
