"""The RTSP probe against the simulator's RTSP server (one test per named scenario) and against
small scripted peers for camera quirks the simulator does not play. Loopback only."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from unittest import mock

import pytest

from camwatch.probes import ProbeSettings, Target, rtsp
from camwatch.probes.result import ProbeResult, Reason
from camwatch.secrets import Secret
from camwatch.sim.model import Fault, RtspAuth, SimChannel, SimDevice
from camwatch.sim.rtsp_server import MOVED_PREFIX, start_rtsp_server

PATH = "/Streaming/Channels/101"
PASSWORD = "s3cret-Pw"
# A deadline no probe meets only by luck: under CPU contention a healthy loopback probe can
# take well over half a second. Only the tests that wait for the deadline use a short one.
FAST = ProbeSettings(timeout_s=10.0)
DEADLINE = ProbeSettings(timeout_s=0.5)


@dataclass
class Sim:
    device: SimDevice
    server: asyncio.base_events.Server
    port: int

    @property
    def channel(self) -> SimChannel:
        return self.device.channels[PATH]

    def target(self, path: str = PATH, password: str | None = PASSWORD,
               user: str | None = "admin") -> Target:
        return Target(channel_id="34010000001320000001", host="127.0.0.1",
                      rtsp_url=f"rtsp://127.0.0.1:{self.port}{path}", username=user,
                      password=Secret(password) if password is not None else None)


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    device = SimDevice(host="127.0.0.1", rtsp_port=0, onvif_port=0, password=PASSWORD,
                       channels={PATH: SimChannel(id="34010000001320000001", path=PATH)})
    server = await start_rtsp_server(device, "127.0.0.1")
    yield Sim(device, server, server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


def assert_clean(result: ProbeResult) -> None:
    """What every result must satisfy, whatever happened."""
    assert PASSWORD not in result.detail
    assert PASSWORD not in repr(result.info)
    assert "@" not in result.detail
    assert result.latency_s > 0
    assert "connect" in result.phases
    assert all(v >= 0 for v in result.phases.values())


async def eventually(pred: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not pred():
        assert loop.time() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


# -- named scenarios against the simulator ----------------------------------------------------


async def test_ok_describe(sim: Sim) -> None:
    r = await rtsp.probe(sim.target(), FAST)
    assert_clean(r)
    assert r.ok and r.reason is None and r.kind == "describe"
    assert r.info["media"] == [{"type": "video", "codec": "H264",
                                "control": f"rtsp://127.0.0.1:{sim.port}{PATH}/trackID=1"}]
    assert r.info["auth"] == "digest"  # Basic was offered first: Digest preferred
    assert list(r.phases) == ["connect", "options", "describe"]
    assert r.latency_s >= sum(r.phases.values()) * 0.99


async def test_ok_with_audio_and_h265(sim: Sim) -> None:
    sim.channel.audio = True
    sim.channel.codec = "H265"
    r = await rtsp.probe(sim.target(), FAST)
    assert r.ok
    assert [(m["type"], m["codec"]) for m in r.info["media"]] == [("video", "H265"),
                                                                   ("audio", "PCMA")]


async def test_auth_fail(sim: Sim) -> None:
    sim.channel.fault = Fault.AUTH_FAIL
    r = await rtsp.probe(sim.target(), FAST)
    assert_clean(r)
    assert r.reason is Reason.AUTH and not r.ok
    assert "DESCRIBE" in r.detail


async def test_wrong_password(sim: Sim) -> None:
    r = await rtsp.probe(sim.target(password="not-it"), FAST)
    assert_clean(r)
    assert r.reason is Reason.AUTH
    assert "not-it" not in r.detail


async def test_no_credentials_configured(sim: Sim) -> None:
    r = await rtsp.probe(sim.target(user=None, password=None), FAST)
    assert r.reason is Reason.AUTH
    assert "none configured" in r.detail


async def test_not_found(sim: Sim) -> None:
    sim.channel.fault = Fault.NOT_FOUND
    r = await rtsp.probe(sim.target(), FAST)
    assert_clean(r)
    assert r.reason is Reason.NOT_FOUND
    assert "404" in r.detail


async def test_unknown_path_is_not_found(sim: Sim) -> None:
    r = await rtsp.probe(sim.target(path="/Streaming/Channels/999"), FAST)
    assert r.reason is Reason.NOT_FOUND


async def test_no_media(sim: Sim) -> None:
    sim.channel.fault = Fault.NO_MEDIA
    r = await rtsp.probe(sim.target(), FAST)
    assert_clean(r)
    assert r.reason is Reason.NO_MEDIA
    assert [m["type"] for m in r.info["media"]] == ["audio"]


async def test_busy(sim: Sim) -> None:
    sim.channel.fault = Fault.BUSY
    r = await rtsp.probe(sim.target(), FAST)
    assert r.reason is Reason.BUSY
    assert "503" in r.detail


async def test_garbage(sim: Sim) -> None:
    sim.channel.fault = Fault.GARBAGE
    r = await rtsp.probe(sim.target(), FAST)
    assert_clean(r)
    assert r.reason is Reason.PROTOCOL
    assert "TLS" in r.detail
    assert r.latency_s < FAST.timeout_s  # classified at once, not at the deadline


async def test_drip_ends_at_the_deadline(sim: Sim) -> None:
    sim.channel.fault = Fault.DRIP
    settings = ProbeSettings(timeout_s=0.6)
    r = await rtsp.probe(sim.target(), settings)
    assert_clean(r)
    assert r.reason is Reason.TIMEOUT
    assert r.latency_s >= 0.6  # ended by the deadline, not by the drip (which goes on)
    assert "options" in r.phases


async def test_oversized_header_is_cut_early(sim: Sim) -> None:
    sim.channel.fault = Fault.OVERSIZED
    settings = ProbeSettings(timeout_s=10.0, max_header_bytes=8 * 1024)
    r = await rtsp.probe(sim.target(), settings)
    assert_clean(r)
    assert r.reason is Reason.PROTOCOL  # cut at the limit, not left to the deadline
    assert "header block over 8192 bytes" in r.detail
    assert r.latency_s < settings.timeout_s


async def test_redirect_followed(sim: Sim) -> None:
    sim.channel.fault = Fault.REDIRECT
    r = await rtsp.probe(sim.target(), FAST)
    assert_clean(r)
    assert r.ok
    assert r.info["redirects"] == 1
    assert r.info["url"] == f"rtsp://127.0.0.1:{sim.port}{MOVED_PREFIX}{PATH}"


async def test_reset_mid_reply(sim: Sim) -> None:
    sim.channel.fault = Fault.RESET
    r = await rtsp.probe(sim.target(), FAST)
    assert_clean(r)
    assert r.reason is Reason.PROTOCOL
    assert r.latency_s < FAST.timeout_s


async def test_hang(sim: Sim) -> None:
    sim.channel.fault = Fault.HANG
    r = await rtsp.probe(sim.target(), DEADLINE)
    assert_clean(r)
    assert r.reason is Reason.TIMEOUT
    assert "options" in r.detail
    assert r.phases["options"] >= DEADLINE.timeout_s * 0.9


async def test_device_fault_wins_over_channel(sim: Sim) -> None:
    sim.device.fault = Fault.BUSY
    assert (await rtsp.probe(sim.target(), FAST)).reason is Reason.BUSY
    sim.device.fault = Fault.NONE  # read live: the next probe sees it
    assert (await rtsp.probe(sim.target(), FAST)).ok


async def test_stream_ok(sim: Sim) -> None:
    r = await rtsp.probe_stream(sim.target(), FAST)
    assert_clean(r)
    assert r.ok and r.kind == "stream"
    assert list(r.phases) == ["connect", "options", "describe", "setup", "play", "first_packet"]


async def test_stream_no_rtp(sim: Sim) -> None:
    sim.channel.fault = Fault.NO_RTP
    assert (await rtsp.probe(sim.target(), FAST)).ok  # DESCRIBE is fine...
    r = await rtsp.probe_stream(sim.target(), DEADLINE)  # ...but nothing ever plays
    assert_clean(r)
    assert r.reason is Reason.TIMEOUT
    assert "first_packet" in r.detail
    assert r.phases["first_packet"] >= DEADLINE.timeout_s * 0.5


@pytest.mark.parametrize(("mode", "scheme"), [(RtspAuth.DIGEST, "digest"),
                                              (RtspAuth.DIGEST_NO_QOP, "digest"),
                                              (RtspAuth.BASIC, "basic"),
                                              (RtspAuth.NONE, "none")])
async def test_auth_variants(sim: Sim, mode: RtspAuth, scheme: str) -> None:
    sim.device.rtsp_auth = mode
    r = await rtsp.probe_stream(sim.target(), FAST)
    assert r.ok, r.detail
    assert r.info["auth"] == scheme
    wrong = await rtsp.probe(sim.target(password="wrong"), FAST)
    assert wrong.ok is (mode is RtspAuth.NONE)


@pytest.mark.parametrize("mode", [RtspAuth.DIGEST, RtspAuth.BASIC])
async def test_a_camera_that_closes_after_its_401_is_asked_again_on_a_new_connection(
        sim: Sim, mode: RtspAuth) -> None:
    """Old firmware closes the connection after each 401: the credentials go on a new
    connection (once), and the camera is online, not a ``protocol`` failure; wrong ones
    are still ``auth``."""
    sim.device.rtsp_auth = mode
    sim.channel.fault = Fault.CLOSE_AFTER_401
    r = await rtsp.probe_stream(sim.target(), FAST)
    assert_clean(r)
    assert r.ok, r.detail
    assert r.info["redials"] == 1 and r.info["auth"] == mode.value
    wrong = await rtsp.probe(sim.target(password="wrong"), FAST)
    assert_clean(wrong)
    assert wrong.reason is Reason.AUTH, wrong.detail
    sim.channel.fault = Fault.NONE  # a camera that keeps the connection needs no second one
    r = await rtsp.probe(sim.target(), FAST)
    assert r.ok and "redials" not in r.info


async def test_stale_nonce_is_renewed(sim: Sim) -> None:
    sim.device.rtsp_nonce_max_uses = 1  # every second authenticated request: stale=true
    r = await rtsp.probe_stream(sim.target(), FAST)
    assert r.ok, r.detail


async def test_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = await rtsp.probe(Target("c", "127.0.0.1", f"rtsp://127.0.0.1:{port}/x"), FAST)
    assert r.reason is Reason.REFUSED
    assert list(r.phases) == ["connect"]


async def test_server_restartable_on_same_port(sim: Sim) -> None:
    sim.server.close()
    await sim.server.wait_closed()
    assert (await rtsp.probe(sim.target(), FAST)).reason is Reason.REFUSED
    sim.server = await start_rtsp_server(sim.device, "127.0.0.1", sim.port)
    assert (await rtsp.probe(sim.target(), FAST)).ok


async def test_internal_error_is_classified_not_raised(sim: Sim) -> None:
    with mock.patch.object(rtsp, "parse_sdp", side_effect=RuntimeError(PASSWORD)):
        r = await rtsp.probe(sim.target(), FAST)
    assert r.reason is Reason.INTERNAL
    assert "RuntimeError" in r.detail
    assert PASSWORD not in r.detail


async def test_no_url() -> None:
    r = await rtsp.probe(Target("c", "127.0.0.1"), FAST)
    assert r.reason is Reason.INTERNAL


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_failing_probes_leak_no_fd_and_no_task(sim: Sim) -> None:
    faults = [Fault.GARBAGE, Fault.RESET, Fault.AUTH_FAIL, Fault.HANG, Fault.OVERSIZED,
              Fault.NOT_FOUND, Fault.NO_RTP]
    for i, f in enumerate(faults):
        path = f"/ch/{i}"
        sim.device.channels[path] = SimChannel(id=str(i), path=path, fault=f)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    targets = [sim.target(f"/ch/{i}") for i in range(len(faults))]
    targets.append(Target("c", "127.0.0.1", f"rtsp://127.0.0.1:{closed_port}/x"))
    settings = ProbeSettings(timeout_s=1.0, max_header_bytes=4096)
    await rtsp.probe_stream(sim.target(), settings)  # warm up lazily opened fds
    before = _fds()
    tasks_before = len(asyncio.all_tasks())
    sem = asyncio.Semaphore(100)

    async def one(i: int) -> ProbeResult:
        async with sem:
            t = targets[i % len(targets)]
            # NO_RTP only fails at the stream level; the rest alternate between the levels.
            fn = rtsp.probe_stream if i % 2 or str(t.rtsp_url).endswith("/ch/6") else rtsp.probe
            return await fn(t, settings)

    results = await asyncio.gather(*(one(i) for i in range(1000)))
    assert not any(r.ok for r in results)
    assert {r.reason for r in results} >= {Reason.PROTOCOL, Reason.AUTH, Reason.TIMEOUT,
                                           Reason.NOT_FOUND, Reason.REFUSED}
    # Both ends live in this process: wait for the server side to see every close too.
    await eventually(lambda: _fds() <= before)
    assert len(asyncio.all_tasks()) == tasks_before


async def test_cancellation_propagates_and_closes(sim: Sim) -> None:
    sim.channel.fault = Fault.HANG
    before = _fds()
    task = asyncio.create_task(rtsp.probe(sim.target(), ProbeSettings(timeout_s=30)))
    await eventually(lambda: _fds() > before)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: _fds() <= before)


# -- scripted peers: quirks of real cameras ---------------------------------------------------

Script = Callable[[str, int], list[bytes]]
CLOSE = b""


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script, heads: list[bytes] | None = None) -> int:
        """Serve ``script``; the request heads received are appended to ``heads``."""
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    if heads is not None:
                        heads.append(head)
                    method = head.split(b" ", 1)[0].decode()
                    m = re.search(rb"CSeq: (\d+)", head)
                    for chunk in script(method, int(m[1]) if m else 0):
                        if chunk == CLOSE:
                            return
                        writer.write(chunk)
                        await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\n"
       b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=1\r\n")


def reply(cseq: int | None, status: str = "200 OK", headers: str = "", body: bytes = b"",
          eol: str = "\r\n") -> bytes:
    head = f"RTSP/1.0 {status}{eol}"
    if cseq is not None:
        head += f"CSeq: {cseq}{eol}"
    for h in headers.split("\n"):
        if h:
            head += h + eol
    if body:
        head += f"Content-Length: {len(body)}{eol}"
    return (head + eol).encode() + body


def target(port: int, path: str = "/live") -> Target:
    return Target("c", "127.0.0.1", f"rtsp://127.0.0.1:{port}{path}", username="admin",
                  password=Secret(PASSWORD))


async def test_reply_split_into_single_bytes(scripted: Callable[[Script], Awaitable[int]]
                                             ) -> None:
    def script(method: str, cseq: int) -> list[bytes]:
        data = reply(cseq, body=SDP if method == "DESCRIBE" else b"")
        return [data[i:i + 1] for i in range(len(data))]

    r = await rtsp.probe(target(await scripted(script)), FAST)
    assert r.ok, r.detail


async def test_bare_lf_missing_cseq_and_content_location(
        scripted: Callable[[Script], Awaitable[int]]) -> None:
    def script(method: str, cseq: int) -> list[bytes]:
        if method == "DESCRIBE":
            return [reply(None, headers="Content-Location: rtsp://127.0.0.1/base/", body=SDP,
                          eol="\n")]
        return [reply(None, eol="\n")]

    r = await rtsp.probe(target(await scripted(script)), FAST)
    assert r.ok, r.detail
    assert r.info["media"][0]["control"] == "rtsp://127.0.0.1/base/trackID=1"


async def test_stale_duplicate_reply_is_skipped(
        scripted: Callable[[Script], Awaitable[int]]) -> None:
    def script(method: str, cseq: int) -> list[bytes]:
        if method == "DESCRIBE":  # a late copy of OPTIONS' reply comes first
            return [reply(cseq - 1), reply(cseq, body=SDP)]
        return [reply(cseq)]

    r = await rtsp.probe(target(await scripted(script)), FAST)
    assert r.ok, r.detail


async def test_rtp_before_play_reply_and_absolute_control(
        scripted: Callable[[Script], Awaitable[int]]) -> None:
    rtp = b"$\x00\x00\x0c" + b"\x80\x60" + b"\x00" * 10
    rtcp = b"$\x01\x00\x04abcd"

    def script(method: str, cseq: int) -> list[bytes]:
        if method == "DESCRIBE":
            sdp = SDP.replace(b"trackID=1", b"rtsp://127.0.0.1:1/elsewhere/track1")
            return [reply(cseq, body=sdp)]
        if method == "SETUP":
            assert_setup_url.append(True)
            return [reply(cseq, headers="Session: ABC;timeout=60\n"
                                        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1")]
        if method == "PLAY":
            return [rtcp + rtp[:3], rtp[3:] + reply(cseq, headers="Session: ABC")]
        return [reply(cseq)]

    assert_setup_url: list[bool] = []
    r = await rtsp.probe_stream(target(await scripted(script)), FAST)
    assert r.ok, r.detail
    assert r.info["media"][0]["control"] == "rtsp://127.0.0.1:1/elsewhere/track1"
    assert r.phases["first_packet"] < 0.05


async def test_rtcp_alone_is_not_a_first_packet(
        scripted: Callable[[Script], Awaitable[int]]) -> None:
    def script(method: str, cseq: int) -> list[bytes]:
        if method == "DESCRIBE":
            return [reply(cseq, body=SDP)]
        if method == "SETUP":
            return [reply(cseq, headers="Session: ABC\nTransport: RTP/AVP/TCP;interleaved=2-3")]
        if method == "PLAY":  # only RTCP (channel 3) and RTP on a channel never set up
            return [reply(cseq) + b"$\x03\x00\x01x" + b"$\x00\x00\x01x"]
        return [reply(cseq)]

    r = await rtsp.probe_stream(target(await scripted(script)), FAST)
    assert r.reason is Reason.TIMEOUT
    assert "first_packet" in r.detail


@pytest.mark.parametrize(("status", "reason"), [("454 Session Not Found", Reason.NOT_FOUND),
                                                ("453 Not Enough Bandwidth", Reason.BUSY),
                                                ("500 Internal Server Error", Reason.PROTOCOL),
                                                ("403 Forbidden", Reason.PROTOCOL)])
async def test_status_mapping(scripted: Callable[[Script], Awaitable[int]], status: str,
                              reason: Reason) -> None:
    def script(method: str, cseq: int) -> list[bytes]:
        return [reply(cseq, status if method == "DESCRIBE" else "200 OK")]

    r = await rtsp.probe(target(await scripted(script)), FAST)
    assert r.reason is reason
    assert status.split()[0] in r.detail


@pytest.mark.parametrize(("location", "why"), [
    ("http://127.0.0.1/x", "non-rtsp"),
    ("rtsp://192.0.2.1/x", "loopback"),  # refused before any packet leaves the host
])
async def test_redirect_refused(scripted: Callable[[Script], Awaitable[int]],
                                location: str, why: str) -> None:
    def script(method: str, cseq: int) -> list[bytes]:
        if method == "DESCRIBE":
            return [reply(cseq, "302 Found", f"Location: {location}")]
        return [reply(cseq)]

    r = await rtsp.probe(target(await scripted(script)), FAST)
    assert r.reason is Reason.PROTOCOL
    assert why in r.detail


async def test_redirect_loop_is_bounded(scripted: Callable[[Script], Awaitable[int]]
                                        ) -> None:
    hops: list[int] = []

    def script(method: str, cseq: int) -> list[bytes]:
        if method == "DESCRIBE":
            hops.append(cseq)
            return [reply(cseq, "301 Moved", f"Location: rtsp://u:{PASSWORD}@127.0.0.1:{port}/x")]
        return [reply(cseq)]

    port = await scripted(script)
    r = await rtsp.probe(target(port), FAST)
    assert r.reason is Reason.PROTOCOL
    assert "more than 3 redirects" in r.detail
    assert len(hops) == 4
    assert PASSWORD not in r.detail


@pytest.mark.parametrize(("data", "reason", "text"), [
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", Reason.PROTOCOL, "HTTP"),
    (CLOSE, Reason.PROTOCOL, "closed"),
])
async def test_non_rtsp_replies(scripted: Callable[[Script], Awaitable[int]], data: bytes,
                                reason: Reason, text: str) -> None:
    r = await rtsp.probe(target(await scripted(lambda m, c: [data])), FAST)
    assert r.reason is reason
    assert text in r.detail


async def test_sdp_over_the_limit(scripted: Callable[[Script], Awaitable[int]]) -> None:
    big = SDP + b"a=x-pad:" + b"y" * 5000 + b"\r\n"

    def script(method: str, cseq: int) -> list[bytes]:
        return [reply(cseq, body=big if method == "DESCRIBE" else b"")]

    r = await rtsp.probe(target(await scripted(script)), ProbeSettings(timeout_s=10.0,
                                                                        max_sdp_bytes=4096))
    assert r.reason is Reason.PROTOCOL
    assert "over 4096" in r.detail


async def test_unsupported_challenge_only(scripted: Callable[[Script], Awaitable[int]]
                                          ) -> None:
    def script(method: str, cseq: int) -> list[bytes]:
        return [reply(cseq, "401 Unauthorized", 'WWW-Authenticate: Negotiate abc\n'
                                                'WWW-Authenticate: Digest realm="r", nonce="n",'
                                                ' algorithm=SHA-512-256')]

    r = await rtsp.probe(target(await scripted(script)), FAST)
    assert r.reason is Reason.AUTH
    assert "no supported challenge" in r.detail


def test_digest_header() -> None:
    """The Authorization we compute carries what RFC 2617 wants (checked apart from the
    simulator, which shares no code with the client)."""
    # One header carrying two challenges, Basic first; Digest with opaque and a qop list.
    chal = ('Basic realm="cam", Digest realm="cam", nonce="abc", '
            'qop="auth-int,auth", opaque="op\\"q"')
    picked = rtsp._pick(rtsp.parse_challenges([chal]))
    assert picked is not None and picked.scheme == "digest"
    auth = rtsp._Auth("admin", PASSWORD, picked)
    header = auth.header("DESCRIBE", "rtsp://127.0.0.1/live")
    assert header.startswith('Digest username="admin", realm="cam", nonce="abc", '
                             'uri="rtsp://127.0.0.1/live", response="')
    assert "qop=auth, nc=00000001" in header
    assert 'opaque="op\\"q"' in header
    assert "nc=00000002" in auth.header("DESCRIBE", "rtsp://127.0.0.1/live")
    assert PASSWORD not in header


def test_each_digest_answer_has_its_own_client_nonce() -> None:
    """With qop=auth the response is computed over our cnonce (RFC 2617 3.2.2): a fresh
    16-hex-digit one per probe, and the response checks out with it."""
    ch = rtsp.Challenge("digest", {"realm": "r", "nonce": "n", "qop": "auth"})
    seen = set()
    for _ in range(100):
        header = rtsp._Auth("u", "p", ch).header("OPTIONS", "*")
        cnonce = re.search(r'cnonce="([0-9a-f]{16})"', header)
        assert cnonce is not None, header
        seen.add(cnonce[1])
        ha1 = hashlib.md5(b"u:r:p").hexdigest()
        ha2 = hashlib.md5(b"OPTIONS:*").hexdigest()
        want = hashlib.md5(f"{ha1}:n:00000001:{cnonce[1]}:auth:{ha2}".encode()).hexdigest()
        assert f'response="{want}"' in header
    assert len(seen) == 100


def test_digest_without_qop_matches_rfc2069() -> None:
    ch = rtsp.Challenge("digest", {"realm": "r", "nonce": "n"})
    header = rtsp._Auth("u", "p", ch).header("OPTIONS", "*")
    ha1 = hashlib.md5(b"u:r:p").hexdigest()
    ha2 = hashlib.md5(b"OPTIONS:*").hexdigest()
    want = hashlib.md5(f"{ha1}:n:{ha2}".encode()).hexdigest()
    assert f'response="{want}"' in header
    assert "qop" not in header and "nc=" not in header


async def test_password_echoed_by_a_basic_camera_is_redacted(
        scripted: Callable[[Script], Awaitable[int]]) -> None:
    answered: list[bool] = []

    def script(method: str, cseq: int) -> list[bytes]:
        if method == "DESCRIBE" and not answered:
            answered.append(True)
            return [reply(cseq, "401 Unauthorized", 'WWW-Authenticate: Basic realm="r"')]
        if method == "DESCRIBE":  # a hostile or buggy camera echoes what it received
            return [reply(cseq, f"403 Forbidden for admin:{PASSWORD}",
                          f"Server: cam {PASSWORD}")]
        return [reply(cseq)]

    r = await rtsp.probe(target(await scripted(script)), FAST)
    assert r.reason is Reason.PROTOCOL
    assert "403 Forbidden" in r.detail
    assert PASSWORD not in r.detail


@pytest.mark.parametrize(("challenge", "leak"), [
    ('Basic realm="r"', "YWRtaW46czNjcmV0LVB3"),  # base64("admin:s3cret-Pw")
    ('Digest realm="r", nonce="n1"', 'username="admin"'),
])
@pytest.mark.parametrize("where", ["reason", "status_line"])
async def test_echoed_authorization_header_is_redacted(
        scripted: Callable[..., Awaitable[int]], challenge: str, leak: str,
        where: str) -> None:
    """A camera that puts the Authorization header it received into its reply: the encoded
    credential (Basic token, Digest username) must not reach ``detail`` (and so the store)."""
    heads: list[bytes] = []

    def script(method: str, cseq: int) -> list[bytes]:
        if method != "DESCRIBE":
            return [reply(cseq)]
        auth = re.search(rb"Authorization: ([^\r]*)", heads[-1])
        if auth is None:
            return [reply(cseq, "401 Unauthorized", f"WWW-Authenticate: {challenge}")]
        echoed = auth[1].decode()
        if where == "reason":
            return [reply(cseq, f"403 {echoed}")]
        return [f"RTSP/1.0 4O3 {echoed}\r\nCSeq: {cseq}\r\n\r\n".encode()]  # a bad status

    r = await rtsp.probe(target(await scripted(script, heads)), FAST)
    assert r.reason is Reason.PROTOCOL
    assert leak in heads[-1].decode()  # the camera did receive it ...
    assert leak not in r.detail and PASSWORD not in r.detail  # ... and we do not keep it
    assert "******" in r.detail


def test_under_uvloop() -> None:
    """Production runs on uvloop: its transports differ from asyncio's in small ways."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[Reason | None]:
        device = SimDevice(host="127.0.0.1", rtsp_port=0, onvif_port=0, password=PASSWORD,
                           channels={PATH: SimChannel(id="1", path=PATH)})
        server = await start_rtsp_server(device, "127.0.0.1")
        sim = Sim(device, server, server.sockets[0].getsockname()[1])
        out: list[Reason | None] = []
        try:
            for fault in (Fault.NONE, Fault.GARBAGE, Fault.RESET, Fault.OVERSIZED, Fault.HANG,
                          Fault.REDIRECT):
                sim.channel.fault = fault
                deadline = 0.3 if fault is Fault.HANG else 10.0  # only the hang waits for it
                out.append((await rtsp.probe_stream(sim.target(),
                                                    ProbeSettings(timeout_s=deadline))).reason)
        finally:
            server.close()
        return out

    assert uvloop.run(main()) == [None, Reason.PROTOCOL, Reason.PROTOCOL, Reason.PROTOCOL,
                                  Reason.TIMEOUT, None]


@pytest.mark.parametrize(("host", "ok"), [("127.0.0.1", True), ("localhost", False)])
async def test_credentials_follow_a_redirect_only_on_the_same_host(
        scripted: Callable[[Script], Awaitable[int]], host: str, ok: bool) -> None:
    def script(method: str, cseq: int) -> list[bytes]:
        if method != "DESCRIBE":
            return [reply(cseq)]
        if cseq == 2:
            return [reply(cseq, "302 Found", f"Location: rtsp://{host}:{port}/moved")]
        if cseq == 3:
            return [reply(cseq, "401 Unauthorized", 'WWW-Authenticate: Digest realm="r", '
                                                    'nonce="n1"')]
        return [reply(cseq, body=SDP)]  # answered with credentials

    port = await scripted(script)
    r = await rtsp.probe(target(port), FAST)
    if ok:
        assert r.ok and r.info["auth"] == "digest" and r.info["redirects"] == 1
    else:
        assert r.reason is Reason.AUTH
        assert "redirected host localhost asks for credentials; not sent" in r.detail
