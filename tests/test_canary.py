"""Secrets never leak: a full run with canary passwords (in a credentials file and written
into inventory RTSP URLs), a canary webhook key and signing secret, and every output channel
grepped: check-config, sweep, the daemon's logs at debug level, its API and metrics, the alerts
a webhook receives, every report format, and the store file itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from camwatch.sim.model import Fault
from tests.conftest import ROOT
from tests.fleet_thread import FleetThread, Row
from tests.fleet_thread import write_site as write_site_rows
from tests.test_daemon import get, poll

CAM = "Cam-Canary-5f3e"
HOOK = "Hook-Canary-77aa"
SIG = "Sig-Canary-99bb"
CANARIES = (CAM, HOOK, SIG)
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


class Webhook:
    """A local webhook receiver recording what it is sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.loop = __import__("asyncio").new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Webhook:
        import asyncio

        self.thread.start()

        async def start() -> web.AppRunner:
            app = web.Application()

            async def hook(request: web.Request) -> web.Response:
                self.bodies.append(await request.read())
                return web.json_response({"ok": True})

            app.router.add_post("/hook", hook)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            return runner

        self.runner = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.port = self.runner.addresses[0][1]
        return self

    def __exit__(self, *exc: object) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def write_site(tmp: Path, ports: list[int], hook_port: int) -> Path:
    # every other channel carries the password inline in its RTSP URL, as real sheets do
    rows = [Row(f"rtsp://admin:{CAM}@127.0.0.1:{port}/ch" if i % 2 else
                f"rtsp://127.0.0.1:{port}/ch") for i, port in enumerate(ports)]
    (tmp / "hook-url").write_text(f"http://127.0.0.1:{hook_port}/hook?key={HOOK}\n",
                                  encoding="utf-8")
    (tmp / "hook-secret").write_text(SIG + "\n", encoding="utf-8")
    return write_site_rows(tmp, rows, password=CAM, config="""
probing: {interval: 1s, timeout: 500ms, per_host_concurrency: 64, onvif: false}
states: {fail_threshold: 1}
targets: {min_channels: 2}
store: {path: state.db}
alerts:
  rules:
    rate_below_target: {for: 1s, resolve_for: 1s, scopes: [county/township]}
  default_receivers: [hook]
  receivers:
    hook: {type: webhook, url_file: hook-url, secret_file: hook-secret}
  delivery: {backoff_initial: 100ms, backoff_max: 500ms, poll: 200ms}
""")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, Webhook]]:
    faults = [Fault.NONE] * 4 + [Fault.AUTH_FAIL] * 3 + [Fault.NOT_FOUND]
    with FleetThread(faults) as fleet, Webhook() as hook:
        for d in fleet.devices:
            d.password = CAM
        yield write_site(tmp_path, fleet.ports, hook.port), hook


def run(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "camwatch", *args], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr


def test_no_secret_in_any_output(site: tuple[Path, Webhook], tmp_path: Path) -> None:
    cfg, hook = site
    seen: dict[str, str] = {}
    seen["check-config"] = run("--log-level", "debug", "check-config", "-c", str(cfg))
    seen["sweep --json"] = run("--log-level", "debug", "sweep", "-c", str(cfg), "--json")
    swept = json.loads(seen["sweep --json"])  # the output is still read for secrets below
    assert "auth" in {c["reason"] for c in swept["channels"]}
    seen["sweep"] = run("sweep", "-c", str(cfg))

    # a bad row whose URL carries the password: the error names it without the secret
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("pw", "hook-url", "hook-secret"):
        (bad / name).write_bytes((tmp_path / name).read_bytes())
    (bad / "c.yaml").write_text(cfg.read_text("utf-8"), encoding="utf-8")
    (bad / "inv.csv").write_text(
        (tmp_path / "inv.csv").read_text("utf-8").replace("rtsp://admin:", "http://admin:"),
        encoding="utf-8")
    seen["check-config (bad row)"] = run("check-config", "-c", str(bad / "c.yaml"))
    assert "expected a URL like rtsp://host/path" in seen["check-config (bad row)"]

    log = tmp_path / "daemon.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "camwatch", "--log-level", "debug", "run", "-c", str(cfg),
             "--listen", "127.0.0.1:0", *(["--allow-root"] if os.geteuid() == 0 else [])],
            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
    try:
        def base() -> str | None:
            for line in log.read_text("utf-8").splitlines():
                if '"listening"' in line:
                    return str(json.loads(line)["url"]).removesuffix("/metrics")
            return None

        url = poll("the daemon", base)
        poll("an alert at the webhook", lambda: hook.bodies)
        for path in ("/api/channels", "/api/status", "/api/rates", "/metrics", "/healthz",
                     "/api/channels?state=offline"):
            seen[path] = get(url + path)[1]
        assert '"reason": "auth"' in seen["/api/channels?state=offline"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    seen["daemon log"] = log.read_text("utf-8")
    seen["webhook bodies"] = b"\n".join(hook.bodies).decode()
    assert "rate_below_target" in seen["webhook bodies"]

    for fmt in ("json", "html", "xlsx", "csv"):
        out = tmp_path / f"report-{fmt}"
        seen[f"report {fmt} (console)"] = run("report", "-c", str(cfg), "--month", "2026-11",
                                              "--format", fmt, "-o", str(out))
        files = [out] if out.is_file() else sorted(out.iterdir())
        for f in files:
            if fmt == "xlsx":
                with zipfile.ZipFile(f) as zf:
                    seen[f"report {f.name}"] = b"".join(
                        zf.read(n) for n in zf.namelist()).decode("utf-8", "replace")
            else:
                seen[f"report {f.name}"] = f.read_text("utf-8")
    for f in tmp_path.glob("state.db*"):
        seen[f"store {f.name}"] = f.read_bytes().decode("utf-8", "replace")

    leaks = [(where, c) for where, text in seen.items() for c in CANARIES if c in text]
    assert leaks == [], leaks
    assert len(seen) > 15
