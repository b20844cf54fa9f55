"""The keyframe fetch and the whole sample over real sockets, against hostile streams served by
a small RTSP server made for them (named scenarios). Every one ends as a bounded, classified
``unknown``: never an exception, never a hang past the timeout, no socket left open."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest

from camwatch.model import Quality
from camwatch.probes import ProbeSettings, Target
from camwatch.probes.keyframe import fetch_keyframes
from camwatch.probes.result import Reason
from camwatch.quality.decode import DecodePool
from camwatch.quality.sample import DECODE, SampleSettings, sample
from tests import quality_images as qi
from tests.rtp_packetize import Packetizer, encode, nal_units

FRAMES = [qi.scene(320, 180, shift=i * 2) for i in range(8)]
H264 = encode(FRAMES, "H264")


def _good() -> Iterator[bytes]:
    pk = Packetizer("H264")
    i = 0
    while True:
        yield from pk.access_unit(H264[i % len(H264)], 9000 * i)
        i += 1


def _corrupt() -> Iterator[bytes]:
    pk = Packetizer("H264")
    nals = nal_units(H264[0])
    bad = []
    for n in nals:
        if n[0] & 0x1F == 5:
            b = bytearray(n)
            for j in range(len(b) // 3, len(b) // 3 + 300):
                b[j] ^= 0x5A
            n = bytes(b)
        bad.append(n)
    au = b"".join(b"\x00\x00\x00\x01" + n for n in bad)
    i = 0
    while True:
        yield from pk.access_unit(au, 9000 * i)
        i += 1


def _rtp(seq: int, payload: bytes, ts: int = 1) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, ts, 7) + payload


def _garbage() -> Iterator[bytes]:
    while True:
        yield bytes([0x10]) + os.urandom(199)  # RTP version 0: not RTP


def _p_slices() -> Iterator[bytes]:
    seq = 0
    while True:
        seq += 1
        yield _rtp(seq, bytes([0x41]) + b"\x11" * 1200, ts=seq * 3000)


def _endless_fu() -> Iterator[bytes]:
    yield _rtp(0, bytes([0x7C, 0x85]) + b"\x22" * 1200)
    seq = 0
    while True:
        seq += 1
        yield _rtp(seq, bytes([0x7C, 0x05]) + b"\x22" * 1200)


def _fast_gop() -> Iterator[bytes]:
    """Keyframes with ~6 MB of P-frames between them, sent as fast as they are read."""
    pk = Packetizer("H264")
    p_frame = b"\x00\x00\x00\x01\x41" + b"\x11" * 60_000
    i = 0
    while True:
        yield from pk.access_unit(H264[0], 9000 * i)
        for _ in range(100):
            i += 1
            yield from pk.access_unit(p_frame, 9000 * i)
        i += 1


def _silent() -> Iterator[bytes]:
    return iter(())


SCENARIOS = {"good": ("H264", _good), "corrupt": ("H264", _corrupt),
             "garbage": ("H264", _garbage), "p_only": ("H264", _p_slices),
             "endless_fu": ("H264", _endless_fu), "silent": ("H264", _silent),
             "fast_gop": ("H264", _fast_gop),
             "mjpeg": ("JPEG", _silent)}


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    streaming: asyncio.Task[None] | None = None
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, url, _ = lines[0].split(" ")
            cseq = next(v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
                        if k.lower() == "cseq")
            name = urlsplit(url).path.split("/")[1]
            codec, gen = SCENARIOS[name]
            extra, body = "", b""
            if method == "DESCRIBE":
                pt = "26" if codec == "JPEG" else "96"
                body = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP "
                        f"{pt}\r\na=rtpmap:{pt} {codec}/90000\r\na=control:track1\r\n").encode()
                extra = (f"Content-Base: {url}/\r\nContent-Type: application/sdp\r\n"
                         f"Content-Length: {len(body)}\r\n")
            elif method == "SETUP":
                extra = "Session: 1234\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
            writer.write(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}\r\n".encode() + body)
            if method == "PLAY":
                streaming = asyncio.ensure_future(_stream(writer, gen(), name != "fast_gop"))
            if method == "TEARDOWN":
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        if streaming is not None:
            streaming.cancel()
            await asyncio.gather(streaming, return_exceptions=True)
        writer.close()


async def _stream(writer: asyncio.StreamWriter, packets: Iterator[bytes], paced: bool = True
                  ) -> None:
    n = 0
    try:
        for p in packets:
            writer.write(b"$\x00" + struct.pack("!H", len(p)) + p)
            n += 1
            if n % 20 == 0:
                await writer.drain()
                if paced:  # a camera's pace, roughly: 2,000 packets a second
                    await asyncio.sleep(0.01)
    except ConnectionError:
        pass


@pytest.fixture
async def server() -> AsyncIterator[int]:
    srv = await asyncio.start_server(_serve, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()


def target(port: int, name: str) -> Target:
    return Target("34010000001320000001", "127.0.0.1", f"rtsp://127.0.0.1:{port}/{name}")


FAST = ProbeSettings(timeout_s=3.0)


async def test_a_fast_stream_is_read_as_fast_as_it_comes(server: int) -> None:
    """Between keyframes the socket is read every READ_EVERY_S, but only once a read has
    drained it: ~6 MB of P-frames between two keyframes, sent as fast as they are read, still
    give both keyframes well within the timeout (one read per pause would take ~5 s)."""
    f = await fetch_keyframes(target(server, "fast_gop"), FAST, count=2, max_bytes=64 << 20)
    assert f.result.ok, f.result.detail
    assert len(f.keyframes) == 2


async def test_good_stream_gives_two_keyframes(server: int) -> None:
    f = await fetch_keyframes(target(server, "good"), FAST, count=2)
    assert f.result.ok, f.result.detail
    assert f.result.kind == "keyframe" and f.codec == "H264"
    assert len(f.keyframes) == 2 and f.keyframes[0].rtp_timestamp != f.keyframes[1].rtp_timestamp
    assert {"connect", "describe", "setup", "play", "keyframe"} <= set(f.result.phases)


@pytest.mark.parametrize(("name", "reason", "detail"), [
    ("garbage", Reason.PROTOCOL, "not an RTP packet"),
    ("p_only", Reason.PROTOCOL, "no keyframe within 200000 bytes"),
    ("endless_fu", Reason.PROTOCOL, "fragment that never ends within 200000 bytes"),
    ("silent", Reason.TIMEOUT, "no keyframe within 3 s"),
    ("mjpeg", Reason.NO_MEDIA, "only H264 and H265"),
])
async def test_hostile_streams_are_classified(server: int, name: str, reason: Reason,
                                              detail: str) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    f = await fetch_keyframes(target(server, name), FAST, count=2, max_bytes=200_000)
    assert loop.time() - t0 < FAST.timeout_s + 1.0  # bounded by the timeout, whatever comes
    assert not f.result.ok and f.keyframes == []
    assert f.result.reason is reason
    assert detail in f.result.detail


async def test_samples_of_hostile_streams_are_unknown_and_leak_nothing(server: int) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    pool = DecodePool(1)
    settings = SampleSettings(max_bytes=200_000)
    try:
        good = await sample(target(server, "good"), FAST, settings, pool)
        assert good.quality is Quality.OK, good.faults
        assert good.frames == 2 and good.jpeg is not None
        before = fds()
        for name in ("corrupt", "garbage", "p_only", "endless_fu", "silent", "mjpeg"):
            v = await sample(target(server, name), FAST, settings, pool)
            assert v.quality is Quality.UNKNOWN, name
            assert v.reason is not None and v.faults == () and v.jpeg is None
            if name == "corrupt":
                assert v.reason == DECODE and "does not decode" in v.detail
            assert v.json()["quality"] == "unknown"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while fds() > before:  # the server closes its side a moment later
            assert loop.time() < deadline, f"{fds() - before} file descriptors left open"
            await asyncio.sleep(0.02)
    finally:
        pool.close()
