"""``camwatch run`` as a process: serves /metrics and the API, reloads on SIGHUP (keeping the
old config when the new one is bad), stops on SIGTERM within 10 s with its writes flushed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from camwatch.sim.model import Fault
from camwatch.store import open_store
from tests.conftest import ROOT
from tests.fleet_thread import FleetThread
from tests.test_sweep_cli import write_site


def poll(what: str, fn: Callable[[], Any], seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.05)  # polling interval, not a wait for a fixed event
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # loopback only
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Proc:
    def __init__(self, cfg: Path, wrap: list[str] | None = None) -> None:
        """``wrap``: a command the daemon's command line is appended to (e.g. ``unshare``)."""
        self.stderr_path = cfg.parent / "stderr.log"
        self.stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.p = subprocess.Popen(
            [*(wrap or []), sys.executable, "-m", "camwatch", "run", "-c", str(cfg), "--listen",
             "127.0.0.1:0", *(["--allow-root"] if os.geteuid() == 0 else [])],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.stderr,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.base = poll("the listening line", self._url)

    def log(self) -> list[dict[str, Any]]:
        lines = self.stderr_path.read_text("utf-8").splitlines()
        return [json.loads(x) for x in lines if x.startswith("{")]

    def _url(self) -> str | None:
        for e in self.log():
            if e.get("event") == "listening":
                return str(e["url"]).removesuffix("/metrics")
        assert self.p.poll() is None, self.stderr_path.read_text("utf-8")
        return None


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Proc, FleetThread, Path]]:
    faults = [Fault.NONE] * 8 + [Fault.AUTH_FAIL, Fault.NOT_FOUND]
    with FleetThread(faults) as fleet:
        cfg = write_site(tmp_path, fleet.ports,
                         "probing: {interval: 2s, timeout: 1s, per_host_concurrency: 64, "
                         "onvif: false}\nstates: {fail_threshold: 1}\nstore: {path: state.db}\n")
        proc = Proc(cfg)
        try:
            yield proc, fleet, cfg
        finally:
            if proc.p.poll() is None:
                proc.p.kill()
                proc.p.wait()
            proc.stderr.close()


def test_serves_metrics_api_and_stops_cleanly(daemon: tuple[Proc, FleetThread, Path]) -> None:
    proc, _fleet, cfg = daemon

    def offline() -> dict[str, Any] | None:
        code, body = get(proc.base + "/api/channels?state=offline")
        doc = json.loads(body)
        return doc if code == 200 and doc["total"] == 2 else None

    doc = poll("two offline channels", offline)
    assert {c["reason"] for c in doc["channels"]} == {"auth", "not_found"}
    code, body = get(proc.base + "/api/channels?township=%E7%8E%84%E6%AD%A6%E9%95%87&class=2"
                                 "&limit=2")  # 玄武镇, class 2: channels 5, 7, 9
    page = json.loads(body)
    assert code == 200 and page["total"] == 3 and len(page["channels"]) == 2
    assert {c["township"] for c in page["channels"]} == {"玄武镇"}
    assert get(proc.base + "/api/channels?colour=red")[0] == 400
    code, metrics = get(proc.base + "/metrics")
    assert code == 200
    assert metrics.count("camwatch_channel_up{") == 10
    assert 'camwatch_channels_online{class="1",project="雪亮工程",county="鹿邑县",' \
           'township="城关镇"} 3' in metrics

    def site_class1() -> dict[str, Any] | None:
        rates = json.loads(get(proc.base + "/api/rates")[1])["rates"]
        row = next((r for r in rates if r["scope"] == {} and r["class"] == 1
                    and r["project"] is None), None)
        return row if row and row["connected"] == 5 else None

    site1 = poll("rates of every class-1 channel", site_class1)  # evaluated every second
    assert (site1["online"], site1["target"], site1["meets_target"]) == (5, 0.98, True)
    code, health = get(proc.base + "/healthz")
    assert code == 200 and json.loads(health)["status"] == "ok"

    status = subprocess.run([sys.executable, "-m", "camwatch", "status", "--url", proc.base],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    assert "10 channels  online 8  offline 2" in status.stdout
    assert "prober: healthy" in status.stdout
    assert "最差乡镇" in status.stdout and "auth" in status.stdout

    started = time.monotonic()
    proc.p.send_signal(signal.SIGTERM)
    assert proc.p.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    store = open_store(cfg.parent / "state.db")
    offline_now = {t.channel_id for t in store.transitions() if t.to_state == "offline"}
    assert len(offline_now) == 2
    assert "Sweep-Pw-1" not in proc.stderr_path.read_text("utf-8")


def test_bad_sighup_reload_keeps_running(daemon: tuple[Proc, FleetThread, Path]) -> None:
    proc, fleet, cfg = daemon
    poll("first verdicts", lambda: json.loads(get(proc.base + "/api/channels?state=online")[1])
         ["total"] == 8)
    good = cfg.read_text("utf-8")
    cfg.write_text(good + "probing: {level: nonsense}\n", encoding="utf-8")
    proc.p.send_signal(signal.SIGHUP)
    poll("failed reload metric", lambda: 'camwatch_config_reloads_total{result="failed"} 1'
         in get(proc.base + "/metrics")[1])
    assert any(e.get("event") == "reload rejected, keeping the running config"
               for e in proc.log())
    # still probing with the old config: a channel going down is still seen
    fleet.set_fault(0, Fault.NOT_FOUND)
    poll("channel 0 offline", lambda: json.loads(
        get(proc.base + "/api/channels?state=offline")[1])["total"] == 3)
    cfg.write_text(good, encoding="utf-8")
    proc.p.send_signal(signal.SIGHUP)
    poll("good reload", lambda: 'camwatch_config_reloads_total{result="ok"} 1'
         in get(proc.base + "/metrics")[1])


def test_kill_9_then_restart_loses_nothing_and_repeats_nothing(
        daemon: tuple[Proc, FleetThread, Path]) -> None:
    proc, _fleet, cfg = daemon
    db = cfg.parent / "state.db"

    def committed() -> list[tuple[str, str, str]]:
        store = open_store(db)
        try:
            return [(t.channel_id, t.from_state, t.to_state) for t in store.transitions()]
        finally:
            store.close()

    # wait until every channel's first verdict is committed (another connection sees it)
    before = poll("all first verdicts committed", lambda: (t := committed()) and len(t) >= 10
                  and t)
    proc.p.kill()  # SIGKILL: no chance to flush anything
    proc.p.wait(10)
    after_kill = committed()
    assert after_kill[:len(before)] == before

    proc.stderr.close()
    again = Proc(cfg)
    try:
        def probes() -> int:
            text = get(again.base + "/metrics")[1]
            return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                       if line.startswith("camwatch_probes_total{"))

        # every channel probed at least twice more (two rounds of 10), and the state log
        # did not grow: no "offline" again for the offline, no "online" for the online
        poll("two rounds after the restart", lambda: probes() >= 20)
    finally:
        again.p.send_signal(signal.SIGTERM)  # flushes whatever those rounds produced
        assert again.p.wait(10) == 0
        again.stderr.close()
    assert committed() == after_kill
