"""Run our ONVIF probe against ipycam (a third-party ONVIF camera simulator from PyPI).

Meant to run as ``unshare -n -- python3 tests/peers/ipycam_check.py`` (or ``unshare -rn``):
ipycam always starts WS-Discovery multicast on every interface, so this script refuses to run
unless its network namespace holds nothing but ``lo``. It brings ``lo`` up, starts ipycam on
127.0.0.1 with WS-Security credentials, probes it with the right and a wrong password, and
prints one JSON object on the last line of stdout for the test to assert on.
Exit codes: 0 done, 3 not in a private namespace, 4 ipycam missing, 5 ipycam did not start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from camwatch.probes import ProbeSettings, Target
from camwatch.probes.onvif import get_stream_uri, probe
from camwatch.secrets import Secret

USER, PASSWORD = "admin", "ipycam-Pw-7f3k"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)  # polling a server that starts in another thread
    return False


def _summary(r: Any) -> dict[str, Any]:
    return {"ok": r.ok, "reason": None if r.reason is None else str(r.reason),
            "drift_s": r.clock_drift_s, "device": r.info.get("device"),
            "auth_always": r.info.get("auth_always", False), "detail": r.detail,
            "phases": sorted(r.phases)}


async def _probe_all(port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/onvif/device_service"
    good = Target("ipycam", "127.0.0.1", onvif_url=url, username=USER, password=Secret(PASSWORD))
    bad = Target("ipycam", "127.0.0.1", onvif_url=url, username=USER,
                 password=Secret("wrong-" + PASSWORD))
    settings = ProbeSettings(timeout_s=10.0)
    ok = await probe(good, settings)
    wrong = await probe(bad, settings)
    uri = await get_stream_uri(good, settings)
    return {"ok": _summary(ok), "wrong_password": _summary(wrong), "stream_uri": uri}


def main() -> int:
    names = sorted(name for _, name in socket.if_nameindex())
    if names != ["lo"]:
        print(f"refusing to start ipycam: interfaces {names}, want only lo "
              "(run me under `unshare -n`)", file=sys.stderr)
        return 3
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    try:
        from ipycam import CameraConfig, IPCamera  # type: ignore[import-untyped]
    except ImportError as exc:
        print(f"ipycam is not installed: {exc}", file=sys.stderr)
        return 4
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config = CameraConfig()
    config.local_ip = "127.0.0.1"
    config.onvif_port = _free_port()
    config.rtsp_port = _free_port()
    config.set_credentials(USER, PASSWORD)
    cam = IPCamera(config)
    cam.start()
    try:
        if not _wait_listening(config.onvif_port, 30.0):
            print("ipycam's ONVIF service never listened", file=sys.stderr)
            return 5
        out = asyncio.run(_probe_all(config.onvif_port))
    finally:
        cam.stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
