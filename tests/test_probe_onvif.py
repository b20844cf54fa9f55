"""The ONVIF probe against the simulator's ONVIF server on 127.0.0.1, one test per scenario."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from camwatch.probes import ProbeSettings, Target, soap
from camwatch.probes import onvif as onvif_probe
from camwatch.probes.onvif import (
    HttpStatusError,
    ProtocolError,
    SoapFault,
    classify,
    get_stream_uri,
    parse_reply,
    probe,
)
from camwatch.probes.result import ProbeResult, Reason
from camwatch.secrets import Secret
from camwatch.sim.model import Fault, SimChannel, SimDevice
from camwatch.sim.onvif_server import OnvifServer, _hostile, start_onvif_server

PASSWORD = "s3cret-Pw!camwatch"
CHANNEL_PATH = "/Streaming/Channels/101"
FAST = ProbeSettings(timeout_s=0.5)


@pytest.fixture
def device() -> SimDevice:
    return SimDevice(host="127.0.0.1", rtsp_port=8554, onvif_port=0, password=PASSWORD,
                     channels={CHANNEL_PATH: SimChannel("34020000001320000001", CHANNEL_PATH)})


@pytest.fixture
async def server(device: SimDevice) -> AsyncIterator[OnvifServer]:
    srv = await start_onvif_server(device, "127.0.0.1")
    try:
        yield srv
    finally:
        await srv.close()


def target(srv: OnvifServer, password: str | None = PASSWORD, user: str | None = "admin") -> Target:
    return Target(channel_id="34020000001320000001", host="127.0.0.1", onvif_url=srv.url,
                  username=user, password=Secret(password) if password is not None else None)


DEFAULT = ProbeSettings()


async def run(t: Target, settings: ProbeSettings = DEFAULT) -> ProbeResult:
    result = await probe(t, settings)
    for secret in (PASSWORD, "wrong-password-xyz"):
        assert secret not in repr(result)  # never in detail, info or anywhere else
    return result


async def test_ok_with_device_info_and_no_drift(server: OnvifServer) -> None:
    r = await run(target(server))
    assert r.ok and r.reason is None and r.kind == "onvif"
    assert r.clock_drift_s is not None and abs(r.clock_drift_s) < 1.0
    assert r.info["device"] == {"manufacturer": "CamwatchSim", "model": "SIM-IPC-2",
                                "firmware": "V5.7.3", "serial": "SIM0000000001",
                                "hardware_id": "camwatch-sim"}
    assert {"connect", "get_system_date_and_time", "get_device_information"} <= r.phases.keys()
    assert r.latency_s >= sum(r.phases.values()) * 0.99


async def test_a_camera_with_local_time_only_is_alive_its_drift_unmeasured(
        server: OnvifServer, device: SimDevice) -> None:
    """Old firmware answers GetSystemDateAndTime with a LocalDateTime and no UTCDateTime:
    the camera is alive (not a ``protocol`` failure: it was called offline before); its
    clock cannot be compared, so no drift; the device information is still read."""
    device.fault = Fault.LOCAL_TIME_ONLY
    r = await run(target(server))
    assert r.ok, r.detail
    assert r.clock_drift_s is None and r.info["clock"] == "local_only"
    assert r.info["device"]["model"] == "SIM-IPC-2"
    device.fault = Fault.NONE
    r = await run(target(server))
    assert r.ok and r.clock_drift_s is not None and "clock" not in r.info


async def test_without_credentials_only_liveness(server: OnvifServer) -> None:
    r = await run(target(server, password=None, user=None))
    assert r.ok and "device" not in r.info and "get_device_information" not in r.phases
    assert r.clock_drift_s is not None


async def test_device_info_off_in_settings(server: OnvifServer, device: SimDevice) -> None:
    device.fault = Fault.AUTH_FAIL  # would fail if GetDeviceInformation were sent
    r = await run(target(server), ProbeSettings(onvif_device_info=False))
    assert r.ok and "get_device_information" not in r.phases


async def test_auth_fail(server: OnvifServer, device: SimDevice) -> None:
    device.fault = Fault.AUTH_FAIL
    r = await run(target(server))
    assert not r.ok and r.reason is Reason.AUTH
    assert "GetDeviceInformation" in r.detail and "401" in r.detail
    assert r.clock_drift_s is not None and abs(r.clock_drift_s) < 1.0  # liveness part worked


async def test_wrong_password_is_auth(server: OnvifServer) -> None:
    r = await run(target(server, password="wrong-password-xyz"))
    assert r.reason is Reason.AUTH and "NotAuthorized" in r.detail


async def test_clock_skew_600s(server: OnvifServer, device: SimDevice) -> None:
    device.fault = Fault.CLOCK_SKEW  # clock_skew_s is 0: the simulator uses 600 s
    r = await run(target(server))
    assert r.clock_drift_s is not None and abs(r.clock_drift_s - 600) <= 1.0
    # the device refuses the token's Created time: that is the clock, not the password
    assert r.reason is Reason.CLOCK_SKEW and re.search(r"clock \+(599|600)\.\d s off", r.detail)


async def test_clock_skew_without_credentials_is_alive(server: OnvifServer,
                                                       device: SimDevice) -> None:
    device.clock_skew_s = -600.0
    r = await run(target(server, password=None, user=None))
    assert r.ok and r.clock_drift_s is not None and abs(r.clock_drift_s + 600) <= 1.0


async def test_small_skew_still_authenticates(server: OnvifServer, device: SimDevice) -> None:
    device.clock_skew_s = 30.0  # inside the device's token window: auth works, drift reported
    r = await run(target(server))
    assert r.ok and r.clock_drift_s is not None and abs(r.clock_drift_s - 30) <= 1.0


async def test_wrong_password_with_small_drift_stays_auth(server: OnvifServer,
                                                          device: SimDevice) -> None:
    device.clock_skew_s = 3.0  # under the 5 s threshold
    r = await run(target(server, password="wrong-password-xyz"))
    assert r.reason is Reason.AUTH


async def test_auth_always_quirk_retries_with_a_token(server: OnvifServer,
                                                      device: SimDevice) -> None:
    device.onvif_auth_always = True
    r = await run(target(server))
    assert r.ok and r.info["auth_always"] is True and abs(r.clock_drift_s or 99) < 1.0
    r = await run(target(server, password=None, user=None))
    assert r.reason is Reason.AUTH


async def test_hang_is_timeout_with_phases(server: OnvifServer, device: SimDevice) -> None:
    device.fault = Fault.HANG
    t0 = time.perf_counter()
    r = await run(target(server), FAST)
    assert r.reason is Reason.TIMEOUT and time.perf_counter() - t0 < 3.0
    assert r.phases["get_system_date_and_time"] >= 0.4 and "connect" in r.phases
    assert "within 0.5 s" in r.detail


@pytest.mark.parametrize("fault", [Fault.GARBAGE, Fault.DRIP, Fault.OVERSIZED, Fault.RESET])
async def test_bad_replies_fail_quickly(server: OnvifServer, device: SimDevice,
                                        fault: Fault) -> None:
    device.fault = fault
    t0 = time.perf_counter()
    r = await run(target(server), FAST)
    assert r.reason in (Reason.PROTOCOL, Reason.TIMEOUT)
    assert time.perf_counter() - t0 < 3.0  # FAST times out at 0.5 s; room for a loaded CI
    expected = Reason.TIMEOUT if fault is Fault.DRIP else Reason.PROTOCOL
    assert r.reason is expected


async def test_oversized_body_has_bounded_memory(server: OnvifServer, device: SimDevice) -> None:
    device.fault = Fault.OVERSIZED
    settings = ProbeSettings(timeout_s=5.0, max_soap_bytes=256 * 1024)
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        r = await run(target(server), settings)
        took = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.reason is Reason.PROTOCOL and "cap" in r.detail
    assert took < 3.0 and peak < 4 * 1024 * 1024  # the timeout is 5 s


async def test_declared_length_over_cap_fails_before_reading() -> None:
    reader = asyncio.StreamReader(limit=64 * 1024)
    reader.feed_data(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n<a>")
    with pytest.raises(ProtocolError, match="over the 1024-byte cap"):
        await soap.read_response(reader, 1024)


async def test_chunked_reply_is_read_and_capped() -> None:
    reader = asyncio.StreamReader(limit=64 * 1024)
    reader.feed_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\n<a>\r\n4\r\n</a>\r\n0\r\n\r\n")
    assert await soap.read_response(reader, 1024) == (200, b"<a></a>", True)
    reader = asyncio.StreamReader(limit=64 * 1024)
    reader.feed_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n")
    with pytest.raises(ProtocolError, match="cap"):
        await soap.read_response(reader, 1024)


@pytest.mark.parametrize(("head", "reusable"), [
    (b"HTTP/1.1 200 OK\r\n", True),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n", False),
    (b"HTTP/1.0 200 OK\r\n", False),  # ipycam's http.server: closes after each reply
    (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n", True),
])
async def test_connection_reuse_follows_http_version(head: bytes, reusable: bool) -> None:
    reader = asyncio.StreamReader(limit=64 * 1024)
    reader.feed_data(head + b"Content-Length: 4\r\n\r\n<a/>")
    assert await soap.read_response(reader, 1024) == (200, b"<a/>", reusable)


async def test_header_block_over_limit_is_protocol() -> None:
    reader = asyncio.StreamReader(limit=1024)
    reader.feed_data(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 4096)
    with pytest.raises(ProtocolError, match="header"):
        await soap.read_response(reader, 1024)


async def test_not_found(server: OnvifServer, device: SimDevice) -> None:
    device.fault = Fault.NOT_FOUND
    r = await run(target(server))
    assert r.reason is Reason.NOT_FOUND and "404" in r.detail


async def test_xxe_reads_no_local_file(server: OnvifServer, device: SimDevice,
                                       tmp_path: Path) -> None:
    canary_text = f"CANARY-{os.getpid()}-{time.time_ns()}"
    canary = tmp_path / "canary.txt"
    canary.write_text(canary_text)
    device.fault, device.xxe_path = Fault.XXE, str(canary)
    opened: list[str] = []
    watching = True

    def hook(event: str, args: tuple[object, ...]) -> None:
        if watching and event == "open" and args and str(args[0]).endswith("canary.txt"):
            opened.append(str(args[0]))

    sys.addaudithook(hook)  # cannot be removed: disarmed with the flag below
    try:
        r = await run(target(server))
        body = _hostile(Fault.XXE, str(canary))
        assert str(canary).encode() in body  # the attack really names the file
        with pytest.raises(ProtocolError, match="hostile XML"):
            parse_reply(body)
    finally:
        watching = False
    assert r.reason is Reason.PROTOCOL and "DTDForbidden" in r.detail
    assert canary_text not in repr(r) and opened == []


async def test_billion_laughs_is_refused_with_bounded_memory(server: OnvifServer,
                                                            device: SimDevice) -> None:
    device.fault = Fault.XML_BOMB
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        r = await run(target(server))
        took = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.reason is Reason.PROTOCOL and "hostile XML" in r.detail
    assert took < 3.0 and peak < 2 * 1024 * 1024  # expanded, it would be ~3 GB of "lol"


async def test_any_dtd_is_refused(server: OnvifServer, device: SimDevice) -> None:
    device.fault = Fault.DTD
    r = await run(target(server))
    assert r.reason is Reason.PROTOCOL and "DTDForbidden" in r.detail


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_refused_port() -> None:
    t = Target("c", "127.0.0.1", onvif_url=f"http://127.0.0.1:{_closed_port()}/onvif/device_service")
    r = await run(t)
    assert r.reason is Reason.REFUSED and "connect" in r.phases


async def test_no_address_is_internal() -> None:
    r = await run(Target("c", "", onvif_url=None))
    assert r.reason is Reason.INTERNAL


async def test_unexpected_exception_is_internal(server: OnvifServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(data: bytes, status: int = 200) -> dict[str, str]:
        raise KeyError("boom")

    monkeypatch.setattr(onvif_probe, "parse_device_information", boom)
    r = await run(target(server))
    assert r.reason is Reason.INTERNAL and "KeyError" in r.detail


async def test_get_stream_uri(server: OnvifServer) -> None:
    uri = await get_stream_uri(target(server), ProbeSettings())
    assert uri == f"rtsp://127.0.0.1:8554{CHANNEL_PATH}"


@pytest.mark.parametrize("fault", [Fault.XXE, Fault.OVERSIZED, Fault.AUTH_FAIL, Fault.HANG])
async def test_get_stream_uri_fails_softly(server: OnvifServer, device: SimDevice,
                                           fault: Fault, tmp_path: Path) -> None:
    device.fault, device.xxe_path = fault, str(tmp_path / "nothing")
    t0 = time.perf_counter()
    assert await get_stream_uri(target(server), ProbeSettings(timeout_s=1.0)) is None
    assert time.perf_counter() - t0 < 3.0


@pytest.mark.parametrize(("exc", "drift", "reason"), [
    (TimeoutError(), None, Reason.TIMEOUT),
    (ConnectionRefusedError(111, "refused"), None, Reason.REFUSED),
    (ConnectionResetError(104, "reset"), None, Reason.PROTOCOL),
    (HttpStatusError(401), None, Reason.AUTH),
    (HttpStatusError(401), 600.0, Reason.CLOCK_SKEW),
    (HttpStatusError(401), 2.0, Reason.AUTH),
    (HttpStatusError(404), None, Reason.NOT_FOUND),
    (HttpStatusError(500), 600.0, Reason.PROTOCOL),
    (SoapFault(400, "Sender", ("NotAuthorized",), "x"), None, Reason.AUTH),
    (SoapFault(500, "Receiver", (), "Sender not authorized"), None, Reason.AUTH),
    (SoapFault(400, "Sender", ("FailedAuthentication",), ""), -30.0, Reason.CLOCK_SKEW),
    (SoapFault(500, "Receiver", ("ActionNotSupported",), "no"), None, Reason.PROTOCOL),
    (ProtocolError("x"), None, Reason.PROTOCOL),
    (asyncio.IncompleteReadError(b"", 10), None, Reason.PROTOCOL),
    (KeyError("x"), None, Reason.INTERNAL),
])
def test_classify(exc: BaseException, drift: float | None, reason: Reason) -> None:
    assert classify(exc, drift_s=drift, skew_threshold_s=5.0) is reason


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_no_fd_or_task_leak_after_300_failing_probes(device: SimDevice) -> None:
    faults = [Fault.HANG, Fault.RESET, Fault.GARBAGE, Fault.OVERSIZED, Fault.AUTH_FAIL,
              Fault.XML_BOMB]
    servers = []
    for f in faults:
        d = SimDevice(host="127.0.0.1", rtsp_port=1, onvif_port=0, password=PASSWORD, fault=f)
        servers.append(await start_onvif_server(d, "127.0.0.1"))
    refused = Target("c", "127.0.0.1",
                     onvif_url=f"http://127.0.0.1:{_closed_port()}/onvif/device_service")
    try:
        tasks_before = len(asyncio.all_tasks())
        fds_before = _open_fds()
        targets = [target(s) for s in servers] + [refused]
        # hang waits out its timeout; the others get time enough even on a loaded machine
        settings = [ProbeSettings(timeout_s=0.3 if f is Fault.HANG else 10.0,
                                  max_soap_bytes=64 * 1024) for f in faults]
        settings.append(settings[-1])
        results = await asyncio.gather(*(probe(targets[i % len(targets)],
                                               settings[i % len(targets)])
                                         for i in range(300)))
        assert not any(r.ok for r in results)
        assert {r.reason for r in results} == {Reason.TIMEOUT, Reason.PROTOCOL, Reason.AUTH,
                                               Reason.REFUSED}
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:  # poll for the closures, bounded by a deadline
            if _open_fds() == fds_before and not any(s.connections for s in servers):
                break
            await asyncio.sleep(0.01)
        assert _open_fds() == fds_before
        assert len(asyncio.all_tasks()) == tasks_before
        # the onvif-zeep-async path too: its sessions and connectors are closed every time
        uris = await asyncio.gather(*(get_stream_uri(targets[i % len(targets)],
                                                     settings[i % len(targets)])
                                      for i in range(21)))
        assert uris == [None] * 21
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if _open_fds() == fds_before and not any(s.connections for s in servers):
                break
            await asyncio.sleep(0.01)
        assert _open_fds() == fds_before
        assert len(asyncio.all_tasks()) == tasks_before
    finally:
        for s in servers:
            await s.close()
