"""``camwatch simulate`` (camwatch.sim.cli): flags over scenario files, a real run stopped by
SIGTERM, and the fd-limit refusal."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from camwatch.sim import cli
from camwatch.sim.model import Fault

ROOT = Path(__file__).resolve().parent.parent


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_override_the_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("seed: 5\ndead: 0.2\nhung: 0.03\nevents:\n"
                    "  - {at: 5m, for: 20m, township: '411628100', fault: refused}\n",
                    encoding="utf-8")
    config = cli.config_from_args(parse("--scenario", str(path), "--dead", "0.1",
                                        "--flap-period", "2m", "--nvr-channels", "8-16",
                                        "--channels", "99"))
    s = config.scenario
    assert (s.dead, s.hung, s.flap_period_s, s.seed) == (0.1, 0.03, 120, 5)
    assert s.events[0].fault is Fault.REFUSED and s.events[0].township == "411628100"
    assert config.inventory.seed == 5 and config.inventory.connected == 99
    assert config.inventory.nvr_channels == (8, 16)
    assert cli.config_from_args(parse("--scenario", str(path), "--seed", "8")).inventory.seed == 8


def test_bad_flags_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--dead", "1.5"], ["--nvr-channels", "9-3"], ["--flap-period", "soon"]):
        with pytest.raises(SystemExit):
            parse(*argv)
    assert "expected" in capsys.readouterr().err


async def test_fd_limit_refusal_exits_2(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 2048))
    code = await cli.run(parse("--channels", "100000", "--out", str(tmp_path / "o")))
    assert code == 2
    err = capsys.readouterr().err
    assert "file descriptors" in err and "ulimit -n" in err and "LimitNOFILE=" in err
    assert not (tmp_path / "o").exists()


async def test_bad_scenario_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("dead: lots\n", encoding="utf-8")
    assert await cli.run(parse("--scenario", str(path))) == 2
    assert "$.dead: expected a share" in capsys.readouterr().err


async def test_simulate_runs_until_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "camwatch.sim.cli", "--channels", "40", "--rtsp-port", "0",
        "--onvif-port", "0", "--first-host", "127.94.0.1", "--out", str(out), "--dead", "0.1",
        "--seed", "3", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not lines or "Ctrl-C" not in lines[-1]:
                line = await proc.stdout.readline()
                assert line, f"simulate exited early: {lines}"
                lines.append(line.decode())
        text = "".join(lines)
        assert "40 channels" in text and str(out / "inventory.csv") in text
        url = next(w for w in text.split() if w.startswith("http://127.0.0.1:"))
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(
            f"{url}/api/faults", timeout=5).read())
        assert json.loads(body) == {"ok": 36, "refused": 4}
        assert (out / "camwatch.yaml").exists() and (out / "sim-password.txt").exists()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        async with asyncio.timeout(15):
            code = await proc.wait()
    assert code == 0, (await proc.stderr.read()).decode() if proc.stderr else code
    assert time.monotonic() - start < 10


def test_simulate_platforms_register_with_a_daemon_started_later(tmp_path: Path) -> None:
    """``camwatch simulate --gb-channels``: the written config makes camwatch their upper
    platform; the platforms keep trying until ``camwatch run`` answers, then register, and
    the cloud that goes silent takes exactly its channels offline as platform_down."""
    import yaml

    from camwatch.demo import sip_listen
    from camwatch.sim.inventory_gen import InventorySpec, plan_inventory
    from tests.test_daemon import Proc, get, poll

    sip = sip_listen()  # below the ephemeral ports the platforms' own sockets get
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sim_log = open(tmp_path / "sim.log", "wb")  # noqa: SIM115
    sim = subprocess.Popen(
        [sys.executable, "-m", "camwatch.sim.cli", "--channels", "20", "--rtsp-port", "0",
         "--onvif-port", "0", "--first-host", "127.95.0.1", "--out", str(out), "--seed", "4",
         "--gb-channels", "30", "--gb-listen", sip, "--gb-keepalive", "1s", "--gb-down-at",
         "12s"], stdout=sim_log, stderr=subprocess.STDOUT, env=env)
    proc = None
    try:
        poll("the simulator's files", lambda: "Ctrl-C" in (tmp_path / "sim.log").read_text(
            "utf-8"), 30)
        cfg = out / "camwatch.yaml"
        doc = yaml.safe_load(cfg.read_text("utf-8"))
        assert doc["gb28181"]["listen"] == sip and doc["inventory"]["address_required"] is False
        doc["gb28181"]["keepalive_timeout"] = "3s"
        doc["probing"].update(interval="2s", timeout="1s")
        cfg.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        proc = Proc(cfg)  # after the platforms started: they were retrying meanwhile

        def platforms() -> list[dict[str, object]]:
            ps = json.loads(get(proc.base + "/api/platforms")[1])["platforms"]
            return ps if len(ps) == 3 and all(p["catalog"]["at"] for p in ps) else []

        ps = poll("three platforms with their catalogs", platforms, 30)
        plan = plan_inventory(InventorySpec(connected=20, seed=4, first_host="127.95.0.1",
                                            gb_channels=30))
        assert [p["catalog"]["channels"] for p in ps] == [
            20, *(len(c.catalog()) for c in plan.clouds)]
        silent = plan.clouds[-1]
        ids = {r.channel_id for r in silent.rows if r.role in ("listed", "renamed")}

        def down() -> set[str]:
            body = get(proc.base + "/api/channels?reason=platform_down")[1]
            got = {c["id"] for c in json.loads(body)["channels"]}
            return got if len(got) >= len(ids) else set()

        assert poll("the silent cloud's channels platform_down", down, 40) == ids
        secret = (out / "gb-password.txt").read_text("utf-8").strip()
        assert len(secret) > 8 and secret not in proc.stderr_path.read_text("utf-8")
    finally:
        for p in (sim, proc.p if proc else None):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=15)
        sim_log.close()
        if proc is not None:
            proc.stderr.close()
