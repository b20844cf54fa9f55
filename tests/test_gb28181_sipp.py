"""A third-party SIP peer against camwatch's upper platform: sipp (Debian ``sip-tester``) plays
a lower platform from tests/peers/gb_lower_platform*.xml over UDP and over TCP:

REGISTER answering the 401 Digest challenge, keepalives, camwatch's Catalog query answered in
two MESSAGEs declared GB2312, a NOTIFY with OFF and VLOST, then silence, which must take the
platform's channels offline as ``platform_down`` with one mass-outage alert naming it.

Skipped without sipp on a developer machine, failed without it in CI (tests/conftest.py).
The real clock runs here (sipp keeps its own time): keepalive_timeout is 2 s and every wait
is a poll with a deadline."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import pytest

from camwatch.engine import Engine
from camwatch.gb28181 import GbService
from camwatch.model import State, Why
from camwatch.store import open_store
from tests.conftest import ROOT, need_binary
from tests.test_gb28181 import PLATFORM, gb_config, inventory, until

PEERS = ROOT / "tests" / "peers"
SIPP_CHANNELS = [f"3412000000132000000{n}" for n in (1, 2, 3)]
KEEPALIVES = 5


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_lower_platform(tmp_path: Path, transport: str) -> None:
    sipp = need_binary("sipp")
    cfg = gb_config(tmp_path, keepalive_timeout="2s", peers={PLATFORM: {"name": "sipp平台"}})
    store = open_store(tmp_path / "state.db")
    eng = Engine(cfg.model_copy(update={"alerts": cfg.alerts.model_copy(update={
        "rules": cfg.alerts.rules.model_copy(update={
            "mass_outage": cfg.alerts.rules.mass_outage.model_copy(
                update={"min_channels": 3})})})}),
        inventory(SIPP_CHANNELS), store)
    gb = GbService(cfg.gb28181, eng)
    eng.gb = gb
    await gb.start()
    stopping = asyncio.Event()
    ticker = asyncio.create_task(gb.server.run(stopping))
    proc = await asyncio.create_subprocess_exec(
        sipp, f"127.0.0.1:{gb.server.port}", "-sf", str(PEERS / "gb_lower_platform.xml"),
        "-oocsf", str(PEERS / "gb_lower_platform_ooc.xml"), "-m", "1",
        "-t", "u1" if transport == "udp" else "t1", "-i", "127.0.0.1",
        "-p", str(free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)),
        "-s", PLATFORM, "-au", PLATFORM, "-ap", "gb-secret-1",
        "-nostdin", "-timeout", "60s", "-timeout_error", "-trace_err",
        "-error_file", str(tmp_path / "sipp_errors.log"),
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def state(cid: str) -> tuple[str, str | None]:
            st = eng.book.state(cid)
            assert st is not None
            return st.state, st.reason

        await until(lambda: PLATFORM in gb.peers and gb.peers[PLATFORM].up, "sipp registered")
        peer = gb.peers[PLATFORM]
        assert peer.transport == transport
        assert gb.server.counters["challenges"] >= 1  # the first REGISTER was challenged
        await until(lambda: peer.catalog.at is not None, "the catalog in two MESSAGEs")
        assert set(peer.catalog.channels) == set(SIPP_CHANNELS) and peer.catalog.nodes == 1
        assert peer.catalog.declared == 4 and not peer.catalog.partial
        assert peer.catalog.channels[SIPP_CHANNELS[0]].name == "城关镇东街路口"  # GB2312
        assert peer.catalog.channels[SIPP_CHANNELS[1]].name == "玄武镇卫生院"
        await until(lambda: state(SIPP_CHANNELS[1])[1] == Why.VIDEO_LOST, "the NOTIFY")
        assert state(SIPP_CHANNELS[0]) == (State.OFFLINE, Why.GB_OFF)  # ON, then event OFF
        assert state(SIPP_CHANNELS[2]) == (State.OFFLINE, Why.GB_OFF)  # Status OFF
        assert gb.server.counters["events:OFF"] == 1
        assert gb.server.counters["events:VLOST"] == 1
        await until(lambda: peer.keepalives == KEEPALIVES, "every keepalive")
        assert peer.up  # 300 ms apart: well within the 2 s
        # sipp is done and silent: within keepalive_timeout the platform is down
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
        await until(lambda: not peer.up, "the keepalive timeout")
        assert peer.down_reason == "keepalive_timeout"
        for cid in SIPP_CHANNELS:
            assert state(cid) == (State.OFFLINE, Why.PLATFORM_DOWN), cid
        alerts = await eng.evaluate()
        mass = [a for a in alerts if a.name == "mass_outage"]
        assert len(mass) == 1 and mass[0].labels["platform"] == PLATFORM
        assert "下级平台 sipp平台" in mass[0].summary
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stopping.set()
        await ticker
        await gb.server.close()
        eng.close()
        store.close()
