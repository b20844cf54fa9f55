"""What a reload may and may not do to a running daemon, and one daemon per store: the real
``camwatch run`` in a process against simulated cameras (issue 16 items 6, 8 and 9)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.test_daemon import Proc, daemon, get, poll

__all__ = ["daemon"]  # the fixture, imported for this module


def reloads(proc: Proc, result: str) -> int:
    text = get(proc.base + "/metrics")[1]
    line = next(ln for ln in text.splitlines()
                if ln.startswith(f'camwatch_config_reloads_total{{result="{result}"}}'))
    return int(float(line.rpartition(" ")[2]))


def channels(proc: Proc) -> int:
    return int(json.loads(get(proc.base + "/api/status")[1])["channels"])


def test_a_second_daemon_on_the_same_store_is_refused(daemon: tuple[Proc, object, Path]
                                                      ) -> None:
    proc, _fleet, cfg = daemon
    second = subprocess.run(
        [sys.executable, "-m", "camwatch", "run", "-c", str(cfg), "--listen", "127.0.0.1:0",
         "--allow-root"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert "another camwatch is running on this store" in second.stderr
    assert f"pid {proc.p.pid}" in second.stderr  # names the holder
    assert proc.p.poll() is None and get(proc.base + "/healthz")[0] == 200


def test_a_reload_that_needs_a_restart_is_refused_and_says_why(
        daemon: tuple[Proc, object, Path]) -> None:
    proc, _fleet, cfg = daemon
    poll("listening", lambda: channels(proc) == 10)
    good = cfg.read_text("utf-8")
    cfg.write_text(good.replace("store: {path: state.db}", "store: {path: other.db}"),
                   encoding="utf-8")
    proc.p.send_signal(signal.SIGHUP)
    poll("a refused reload", lambda: reloads(proc, "failed") == 1)
    refused = [e for e in proc.log() if str(e.get("event", "")).startswith(
        "reload refused: these settings need a restart")]
    assert refused and refused[0]["keys"] == ["store"]
    assert reloads(proc, "ok") == 0  # (a refusal is counted before the failed one shows)
    assert not (cfg.parent / "other.db").exists()


def test_dropping_most_channels_waits_for_a_second_sighup(
        daemon: tuple[Proc, object, Path]) -> None:
    proc, _fleet, cfg = daemon
    poll("listening", lambda: channels(proc) == 10)
    inventory = cfg.parent / "inv.csv"
    full = inventory.read_text("utf-8")
    lines = full.splitlines()
    inventory.write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")  # 3 of 10 left
    # the file watcher (or a SIGHUP) reads it: refused, the 10 channels go on
    proc.p.send_signal(signal.SIGHUP)
    poll("a refused drop", lambda: reloads(proc, "failed") >= 1)
    assert channels(proc) == 10
    assert any(e.get("event", "").startswith("reload refused: it would drop")
               and e.get("dropped") == 7 for e in proc.log())
    proc.p.send_signal(signal.SIGHUP)  # the same file again: confirmed
    poll("the confirmed drop", lambda: channels(proc) == 3)
    poll("one good reload counted", lambda: reloads(proc, "ok") == 1)  # /metrics: <= 1 s old


async def test_a_failed_inventory_snapshot_is_reported_and_retried(tmp_path: Path) -> None:
    """16.7: the month's inventory snapshot cannot be written (disk full): the daemon does
    not exit; /healthz's problems say so until a retry succeeds."""
    from camwatch.daemon import Daemon
    from tests.fleet_thread import Row, write_site
    from tests.test_store_faults import Flaky

    cfg = write_site(tmp_path, [Row(f"rtsp://127.0.0.1:{9}/ch{i}") for i in range(3)],
                     "store: {path: state.db}\n")
    d = Daemon(str(cfg), listen="127.0.0.1:0")
    try:
        disk = Flaky(d.writer.store)  # type: ignore[arg-type]
        assert await d.snapshot_inventory() is False
        problems = d.engine.problems()
        assert any("inventory snapshot is not saved" in p and "disk is full" in p
                   for p in problems)
        disk.full = False
        assert await d.snapshot_inventory() is True
        assert not any("inventory snapshot" in p for p in d.engine.problems())
        month = d._snapshot_month
        assert month is not None and len(d.store.inventory_snapshot(month)) == 4
    finally:
        d.close()


def test_camwatch_reload_says_why_and_allow_drop_confirms(
        daemon: tuple[Proc, object, Path]) -> None:
    proc, _fleet, cfg = daemon
    poll("listening", lambda: channels(proc) == 10)
    inventory = cfg.parent / "inv.csv"
    lines = inventory.read_text("utf-8").splitlines()
    inventory.write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")  # 3 of 10 left

    def reload_cli(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "camwatch", "reload", "--url", proc.base,
                               *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)

    refused = reload_cli()
    assert refused.returncode == 1
    assert "refused: reload refused: it would drop more channels" in refused.stderr
    assert "dropped: 7" in refused.stderr and "--allow-drop" in refused.stderr
    assert channels(proc) == 10
    done = reload_cli("--allow-drop")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reloaded: 3 channels"
    assert channels(proc) == 3


def test_the_watcher_does_not_read_a_half_saved_inventory(tmp_path: Path) -> None:
    """16.8: an editor saves the inventory in two steps (the first 3 rows, then all 10). The
    watcher waits until the file has been stable for ``inventory.stable_for``: it never loads
    the half-saved file, and it loads the whole one once."""
    from camwatch.sim.model import Fault
    from tests.fleet_thread import FleetThread
    from tests.test_sweep_cli import write_site

    with FleetThread([Fault.NONE] * 10) as fleet:
        cfg = write_site(tmp_path, fleet.ports,
                         "probing: {interval: 2s, timeout: 1s, per_host_concurrency: 64, "
                         "onvif: false}\nstore: {path: state.db}\n"
                         "inventory: {path: inv.csv, max_drop: 100%, stable_for: 5s}\n")
        text = cfg.read_text("utf-8").replace("inventory: {path: inv.csv}\n", "", 1)
        cfg.write_text(text, encoding="utf-8")
        proc = Proc(cfg)
        try:
            poll("listening", lambda: channels(proc) == 10)
            inventory = cfg.parent / "inv.csv"
            full = inventory.read_text("utf-8")
            lines = full.splitlines()
            inventory.write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")  # half saved
            poll("the watcher sees the change", lambda: any(
                e.get("event") == "inventory file changing; reloading once it is stable"
                for e in proc.log()))
            inventory.write_text(full + "\n", encoding="utf-8")  # the rest, a moment later
            poll("one reload", lambda: [e.get("channels") for e in proc.log()
                                        if e.get("event") == "reloaded"] == [10])
            assert channels(proc) == 10
            assert not [e for e in proc.log() if e.get("event") == "reloaded"
                        and e.get("channels") != 10]
        finally:
            if proc.p.poll() is None:
                proc.p.send_signal(signal.SIGTERM)
                proc.p.wait(timeout=30)
            proc.stderr.close()
