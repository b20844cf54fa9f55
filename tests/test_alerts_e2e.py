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
from tests.fleet_thread import FleetThread
from tests.test_daemon import Proc
from tests.test_sink_mqtt import Broker, Subscriber, broker, until

pytestmark = pytest.mark.peer
__all__ = ["broker"]  # the fixture, imported for this module

ROWS = "设备编码,点位名称,点位类型,项目,区县,乡镇,村,运营商,安装状态,上云状态,RTSP地址,凭据"


def site(tmp: Path, ports: list[int], mqtt_port: int) -> Path:
    rows = [ROWS]
    for i, port in enumerate(ports):
        town = "城关镇" if i < 6 else "玄武镇"
        rows.append(f"4116280000132100{i:04d},点位{i},1,雪亮工程,鹿邑县,{town},村,移动,已安装,"
                    f"已上云,rtsp://127.0.0.1:{port}/ch,default")
    (tmp / "inv.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp / "pw").write_text("Sweep-Pw-1\n", encoding="utf-8")
    cfg = tmp / "c.yaml"
    cfg.write_text(f"""
inventory: {{path: inv.csv}}
credentials: {{default: {{username: admin, password_file: pw}}}}
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
""", encoding="utf-8")
    return cfg


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
