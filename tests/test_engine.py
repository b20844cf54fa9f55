"""The engine against real simulated cameras on loopback, with an injected clock: every round
is ``clock.t += interval; await engine.scheduler.run_due()`` — no sleeps, no waiting for
wall time."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from camwatch.config import Config, parse_config
from camwatch.engine import Engine
from camwatch.inventory import Channel, Inventory
from camwatch.rules.states import Flaps
from camwatch.sim.model import Fault, SimChannel, SimDevice
from camwatch.sim.rtsp_server import start_rtsp_server
from camwatch.store import open_store
from camwatch.store.base import Store
from camwatch.sweep import GC_THRESHOLD0

INTERVAL = 60.0


class FakeClock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Site:
    devices: list[SimDevice]
    servers: list[asyncio.base_events.Server] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)

    def channel(self, cid: str) -> SimChannel:
        for d in self.devices:
            for ch in d.channels.values():
                if ch.id == cid:
                    return ch
        raise KeyError(cid)


async def serve(spec: Iterable[tuple[str, int]]) -> Site:
    """One device per (township, channel count)."""
    site = Site(devices=[])
    n = 0
    for d, (township, count) in enumerate(spec):
        dev = SimDevice(host="127.0.0.1", rtsp_port=0, onvif_port=0, password="pw-engine")
        server = await start_rtsp_server(dev, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        for k in range(count):
            n += 1
            cid = f"41162800001321{n:06d}"
            dev.channels[f"/ch{k}"] = SimChannel(id=cid, path=f"/ch{k}")
            site.channels.append(Channel(
                id=cid, klass=1 + n % 3, project="雪亮工程", county="鹿邑县", township=township,
                operator="移动", installed=True, connected=True,
                rtsp_url=f"rtsp://127.0.0.1:{port}/ch{k}", host=f"dev{d}",
                credentials="default"))
        site.devices.append(dev)
        site.servers.append(server)
    return site


def config(tmp_path: Path, **states: object) -> Config:
    (tmp_path / "pw").write_text("pw-engine", encoding="utf-8")
    return parse_config({
        "inventory": {"path": "unused.csv"},
        "credentials": {"default": {"username": "admin", "password_file": "pw"}},
        "probing": {"interval": "60s", "timeout": "300ms", "per_host_concurrency": 32,
                    "onvif": False},
        "states": {"fail_threshold": 3, "recover_threshold": 1, **states},
        "store": {"path": "state.db"},
    }, base_dir=tmp_path)


def inventory(channels: list[Channel]) -> Inventory:
    return Inventory(source="test", channels=list(channels), rows_read=len(channels))


@pytest.fixture
async def one_device() -> AsyncIterator[Site]:
    site = await serve([("城关镇", 4)])
    yield site
    for s in site.servers:
        s.close()


async def rounds(engine: Engine, clock: FakeClock, n: int) -> None:
    for _ in range(n):
        clock.t += INTERVAL
        await engine.scheduler.run_due()


def make_engine(tmp_path: Path, site: Site, clock: FakeClock, store: Store | None = None,
                **states: object) -> Engine:
    cfg = config(tmp_path, **states)
    return Engine(cfg, inventory(site.channels), store or open_store(cfg.store.path),
                  clock=clock)


async def test_hysteresis_offline_after_three_failures_online_after_one(
        tmp_path: Path, one_device: Site) -> None:
    clock = FakeClock()
    eng = make_engine(tmp_path, one_device, clock)
    first = one_device.channels[0].id
    await rounds(eng, clock, 1)
    assert {s.state for s in eng.book.states.values()} == {"online"}
    one_device.channel(first).fault = Fault.NOT_FOUND
    await rounds(eng, clock, 2)
    assert eng.book.states[first].state == "online" and eng.book.states[first].fails == 2
    await rounds(eng, clock, 1)
    st = eng.book.states[first]
    assert (st.state, st.reason, st.since) == ("offline", "not_found", clock.t)
    one_device.channel(first).fault = Fault.NONE
    await rounds(eng, clock, 1)
    assert eng.book.states[first].state == "online"
    _states, trans = eng.book.take_writes()
    mine = [(t.from_state, t.to_state, t.reason) for t in trans if t.channel_id == first]
    assert mine == [("unknown", "online", None), ("online", "offline", "not_found"),
                    ("offline", "online", None)]
    offline = next(t for t in trans if t.to_state == "offline")
    assert offline.detail["probe_reason"] == "not_found" and "latency_ms" in offline.detail


async def test_host_down_judges_channels_without_probing_each(tmp_path: Path,
                                                              one_device: Site) -> None:
    clock = FakeClock()
    eng = make_engine(tmp_path, one_device, clock)
    await rounds(eng, clock, 1)
    one_device.devices[0].fault = Fault.HANG  # the NVR stops answering
    await rounds(eng, clock, 3)
    assert {s.state for s in eng.book.states.values()} == {"offline"}
    assert {s.reason for s in eng.book.states.values()} == {"host_down"}
    probes_before = sum(eng.scheduler.stats.probes.values())
    await rounds(eng, clock, 1)
    # backed off: one check for the whole host, not one probe per channel
    assert sum(eng.scheduler.stats.probes.values()) - probes_before <= 1
    one_device.devices[0].fault = Fault.NONE
    # the host is re-checked after its back-off (interval x 2^n, at most 10 min), then its
    # channels are probed again on their next round
    for _ in range(12):
        await rounds(eng, clock, 1)
        if {s.state for s in eng.book.states.values()} == {"online"}:
            break
    assert {s.state for s in eng.book.states.values()} == {"online"}


async def test_flapping_channel_is_held_without_a_transition_storm(tmp_path: Path,
                                                                   one_device: Site) -> None:
    clock = FakeClock()
    eng = make_engine(tmp_path, one_device, clock, fail_threshold=1, flap_window="30m",
                      flap_max_changes=4)
    cid = one_device.channels[1].id
    await rounds(eng, clock, 1)
    for i in range(20):  # up, down, up, down ... every minute
        one_device.channel(cid).fault = Fault.NOT_FOUND if i % 2 == 0 else Fault.NONE
        await rounds(eng, clock, 1)
    _s, trans = eng.book.take_writes()
    mine = [t for t in trans if t.channel_id == cid]
    assert eng.book.states[cid].flapping is True
    assert (eng.book.states[cid].state, eng.book.states[cid].reason) == ("offline", "flapping")
    assert len(mine) <= 6, [(t.from_state, t.to_state, t.reason) for t in mine]
    one_device.channel(cid).fault = Fault.NONE  # calm for a whole window: released
    await rounds(eng, clock, 31)
    assert eng.book.states[cid].flapping is False and eng.book.states[cid].state == "online"


async def test_own_uplink_down_makes_channels_unknown_not_offline(tmp_path: Path) -> None:
    site = await serve([("城关镇", 20), ("玄武镇", 20), ("杨湖口乡", 20)])
    try:
        clock = FakeClock()
        eng = make_engine(tmp_path, site, clock)
        await rounds(eng, clock, 1)
        assert {s.state for s in eng.book.states.values()} == {"online"}
        for d in site.devices:
            d.fault = Fault.HANG  # everything times out at once, in every township
        await rounds(eng, clock, 3)
        states = {s.state for s in eng.book.states.values()}
        assert "offline" not in states, states
        assert "unknown" in states
        assert any("uplink" in p for p in eng.problems())
        assert await eng.evaluate() == [] and eng.rates
        site_rate = next(r for r in eng.rates if not r.scope and r.klass is None
                         and r.project is None)
        assert site_rate.unknown > 0
    finally:
        for s in site.servers:
            s.close()


async def test_restart_emits_no_spurious_transitions(tmp_path: Path,
                                                     one_device: Site) -> None:
    clock = FakeClock()
    down = one_device.channels[2].id
    one_device.channel(down).fault = Fault.AUTH_FAIL
    eng = make_engine(tmp_path, one_device, clock)
    await rounds(eng, clock, 3)
    states, trans = eng.book.take_writes()
    eng.store.write_batch(states, trans)
    assert eng.book.states[down].state == "offline"
    eng.store.close()

    # a new engine on the same store, as after a restart (or kill -9 after the commit)
    eng2 = make_engine(tmp_path, one_device, clock)
    assert eng2.book.states[down].state == "offline" and eng2.book.states[down].reason == "auth"
    await rounds(eng2, clock, 2)
    _s, trans2 = eng2.book.take_writes()
    assert trans2 == []


async def test_reload_keeps_state_of_unchanged_channels(tmp_path: Path,
                                                        one_device: Site) -> None:
    clock = FakeClock()
    eng = make_engine(tmp_path, one_device, clock)
    await rounds(eng, clock, 1)
    kept, dropped = one_device.channels[0], one_device.channels[1]
    since = eng.book.states[kept.id].since
    new = Channel(id="41162800001321999999", klass=1, county="鹿邑县", township="城关镇",
                  installed=True, connected=True, rtsp_url=kept.rtsp_url, host="dev0",
                  credentials="default")
    channels = [c for c in one_device.channels if c is not dropped] + [new]
    eng.reload(eng.cfg, inventory(channels))
    assert eng.book.states[kept.id].since == since and eng.book.states[kept.id].state == "online"
    assert dropped.id not in eng.book.states
    assert eng.book.states[new.id].state == "unknown"
    await rounds(eng, clock, 1)
    assert eng.book.states[new.id].state == "online"


def test_flaps_counts_changes_within_the_window_and_keeps_nothing_for_a_steady_channel() -> None:
    steady = Flaps()
    for t in range(10):
        assert steady.record(True, float(t), 30.0) == 0
    assert steady.times is None  # no deque (760 bytes) for a channel that never flips
    f = Flaps()
    assert [f.record(ok, t, 30.0) for ok, t in
            ((True, 0.0), (False, 10.0), (True, 20.0), (True, 35.0), (False, 45.0))] == \
        [0, 1, 2, 2, 2]  # at 45: a third flip, and the one at 10 has left the 30 s window
    assert f.record(False, 100.0, 30.0) == 0


async def test_engine_keeps_its_inventory_out_of_the_collectors_sight(
        tmp_path: Path, one_device: Site) -> None:
    threshold = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        eng = make_engine(tmp_path, one_device, FakeClock())
        assert gc.get_threshold()[0] >= GC_THRESHOLD0
        frozen = gc.get_freeze_count()
        assert frozen >= len(eng.channels)
        eng.reload(eng.cfg, inventory(one_device.channels))  # a reload re-freezes, no pile-up
        assert gc.get_freeze_count() < frozen + 10_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_onvif_lane_asks_each_device_once_for_all_its_channels(tmp_path: Path) -> None:
    from camwatch.sim.onvif_server import start_onvif_server

    site = await serve([("城关镇", 4)])
    dev = site.devices[0]
    dev.clock_skew_s = 600.0
    onvif = await start_onvif_server(dev, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{onvif.port}/onvif/device_service"
    channels = [Channel(**{**{f: getattr(c, f) for f in (
        "id", "klass", "project", "county", "township", "operator", "installed", "connected",
        "rtsp_url", "host", "credentials")}, "onvif_url": url}) for c in site.channels]
    try:
        (tmp_path / "pw").write_text("pw-engine", encoding="utf-8")
        cfg = parse_config({
            "inventory": {"path": "unused.csv"},
            "credentials": {"default": {"username": "admin", "password_file": "pw"}},
            "probing": {"interval": "60s", "timeout": "1s", "onvif_interval": "1h"},
            "store": {"path": "state.db"}}, base_dir=tmp_path)
        clock = FakeClock()
        eng = Engine(cfg, inventory(channels), open_store(cfg.store.path), clock=clock)
        clock.t += 3600.0  # one ONVIF interval: every lane is due once
        await eng.scheduler.run_due()
        counted = {k: n for k, n in eng.scheduler.stats.probes.items() if k[0] == "onvif"}
        # WS-UsernameToken fails 10 minutes off: the clock is the reason, not the password
        assert counted == {("onvif", "clock_skew"): 1}
        drifts = {eng.book.states[c.id].clock_drift_s for c in channels}
        assert all(d is not None and abs(d - 600.0) < 2.0 for d in drifts), drifts

        dev.clock_skew_s = 0.0  # somebody fixed the NVR's clock
        clock.t += 3600.0
        await eng.scheduler.run_due()
        assert eng.scheduler.stats.probes[("onvif", "ok")] == 1
        assert all(abs(eng.book.states[c.id].clock_drift_s or 99) < 2.0 for c in channels)
        assert {eng.book.states[c.id].info["device"]["model"] for c in channels} == {dev.model}
    finally:
        await onvif.close()
        for s in site.servers:
            s.close()


async def test_failure_count_survives_a_restart(tmp_path: Path, one_device: Site) -> None:
    """Two failures before a restart and one after make three: the count is written as it
    changes, not only with the periodic full write."""
    clock = FakeClock()
    cid = one_device.channels[0].id
    eng = make_engine(tmp_path, one_device, clock)
    await rounds(eng, clock, 1)
    eng.store.write_batch(*eng.book.take_writes())
    one_device.channel(cid).fault = Fault.NOT_FOUND
    await rounds(eng, clock, 2)
    states, trans = eng.book.take_writes()  # what the writer would commit within the second
    assert [s.channel_id for s in states] == [cid]  # the others did not change durably
    eng.store.write_batch(states, trans)
    eng.store.close()
    eng2 = make_engine(tmp_path, one_device, clock)
    assert (eng2.book.states[cid].state, eng2.book.states[cid].fails) == ("online", 2)
    await rounds(eng2, clock, 1)
    assert (eng2.book.states[cid].state, eng2.book.states[cid].reason) == ("offline", "not_found")


def _uplink_config(tmp_path: Path, address: str) -> Config:
    (tmp_path / "pw").write_text("pw-engine", encoding="utf-8")
    return parse_config({
        "inventory": {"path": "unused.csv"},
        "credentials": {"default": {"username": "admin", "password_file": "pw"}},
        "probing": {"interval": "60s", "timeout": "300ms", "per_host_concurrency": 32,
                    "onvif": False, "uplink_check": [address]},
        "store": {"path": "state.db"}}, base_dir=tmp_path)


async def test_uplink_check_tells_a_real_outage_from_our_own(tmp_path: Path) -> None:
    import socket

    site = await serve([("城关镇", 20), ("玄武镇", 20), ("杨湖口乡", 20)])
    gateway = socket.create_server(("127.0.0.1", 0))  # the platform: it answers
    full = socket.socket()  # a gateway whose accept queue is full: connects hang
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    try:
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(full.getsockname())
            fillers.append(c)
        # 1. every township times out, but the gateway answers: a real outage, offline
        clock = FakeClock()
        eng = Engine(_uplink_config(tmp_path, f"127.0.0.1:{gateway.getsockname()[1]}"),
                     inventory(site.channels), open_store(tmp_path / "a.db"), clock=clock)
        assert await eng.health.check_uplink(eng.scheduler.runner.settings) is True
        await rounds(eng, clock, 1)
        for d in site.devices:
            d.fault = Fault.HANG
        await rounds(eng, clock, 3)
        assert eng.problems() == []
        assert {s.state for s in eng.book.states.values()} == {"offline"}

        # 2. the same, with our own uplink down: unknown, and the prober says why
        eng2 = Engine(_uplink_config(tmp_path, f"127.0.0.1:{full.getsockname()[1]}"),
                      inventory(site.channels), open_store(tmp_path / "b.db"), clock=clock)
        for d in site.devices:
            d.fault = Fault.NONE
        await rounds(eng2, clock, 1)
        assert await eng2.health.check_uplink(eng2.scheduler.runner.settings) is False
        for d in site.devices:
            d.fault = Fault.HANG
        await rounds(eng2, clock, 3)
        assert any("uplink check failed" in p for p in eng2.problems())
        assert {s.state for s in eng2.book.states.values()} == {"unknown"}
    finally:
        for c in fillers:
            c.close()
        full.close()
        gateway.close()
        for s in site.servers:
            s.close()


async def test_a_backlog_of_due_probes_is_launched_in_bursts(tmp_path: Path) -> None:
    """500 channels due at once (start-up, a reload's new channels, a loop that fell behind):
    the scheduler launches at most ``LAUNCH_BURST`` probes per step of the event loop, so other
    work (a scrape, the writer, the HTTP API) runs between bursts. Counted in probe tasks
    created between two turns of a ticker task, not in time."""
    from camwatch.scheduler import LAUNCH_BURST

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # answers nothing: every probe stays in flight until its timeout

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    chs = [Channel(id=f"41162800001321{n:06d}", klass=1, project="雪亮工程", county="鹿邑县",
                   township="城关镇", installed=True, connected=True,
                   rtsp_url=f"rtsp://127.0.0.1:{port}/ch{n}", host=f"dev{n}",
                   credentials="default") for n in range(500)]
    clock = FakeClock()
    cfg = config(tmp_path)
    eng = Engine(cfg, inventory(chs), open_store(cfg.store.path), clock=clock)
    clock.t += INTERVAL  # every channel due
    jumps: list[int] = []
    try:
        def probes() -> int:  # the scheduler's tasks, named lane:channel
            return sum(1 for t in asyncio.all_tasks() if t.get_name().startswith("main:"))

        async def ticker() -> None:
            before = probes()
            while len(jumps) < 10_000:
                await asyncio.sleep(0)
                now = probes()
                jumps.append(now - before)
                before = now
                if eng.scheduler.stats.in_flight >= len(chs):
                    return

        tick = asyncio.ensure_future(ticker())
        run = asyncio.ensure_future(eng.scheduler.run(eng.stopping))
        await asyncio.wait_for(tick, 30)
        eng.stop()
        await asyncio.wait_for(run, 30)
    finally:
        server.close()
        eng.close()
    assert eng.scheduler.stats.in_flight == 0 and max(jumps) > 0
    assert max(jumps) <= LAUNCH_BURST + 8, max(jumps)


async def test_a_reload_keeps_one_copy_of_unchanged_channels(tmp_path: Path,
                                                             one_device: Site) -> None:
    """A reload of an unchanged inventory keeps the running Channel and Target objects (one
    copy in memory); a changed row, or a changed password in the URL, gets the new object,
    and the metrics label it from the new row."""
    import dataclasses

    from camwatch.secrets import Secret
    from camwatch.sinks.metrics import MetricsRenderer

    clock = FakeClock()
    eng = make_engine(tmp_path, one_device, clock)
    metrics = MetricsRenderer(eng)
    await rounds(eng, clock, 1)
    before = dict(eng.book.channels)
    targets = dict(eng.scheduler.schedule.targets)  # type: ignore[union-attr]
    assert "改名" not in metrics.render()[0].decode()
    a, b, c, d = one_device.channels
    reloaded = [dataclasses.replace(a), dataclasses.replace(b, name="改名"),
                dataclasses.replace(c, url_username="admin", url_password=Secret("new-pw")),
                dataclasses.replace(d)]
    assert reloaded[0] == a and reloaded[0] is not a
    eng.reload(eng.cfg, inventory(reloaded))
    after = eng.book.channels
    assert after[a.id] is before[a.id] and after[d.id] is before[d.id]
    assert after[b.id] is not before[b.id] and after[b.id].name == "改名"
    assert after[c.id] is not before[c.id]
    new_targets = eng.scheduler.schedule.targets  # type: ignore[union-attr]
    assert new_targets[a.id] is targets[a.id]
    assert new_targets[c.id] is not targets[c.id] and new_targets[c.id].password == Secret("new-pw")
    await metrics.ready()
    body = metrics.render()[0].decode()
    assert body.count("camwatch_channel_up{") == 4
    assert f'camwatch_channel_up{{channel="{b.id}",name="改名",' in body
    eng.close()


async def test_a_reload_counted_in_slices_matches_a_full_count(tmp_path: Path) -> None:
    """The new inventory's rate cells are counted in slices while verdicts keep landing: a
    channel judged after its slice was counted, or before, or twice, ends up counted in the
    state it is in at the swap, as a count done in one step at the swap would have it."""
    from camwatch.model import Verdict
    from camwatch.probes.result import ProbeResult, Reason

    chs = [Channel(id=f"c{i:03d}", klass=1 + i % 3, project="雪亮工程", county="鹿邑县",
                   township=f"镇{i % 4}", installed=True, connected=True,
                   rtsp_url="rtsp://127.0.0.1:9/", host=f"h{i}") for i in range(60)]
    clock = FakeClock()
    cfg = config(tmp_path, fail_threshold=1)
    eng = Engine(cfg, inventory(chs[:50]), open_store(cfg.store.path), clock=clock)
    ok, bad = ProbeResult.success("describe"), ProbeResult.failure("describe", Reason.REFUSED)
    for i, c in enumerate(chs[:50]):
        eng.book.judge(c.id, Verdict.of(bad if i % 5 == 0 else ok), clock.t)
    plan = eng.plan(cfg, inventory(chs[5:]))  # 5 leave, 10 arrive
    flips = [chs[i].id for i in (6, 7, 12, 30, 31, 49, 8, 6)]  # early, late, one twice

    async def verdicts() -> None:
        for k, cid in enumerate(flips):
            await asyncio.sleep(0)
            st = eng.book.state(cid)
            assert st is not None
            clock.t += 1
            eng.book.judge(cid, Verdict.of(ok if st.state == "offline" else bad), clock.t)
            assert k < len(flips)

    flipper = asyncio.ensure_future(verdicts())
    counts = await eng.evaluator.count_for(plan.evaluation, slice_size=7)
    assert not flipper.done()  # some verdicts land after the swap, counted the usual way
    eng.apply(plan, counts)
    await flipper
    await eng.evaluate()
    index = plan.evaluation.index
    assert eng.rates == index.rows(index.count(eng.book.state_of), eng.evaluator.targets)
    site = [r for r in eng.rates if r.scope == () and r.klass is None and r.project is None]
    assert [r.unknown for r in site] == [10]  # the arrivals
    assert {eng.book.state_of(c.id) for c in chs[5:50]} == {"online", "offline"}
    eng.close()


async def test_an_evaluation_remakes_only_the_rate_rows_that_moved(tmp_path: Path) -> None:
    """Issue 15: an evaluation's cost follows the changes. The rows are the full count's at
    every evaluation, while a row no channel moved in is the previous evaluation's object."""
    import random

    from camwatch.model import Verdict
    from camwatch.probes.result import ProbeResult, Reason

    chs = [Channel(id=f"c{i:03d}", klass=1 + i % 3, project="雪亮工程", county="鹿邑县",
                   township=f"镇{i % 4}", village=f"村{i % 9}", installed=True,
                   connected=True, rtsp_url="rtsp://127.0.0.1:9/", host=f"h{i}")
           for i in range(80)]
    clock = FakeClock()
    cfg = config(tmp_path, fail_threshold=1)
    eng = Engine(cfg, inventory(chs), open_store(cfg.store.path), clock=clock)
    ok, bad = ProbeResult.success("describe"), ProbeResult.failure("describe", Reason.REFUSED)
    index = eng.evaluator.inputs.index if eng.evaluator.inputs else None
    assert index is not None
    rnd = random.Random(15)
    await eng.evaluate()
    for _ in range(6):
        before = list(eng.rates)
        moved = rnd.sample(chs, 7)
        for c in moved:
            clock.t += 1
            eng.book.judge(c.id, Verdict.of(rnd.choice((ok, bad))), clock.t)
        await eng.evaluate()
        assert eng.rates == index.rows(index.count(eng.book.state_of), eng.evaluator.targets)
        townships = {c.township for c in moved if eng.book.state_of(c.id) != "unknown"}
        for old, new in zip(before, eng.rates, strict=True):
            scope = dict(new.scope)
            if "township" in scope and scope["township"] not in townships:
                assert new is old  # not remade: nothing in it moved
    eng.close()
