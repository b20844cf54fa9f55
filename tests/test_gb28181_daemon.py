"""``camwatch run`` with ``gb28181.enabled``: the daemon starts the upper platform, a lower
platform registers with it, and /api/platforms and /metrics show it. The channels also answer
RTSP (simulated cameras), so the deeper evidence wins: the platform's OFF does not take a
channel offline whose DESCRIBE succeeds."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from camwatch.sim.gb_platform import SimChannel, SimPlatform
from camwatch.sim.model import Fault
from tests.fleet_thread import FleetThread, Row, write_site
from tests.test_daemon import Proc, get, poll

PLATFORM = "34020000002000000200"


def gb_listen(proc: Proc) -> tuple[str, int]:
    for e in proc.log():
        if e.get("event") == "gb28181 listening":
            host, _, port = str(e["listen"]).rpartition(":")
            return host, int(port)
    raise AssertionError("no 'gb28181 listening' line")


def test_daemon_serves_platforms(tmp_path: Path) -> None:
    with FleetThread([Fault.NONE] * 4) as fleet:
        (tmp_path / "gbpw").write_text("gb-daemon-pw\n", encoding="utf-8")
        cfg = write_site(tmp_path, [Row(f"rtsp://127.0.0.1:{p}/ch") for p in fleet.ports],
                         "probing: {interval: 2s, timeout: 1s, onvif: false}\n"
                         "store: {path: state.db}\n"
                         "gb28181: {enabled: true, listen: '127.0.0.1:0', password_file: gbpw,"
                         f" peers: {{'{PLATFORM}': {{name: 电信云}}}}, transport: udp}}\n")
        proc = Proc(cfg)
        try:
            ids = [f"4116280000132100{i:04d}" for i in range(4)]

            def online() -> bool:
                doc = json.loads(get(proc.base + "/api/channels?state=online")[1])
                return bool(doc["total"] == 4)

            poll("every channel online over RTSP", online)
            sim = SimPlatform(PLATFORM, "gb-daemon-pw", gb_listen(proc),
                              channels=[SimChannel(cid, status="OFF") for cid in ids])

            def listed() -> dict[str, object] | None:
                doc = json.loads(get(proc.base + "/api/platforms")[1])
                ps = doc["platforms"]
                return ps[0] if ps and ps[0]["catalog"]["channels"] == 4 else None

            async def register() -> dict[str, object]:
                await sim.start()
                try:
                    assert await sim.register() == 200
                    assert await sim.keepalive() == 200
                    # the platform stays up to answer the catalog query, polled meanwhile
                    return await asyncio.to_thread(poll, "the platform and its catalog",
                                                   listed)
                finally:
                    await sim.close()

            p = asyncio.run(register())
            assert p["name"] == "电信云" and p["up"] is True and p["channels"] == 4
            assert p["online"] == 4  # DESCRIBE, fresher and deeper, beats the platform's OFF
            code, metrics = get(proc.base + "/metrics")
            assert code == 200 and f'camwatch_gb_platform_up{{platform="{PLATFORM}"}} 1' in metrics
            proc.p.send_signal(signal.SIGTERM)
            assert proc.p.wait(timeout=10) == 0
            assert "gb-daemon-pw" not in proc.stderr_path.read_text("utf-8")
        finally:
            if proc.p.poll() is None:
                proc.p.kill()
                proc.p.wait()
            proc.stderr.close()
