"""The fleet with stand-in servers: listening follows faults, the timeline runs on an injected
clock, the control API changes faults live, the fd budget is checked. Loopback only."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from camwatch.errors import CamwatchError
from camwatch.sim.fleet import FdLimitError, Fleet, FleetConfig, ensure_fd_limit
from camwatch.sim.inventory_gen import InventorySpec, plan_inventory
from camwatch.sim.model import Fault, SimDevice
from camwatch.sim.scenario import ManualClock, Scenario, TimedEvent

SPEC = InventorySpec(connected=200, rtsp_port=0, onvif_port=0, first_host="127.91.0.1",
                     seed=9)


async def stand_in(device: SimDevice, host: str, port: int) -> asyncio.Server:
    """Answers one line with the device's fault, then closes."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{device.effective_fault().value}\n".encode())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, port)


async def dial(host: str, port: int) -> str:
    """The stand-in's line, or "refused"."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return "refused"
    try:
        async with asyncio.timeout(2):
            return (await reader.readline()).decode().strip()
    finally:
        writer.close()


async def until(cond: Callable[[], bool], what: str, deadline_s: float = 5.0) -> None:
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline_s} s: {what}")
        await asyncio.sleep(0.01)


def start(config: FleetConfig, **kw: Any) -> Any:
    return Fleet.start(config, rtsp_factory=stand_in, onvif_factory=stand_in, **kw)


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    async with start(FleetConfig(inventory=SPEC)) as f:
        yield f


def single_and_nvr(f: Fleet) -> tuple[str, str]:
    single = next(k for k, d in f.devices.items() if len(d.channels) == 1)
    nvr = next(k for k, d in f.devices.items() if len(d.channels) > 1)
    return single, nvr


async def test_refused_closes_the_sockets_and_clearing_reopens_them(fleet: Fleet) -> None:
    key, _ = single_and_nvr(fleet)
    dev = fleet.devices[key]
    rtsp, onvif = dev.rtsp_port, dev.onvif_port
    assert rtsp and onvif and rtsp != onvif
    assert await dial(dev.host, rtsp) == "ok"
    await fleet.set_device_fault(key, Fault.REFUSED)
    assert not fleet.is_listening(key)
    assert await dial(dev.host, rtsp) == "refused"
    assert await dial(dev.host, onvif) == "refused"
    await fleet.set_device_fault(key, Fault.HANG)
    assert await dial(dev.host, rtsp) == "hang"
    assert (dev.rtsp_port, dev.onvif_port) == (rtsp, onvif)  # back on the same ports
    await fleet.set_device_fault(key, None)
    assert await dial(dev.host, onvif) == "ok"


async def test_every_device_has_its_own_address(fleet: Fleet) -> None:
    hosts = [d.host for d in fleet.devices.values()]
    assert len(set(hosts)) == len(hosts) == len(fleet.plan.devices)
    assert "127.0.0.1" not in hosts
    assert fleet.channel_count == 200
    assert any(len(d.channels) > 1 for d in fleet.devices.values())


async def test_timed_events_follow_the_injected_clock() -> None:
    plan = plan_inventory(SPEC)
    township = plan.county.townships[3]
    nvr = next(d for d in plan.devices if d.nvr and d.township != 3)
    scenario = Scenario(events=(
        TimedEvent(300, Fault.REFUSED, 1200, township=township.name),  # uplink lost
        TimedEvent(600, Fault.REFUSED, 120, device=nvr.key),  # NVR reboots
        TimedEvent(60, Fault.HANG, None, device=nvr.key)))
    clock = ManualClock(1000.0)
    async with start(FleetConfig(inventory=SPEC, scenario=scenario), clock=clock) as f:
        keys = f.township_devices(township.code)
        assert keys and all(f.is_listening(k) for k in keys)
        probe = f.devices[keys[0]]

        def township_down() -> bool:
            return not any(f.is_listening(k) for k in keys)

        clock.set(1000 + 299)
        await asyncio.sleep(0)
        assert await dial(probe.host, probe.rtsp_port) == "ok"
        clock.set(1000 + 300)
        await until(township_down, "township refused at t+5m")
        assert await dial(probe.host, probe.rtsp_port) == "refused"
        assert f.devices[nvr.key].fault is Fault.HANG  # since t+1m
        clock.set(1000 + 600)
        await until(lambda: not f.is_listening(nvr.key), "NVR down at t+10m")
        clock.set(1000 + 720)
        await until(lambda: f.is_listening(nvr.key), "NVR back at t+12m")
        assert f.devices[nvr.key].fault is Fault.HANG  # the later event does not end the earlier
        assert township_down()
        clock.set(1000 + 1500)
        await until(lambda: all(f.is_listening(k) for k in keys), "township back at t+25m")
        assert await dial(probe.host, probe.rtsp_port) == "ok"


async def test_flapping_devices_go_down_and_up() -> None:
    clock = ManualClock()
    scenario = Scenario(flapping=0.02, flap_period_s=120)
    async with start(FleetConfig(inventory=SPEC, scenario=scenario), clock=clock) as f:
        flapping = dict(f.assignment.flapping)
        assert sum(len(f.devices[k].channels) for k in flapping) == 4
        for t in (0.0, 30.0, 60.0, 90.0, 120.0, 150.0):
            clock.set(t)
            want = {k: (t + off) % 120 >= 60 for k, off in flapping.items()}
            await until(lambda w=want: all(f.is_listening(k) == up for k, up in w.items()),  # type: ignore[misc]
                        f"flapping state at t={t}")
        assert f.scenario_time == 150.0


async def test_control_api_changes_faults_live(fleet: Fleet) -> None:
    single, nvr = single_and_nvr(fleet)
    nvr_dev = fleet.devices[nvr]
    nvr_channel = next(iter(nvr_dev.channels.values()))
    single_dev = fleet.devices[single]
    single_id = next(iter(single_dev.channels.values())).id
    assert fleet.control_url is not None
    async with aiohttp.ClientSession(fleet.control_url) as http:
        async with http.get("/api/devices") as r:
            devices = (await r.json())["devices"]
        assert len(devices) == len(fleet.devices)
        assert {d["host"] for d in devices} == set(fleet.devices)

        async with http.post(f"/api/devices/{single}/fault", json={"fault": "refused"}) as r:
            assert r.status == 200 and (await r.json())["listening"] is False
        assert await dial(single_dev.host, single_dev.rtsp_port) == "refused"
        async with http.post(f"/api/channels/{single_id}/fault", json={"fault": "ok"}) as r:
            assert r.status == 200
        async with http.post(f"/api/devices/{single}/fault", json={"fault": None}) as r:
            assert r.status == 200
        assert await dial(single_dev.host, single_dev.rtsp_port) == "ok"

        async with http.post(f"/api/channels/{nvr_channel.id}/fault",
                             json={"fault": "hang"}) as r:
            body = await r.json()
        assert body["effective_fault"] == "hang" and body["device_fault"] == "ok"
        assert nvr_dev.effective_fault(nvr_channel.path) is Fault.HANG
        assert nvr_dev.effective_fault(None) is Fault.NONE  # the NVR itself is fine
        async with http.get(f"/api/channels/{nvr_channel.id}") as r:
            body = await r.json()
        assert body["rtsp_url"] == (f"rtsp://{nvr_dev.host}:{nvr_dev.rtsp_port}"
                                    f"{nvr_channel.path}")

        async with http.post(f"/api/channels/{nvr_channel.id}/fault",
                             json={"fault": "refused"}) as r:
            assert r.status == 400 and "device fault" in (await r.json())["error"]
        async with http.post(f"/api/channels/{nvr_channel.id}/fault",
                             json={"fault": "explode"}) as r:
            assert r.status == 400 and "unknown fault" in (await r.json())["error"]
        async with http.post(f"/api/channels/{nvr_channel.id}/fault", data=b"{") as r:
            assert r.status == 400
        async with http.get("/api/channels/00000000000000000000") as r:
            assert r.status == 404
        async with http.post("/api/devices/127.9.9.9/fault", json={"fault": "hang"}) as r:
            assert r.status == 404

        code = fleet.township_of(nvr)
        name = fleet.county.township(code).name  # type: ignore[union-attr]
        async with http.post(f"/api/townships/{name}/fault", json={"fault": "refused"}) as r:
            body = await r.json()
        assert body["township"] == code and nvr in body["devices"]
        assert not any(fleet.is_listening(k) for k in fleet.township_devices(code))
        assert await dial(nvr_dev.host, nvr_dev.rtsp_port) == "refused"
        async with http.get("/api/faults") as r:
            assert (await r.json())["refused"] >= len(nvr_dev.channels)

        async with http.post("/api/reset") as r:
            body = await r.json()
        assert body["faults"] == {"ok": 200}
        assert all(fleet.is_listening(k) for k in fleet.devices)
        assert await dial(nvr_dev.host, nvr_dev.rtsp_port) == "ok"


async def test_reset_can_drop_the_scenario_too() -> None:
    config = FleetConfig(inventory=SPEC, scenario=Scenario(dead=0.1, hung=0.05))
    async with start(config) as f:
        counts = f.fault_counts()
        assert counts["refused"] == 20 and counts["hang"] == 10
        dead = next(iter(f.assignment.dead_devices))
        assert not f.is_listening(dead)
        await f.reset()  # control overrides only: the scenario stays
        assert f.fault_counts() == counts
        await f.reset(keep_scenario=False)
        assert f.fault_counts() == {"ok": 200}
        assert f.is_listening(dead)
        dev = f.devices[dead]
        assert dev.rtsp_port != 0  # it had been given a port at start even though refused
        assert await dial(dev.host, dev.rtsp_port) == "ok"


async def test_same_seed_same_faults() -> None:
    config = FleetConfig(inventory=SPEC, scenario=Scenario(dead=0.05, auth_fail=0.05,
                                                           not_found=0.02), control=None)
    async with start(config) as a:
        first = {cid: a.channel_info(cid)["effective_fault"] for cid in a.channel_ids()}
    async with start(config) as b:
        again = {cid: b.channel_info(cid)["effective_fault"] for cid in b.channel_ids()}
    other = replace(config, scenario=replace(config.scenario, seed=99))
    async with start(other) as c:
        changed = {cid: c.channel_info(cid)["effective_fault"] for cid in c.channel_ids()}
    assert first == again != changed
    assert sorted(first.values()) == sorted(changed.values())  # same shares, other channels


async def test_unknown_event_target_fails_before_listening() -> None:
    scenario = Scenario(events=(TimedEvent(60, Fault.REFUSED, township="没有这个镇"),))
    with pytest.raises(ValueError, match="no township '没有这个镇'"):
        async with start(FleetConfig(inventory=SPEC, scenario=scenario)):
            pass


async def test_busy_address_is_reported() -> None:
    taken = await asyncio.start_server(lambda r, w: None, "127.92.0.1", 0)
    port = taken.sockets[0].getsockname()[1]
    spec = replace(SPEC, first_host="127.92.0.1", rtsp_port=port, connected=3)
    try:
        with pytest.raises(CamwatchError, match=r"cannot listen for device 127\.92\.0\.1"):
            async with start(FleetConfig(inventory=spec)):
                pass
    finally:
        taken.close()


def test_fd_limit_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    with pytest.raises(FdLimitError) as info:
        ensure_fd_limit(75_000, devices=37_000, channels=100_000, headroom=1_000)
    text = str(info.value)
    for part in ("needs 75,000 file descriptors", "37,000 devices", "hard limit is 4,096",
                 "ulimit -n 75000", "LimitNOFILE=75000", "--nvr-share", "64.6 channels per "
                 "device"):
        assert part in text, text
    assert info.value.needed == 75_000 and info.value.hard == 4096


async def test_fleet_too_big_for_the_fd_limit_fails_before_listening(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    opened: list[str] = []

    async def spy(device: SimDevice, host: str, port: int) -> asyncio.Server:
        opened.append(host)
        return await stand_in(device, host, port)

    config = FleetConfig(inventory=replace(SPEC, connected=20_000))
    with pytest.raises(FdLimitError, match="LimitNOFILE"):
        async with Fleet.start(config, rtsp_factory=spy, onvif_factory=spy):
            pass
    assert opened == []


def test_soft_fd_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and soft == hard and hard > 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        got = ensure_fd_limit(100, devices=10, channels=10, headroom=80)
        now_soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert got == now_soft
        if hard != resource.RLIM_INFINITY:
            assert now_soft == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, resource.getrlimit(
            resource.RLIMIT_NOFILE)[0]), hard))


async def test_port_range_addressing_on_127_0_0_1() -> None:
    spec = InventorySpec(connected=12, nvr_share=0.3, nvr_channels=(4, 4), addressing="ports",
                         port_base=24680, seed=2)
    async with start(FleetConfig(inventory=spec, control=None)) as f:
        keys = list(f.devices)
        assert keys[:2] == ["127.0.0.1:24680", "127.0.0.1:24682"]
        dev = f.devices[keys[1]]
        assert (dev.host, dev.rtsp_port, dev.onvif_port) == ("127.0.0.1", 24682, 24683)
        assert await dial("127.0.0.1", 24683) == "ok"
        await f.set_device_fault(keys[1], Fault.REFUSED)
        assert await dial("127.0.0.1", 24682) == "refused"
        assert await dial("127.0.0.1", 24680) == "ok"  # the neighbour still answers
        cid = next(iter(dev.channels.values())).id
        assert f.device_key(cid) == keys[1]
