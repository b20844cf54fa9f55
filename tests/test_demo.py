"""``camwatch demo``, the README's main job, end to end: starts the simulated county and the
daemon, sweeps, serves /metrics with channels, and stops cleanly on Ctrl-C (SIGINT); its GB/T
28181 lower platforms register, the ledger reconciliation shows the deliberate mismatches,
and the cloud that stops its keepalives is one mass-outage alert naming it."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openpyxl
import pytest

from camwatch.gb28181.records import coverage, local_time
from camwatch.reports.period import zone
from camwatch.sim.gb_cloud import sim_records
from camwatch.sim.inventory_gen import InventorySpec, plan_inventory
from tests.conftest import ROOT
from tests.test_daemon import get, poll
from tests.test_demo_cli import free_first_host


def test_demo_end_to_end(tmp_path: Path) -> None:
    out_path = tmp_path / "stdout.log"
    with open(out_path, "wb") as out, open(tmp_path / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "camwatch", "demo", "--channels", "150", "--dir",
             str(tmp_path / "demo"), "--listen", "127.0.0.1:0", "--interval", "5s",
             "--quality-interval", "20s",
             "--first-host", free_first_host()],  # not 127.1.0.1: a demo may be running
            cwd=ROOT, stdout=out, stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            def metrics_url() -> str | None:
                m = re.search(r"metrics\s+(http://127\.0\.0\.1:\d+/metrics)",
                              out_path.read_text("utf-8"))
                assert proc.poll() is None, (tmp_path / "stderr.log").read_text("utf-8")
                return m.group(1) if m else None

            url = poll("the demo banner", metrics_url, 60)

            def channels_up() -> int:
                with urllib.request.urlopen(url, timeout=5) as r:  # loopback only
                    n = r.read().decode().count("camwatch_channel_up{")
                return n if n > 100 else 0  # most of the 150 judged

            # the 150 cameras and the 300 channels of the operator clouds (--gb-channels)
            assert poll("per-channel series", channels_up, 60) <= 450

            # the simulated cameras send pictures, a few of them degraded: sampled and found
            def degraded() -> list[dict[str, object]]:
                api = url.replace("/metrics", "/api/channels?quality=degraded")
                with urllib.request.urlopen(api, timeout=5) as r:  # loopback only
                    found: list[dict[str, object]] = json.loads(r.read())["channels"]
                return found

            (bad, *_) = poll("a degraded picture found by the quality lane", degraded, 60)
            assert bad["quality"]["faults"]  # type: ignore[index]
            assert (tmp_path / "demo" / "inventory.csv").exists()
            proc.send_signal(signal.SIGINT)
            started = time.monotonic()
            assert proc.wait(timeout=15) == 0
            assert time.monotonic() - started < 15
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "simulated channels of 鹿邑县" in out_path.read_text("utf-8")


def test_demo_platforms_reconciliation_and_one_outage_alert(tmp_path: Path) -> None:
    """60 cameras (listed by the county platform) and 60 channels through two operator
    clouds; the second cloud goes silent 5 s in for 45 s: the demo prints the three platforms,
    the reconciliation with the planned mismatches, and exactly one mass-outage alert naming
    the cloud (and its end), and its channels are offline as platform_down meanwhile."""
    first = free_first_host()
    plan = plan_inventory(InventorySpec(connected=60, seed=1, first_host=first, gb_channels=60))
    rows = [(c, r) for c in plan.clouds for r in c.rows]
    unlisted = sum(r.role == "unlisted" for _, r in rows)
    stale = sum(r.role == "stale" for _, r in rows)
    renamed = sum(r.role == "renamed" for _, r in rows)
    extra = sum(len(c.extra) for c in plan.clouds)
    assert min(unlisted, stale, renamed, extra) >= 1  # every kind of mismatch is there
    silent = plan.clouds[-1]
    its_channels = {r.channel_id for r in silent.rows if r.role in ("listed", "renamed")}
    # hand count: installed = 60 cameras + the idle installed rows + 60 cloud rows;
    # declared 已上云 = 60 + 60 - stale; measured (in a catalog) = 60 + 60 - unlisted
    idle_installed = sum(r.installed for r in plan.idle)
    installed = 60 + idle_installed + 60
    out_path = tmp_path / "stdout.log"
    with open(out_path, "wb") as out, open(tmp_path / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "camwatch", "demo", "--channels", "60", "--gb-channels",
             "60", "--dir", str(tmp_path / "demo"), "--listen", "127.0.0.1:0", "--interval",
             "5s", "--first-host", first, "--platform-down-at", "5", "--platform-down-for",
             "45", "--outage-at", "600"],
            cwd=ROOT, stdout=out, stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)})

        def text() -> str:
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text("utf-8")
            return out_path.read_text("utf-8")

        try:
            base = poll("the demo banner", lambda: (m := re.search(
                r"platforms\s+(http://127\.0\.0\.1:\d+)/api/platforms", text())) and m.group(1),
                60)
            poll("the reconciliation", lambda: "台账核对：" in text(), 60)
            for name in ("县级视频共享平台", "移动数字乡村云平台", "电信天翼云眼平台"):
                assert f"下级平台 {name}" in text()
            doc = json.loads(get(base + "/api/reconciliation")[1])
            assert (doc["installed"], doc["declared_connected"], doc["measured_connected"]) == (
                installed, 120 - stale, 120 - unlisted)
            assert (doc["missing_count"], doc["not_in_ledger_count"], doc["names_differ_count"],
                    doc["not_connected_in_ledger_count"]) == (unlisted, extra, renamed, stale)
            assert {r["channel"] for r in doc["missing"]} == {
                r.channel_id for _, r in rows if r.role == "unlisted"}
            # 录像完整率: every ledger channel a platform lists was asked its previous day, and
            # the union of what the simulated platforms answered (camwatch.sim.gb_cloud)
            poll("the recording line", lambda: "录像完整率（" in text(), 60)
            rec = json.loads(get(base + "/api/recordings")[1])
            asked = [d.channel_ids for d in plan.devices] + [
                [r.channel_id for _, r in rows if r.role in ("listed", "renamed")]]
            ids = [cid for group in asked for cid in group]
            day = rec["lowest"][0]["day"]
            start, end = f"{day}T00:00:00", (dt.date.fromisoformat(day)
                                             + dt.timedelta(days=1)).isoformat() + "T00:00:00"
            tz = zone("Asia/Shanghai")
            a, b = local_time(start, tz), local_time(end, tz)
            assert a is not None and b is not None
            covered = [coverage([(local_time(x, tz) or 0.0, local_time(y, tz) or 0.0)
                                 for x, y in sim_records(cid, start, end)], a, b) or 0.0
                       for cid in ids]
            assert rec["channels"] == len(ids)
            assert rec["coverage"] == pytest.approx(sum(covered) / len(ids), abs=1e-6)
            line = next(x for x in text().splitlines() if x.startswith("台账核对："))
            assert (f"台账 {100 * (120 - stale) / installed:.2f}%  实测 "
                    f"{100 * (120 - unlisted) / installed:.2f}%") in line

            def down() -> set[str]:
                code, body = get(base + "/api/channels?reason=platform_down&limit=1000")
                ids = {c["id"] for c in json.loads(body)["channels"]} if code == 200 else set()
                return ids if len(ids) >= len(its_channels) else set()

            assert poll("the silent cloud's channels offline", down, 90) == its_channels
            platforms = json.loads(get(base + "/api/platforms")[1])["platforms"]
            assert [p["up"] for p in platforms] == [True, True, False]
            # the bulletin's reconciliation sheets, from the catalogs the daemon stored
            month = dt.datetime.now(zone("Asia/Shanghai")).strftime("%Y-%m")
            report = subprocess.run(
                [sys.executable, "-m", "camwatch", "report", "-c",
                 str(tmp_path / "demo" / "camwatch.yaml"), "--month", month, "-o",
                 str(tmp_path / "r.xlsx")], cwd=ROOT, capture_output=True, text=True,
                timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert report.returncode == 0, report.stderr
            wb = openpyxl.load_workbook(tmp_path / "r.xlsx")
            sheet = [r for r in wb["上云率核对"].iter_rows(values_only=True) if r[0] == "实测"]
            assert sheet[0][1:3] == (120 - unlisted, installed)
            kinds = [r[0] for r in wb["台账核对"].iter_rows(values_only=True)]
            assert kinds.count("点位名称不一致") == renamed
            poll("the alert resolved", lambda: "【已恢复】下级平台" in text(), 90)
            lines = text().splitlines()
            start = next(i for i, x in enumerate(lines) if "心跳超时" in x)
            # from the platform going down: one outage alert and its end, nothing else (not
            # its townships' or villages': the platform explains them)
            alerts = [x for x in lines[start:] if "值班群收到" in x]
            assert len(alerts) == 2 and "【已恢复】" in alerts[1], alerts
            assert f"下级平台 {silent.name}（{silent.id}） 同时离线 {len(its_channels)}/" \
                f"{len(its_channels)} 路" in alerts[0]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
