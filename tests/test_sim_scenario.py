"""Scenarios: parsing, deterministic assignment of faults, flapping, the manual clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from camwatch.errors import ConfigError
from camwatch.sim.model import Fault
from camwatch.sim.scenario import (
    ManualClock,
    Scenario,
    TimedEvent,
    assign,
    flap_down,
    load_scenario,
    next_flap_change,
    parse_duration,
    scenario_from_mapping,
)

# 300 single cameras and 20 NVRs of 8 channels: 460 channels
DEVICES = [(f"127.1.0.{i}", [f"cam{i}"]) for i in range(300)] + [
    (f"127.2.0.{i}", [f"nvr{i}-{k}" for k in range(8)]) for i in range(20)]
TOTAL = 460
SHARES = Scenario(dead=0.05, hung=0.02, auth_fail=0.01, not_found=0.03, flapping=0.02,
                  clock_skew=0.01, clock_skew_s=30)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), (90, 90), ("2.5", 2.5),
    ("1d", 86400)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "-3", "m5", "", True, None, "5m5"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_yaml_scenario(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "seed: 7\ndead: 0.02\nhung: 0.01\nflapping: 0.01\nflap_period: 4m\n"
        "clock_skew: 0.01\nclock_skew_seconds: 90s\nevents:\n"
        "  - {at: 5m, for: 20m, township: 王皮溜镇, fault: refused}\n"
        "  - {at: 10m, for: 2m, device: 127.1.0.9, fault: refused}\n"
        "  - {at: 1m, channel: '41162801001320000007', fault: hang}\n", encoding="utf-8")
    s = load_scenario(path)
    assert (s.seed, s.dead, s.hung, s.flapping, s.flap_period_s, s.clock_skew_s) == (
        7, 0.02, 0.01, 0.01, 240, 90)
    assert s.events == (
        TimedEvent(300, Fault.REFUSED, 1200, township="王皮溜镇"),
        TimedEvent(600, Fault.REFUSED, 120, device="127.1.0.9"),
        TimedEvent(60, Fault.HANG, None, channel="41162801001320000007"))
    assert s.events[0].active(300) and s.events[0].active(1499)
    assert not s.events[0].active(299) and not s.events[0].active(1500)
    assert s.events[2].active(10**9)


def test_every_problem_is_reported_with_its_place() -> None:
    with pytest.raises(ConfigError) as info:
        scenario_from_mapping({
            "dead": 1.5, "hang": 0.1, "flap_period": "soon",
            "events": [{"at": "5m", "fault": "explode", "township": "x"},
                       {"at": "1m", "device": "a", "channel": "b", "fault": "hang"},
                       "later"]}, "s.yaml")
    text = str(info.value)
    for expected in ("s.yaml: $.dead: expected a share between 0 and 1, got 1.5",
                     "s.yaml: $.hang: unknown key",
                     "s.yaml: $.flap_period: expected a duration",
                     "s.yaml: $.events[0].fault: expected one of ok, refused",
                     "s.yaml: $.events[1]: expected exactly one of township, device, channel",
                     "s.yaml: $.events[2]: expected a mapping"):
        assert expected in text
    assert len(info.value.problems) == 6


def test_shares_over_one_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"add up to 1\.2"):
        scenario_from_mapping({"dead": 0.6, "hung": 0.6})


def test_assignment_is_exact_disjoint_and_deterministic() -> None:
    a = assign(SHARES, DEVICES, seed=11)
    assert a == assign(SHARES, DEVICES, seed=11)
    assert a != assign(SHARES, DEVICES, seed=12)
    assert a.channel_counts(DEVICES) == {
        "dead": round(0.05 * TOTAL), "flapping": round(0.02 * TOTAL),
        "clock_skew": round(0.01 * TOTAL), "hung": round(0.02 * TOTAL),
        "auth_fail": round(0.01 * TOTAL), "not_found": round(0.03 * TOTAL)}
    device_level = [set(a.dead_devices), set(a.flapping), set(a.clock_skew)]
    assert sum(map(len, device_level)) == len(set().union(*device_level))
    broken = {cid for key, ids in DEVICES if key in a.dead_devices | set(a.flapping)
              for cid in ids}
    assert not broken & set(a.channel_faults)
    assert set(a.clock_skew.values()) == {30}
    assert all(0 <= off < SHARES.flap_period_s for off in a.flapping.values())


def test_no_shares_no_faults() -> None:
    a = assign(Scenario(), DEVICES, seed=1)
    assert not a.dead_devices and not a.flapping and not a.channel_faults and not a.clock_skew


def test_flapping_half_down_half_up() -> None:
    period, offset = 300.0, 40.0
    down = [flap_down(offset, period, t) for t in range(0, 600)]
    assert sum(down) == 300
    t = 0.0
    changes = []
    while t < 600:
        t = next_flap_change(offset, period, t)
        changes.append(t)
        assert flap_down(offset, period, t) != flap_down(offset, period, t - 0.001)
    assert changes[:3] == [110.0, 260.0, 410.0]


async def test_manual_clock_wakes_sleepers_in_order() -> None:
    clock = ManualClock()
    woke: list[str] = []

    async def sleeper(name: str, until: float) -> None:
        await clock.sleep_until(until)
        woke.append(name)

    tasks = [asyncio.create_task(sleeper("b", 20)), asyncio.create_task(sleeper("a", 10))]
    await asyncio.sleep(0)
    clock.advance(9.9)
    await asyncio.sleep(0)
    assert woke == []
    clock.advance(0.1)
    await asyncio.sleep(0)
    assert woke == ["a"]
    clock.set(100)
    await asyncio.gather(*tasks)
    assert woke == ["a", "b"] and clock.now() == 100
