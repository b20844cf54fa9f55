"""Our ONVIF probe against a third-party device simulator, ipycam (PyPI), with digest auth.

ipycam always starts WS-Discovery multicast on every interface, so it only ever runs inside a
private network namespace (``unshare -n``, only ``lo`` up) together with the probe: see
``tests/peers/ipycam_check.py``, which also refuses to start outside one.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need

pytestmark = pytest.mark.peer

SCRIPT = Path(__file__).parent / "peers" / "ipycam_check.py"


@pytest.fixture(scope="module")
def ipycam_result() -> dict[str, Any]:
    need(importlib.util.find_spec("ipycam") is not None, "ipycam (pip install ipycam)")
    need(shutil.which("unshare") is not None and shutil.which("ip") is not None,
         "unshare and ip (util-linux, iproute2)")
    last = None
    # as root: a plain net namespace; as a user: a user namespace mapping us to root in it
    for flags in (["-n"], ["-r", "-n"]):
        proc = subprocess.run(["unshare", *flags, "--", sys.executable, str(SCRIPT)],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode == 0:
            return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
        last = proc
    assert last is not None
    need(not (last.returncode in (1, 3) and "unshare" in last.stderr),
         f"a private network namespace ({last.stderr.strip()[-300:]})")
    pytest.fail(f"ipycam check failed (exit {last.returncode}):\n{last.stderr[-3000:]}")


def test_system_date_and_time_and_device_information(ipycam_result: dict[str, Any]) -> None:
    ok = ipycam_result["ok"]
    assert ok["ok"] is True and ok["reason"] is None, ok["detail"]
    assert ok["drift_s"] is not None and abs(ok["drift_s"]) < 2.0  # same host clock
    assert ok["device"]["manufacturer"] and ok["device"]["model"]
    assert {"firmware", "serial"} <= ok["device"].keys()
    # ipycam authenticates GetSystemDateAndTime too: the probe's one retry with a token
    assert ok["auth_always"] is True
    assert ok["phases"] == ["connect", "get_device_information", "get_system_date_and_time"]


def test_wrong_password_is_auth(ipycam_result: dict[str, Any]) -> None:
    wrong = ipycam_result["wrong_password"]
    assert wrong["ok"] is False and wrong["reason"] == "auth"
    assert "ipycam-Pw-7f3k" not in json.dumps(wrong)


def test_stream_uri(ipycam_result: dict[str, Any]) -> None:
    uri = ipycam_result["stream_uri"]
    assert isinstance(uri, str) and uri.startswith("rtsp://127.0.0.1:")
