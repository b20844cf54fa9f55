"""``camwatch sweep --json`` end to end against simulated cameras on loopback."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from camwatch.sim.model import Fault
from tests.conftest import ROOT
from tests.fleet_thread import PASSWORD, FleetThread, Row
from tests.fleet_thread import write_site as write_site_rows


@pytest.fixture
def fleet() -> Iterator[FleetThread]:
    faults = [Fault.NONE] * 7 + [Fault.AUTH_FAIL, Fault.NOT_FOUND, Fault.HANG]
    with FleetThread(faults) as f:
        yield f


def write_site(tmp: Path, ports: list[int], config: str = "") -> Path:
    """Ten channels: 0-4 class 1, 5-9 class 2, alternating between two townships."""
    rows = [Row(f"rtsp://127.0.0.1:{port}/ch", klass=1 if i < 5 else 2,
                township="城关镇" if i % 2 == 0 else "玄武镇") for i, port in enumerate(ports)]
    return write_site_rows(tmp, rows, config or
                           "probing: {timeout: 1s, per_host_concurrency: 64}\n")


def test_sweep_json_contract(fleet: FleetThread, tmp_path: Path) -> None:
    cfg = write_site(tmp_path, fleet.ports)
    out = subprocess.run([sys.executable, "-m", "camwatch", "sweep", "-c", str(cfg), "--json"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("}\n")  # one compact object, one newline
    doc = json.loads(out.stdout)
    by_id = {c["id"]: c for c in doc["channels"]}
    states = [by_id[f"4116280000132100{i:04d}"] for i in range(10)]
    assert [c["state"] for c in states] == ["online"] * 7 + ["offline"] * 3
    assert [c["reason"] for c in states[7:]] == ["auth", "not_found", "timeout"]
    assert states[0]["latency_ms"] is not None and states[0]["class"] == 1
    assert states[0]["county"] == "鹿邑县" and states[0]["operator"] == "移动"
    idle = by_id["41162800001321009999"]
    assert (idle["state"], idle["reason"]) == ("unknown", "not_connected")
    rates = {(json.dumps(r["scope"], ensure_ascii=False), r["class"], r["project"]): r
             for r in doc["rates"]}
    site1 = rates[("{}", 1, None)]
    assert (site1["online"], site1["connected"], site1["target"]) == (5, 5, 0.98)
    assert site1["meets_target"] is True
    site2 = rates[("{}", 2, None)]
    assert (site2["online"], site2["connected"], site2["meets_target"]) == (2, 5, False)
    assert rates[('{"county": "鹿邑县", "township": "城关镇"}', 2, None)]["connected"] == 2
    assert rates[("{}", None, "雪亮工程")]["online"] == 7
    s = doc["summary"]
    assert (s["planned"], s["installed"], s["connected"], s["online"]) == (11, 11, 10, 7)
    assert s["online_rate"] == pytest.approx(0.7)
    assert "Sweep-Pw-1" not in out.stdout + out.stderr


def test_sweep_table_and_missing_secret(fleet: FleetThread, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from camwatch.cli import main

    cfg = write_site(tmp_path, fleet.ports)
    threshold = gc.get_threshold()
    assert main(["sweep", "-c", str(cfg)]) == 0
    assert gc.get_threshold() == threshold  # the sweep's GC tuning is put back
    out = capsys.readouterr().out
    assert "7 online" in out and "在线率 70.00%" in out and "未达标" in out
    (tmp_path / "pw").unlink()
    assert main(["sweep", "-c", str(cfg)]) == 1
    assert "$.credentials.default: cannot read secret file" in capsys.readouterr().err



def test_unresolved_credential_no_channel_uses_is_only_a_warning(
        fleet: FleetThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every RTSP URL carries its own user:pass: the config's ``default`` is not needed, for
    ``sweep`` as for ``run`` (the engine resolves credentials the same way)."""
    from camwatch.cli import main
    from camwatch.config import load_config
    from camwatch.engine import Engine
    from camwatch.inventory import load_inventory
    from camwatch.store import open_store

    rows = [Row(f"rtsp://admin:{PASSWORD}@127.0.0.1:{port}/ch") for port in fleet.ports]
    cfg_path = write_site_rows(tmp_path, rows, "probing: {timeout: 1s}\n"
                                               "store: {path: cw.db}\n")
    (tmp_path / "pw").unlink()
    assert main(["sweep", "-c", str(cfg_path)]) == 0
    captured = capsys.readouterr()
    assert "7 online" in captured.out
    assert "credential_unresolved_unused" in captured.err and "pw" in captured.err
    cfg = load_config(cfg_path)
    store = open_store(cfg.store.path)
    Engine(cfg, load_inventory(cfg.inventory), store)  # what `run` builds: no ConfigError
    store.close()

    # one channel without inline credentials: now the reference is needed, and named
    rows.append(Row(f"rtsp://127.0.0.1:{fleet.ports[0]}/ch"))
    write_site_rows(tmp_path, rows, "probing: {timeout: 1s}\n")
    (tmp_path / "pw").unlink()
    assert main(["sweep", "-c", str(cfg_path)]) == 1
    err = capsys.readouterr().err
    assert "$.credentials.default: cannot read secret file" in err
    assert "(used by 1 connected channel)" in err


@pytest.mark.parametrize(("hosts", "want"), [
    ("", ""),
    ("aaa", "a1 a2 a3"),
    ("aab", "a1 b3 a2"),  # every device's first channel, then every second one
    ("abab", "a1 b2 a3 b4"),
    ("aaaabc", "a1 b5 c6 a2 a3 a4"),  # an NVR's channels do not go first in a block
    ("cbacba", "c1 b2 a3 c4 b5 a6"),  # inventory order within a turn
])
def test_sweep_order_takes_turns_by_device(hosts: str, want: str) -> None:
    """The sweep's workers take channels in this order: with devices taking turns, a worker
    rarely waits on a device's per-host bound while others have channels left."""
    from camwatch.inventory import Channel
    from camwatch.sweep import by_turns

    channels = [Channel(id=f"{h}{i}", host=h) for i, h in enumerate(hosts, 1)]
    assert " ".join(ch.id for ch in by_turns(channels)) == want


async def test_the_runner_reports_a_hung_rtsp_camera_as_the_probe_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner adds no timer around the RTSP probes (they hold the same deadline over
    their whole exchange): a camera that accepts and never answers is a timeout with the
    phase it stopped in, and a probe that raises is still an internal error, not a crash."""
    import socket

    from camwatch.probes import PROBERS, Level, ProbeSettings, Reason, Target
    from camwatch.sweep import SELF_TIMED, ProbeRunner

    assert Level.DESCRIBE in SELF_TIMED
    runner = ProbeRunner(ProbeSettings(timeout_s=1.0), 10, 4)
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()  # the kernel completes the handshake; nobody reads or answers
        port = hung.getsockname()[1]
        target = Target("c1", "127.0.0.1", rtsp_url=f"rtsp://127.0.0.1:{port}/ch")
        r = await runner.run(Level.DESCRIBE, target)
    assert r.reason is Reason.TIMEOUT and not r.ok
    assert r.detail == "options not done within 1 s", r.detail
    assert "connect" in r.phases

    async def broken(target: Target, settings: ProbeSettings) -> object:
        raise RuntimeError("a camwatch bug")

    monkeypatch.setitem(PROBERS, Level.DESCRIBE, broken)
    r = await runner.run(Level.DESCRIBE, target)
    assert r.reason is Reason.INTERNAL and r.detail == "RuntimeError"
