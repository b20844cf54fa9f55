"""Out of file descriptors is camwatch's trouble, not the camera's: every probe says ``local``.

Each case runs in a subprocess whose RLIMIT_NOFILE is lowered and then used up, against a real
listener on 127.0.0.1 (opened before the descriptors ran out), under asyncio and under uvloop
(what production runs on)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

from camwatch.probes.result import Reason
from camwatch.probes.tcp import classify_os_error

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import asyncio, json, os, resource, sys

from camwatch.probes import ProbeSettings, Target, onvif, rtsp, tcp
from camwatch.secrets import Secret

resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))


async def main() -> dict:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = Target("34010000001320000001", "127.0.0.1",
                    rtsp_url=f"rtsp://127.0.0.1:{port}/live",
                    onvif_url=f"http://127.0.0.1:{port}/onvif/device_service",
                    username="admin", password=Secret("pw"))
    settings = ProbeSettings(timeout_s=2.0)
    probes = {"tcp": tcp.probe, "describe": rtsp.probe, "stream": rtsp.probe_stream,
              "onvif": onvif.probe}
    fillers = []
    try:
        while True:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        assert exc.errno == 24, exc  # EMFILE
    out = {}
    for name, probe in probes.items():
        r = await probe(target, settings)
        out[name] = [r.reason.value if r.reason else None, r.detail]
    for fd in fillers:
        os.close(fd)
    r = await tcp.probe(target, settings)  # with descriptors back: the listener is real
    out["tcp_after"] = [r.reason.value if r.reason else None, r.detail]
    server.close()
    return out


if sys.argv[1] == "uvloop":
    import uvloop
    result = uvloop.run(main())
else:
    result = asyncio.run(main())
print(json.dumps(result))
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_out_of_file_descriptors_is_local_for_every_probe(loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, loop], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])  # unconfigured structlog prints above
    for name in ("tcp", "describe", "stream", "onvif"):
        reason, detail = out[name]
        assert reason == Reason.LOCAL.value, (name, out[name])
        assert "Too many open files" in detail, (name, detail)
    assert out["tcp_after"][0] is None  # online again once descriptors are free


@pytest.mark.parametrize(("code", "reason"), [
    (errno.EMFILE, Reason.LOCAL), (errno.ENFILE, Reason.LOCAL), (errno.ENOBUFS, Reason.LOCAL),
    (errno.ENOMEM, Reason.LOCAL), (errno.ECONNREFUSED, Reason.REFUSED),
    (errno.EHOSTUNREACH, Reason.UNREACHABLE), (errno.ENETUNREACH, Reason.UNREACHABLE),
    (errno.ETIMEDOUT, Reason.TIMEOUT), (errno.ECONNRESET, Reason.PROTOCOL),
])
def test_os_error_classification(code: int, reason: Reason) -> None:
    exc = OSError(code, "x")
    if code == errno.ECONNRESET:
        exc = ConnectionResetError(code, "x")
    assert classify_os_error(exc) is reason
