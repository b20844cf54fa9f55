"""录像完整率 from GB/T 28181 RecordInfo: the union-of-intervals rule as a table, and end to
end on loopback: camwatch asks each ledger channel's previous local day of the platform that
lists it (within its query budget), assembles answers split over MESSAGEs, keeps partial ones
as a lower bound, and serves the figures (API, metrics) and the store rows for the bulletin."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from camwatch.engine import Engine
from camwatch.gb28181 import GbService
from camwatch.gb28181.records import RecordQuery, coverage, local_time, previous_day
from camwatch.reports.period import zone
from camwatch.sim.gb_platform import SimChannel, SimPlatform
from camwatch.store import open_store
from tests.test_gb28181 import CHANNELS, PLATFORM, FakeClock, gb_config, inventory, until

TZ = zone("Asia/Shanghai")
H = 3600.0


def t(h: float) -> float:
    """Hours after 2027-01-09 00:00 in Shanghai."""
    return dt.datetime(2027, 1, 9, tzinfo=TZ).timestamp() + h * H


@pytest.mark.parametrize(("intervals", "share"), [
    ([], 0.0),
    ([(t(0), t(24))], 1.0),
    ([(t(-5), t(30))], 1.0),  # clipped to the day
    ([(t(0), t(6)), (t(5), t(12))], 0.5),  # overlapping: the union, not the sum
    ([(t(0), t(6)), (t(6), t(12))], 0.5),  # touching
    ([(t(1), t(2)), (t(3), t(4))], 2 / 24),
    ([(t(2), t(3)), (t(1), t(2.5)), (t(0.5), t(0.75))], 2.25 / 24),  # unsorted
    ([(t(0), t(12)), (t(2), t(3))], 0.5),  # contained
    ([(t(-3), t(-1)), (t(25), t(26))], 0.0),  # outside the day
    ([(t(5), t(4))], 0.0),  # end before start: nothing
])
def test_coverage_is_the_union_over_the_day(intervals: list[tuple[float, float]],
                                            share: float) -> None:
    assert coverage(intervals, t(0), t(24)) == pytest.approx(share)


def test_times_days_and_parts() -> None:
    assert local_time("2027-01-09T06:00:00", TZ) == t(6)
    assert local_time("2027-01-09 06:00:00", TZ) == t(6)
    assert local_time("2027-01-09T06:00:00+00:00", TZ) == t(14)  # its own offset kept
    assert local_time("yesterday", TZ) is None and local_time("", TZ) is None
    # 2027-01-10 07:30 in Shanghai is 2027-01-09 23:30 UTC: the previous day is the 9th
    assert previous_day(t(24 + 7.5), TZ) == ("2027-01-09", t(0), t(24))
    assert coverage([], 5.0, 5.0) is None
    q = RecordQuery(1, "p", "c", "2027-01-09", t(0), t(24), deadline=0.0)
    q.add(3, [("2027-01-09T00:00:00", "2027-01-09T06:00:00"), ("bad", "x")], TZ)
    assert not q.complete and q.items == 2 and q.recorded() == 6 * H
    q.add(3, [("2027-01-09T05:00:00", "2027-01-09T08:00:00")], TZ)
    assert q.complete and q.recorded() == 8 * H
    with pytest.raises(ValueError, match="SumNum"):
        q.add(10**6, [], TZ)


ASKED: list[tuple[str, str]] = []


def records_of(cid: str, start: str, end: str) -> list[tuple[str, str]]:
    """The simulated platform's recordings of the day asked: channel 0 half the day
    (overlapping main and sub stream, one from the day before), channel 1 ten minutes every
    hour (30 items, in 15 MESSAGEs), the others none."""
    ASKED.append((start, end))
    d = start[:10]
    before = (dt.date.fromisoformat(d) - dt.timedelta(days=1)).isoformat()
    if cid == CHANNELS[0]:
        return [(f"{before}T23:00:00", f"{d}T01:00:00"), (f"{d}T00:00:00", f"{d}T06:00:00"),
                (f"{d}T05:00:00", f"{d}T12:00:00")]
    if cid == CHANNELS[1]:
        return [(f"{d}T{h:02d}:00:00", f"{d}T{h:02d}:10:00")
                for h in range(24)] + [(f"{d}T00:05:00", f"{d}T00:08:00")] * 6
    return []


@pytest.fixture
async def gb(tmp_path: Path) -> AsyncIterator[tuple[GbService, FakeClock]]:
    clock = FakeClock(t(24 + 10))  # 2027-01-10 10:00 in Shanghai
    cfg = gb_config(tmp_path, recording={"enabled": True, "per_minute": 3, "timeout": "30s"})
    store = open_store(tmp_path / "state.db")
    # five of the six catalog channels are in the ledger: the sixth is never asked; nor is
    # a ledger id that is not a 20-digit GB/T 28181 one (an inventory with id_format: any)
    eng = Engine(cfg, inventory([*CHANNELS[:5], "cam-7"]), store, clock=clock)
    svc = GbService(cfg.gb28181, eng, clock=clock)
    eng.gb = svc
    await svc.start()
    try:
        yield svc, clock
    finally:
        await svc.server.close()
        eng.close()
        store.close()


async def test_previous_day_asked_within_budget_and_kept(
        gb: tuple[GbService, FakeClock]) -> None:
    svc, clock = gb
    sim = SimPlatform(PLATFORM, "gb-secret-1", (svc.server.host, svc.server.port),
                      channels=[SimChannel(c) for c in [*CHANNELS, "cam-7"]],
                      records_of=records_of)
    try:
        await sim.start()
        assert await sim.register() == 200
        await until(lambda: svc.peers[PLATFORM].catalog.at is not None, "the catalog")
        asked = svc.server.counters
        svc.server.tick()  # the budget starts empty: 3 a minute, refilled as time passes
        assert asked["records:asked"] == 0
        clock.t += 60
        svc.server.tick()  # a minute's worth (the most it holds): three
        assert asked["records:asked"] == 3
        await until(lambda: len(svc.recordings) == 3, "three answers")  # before the deadline
        clock.t += 10
        svc.server.tick()
        assert asked["records:asked"] == 3  # half a token
        clock.t += 10
        svc.server.tick()
        assert asked["records:asked"] == 4
        await until(lambda: len(svc.recordings) == 4, "four answers")
        clock.t += 20
        svc.server.tick()
        await until(lambda: len(svc.recordings) == 5, "five answers")
        assert sim.record_queries == 5  # the sixth channel is not in the ledger
        # the previous local day, in local times without an offset
        assert set(ASKED) == {("2027-01-09T00:00:00", "2027-01-10T00:00:00")}
        got = {cid: r.recorded_s / r.period_s for cid, r in svc.recordings.items()}
        assert got == {CHANNELS[0]: 0.5, CHANNELS[1]: pytest.approx(4 / 24),
                       CHANNELS[2]: 0.0, CHANNELS[3]: 0.0, CHANNELS[4]: 0.0}
        assert not any(r.partial for r in svc.recordings.values())
        assert await sim.keepalive() == 200  # still up, with a budget to spare:
        clock.t += 100
        svc.server.tick()
        assert svc.peers[PLATFORM].up
        assert asked["records:asked"] == 5  # each once a day, and never cam-7
        # the store has them for the bulletin (through the writer)
        store = svc.engine.store
        await until(lambda: len(store.gb_recordings("2027-01-09", "2027-01-09")) == 5,
                    "the store rows")
        doc = svc.recordings_json(lambda ts: None)
        assert doc["coverage"] == pytest.approx((12 + 4) / 120, abs=1e-6)
        assert [r["channel"] for r in doc["lowest"]][-2:] == [CHANNELS[1], CHANNELS[0]]
        metrics = svc.metrics_text(lambda n, k, h: "")
        assert f'camwatch_gb_record_coverage_ratio{{platform="{PLATFORM}"}} 0.133333' in metrics
        assert 'camwatch_gb_record_queries_total{result="complete"} 5' in metrics
        # the next day (the clock jumps: registered and keeping alive again): asked again
        clock.t += 24 * 3600
        assert await sim.register() == 200
        assert await sim.keepalive() == 200
        svc.server.tick()
        assert asked["records:asked"] == 8  # a minute's worth again
        await until(lambda: sim.record_queries == 8, "the next day's queries")
        await until(lambda: sum(r.day == "2027-01-10" for r in svc.recordings.values()) == 3,
                    "the next day's answers")
    finally:
        await sim.close()


async def test_partial_and_unanswered(gb: tuple[GbService, FakeClock]) -> None:
    svc, clock = gb
    sim = SimPlatform(PLATFORM, "gb-secret-1", (svc.server.host, svc.server.port),
                      channels=[SimChannel(c) for c in CHANNELS[:2]])  # answers no RecordInfo
    try:
        await sim.start()
        assert await sim.register() == 200
        await until(lambda: svc.peers[PLATFORM].catalog.at is not None, "the catalog")
        svc.server.tick()
        clock.t += 60
        svc.server.tick()
        await until(lambda: sim.record_queries == 2, "two queries")
        sn = sim.last_record_sn
        cid = CHANNELS[1]
        # one part of two arrives: 2 h of a declared 4 records
        (first, _) = SimPlatform(PLATFORM, "", ("", 0), per_message=2).record_bodies(
            sn, cid, [("2027-01-09T00:00:00", "2027-01-09T01:00:00"),
                      ("2027-01-09T01:00:00", "2027-01-09T02:00:00"),
                      ("2027-01-09T03:00:00", "2027-01-09T04:00:00"),
                      ("2027-01-09T05:00:00", "2027-01-09T06:00:00")])
        assert await sim.message(first) == 200
        clock.t += 29
        svc.server.tick()
        assert not svc.recordings
        clock.t += 2
        svc.server.tick()  # past the deadline: the partial answer is kept, the silent one not
        (rec,) = svc.recordings.values()
        assert (rec.channel_id, rec.recorded_s, rec.partial) == (cid, 2 * H, True)
        c = svc.server.counters
        assert (c["records:partial"], c["records:unanswered"]) == (1, 1)
    finally:
        await sim.close()
