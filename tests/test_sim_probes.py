"""camwatch's own probes against the running fleet with the real RTSP and ONVIF servers: every
scenario is classified as what it simulates, faults changed over the control API are seen by
the next probe, and a sweep of the generated config + inventory agrees with the fleet."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from camwatch.config import load_config
from camwatch.inventory import load_inventory
from camwatch.probes import ProbeSettings, Target, get_prober
from camwatch.probes.result import ProbeResult, Reason
from camwatch.secrets import Secret
from camwatch.sim.fleet import Fleet, FleetConfig
from camwatch.sim.inventory_gen import InventorySpec
from camwatch.sim.model import Fault
from camwatch.sim.scenario import Scenario

FAST = ProbeSettings(timeout_s=0.5)
SCENARIO = Scenario(dead=0.05, hung=0.04, auth_fail=0.04, not_found=0.04, clock_skew=0.03,
                    clock_skew_s=600)
EXPECTED = {Fault.NONE: None, Fault.REFUSED: Reason.REFUSED, Fault.HANG: Reason.TIMEOUT,
            Fault.AUTH_FAIL: Reason.AUTH, Fault.NOT_FOUND: Reason.NOT_FOUND}


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    spec = InventorySpec(connected=150, rtsp_port=0, onvif_port=0, first_host="127.93.0.1",
                         seed=4)
    async with Fleet.start(FleetConfig(inventory=spec, scenario=SCENARIO, out_dir=tmp_path)) as f:
        yield f


def target(fleet: Fleet, cid: str) -> Target:
    dev, _ = fleet.channel(cid)
    return Target(cid, dev.host, rtsp_url=fleet.rtsp_url(cid),
                  onvif_url=fleet.onvif_url(fleet.device_key(cid)),
                  username="admin", password=Secret(fleet.password))


async def describe(fleet: Fleet, cid: str) -> ProbeResult:
    return await get_prober("describe")(target(fleet, cid), FAST)


async def test_each_scenario_is_classified_as_what_it_simulates(fleet: Fleet) -> None:
    ids = fleet.channel_ids()
    results = await asyncio.gather(*(describe(fleet, cid) for cid in ids))
    seen: Counter[tuple[str, str]] = Counter()
    for cid, r in zip(ids, results, strict=True):
        dev, ch = fleet.channel(cid)
        fault = dev.effective_fault(ch.path)
        assert r.reason is EXPECTED[fault], (cid, fault, r.reason, r.detail)
        assert r.ok is (fault is Fault.NONE)
        assert fleet.password not in r.detail
        seen[(fault.value, str(r.reason))] += 1
    assert {f for f, _ in seen} == {"ok", "refused", "hang", "auth_fail", "not_found"}
    assert seen[("hang", "timeout")] == 6 and seen[("auth_fail", "auth")] == 6


async def test_clock_skew_is_seen_over_onvif(fleet: Fleet) -> None:
    key = next(iter(fleet.assignment.clock_skew))
    cid = next(iter(fleet.devices[key].channels.values())).id
    r = await get_prober("onvif")(target(fleet, cid), FAST)
    assert r.clock_drift_s is not None and abs(r.clock_drift_s - 600) < 5, r
    healthy = next(k for k, d in fleet.devices.items()
                   if d.fault is Fault.NONE and k not in fleet.assignment.clock_skew
                   and all(c.fault is Fault.NONE for c in d.channels.values()))
    cid = next(iter(fleet.devices[healthy].channels.values())).id
    r = await get_prober("onvif")(target(fleet, cid), FAST)
    assert r.ok and r.clock_drift_s is not None and abs(r.clock_drift_s) < 5, r


async def test_control_endpoint_drives_a_channel_down_and_up(fleet: Fleet) -> None:
    cid = next(c for c in fleet.channel_ids()
               if fleet.channel_info(c)["effective_fault"] == "ok")
    key = fleet.device_key(cid)
    assert (await describe(fleet, cid)).ok
    assert fleet.control_url is not None
    async with aiohttp.ClientSession(fleet.control_url) as http:
        for fault, reason in ((Fault.HANG, Reason.TIMEOUT), (Fault.AUTH_FAIL, Reason.AUTH),
                              (Fault.NOT_FOUND, Reason.NOT_FOUND)):
            async with http.post(f"/api/channels/{cid}/fault", json={"fault": fault}) as resp:
                assert resp.status == 200
            assert (await describe(fleet, cid)).reason is reason
        async with http.post(f"/api/devices/{key}/fault", json={"fault": "refused"}) as resp:
            assert resp.status == 200
        assert (await describe(fleet, cid)).reason is Reason.REFUSED
        async with http.post("/api/reset") as resp:
            assert resp.status == 200
    assert (await describe(fleet, cid)).ok


async def test_a_sweep_of_the_generated_files_matches_the_fleet(fleet: Fleet) -> None:
    from camwatch.sweep import sweep_once

    assert fleet.files is not None
    cfg = load_config(fleet.files.config)
    inv = load_inventory(cfg.inventory, cfg.credentials)
    assert inv.summary()["connected"] == 150
    sweep = await sweep_once(cfg.model_copy(update={"probing": cfg.probing.model_copy(
        update={"timeout": 0.5})}), inv)
    got = Counter(str(r.reason) if r.reason else "ok" for r in sweep.results.values())
    want = Counter(str(EXPECTED[fleet.channel(cid)[0].effective_fault(fleet.channel(cid)[1].path)])
                   if fleet.channel_info(cid)["effective_fault"] != "ok" else "ok"
                   for cid in fleet.channel_ids())
    assert got == want
