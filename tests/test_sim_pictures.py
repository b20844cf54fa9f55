"""Simulated cameras that send real pictures (camwatch.sim.pictures): every picture fault gets
its verdict from camwatch's own sampler (RTSP with Digest auth, RTP depacketising, PyAV
decoding, the checks), the ok picture none; the scenario and the control API choose which
cameras show what."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from camwatch.errors import ConfigError
from camwatch.model import Quality
from camwatch.probes import ProbeSettings, Target
from camwatch.quality.decode import DecodePool
from camwatch.quality.sample import QualityVerdict, SampleSettings, sample
from camwatch.secrets import Secret
from camwatch.sim.fleet import Fleet, FleetConfig
from camwatch.sim.inventory_gen import InventorySpec
from camwatch.sim.model import SimChannel, SimDevice
from camwatch.sim.pictures import Picture, clip, rtp_packets
from camwatch.sim.rtsp_server import start_rtsp_server
from camwatch.sim.scenario import Scenario, assign, scenario_from_mapping


async def _sample(pool: DecodePool, url: str, username: str, password: str) -> QualityVerdict:
    target = Target(channel_id="x", host="127.0.0.1", rtsp_url=url, username=username,
                    password=Secret(password))
    return await sample(target, ProbeSettings(timeout_s=10.0), SampleSettings(), pool)


@pytest.mark.parametrize("codec", ["H264", "H265"])
async def test_every_picture_gets_its_verdict(codec: str) -> None:
    kinds = list(Picture) if codec == "H264" else [Picture.OK, Picture.FROZEN,
                                                   Picture.SIGNAL_LOST]
    dev = SimDevice("127.0.0.1", 0, 0)  # Digest auth, as most cameras
    for p in kinds:
        dev.channels[f"/{p.value}"] = SimChannel(p.value, f"/{p.value}", codec=codec, picture=p)
    server = await start_rtsp_server(dev, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = DecodePool(2)
    try:
        for p in kinds:
            v = await _sample(pool, f"rtsp://127.0.0.1:{port}/{p.value}", dev.username,
                              dev.password)
            if p is Picture.SCENE_CHANGED:  # the usual view first, then the turned one
                assert v.quality is Quality.OK and v.thumb is not None, v.json()
                v = await sample(Target(channel_id="x", host="127.0.0.1",
                                        rtsp_url=f"rtsp://127.0.0.1:{port}/{p.value}",
                                        username=dev.username, password=Secret(dev.password)),
                                 ProbeSettings(timeout_s=10.0), SampleSettings(), pool,
                                 reference=v.thumb)
                assert [f.check for f in v.faults] == ["scene_changed"], v.json()
            faults = {f.check for f in v.faults}
            assert v.codec == codec and (v.width, v.height) == (640, 360), p
            if p is Picture.OK:
                assert (v.quality, faults) == (Quality.OK, set()), v.json()
            else:
                assert v.quality is Quality.DEGRADED and p.value in faults, (p, v.json())
    finally:
        pool.close()
        server.close()
        await server.wait_closed()


def test_clip_packets_are_keyframes_with_parameter_sets_and_marked() -> None:
    c = clip(Picture.OK)
    packets, last = rtp_packets(c, 5, 65534)
    assert last == (65534 + len(packets)) & 0xFFFF  # wraps
    assert packets[0][12] & 0x1F == 24  # STAP-A: SPS and PPS first
    assert all(p[1] & 0x80 == 0 for p in packets[:-1]) and packets[-1][1] & 0x80
    ts = {int.from_bytes(p[4:8], "big") for p in packets}
    assert ts == {5 * 90000 // 2}  # one picture, at 2 per second
    assert max(len(p) for p in packets) <= 1400 + 12 + 3


def test_scenario_pictures_are_validated_and_assigned() -> None:
    s = scenario_from_mapping({"pictures": True,
                               "picture_faults": {"frozen": 0.1, "signal_lost": 0.05}})
    assert s.serves_pictures and dict(s.picture_faults) == {Picture.FROZEN: 0.1,
                                                             Picture.SIGNAL_LOST: 0.05}
    devices = [(f"d{i}", [f"c{i}-{k}" for k in range(4)]) for i in range(25)]
    a = assign(s, devices, seed=3)
    counts: dict[Picture, int] = {}
    for p in a.pictures.values():
        counts[p] = counts.get(p, 0) + 1
    assert counts == {Picture.OK: 85, Picture.FROZEN: 10, Picture.SIGNAL_LOST: 5}
    assert assign(s, devices, seed=3) == a  # deterministic
    assert assign(Scenario(), devices, seed=3).pictures == {}  # none asked: fake RTP
    with pytest.raises(ConfigError) as exc:
        scenario_from_mapping({"pictures": "yes", "picture_faults": {"frozn": 0.1,
                                                                     "blur": 2}})
    msgs = {(p.path, p.message) for p in exc.value.problems}
    assert ("$.pictures", "expected true or false, got 'yes'") in msgs
    assert any(p == "$.picture_faults.frozn" and "unknown picture fault" in m
               for p, m in msgs)
    assert ("$.picture_faults.blur", "expected a share between 0 and 1, got 2") in msgs


async def test_fleet_serves_pictures_and_the_control_api_changes_them(tmp_path: Path) -> None:
    spec = InventorySpec(connected=10, nvr_share=0.0, rtsp_port=0, onvif_port=0,
                         first_host="127.93.0.1", seed=5)
    scenario = Scenario(pictures=True, picture_faults=((Picture.FROZEN, 0.2),))
    pool = DecodePool(2)
    async with Fleet.start(FleetConfig(inventory=spec, scenario=scenario,
                                       out_dir=tmp_path)) as fleet:
        assert fleet.picture_counts() == {"ok": 8, "frozen": 2}
        frozen = sorted(c for c in fleet.channel_ids()
                        if fleet.channel(c)[1].picture is Picture.FROZEN)
        ok = next(c for c in fleet.channel_ids() if c not in frozen)
        dev, _ = fleet.channel(frozen[0])
        v = await _sample(pool, fleet.rtsp_url(frozen[0]), dev.username, dev.password)
        assert [f.check for f in v.faults] == ["frozen"]
        async with aiohttp.ClientSession() as http:
            url = f"{fleet.control_url}/api/channels/{ok}/picture"
            async with http.post(url, json={"picture": "blur"}) as r:
                assert r.status == 200 and (await r.json())["picture"] == "blur"
            async with http.post(url, json={"picture": "fuzzy"}) as r:
                assert r.status == 400 and "unknown picture 'fuzzy'" in (await r.json())["error"]
            async with http.get(f"{fleet.control_url}/api/pictures") as r:
                assert json.loads(await r.text()) == {"ok": 7, "frozen": 2, "blur": 1}
        dev, _ = fleet.channel(ok)
        v = await _sample(pool, fleet.rtsp_url(ok), dev.username, dev.password)
        assert "blur" in {f.check for f in v.faults}
    pool.close()
