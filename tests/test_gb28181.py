"""camwatch as a GB/T 28181 upper platform, end to end on loopback: a simulated lower platform
(camwatch.sim.gb_platform, real UDP/TCP sockets) registers with the engine's GbService; the
channel book, the alert rules, /api/platforms and /metrics see what it says.

Time is an injected clock: keepalive timeouts and registration expiry are reached by moving
the clock and calling ``tick()``, never by sleeping. Network exchanges are awaited (a reply)
or polled with a deadline (:func:`until`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from camwatch.config import Config, parse_config
from camwatch.engine import Engine
from camwatch.errors import ConfigError, InputError
from camwatch.gb28181 import GbService, sip, verdict_of
from camwatch.inventory import Channel, Inventory
from camwatch.model import Source, State, Verdict, Why
from camwatch.probes.result import ProbeResult
from camwatch.sim.gb_platform import SimChannel, SimPlatform
from camwatch.store import open_store

PLATFORM = "34020000002000000200"
OTHER = "34020000002000000300"
CHANNELS = [f"341200000013200000{n:02d}" for n in range(1, 7)]  # type 132: IP cameras
NODES = [("34120000002150000001", "城关镇业务分组"), ("34120000002160000001", "东街虚拟组织")]


class FakeClock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def until(cond: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    """Poll ``cond`` until it holds (network replies arrive when they do)."""
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def gb_config(tmp_path: Path, **gb: Any) -> Config:
    (tmp_path / "gbpw").write_text("gb-secret-1\n", encoding="utf-8")
    (tmp_path / "otherpw").write_text("other-secret\n", encoding="utf-8")
    section = {"enabled": True, "listen": "127.0.0.1:0", "password_file": "gbpw",
               "peers": {PLATFORM: {"name": "移动云平台"},
                         OTHER: {"name": "联通", "password_file": "otherpw"}},
               "keepalive_timeout": "180s", "catalog_interval": "10m",
               "catalog_timeout": "30s", **gb}
    return parse_config({
        "inventory": {"path": "unused.csv"},
        "probing": {"interval": "60s", "timeout": "1s", "onvif": False},
        "store": {"path": "state.db"},
        "alerts": {"rules": {"mass_outage": {"min_channels": 4}}},
        "gb28181": section,
    }, base_dir=tmp_path)


def inventory(ids: list[str]) -> Inventory:
    chans = [Channel(id=cid, name=f"点位{i}", klass=1, project="雪亮工程", county="鹿邑县",
                     township=("城关镇", "玄武镇")[i % 2], operator="移动", installed=True,
                     connected=True, rtsp_url=f"rtsp://127.0.0.1:9/{i}", host=f"h{i}")
             for i, cid in enumerate(ids)]
    return Inventory("test", chans, len(chans))


@dataclass
class World:
    clock: FakeClock
    engine: Engine
    gb: GbService

    @property
    def server(self) -> tuple[str, int]:
        return (self.gb.server.host, self.gb.server.port)

    def state(self, cid: str) -> tuple[str, str | None]:
        st = self.engine.book.state(cid)
        assert st is not None
        return st.state, st.reason

    def platform(self, transport: str = "udp", pid: str = PLATFORM,
                 password: str = "gb-secret-1", **kw: Any) -> SimPlatform:
        return SimPlatform(pid, password, self.server, transport=transport,
                           channels=[SimChannel(cid, f"摄像机{i}", "ON" if i % 3 else "OFF")
                                     for i, cid in enumerate(CHANNELS)],
                           nodes=list(NODES), **kw)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = FakeClock()
    cfg = gb_config(tmp_path)
    store = open_store(tmp_path / "state.db")
    # five of the six catalog channels are in the ledger, plus one that no catalog lists
    eng = Engine(cfg, inventory([*CHANNELS[:5], "34120000001320009999"]), store, clock=clock)
    gb = GbService(cfg.gb28181, eng, clock=clock)
    eng.gb = gb
    await gb.start()
    try:
        yield World(clock, eng, gb)
    finally:
        await gb.server.close()
        eng.close()
        store.close()


async def registered(w: World, sim: SimPlatform) -> None:
    await sim.start()
    assert await sim.register() == 200
    peer = w.gb.peers[sim.id]
    await until(lambda: peer.catalog.at is not None, "the catalog arrived")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_register_catalog_states(world: World, transport: str) -> None:
    w = world
    sim = w.platform(transport)
    try:
        await sim.start()
        assert await sim.register(password="wrong") == 403  # after the 401 challenge
        assert w.gb.server.counters["refused:bad_password"] == 1
        assert PLATFORM not in w.gb.peers  # never a registration
        assert await sim.register() == 200
        peer = w.gb.peers[PLATFORM]
        assert peer.up and peer.transport == transport and peer.name == "移动云平台"
        # the catalog was asked at registration and came in 4 MESSAGEs of 2 items (GB2312)
        await until(lambda: peer.catalog.at is not None, "the catalog arrived")
        assert sim.catalog_queries == 1
        assert set(peer.catalog.channels) == set(CHANNELS)
        assert peer.catalog.nodes == 2 and not peer.catalog.partial
        assert peer.catalog.channels[CHANNELS[1]].name == "摄像机1"  # GB18030 decoded
        # item Status -> verdicts, at once (the platform's OFF is firm)
        assert w.state(CHANNELS[0]) == (State.OFFLINE, Why.GB_OFF)
        assert w.state(CHANNELS[1]) == (State.ONLINE, None)
        assert w.state(CHANNELS[3]) == (State.OFFLINE, Why.GB_OFF)
        assert w.state("34120000001320009999") == (State.UNKNOWN, None)  # in no catalog
        assert await sim.keepalive() == 200
        assert peer.keepalives == 1
    finally:
        await sim.close()


async def test_events_and_platform_down_is_one_alert(world: World) -> None:
    w = world
    sim = w.platform()
    try:
        await registered(w, sim)
        await until(lambda: sim.subscribed, "camwatch subscribed to catalog events")
        assert await sim.events([(CHANNELS[1], "OFF"), (CHANNELS[2], "VLOST"),
                                 (CHANNELS[4], "DEFECT"), (CHANNELS[0], "ON")]) == 200
        assert w.state(CHANNELS[1]) == (State.OFFLINE, Why.GB_OFF)
        assert w.state(CHANNELS[2]) == (State.OFFLINE, Why.VIDEO_LOST)
        assert w.state(CHANNELS[4]) == (State.OFFLINE, Why.GB_DEFECT)
        assert w.state(CHANNELS[0]) == (State.ONLINE, None)
        assert await sim.events([(CHANNELS[1], "ON"), (CHANNELS[2], "ON"),
                                 (CHANNELS[4], "ON")]) == 200
        assert all(w.state(c)[0] == State.ONLINE for c in (CHANNELS[1], CHANNELS[2]))
        await w.engine.evaluate()  # settle: the channels came online
        # DEL: no longer the platform's channel (its state is left as it is)
        assert await sim.events([(CHANNELS[5], "DEL")]) == 200
        assert CHANNELS[5] not in w.gb.peers[PLATFORM].catalog.channels
        # silence: within the timeout nothing happens, past it the platform is down
        w.clock.t += 179
        w.gb.server.tick()
        assert w.gb.peers[PLATFORM].up
        w.clock.t += 2
        w.gb.server.tick()
        peer = w.gb.peers[PLATFORM]
        assert not peer.up and peer.down_reason == "keepalive_timeout"
        for cid in CHANNELS[:5]:
            assert w.state(cid) == (State.OFFLINE, Why.PLATFORM_DOWN), cid
        alerts = await w.engine.evaluate()
        mass = [a for a in alerts if a.name == "mass_outage"]
        assert len(mass) == 1, [(a.name, a.labels) for a in alerts]
        assert mass[0].labels["platform"] == PLATFORM
        assert "下级平台 移动云平台" in mass[0].summary and "5/5" in mass[0].summary
        assert not [a for a in alerts if a.name == "mass_outage" and a.labels.get("level")
                    in ("township", "host")]  # the platform explains it: one alert
        # back: a keepalive within its registration brings it up, and the catalog again
        assert await sim.keepalive() == 200
        await until(lambda: w.state(CHANNELS[1])[0] == State.ONLINE, "catalog re-read")
        assert w.gb.peers[PLATFORM].up and sim.catalog_queries == 2
    finally:
        await sim.close()


async def test_unregister_and_expiry(world: World) -> None:
    w = world
    sim = w.platform()
    try:
        await registered(w, sim)
        assert w.state(CHANNELS[1]) == (State.ONLINE, None)
        assert await sim.register(expires=0) == 200
        peer = w.gb.peers[PLATFORM]
        assert not peer.up and peer.down_reason == "unregistered"
        assert w.state(CHANNELS[1]) == (State.OFFLINE, Why.PLATFORM_DOWN)
        assert await sim.keepalive() == 403  # not registered: it must REGISTER again
        assert w.gb.server.counters["refused:not_registered"] == 1
        # registered for 60 s: the registration's end is honoured even with keepalives
        assert await sim.register(expires=60) == 200
        await until(lambda: w.state(CHANNELS[1])[0] == State.ONLINE, "catalog re-read")
        w.clock.t += 59
        assert await sim.keepalive() == 200
        w.gb.server.tick()
        assert peer.up
        w.clock.t += 2
        w.gb.server.tick()
        assert not peer.up and peer.down_reason == "expired"
        assert w.state(CHANNELS[1]) == (State.OFFLINE, Why.PLATFORM_DOWN)
    finally:
        await sim.close()


async def test_partial_catalog_is_marked_and_removes_nothing(world: World) -> None:
    w = world
    sim = w.platform()
    try:
        await registered(w, sim)
        peer = w.gb.peers[PLATFORM]
        assert len(peer.catalog.channels) == 6
        # the next catalog: only its first MESSAGE of four arrives (2 of 8 items)
        sim.answer_catalog = False
        sim.channels[1].status = "OFF"
        sim.nodes = []  # so that the first part holds two channels
        sn = w.gb.server.query_catalog(peer)
        await until(lambda: sim.catalog_queries == 2, "the query arrived")
        await sim.send_catalog(sn, parts=1)
        assert not peer.catalog.partial and sn in peer.assemblies
        w.clock.t += 31  # past catalog_timeout
        assert await sim.keepalive() == 200  # alive: only the catalog is late
        w.gb.server.tick()
        assert peer.catalog.partial and peer.catalog.declared == 6
        assert len(peer.catalog.channels) == 6  # the four not heard of are not "gone"
        assert w.state(CHANNELS[1]) == (State.OFFLINE, Why.GB_OFF)  # what did arrive counts
    finally:
        await sim.close()


async def test_unknown_ids_refused_cheaply_and_rate_limited(tmp_path: Path) -> None:
    clock = FakeClock()
    cfg = gb_config(tmp_path, unknown_per_minute=3)
    store = open_store(tmp_path / "state.db")
    eng = Engine(cfg, inventory(CHANNELS), store, clock=clock)
    gb = GbService(cfg.gb28181, eng, clock=clock)
    await gb.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        port = sock.getsockname()[1]
        for n in range(8):
            pid = f"3402000000132000{n:04d}"
            msg = (f"REGISTER sip:3402000000 SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{n}\r\n"
                   f"From: <sip:{pid}@3402000000>;tag={n}\r\nTo: <sip:{pid}@3402000000>\r\n"
                   f"Call-ID: flood{n}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{pid}@127.0.0.1>\r\n"
                   f"Expires: 3600\r\nContent-Length: 0\r\n\r\n")
            sock.sendto(msg.encode(), ("127.0.0.1", gb.server.port))
        c = gb.server.counters
        await until(lambda: c["refused:unknown_id"] + c["refused:rate_limited"] == 8,
                    "every REGISTER handled")
        assert c["refused:unknown_id"] == 3 and c["refused:rate_limited"] == 5
        assert c["challenges"] == 0 and not gb.peers  # no challenge, no state for them
        replies = []
        loop = asyncio.get_running_loop()
        for _ in range(3):
            async with asyncio.timeout(5):
                replies.append(await loop.sock_recv(sock, 4096))
        assert all(r.startswith(b"SIP/2.0 403") for r in replies)
        assert all(b"received=127.0.0.1" in r and f"rport={port}".encode() in r
                   for r in replies)
    finally:
        sock.close()
        await gb.server.close()
        eng.close()
        store.close()


async def test_other_platform_keeps_shared_channel_and_deeper_source_wins(
        world: World) -> None:
    w = world
    a = w.platform()
    b = w.platform(pid=OTHER, password="other-secret")  # its own password (peer override)
    b.channels = b.channels[:2]
    try:
        await registered(w, a)
        await registered(w, b)
        # a DESCRIBE that succeeded just now is deeper evidence than the platform's OFF;
        # the disagreement is counted and listed
        ok = Verdict.of(ProbeResult.success("rtsp", latency_s=0.01), Source.DESCRIBE)
        w.engine.book.judge(CHANNELS[3], ok, w.clock.t)
        assert await a.events([(CHANNELS[3], "OFF")]) == 200
        assert w.state(CHANNELS[3]) == (State.ONLINE, None)
        assert w.gb.disagreements == {
            CHANNELS[3]: (PLATFORM, "offline gb_off", "online", w.clock.t)}
        listed = w.gb.platforms_json(lambda ts: None)["disagreements"]
        assert listed["count"] == 1 and listed["channels"][0]["probe_says"] == "online"
        assert "camwatch_gb_disagreements 1" in w.gb.metrics_text(lambda n, k, t: "")
        assert await a.events([(CHANNELS[3], "ON")]) == 200  # they agree again
        assert not w.gb.disagreements
        w.clock.t += 200
        assert await b.keepalive() == 200
        w.gb.server.tick()
        assert not w.gb.peers[PLATFORM].up and w.gb.peers[OTHER].up
        assert w.state(CHANNELS[1])[0] == State.ONLINE  # also listed by the live one
        assert w.state(CHANNELS[2]) == (State.OFFLINE, Why.PLATFORM_DOWN)
    finally:
        await a.close()
        await b.close()


async def test_api_platforms_and_metrics(world: World) -> None:
    from camwatch.http import serve as serve_http

    w = world
    sim = w.platform()
    runner = await serve_http(w.engine, "127.0.0.1", 0)
    try:
        await registered(w, sim)
        assert await sim.keepalive() == 200
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/platforms") as r:
                assert r.status == 200
                body = await r.json()
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            async with http.get(f"{base}/api/reconciliation") as r:
                rec = await r.json()
            async with http.get(f"{base}/api/status") as r:
                status = await r.json()
        assert body["enabled"] is True and body["sip_id"] == "34020000002000000001"
        [p] = body["platforms"]
        assert p["id"] == PLATFORM and p["name"] == "移动云平台" and p["up"] is True
        assert p["transport"] == "udp" and p["address"].startswith("127.0.0.1:")
        assert p["catalog"] == {**p["catalog"], "channels": 6, "nodes": 2, "partial": False}
        assert p["channels"] == 5 and p["online"] == 3  # CHANNELS[1,2,4] ON in the ledger
        assert p["registered_since_iso"].endswith("+08:00")
        assert "gb-secret" not in str(body) and "gb-secret" not in text
        assert f'camwatch_gb_platform_up{{platform="{PLATFORM}"}} 1' in text
        assert f'camwatch_gb_keepalive_age_seconds{{platform="{PLATFORM}"}} 0' in text
        assert f'camwatch_gb_catalog_channels{{platform="{PLATFORM}"}} 6' in text
        assert f'camwatch_gb_catalog_inventory_channels{{platform="{PLATFORM}"}} 5' in text
        assert 'camwatch_gb_refused_total{reason="bad_password"} 0' in text
        assert 'camwatch_channel_offline_reason{channel="34120000001320000001",' \
               'reason="gb_off"} 1' in text
        # 台账核对: the ledger row no catalog lists, the catalog channel the ledger lacks
        assert rec["complete"] is True and rec["platforms"] == 1
        assert (rec["installed"], rec["declared_connected"], rec["measured_connected"]) == \
            (6, 6, 5)
        assert rec["measured_rate"] == pytest.approx(5 / 6, abs=1e-6)
        assert rec["missing"] == [{"channel": "34120000001320009999", "name": "点位5"}]
        assert [x["channel"] for x in rec["not_in_ledger"]] == [CHANNELS[5]]
        assert rec["names_differ"][0] == {"channel": CHANNELS[0], "ledger": "点位0",
                                          "catalog": "摄像机0"}
        from camwatch.cli import format_status

        assert status["gb28181"]["up"] == 1 and status["gb28181"]["missing"] == 1
        text = format_status(status)
        assert "GB/T 28181: 1 platforms (1 up), 6 channels in catalogs" in text
        assert "上云率 declared 100.00%  measured 83.33%  台账核对: 1 已上云 rows in no " \
               "catalog, 1 catalog channels not in the ledger" in text
    finally:
        await sim.close()
        await runner.cleanup()


def test_config_errors_name_their_place(tmp_path: Path) -> None:
    def problems(**gb: Any) -> str:
        with pytest.raises(ConfigError) as e:
            gb_config(tmp_path, **gb)
        return str(e.value)

    assert "$.gb28181" in problems(listen="0.0.0.0:5060")
    assert "allow_public" in problems(listen="0.0.0.0:5060")
    assert gb_config(tmp_path, listen="0.0.0.0:5060", allow_public=True).gb28181.enabled
    assert "20-digit" in problems(sip_id="1234")
    assert "$.gb28181.peers" in problems(peers={"12": {}})
    assert "every platform would be refused" in problems(peers={})
    assert "expected a duration" in problems(keepalive_timeout=180)
    assert "expected host:port" in problems(listen="nowhere")
    text = problems(password_file=None, peers={PLATFORM: {}})
    assert "no password for" in text and PLATFORM in text
    # disabled: nothing is required
    cfg = parse_config({"inventory": {"path": "x.csv"}}, base_dir=tmp_path)
    assert not cfg.gb28181.enabled and cfg.gb28181.keepalive_timeout == 180.0
    assert cfg.gb28181.catalog_interval == 600.0 and cfg.gb28181.listen == "127.0.0.1:5060"


async def test_api_platforms_when_disabled(tmp_path: Path) -> None:
    from camwatch.http import serve as serve_http

    cfg = parse_config({"inventory": {"path": "x.csv"}, "store": {"path": "s.db"}},
                       base_dir=tmp_path)
    store = open_store(tmp_path / "s.db")
    eng = Engine(cfg, inventory(CHANNELS), store)
    runner = await serve_http(eng, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{runner.addresses[0][1]}/api/platforms") as r:
                assert await r.json() == {"enabled": False, "platforms": []}
            async with http.get(f"http://127.0.0.1:{runner.addresses[0][1]}"
                                f"/api/reconciliation") as r:
                assert await r.json() == {"enabled": False}
            async with http.get(f"http://127.0.0.1:{runner.addresses[0][1]}/metrics") as r:
                assert "camwatch_gb_" not in await r.text()
    finally:
        await runner.cleanup()
        eng.close()
        store.close()


async def test_udp_retransmissions_both_ways(world: World) -> None:
    """camwatch resends its unanswered UDP requests (RFC 3261 timers) and answers a peer's
    retransmitted request again without handling it twice."""
    w = world
    sim = w.platform()
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await registered(w, sim)
        peer = w.gb.peers[PLATFORM]
        peer.address = raw.getsockname()  # the platform moved: now it does not answer
        w.gb.server.query_catalog(peer)
        async with asyncio.timeout(5):
            first = sip.parse_message(await loop.sock_recv(raw, 65536))
        w.clock.t += 0.6  # T1 passed: sent again, the same transaction
        w.gb.server.tick()
        async with asyncio.timeout(5):
            again = sip.parse_message(await loop.sock_recv(raw, 65536))
        assert (again.call_id, again.get_all("via")) == (first.call_id, first.get_all("via"))
        raw.sendto(sip.serialize(sip.response(first, 200, to_tag="x")),
                   ("127.0.0.1", w.gb.server.port))
        await until(lambda: not w.gb.server._resend, "the answer stops the resending")
        # the peer's side: the same keepalive twice is answered twice, counted once
        ka = sip.SipMessage(method="MESSAGE", uri="sip:x", headers=[
            ("via", f"SIP/2.0/UDP 127.0.0.1:{raw.getsockname()[1]};branch=z9hG4bKka1"),
            ("from", f"<sip:{PLATFORM}@3402000000>;tag=k"), ("to", "<sip:x@y>"),
            ("call-id", "ka-twice"), ("cseq", "7 MESSAGE")],
            body=b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN></Notify>")
        before = peer.keepalives
        for _ in range(2):
            raw.sendto(sip.serialize(ka), ("127.0.0.1", w.gb.server.port))
            async with asyncio.timeout(5):
                assert (await loop.sock_recv(raw, 65536)).startswith(b"SIP/2.0 200")
        assert peer.keepalives == before + 1
        assert w.gb.server.counters["retransmissions"] == 1
    finally:
        raw.close()
        await sim.close()


def test_rows_reached_only_through_a_platform(tmp_path: Path) -> None:
    """With ``inventory.address_required: false`` a connected row without an RTSP/ONVIF
    address loads, is never probed, and is judged by the platform alone."""
    from camwatch.inventory import load_inventory
    from tests.fleet_thread import HEADER

    rows = [f"{CHANNELS[0]},东街,1,数字乡村,鹿邑县,城关镇,东村,移动,已安装,已上云,,",
            f"{CHANNELS[1]},西街,1,数字乡村,鹿邑县,城关镇,东村,移动,已安装,已上云,"
            f"rtsp://127.0.0.1:9/x,"]
    (tmp_path / "inv.csv").write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    base = {"inventory": {"path": "inv.csv"}, "store": {"path": "state.db"}}
    with pytest.raises(InputError, match="needs an RTSP or ONVIF address"):
        load_inventory(parse_config(base, base_dir=tmp_path).inventory)
    cfg = parse_config({**base, "inventory": {"path": "inv.csv", "address_required": False}},
                       base_dir=tmp_path)
    inv = load_inventory(cfg.inventory)
    assert [c.connected for c in inv.channels] == [True, True]
    store = open_store(tmp_path / "state.db")
    eng = Engine(cfg, inv, store, clock=FakeClock())
    try:
        sched = eng.scheduler.schedule
        assert sched is not None
        assert [e[3] for e in sched.new_entries if e[2] == "main"] == [CHANNELS[1]]
        assert set(eng.book.channels) == {CHANNELS[0], CHANNELS[1]}  # both counted
        off = verdict_of("OFF")
        assert off is not None
        eng.book.judge(CHANNELS[0], off, 1.0)
        assert eng.book.state_of(CHANNELS[0]) == State.OFFLINE
    finally:
        eng.close()
        store.close()


def test_reload_keys_and_unresolved_password(tmp_path: Path) -> None:
    from camwatch.daemon import restart_keys

    a = gb_config(tmp_path)
    b = gb_config(tmp_path, listen="127.0.0.1:5070", catalog_interval="5m")
    assert restart_keys(a, b) == ["gb28181.listen"]  # the interval is applied by a reload
    assert restart_keys(a, gb_config(tmp_path, transport="tcp")) == ["gb28181.transport"]
    c = gb_config(tmp_path, password_file=None, password_env="CAMWATCH_TEST_GB_UNSET",
                  peers={PLATFORM: {}})
    [problem] = c.unresolved_secrets()
    assert problem.startswith("$.gb28181:") and "CAMWATCH_TEST_GB_UNSET" in problem


async def test_device_registered_directly_answers_device_status(world: World) -> None:
    """A camera (type 132) registered directly, whose catalog lists no channel of its own:
    its DeviceStatus judges its own id, and its DeviceTime gives the clock drift."""
    w = world
    cam_id = "34120000001320009999"  # in the ledger (see the fixture)
    cfg = w.gb.cfg.model_copy(update={"allow_unknown": True})
    w.gb.configure(cfg)
    local = dt.datetime.fromtimestamp(w.clock.t + 7.5, dt.timezone(dt.timedelta(hours=8)))
    cam = SimPlatform(cam_id, "gb-secret-1", w.server, channels=[],
                      device_time=local.strftime("%Y-%m-%dT%H:%M:%S.%f")[:23])
    try:
        await registered(w, cam)
        peer = w.gb.peers[cam_id]
        assert peer.is_device and not peer.catalog.channels
        w.gb.server.tick()  # the catalog came empty: ask DeviceStatus
        await until(lambda: w.gb.server.counters["device_status"] == 1, "DeviceStatus")
        st = w.engine.book.state(cam_id)
        assert st is not None and st.state == State.ONLINE
        assert st.clock_drift_s == pytest.approx(7.5, abs=0.01)
        cam.status = "ERROR"
        peer.next_status = 0.0
        w.gb.server.tick()
        await until(lambda: w.gb.server.counters["device_status"] == 2, "DeviceStatus again")
        assert w.state(cam_id) == (State.OFFLINE, Why.GB_DEFECT)
        w.clock.t += 200  # silent: the device itself goes down
        w.gb.server.tick()
        assert w.state(cam_id) == (State.OFFLINE, Why.PLATFORM_DOWN)
    finally:
        await cam.close()


async def test_tcp_bounds(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over TCP a head beyond 16 KiB, and a message that stalls mid-way, close the
    connection; CRLF keep-alive pings do not."""
    from camwatch.gb28181 import server as gb_server

    monkeypatch.setattr(gb_server, "MESSAGE_TIMEOUT_S", 0.3)
    w = world
    r, wr = await asyncio.open_connection(*w.server)
    wr.write(b"\r\n\r\n" + b"REGISTER sip:x SIP/2.0\r\nX: " + b"a" * 20_000)
    async with asyncio.timeout(5):
        assert await r.read() == b""  # closed by camwatch
    wr.close()
    assert w.gb.server.counters["bad_message"] == 1
    r, wr = await asyncio.open_connection(*w.server)
    wr.write(b"MESSAGE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h")  # and then nothing
    async with asyncio.timeout(5):
        assert await r.read() == b""
    wr.close()


async def test_a_bug_in_handling_is_contained(world: World,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    w = world
    sim = w.platform()

    def broken(*_: object) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(w.gb, "catalog_items", broken)
    try:
        await sim.start()
        assert await sim.register() == 200
        await until(lambda: w.gb.server.counters["internal"] >= 1, "the injected fault")
        assert await sim.keepalive() == 200  # the listener goes on
        assert w.gb.peers[PLATFORM].keepalives == 1
    finally:
        await sim.close()


async def test_catalogs_kept_in_the_store_per_month(world: World) -> None:
    """Every catalog is written (through the one store writer) as the platform's latest of
    the month in report.timezone, ids and names, for the bulletin's reconciliation sheet."""
    from camwatch.reports.period import zone

    # 2027-01-31 23:30 in Shanghai is 15:30 UTC: the month is January there, not UTC's
    world.clock.t = dt.datetime(2027, 1, 31, 15, 30, tzinfo=dt.UTC).timestamp()
    sim = world.platform()
    try:
        await registered(world, sim)
        store = world.engine.store
        await until(lambda: bool(store.gb_catalogs("2027-01")), "the catalog in the store")
        doc = store.gb_catalogs("2027-01")[PLATFORM]
        assert doc["channels"] == {cid: f"摄像机{i}" for i, cid in enumerate(CHANNELS)}
        assert (doc["name"], doc["partial"], doc["declared"], doc["at"]) == (
            "移动云平台", False, len(CHANNELS) + len(NODES), world.clock.t)
        assert store.gb_catalogs("2027-02") == {}
        assert dt.datetime.fromtimestamp(world.clock.t, zone("Asia/Shanghai")).month == 1
        # the next catalog, in February, is February's; January keeps its last one
        world.clock.t += 3600
        sim.channels = sim.channels[:2]
        world.gb.server.query_catalog(world.gb.peers[PLATFORM])
        await until(lambda: bool(store.gb_catalogs("2027-02")), "February's catalog")
        assert list(store.gb_catalogs("2027-02")[PLATFORM]["channels"]) == CHANNELS[:2]
        assert len(store.gb_catalogs("2027-01")[PLATFORM]["channels"]) == len(CHANNELS)
    finally:
        await sim.close()


async def test_a_registration_refresh_is_a_sign_of_life(world: World) -> None:
    """keepalive_timeout counts from the last keepalive or REGISTER: a platform that
    refreshes its registration is not taken down for the keepalives between."""
    sim = world.platform()
    try:
        await registered(world, sim)
        world.clock.t += 170
        assert await sim.register() == 200  # a refresh, while up
        world.clock.t += 20
        world.gb.server.tick()
        peer = world.gb.peers[PLATFORM]
        assert peer.up and peer.alive_at() == world.clock.t - 20
        world.clock.t += 170
        world.gb.server.tick()
        assert not peer.up and peer.down_reason == "keepalive_timeout"
    finally:
        await sim.close()
