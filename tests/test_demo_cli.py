"""``camwatch demo``'s arguments and banner: ``--first-host`` and ``--port`` so a second demo (or
a simulator left running) is not a dead end, every URL the banner prints answers, and its
work folder is gitignored."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_daemon import get, poll

RTSP, ONVIF = 8554, 8080  # the simulator's ports per device address
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_first_host() -> str:
    """A ``127.K.0.1`` whose simulator ports are free now (other demos may be running)."""
    ks = list(range(10, 250))
    random.shuffle(ks)
    for k in ks:
        host = f"127.{k}.0.1"
        if _free(host, RTSP) and _free(host, ONVIF):
            return host
    raise AssertionError("no free 127.K.0.1 for a simulated fleet")


@contextmanager
def held(host: str, port: int) -> Iterator[None]:
    """Something listening on ``host:port``, as a leftover simulator would."""
    with socket.socket() as s:
        s.bind((host, port))
        s.listen()
        yield


def test_a_taken_address_is_refused_with_the_flags_that_would_work(tmp_path: Path) -> None:
    first = free_first_host()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (tmp_path / "camwatch-demo").mkdir()  # the first demo's folder
        with ExitStack() as stack:
            stack.enter_context(held(first, RTSP))
            out = subprocess.run(
                [sys.executable, "-m", "camwatch", "demo", "--first-host", first, "--port",
                 str(port)], capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    err = out.stderr.strip()
    assert f"{first} (ports {RTSP}/{ONVIF}) is taken" in err and f"127.0.0.1:{port} is taken" in err
    m = re.search(r"`camwatch demo --first-host (127\.\d+\.0\.1) --dir camwatch-demo-2 "
                  r"--port (\d+)`$", err)
    assert m, err
    assert m.group(1) != first and _free(m.group(1), RTSP) and _free(m.group(1), ONVIF)
    assert int(m.group(2)) != port and _free("127.0.0.1", int(m.group(2)))
    assert not (tmp_path / "camwatch-demo" / "inventory.csv").exists()  # nothing started


@pytest.mark.parametrize("bad", ["10.0.0.1", "127.0.0.5", "localhost", "127.1.0.0.1"])
def test_first_host_must_be_a_loopback_device_address(bad: str) -> None:
    out = subprocess.run([sys.executable, "-m", "camwatch", "demo", "--first-host", bad],
                         capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=60)
    assert out.returncode == 2
    assert "--first-host" in out.stderr and "127." in out.stderr


@pytest.mark.slow
def test_second_demo_on_its_own_addresses_and_every_banner_url_answers(tmp_path: Path) -> None:
    first = free_first_host()
    out_path = tmp_path / "stdout.log"
    with open(out_path, "wb") as out, open(tmp_path / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "camwatch", "demo", "--channels", "60", "--dir",
             str(tmp_path / "demo"), "--first-host", first, "--port", "0", "--interval", "5s"],
            cwd=ROOT, stdout=out, stderr=err, env=ENV)
        try:
            def banner() -> dict[str, str] | None:
                assert proc.poll() is None, (tmp_path / "stderr.log").read_text("utf-8")
                text = out_path.read_text("utf-8")
                if "SIGHUP" not in text:
                    return None
                return dict(re.findall(r"^  (\w+)\s+(http://\S+)", text, re.M))

            urls = poll("the demo banner", banner, 60)
            assert {"metrics", "health", "status", "rates", "simulator"} <= set(urls), urls
            base = urls["metrics"].removesuffix("/metrics")
            assert urls["health"] == base + "/healthz" and urls["rates"] == base + "/api/rates"
            assert not base.endswith(":9780") and not base.endswith(":0")

            def rates() -> list[object]:
                code, body = get(urls["rates"])
                doc = json.loads(body) if code == 200 else {}
                return [r for r in doc.get("rates", []) if r["connected"]]

            assert poll("rates with judged channels", rates, 60)
            assert get(urls["status"])[0] == 200
            assert get(urls["health"])[0] in (200, 503)  # answers, with a verdict either way
            with urllib.request.urlopen(urls["simulator"], timeout=5) as r:  # loopback only
                devices = json.loads(r.read())
            hosts = sorted(d["host"] for d in devices["devices"])
            assert hosts[0] == first, hosts[:3]
            inventory = (tmp_path / "demo" / "inventory.csv").read_text("utf-8")
            assert f"rtsp://{first}:" in inventory and "rtsp://127.1.0.1:" not in inventory
            text = out_path.read_text("utf-8")
            assert "SIGHUP re-reads camwatch.yaml and the inventory" in text
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_demo_folder_is_gitignored() -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("camwatch-demo/camwatch.db", "camwatch-demo/inventory.csv",
                 "camwatch-sim/camwatch.yaml"):
        out = subprocess.run([git, "check-ignore", "-q", path], cwd=ROOT, timeout=30)
        assert out.returncode == 0, f"{path} is not gitignored"
