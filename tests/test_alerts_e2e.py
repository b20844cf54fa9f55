"""The whole chain through ``camwatch run``: simulated cameras in one township fail, the daemon
computes the township's rate, the alert rule fires once, and county staff's MQTT topic gets one
alert and later one resolution — across a daemon restart in the middle, without a re-fire."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from camwatch.sim.model import Fault
from tests.fleet_thread import FleetThread, Row, write_site
from tests.test_daemon import Proc
from tests.test_sink_mqtt import Broker, Subscriber, broker, until

pytestmark = pytest.mark.peer
__all__ = ["broker"]  # the fixture, imported for this module


def site(tmp: Path, ports: list[int], mqtt_port: int) -> Path:
    rows = [Row(f"rtsp://127.0.0.1:{port}/ch", township="城关镇" if i < 6 else "玄武镇")
            for i, port in enumerate(ports)]
    return write_site(tmp, rows, f"""
probing: {{interval: 1s, timeout: 500ms, per_host_concurrency: 64, onvif: false}}
states: {{fail_threshold: 1}}
targets: {{min_channels: 2}}
store: {{path: state.db}}
alerts:
  rules:
    rate_below_target: {{for: 2s, resolve_for: 2s, scopes: [county/township]}}
    mass_outage: {{enabled: false}}
    channel_offline_long: {{enabled: false}}
  default_receivers: [county]
  receivers:
    county: {{type: mqtt, host: 127.0.0.1, port: {mqtt_port}, prefix: lyx}}
  delivery: {{backoff_initial: 100ms, backoff_max: 500ms, poll: 200ms}}
""")


async def test_township_below_target_one_alert_one_resolution_across_restart(
        broker: Broker, tmp_path: Path) -> None:
    with FleetThread([Fault.NONE] * 12) as fleet:
        cfg = site(tmp_path, fleet.ports, broker.port)
        async with Subscriber(broker.port, "lyx/alerts/#") as sub:
            proc = await asyncio.to_thread(Proc, cfg)
            try:
                for i in range(3):  # 城关镇 3/6 online: 50 % < 98 %
                    await asyncio.to_thread(fleet.set_fault, i, Fault.NOT_FOUND)
                await until(lambda: len(sub.messages) >= 1, "the alert", 30)

                # restart while the alert is firing: it must not fire again
                proc.p.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(proc.p.wait, 10) == 0
                proc.stderr.close()
                proc = await asyncio.to_thread(Proc, cfg)
                await until(lambda: any(e.get("event") == "engine starting"
                                        for e in proc.log()), "restart", 30)
                for i in range(3):
                    await asyncio.to_thread(fleet.set_fault, i, Fault.NONE)
                await until(lambda: len(sub.messages) >= 2, "the resolution", 30)
            finally:
                if proc.p.poll() is None:
                    proc.p.send_signal(signal.SIGTERM)
                    await asyncio.to_thread(proc.p.wait, 10)
                proc.stderr.close()
    msgs: list[tuple[str, dict[str, Any], bool]] = sub.messages
    rate = [(t, a) for t, a, _ in msgs if a["name"] == "rate_below_target"]
    assert [a["status"] for _, a in rate] == ["firing", "resolved"], msgs
    assert {t for t, _ in rate} == {"lyx/alerts/鹿邑县/城关镇"}
    assert rate[0][1]["fingerprint"] == rate[1][1]["fingerprint"]
    assert "城关镇" in rate[0][1]["summary"] and "50.00%" in rate[0][1]["summary"]
