"""``camwatch demo``, the README's main job, end to end: starts the simulated county and the
daemon, sweeps, serves /metrics with channels, and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import ROOT
from tests.test_daemon import poll
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

            assert poll("per-channel series", channels_up, 60) <= 150

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
