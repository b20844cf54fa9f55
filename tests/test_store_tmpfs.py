"""``camwatch run`` with its store on a real, small tmpfs (16.1, 16.2, 16.11): the disk fills
while cameras fail, space returns, then the disk fills again while they recover. Through
both, the daemon keeps probing and says what is wrong in ``/healthz``; once the store works
again, every alert that fired reaches the webhook, once per fingerprint with one ``starts_at``.

The tmpfs is mounted in a private mount namespace of the daemon's own (``unshare -m``), so
the test needs root (CI runs as root) and touches nothing outside it. The test fills the
file system and frees it through ``/proc/<pid>/root``, which shows that namespace's mounts.
(A read-only remount of the live store is refused by the kernel while the store's files are
open for writing, so the read-only case stays with the injected faults of test_store_faults.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from camwatch.sim.model import Fault
from tests.conftest import need
from tests.fleet_thread import FleetThread, Row, write_site
from tests.test_daemon import Proc, get, poll
from tests.webhook import WebhookReceiver, running

pytestmark = pytest.mark.peer


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    """A real HTTP webhook receiver on loopback that records every alert it gets."""
    with running(WebhookReceiver()) as h:
        yield h


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system is full."""
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):  # ENOSPC: full
        while True:
            f.write(block)


def _health(proc: Proc) -> dict[str, Any]:
    code, body = get(proc.base + "/healthz")
    doc: dict[str, Any] = json.loads(body)
    doc["code"] = code
    return doc


def _store_problem(proc: Proc) -> dict[str, Any] | None:
    doc = _health(proc)
    return doc if doc["code"] == 503 and any("store" in p for p in doc["problems"]) else None


def test_full_disk_twice_loses_no_alert_and_no_resolution(tmp_path: Path, hook: WebhookReceiver,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    need(os.geteuid() == 0 and shutil.which("unshare") is not None,
         "root with unshare (a tmpfs in a private mount namespace)")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    need(probe.returncode == 0, f"mount namespaces (unshare -m: {probe.stderr!r})")
    monkeypatch.setenv("CW_TEST_HOOK_URL", f"http://127.0.0.1:{hook.port}/hook")
    disk = tmp_path / "disk"
    disk.mkdir()
    with FleetThread([Fault.NONE] * 6) as fleet:
        rows = [Row(f"rtsp://127.0.0.1:{p}/ch") for p in fleet.ports]
        cfg = write_site(tmp_path, rows, f"""
probing: {{interval: 1s, timeout: 500ms, per_host_concurrency: 64, onvif: false}}
states: {{fail_threshold: 1}}
targets: {{min_channels: 2}}
store: {{path: {disk / "state.db"}}}
alerts:
  rules:
    rate_below_target: {{for: 0s, resolve_for: 0s, scopes: [county/township]}}
    mass_outage: {{enabled: false}}
    channel_offline_long: {{enabled: false}}
  default_receivers: [hook]
  receivers:
    hook: {{type: webhook, url_env: CW_TEST_HOOK_URL}}
  delivery: {{backoff_initial: 100ms, backoff_max: 500ms, poll: 200ms}}
""")
        wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                f'mount -t tmpfs -o size=4m cwtest "{disk}" && exec "$@"', "sh"]
        proc = Proc(cfg, wrap=wrap)
        try:
            seen = Path(f"/proc/{proc.p.pid}/root") / str(disk).lstrip("/")
            poll("the store on the daemon's tmpfs", lambda: (seen / "state.db").exists())
            poll("a healthy daemon", lambda: _health(proc)["code"] == 200)

            # the disk fills, then half of 城关镇 fails: 3/6 online, under its target
            _fill(seen / "filler")
            for i in range(3):
                fleet.set_fault(i, Fault.NOT_FOUND)
            full = poll("/healthz to report the full store", lambda: _store_problem(proc))
            assert proc.p.poll() is None  # still running, still probing
            poll("three channels offline, judged while the disk is full", lambda: json.loads(
                get(proc.base + "/api/channels?state=offline")[1])["total"] == 3)
            assert not hook.alerts or all(b["status"] != "firing" for b in hook.alerts), \
                "an alert was sent before its outbox row could be committed"

            # space returns: the alert that fired while the disk was full is delivered
            (seen / "filler").unlink()
            poll("the alert delivered",
                 lambda: any(b["status"] == "firing" for b in hook.alerts))
            poll("/healthz ok again", lambda: _health(proc)["code"] == 200)

            # the disk fills again and the cameras recover meanwhile: the resolution waits
            _fill(seen / "filler")
            for i in range(3):
                fleet.set_fault(i, Fault.NONE)
            again = poll("/healthz to report the full store again", lambda: _store_problem(proc))
            poll("every channel online, judged while the disk is full", lambda: json.loads(
                get(proc.base + "/api/channels?state=online")[1])["total"] == 6)
            assert not any(b["status"] == "resolved" for b in hook.alerts)
            (seen / "filler").unlink()
            poll("the resolution delivered",
                 lambda: any(b["status"] == "resolved" for b in hook.alerts))
            poll("/healthz ok again", lambda: _health(proc)["code"] == 200)

            proc.p.send_signal(signal.SIGTERM)
            assert proc.p.wait(timeout=10) == 0
        finally:
            if proc.p.poll() is None:
                proc.p.kill()
                proc.p.wait()
            proc.stderr.close()
    assert any("store" in p for p in full["problems"]), full
    assert any("store" in p for p in again["problems"]), again
    rate = [b for b in hook.alerts if b["name"] == "rate_below_target"]
    assert [b["status"] for b in rate] == ["firing", "resolved"], rate
    assert len({b["fingerprint"] for b in rate}) == 1
    assert len({b["starts_at"] for b in rate}) == 1
