"""The H.264/H.265 depacketiser, sans IO: real bitstreams (PyAV's libx264 and libx265) through
a test-side packetiser (``tests/rtp_packetize.py``), and broken packet streams."""

from __future__ import annotations

import base64
import functools
import struct

import numpy as np
import pytest

from camwatch.probes.rtp import KeyframeAssembler, RtpError, sprop_parameter_sets
from camwatch.quality.checks import Thresholds, frozen, to_grey
from camwatch.quality.decode import DecodeError, decode, decode_grey, thumbnail_jpeg
from tests import quality_images as qi
from tests.rtp_packetize import Packetizer, encode, nal_units

SCENE = [qi.scene(320, 180, shift=i * 2) for i in range(6)]


@pytest.fixture(scope="module", params=["H264", "H265"])
def stream(request: pytest.FixtureRequest) -> tuple[str, list[bytes]]:
    codec = str(request.param)
    aus = encode(SCENE, codec)
    pk = Packetizer(codec)
    packets: list[bytes] = []
    for i, au in enumerate(aus):
        packets += pk.access_unit(au, 3000 * i)
    return codec, packets


def test_keyframes_come_out_and_decode(stream: tuple[str, list[bytes]]) -> None:
    codec, packets = stream
    asm = KeyframeAssembler(codec, 10_000_000)
    kfs = [kf for p in packets if (kf := asm.feed(p)) is not None]
    assert len(kfs) == 2  # frames 0 and 4 are keyframes
    assert kfs[0].rtp_timestamp == 0 and kfs[1].rtp_timestamp == 3000 * 4
    pic = decode(kfs[0], 320)
    assert (pic.width, pic.height) == (320, 180)
    # the decoded picture is the scene (H.264/H.265 at ultrafast: within a few levels)
    err = np.abs(pic.frame.rgb.astype(int) - SCENE[0].astype(int)).mean()
    assert err < 12, err


def test_second_picture_is_its_luma_made_as_the_first_ones(
        stream: tuple[str, list[bytes]]) -> None:
    """The freeze check compares the first picture's grey with the second keyframe's luma
    alone: one keyframe decoded both ways gives the same luma (frozen), and the luma is the
    picture's (within the 1-2 levels swscale's gray differs from the BT.601 sum over RGB)."""
    codec, packets = stream
    asm = KeyframeAssembler(codec, 10_000_000)
    kfs = [kf for p in packets if (kf := asm.feed(p)) is not None]
    pic = decode(kfs[0], 320)
    grey = decode_grey(kfs[0], 320)
    assert grey.shape == pic.frame.grey.shape == (180, 320)
    assert np.array_equal(grey, pic.frame.grey) and frozen(pic.frame.grey, grey) == 0
    assert frozen(pic.frame.grey, decode_grey(kfs[1], 320)) > Thresholds().frozen  # it moved
    assert np.abs(grey - to_grey(pic.frame.rgb)).mean() < 3
    jpg = thumbnail_jpeg(pic)
    assert jpg[:2] == b"\xff\xd8" and jpg[-2:] == b"\xff\xd9"


def test_parameter_sets_from_sdp_only(stream: tuple[str, list[bytes]]) -> None:
    codec, packets = stream
    # take the parameter sets out of the stream (an aggregation packet each time) ...
    agg = 24 if codec == "H264" else 48
    kinds = [(p[12] & 0x1F) if codec == "H264" else (p[12] >> 1) & 0x3F for p in packets]
    params = [p for p, k in zip(packets, kinds, strict=True) if k == agg]
    # renumbered, as a camera that never sends them in-band numbers its packets
    stripped = [p[:2] + struct.pack("!H", seq) + p[4:] for seq, p in
                enumerate(p for p, k in zip(packets, kinds, strict=True) if k != agg)]
    asm = KeyframeAssembler(codec, 10_000_000)
    assert all(asm.feed(p) is None for p in stripped)  # no parameter sets: no keyframe
    # ... and give them as the SDP's sprop attributes
    nals: list[bytes] = []
    payload = params[0][12:]
    i = 1 if codec == "H264" else 2
    while i < len(payload):
        (n,) = struct.unpack("!H", payload[i:i + 2])
        nals.append(payload[i + 2:i + 2 + n])
        i += 2 + n
    b64 = [base64.b64encode(n).decode() for n in nals]
    fmtp = (f"packetization-mode=1;sprop-parameter-sets={','.join(b64)}" if codec == "H264"
            else f"sprop-vps={b64[0]};sprop-sps={b64[1]};sprop-pps={b64[2]}")
    asm = KeyframeAssembler(codec, 10_000_000, sprop_parameter_sets(codec, fmtp))
    kfs = [kf for p in stripped if (kf := asm.feed(p)) is not None]
    assert len(kfs) == 2
    decode(kfs[0])


@pytest.mark.parametrize("codec", ["H264", "H265"])
@pytest.mark.parametrize("singles", [False, True])
@pytest.mark.parametrize("drop", [None, 1, 5, 9])
def test_skipped_slices_leave_the_same_keyframes(codec: str, singles: bool,
                                                 drop: int | None) -> None:
    """Packets of slices that are not kept take a short way (their header only): the
    keyframes and what the assembler counts are the same as through the full depacketiser,
    with and without a lost packet, with big slices fragmented or every NAL unit in a packet
    of its own (RTP over RTSP's TCP allows 64 KB)."""
    packets = _packets(codec, singles)
    fed = [p for i, p in enumerate(packets) if i != drop]

    class Full(KeyframeAssembler):
        def _skippable(self, packet: bytes, pos: int, end: int) -> bool:
            return False  # every packet through _h264 / _h265

    fast, full = KeyframeAssembler(codec, 10_000_000), Full(codec, 10_000_000)
    out = [[(kf.data, kf.rtp_timestamp) for p in fed if (kf := asm.feed(p)) is not None]
           for asm in (fast, full)]
    assert out[0] == out[1] and out[0]
    assert (fast.keyframes, fast.packets, fast.bytes_read) == \
        (full.keyframes, full.packets, full.bytes_read)
    probe = KeyframeAssembler(codec, 10_000_000)
    assert sum(probe._skippable(p, 12, len(p)) for p in packets) > 0  # the short way is taken


@functools.cache
def _packets(codec: str, singles: bool) -> list[bytes]:
    pk = Packetizer(codec)
    packets: list[bytes] = []
    for i, au in enumerate(encode(SCENE, codec)):
        if singles:
            nals = nal_units(au)
            packets += [pk._packet(n, 3000 * i, j == len(nals) - 1) for j, n in enumerate(nals)]
        else:
            packets += pk.access_unit(au, 3000 * i)
    return packets


def test_lost_fragment_drops_the_keyframe(stream: tuple[str, list[bytes]]) -> None:
    codec, packets = stream
    asm = KeyframeAssembler(codec, 10_000_000)
    first_frag = next(i for i, p in enumerate(packets)
                      if ((p[12] & 0x1F) == 28 if codec == "H264" else (p[12] >> 1) == 49))
    kfs = [kf for i, p in enumerate(packets)
           if i != first_frag + 1 and (kf := asm.feed(p)) is not None]
    assert len(kfs) == 1 and kfs[0].rtp_timestamp == 3000 * 4  # only the intact one


def test_byte_bound_and_endless_fragment() -> None:
    asm = KeyframeAssembler("H264", 5000)
    head = bytes([0x7C, 0x85])  # FU-A, start, IDR
    mid = bytes([0x7C, 0x05])
    pkt = lambda seq, payload: struct.pack("!BBHII", 0x80, 96, seq, 1, 1) + payload  # noqa: E731
    asm.feed(pkt(0, head + b"\x00" * 1000))
    with pytest.raises(RtpError, match="fragment that never ends within 5000 bytes"):
        for seq in range(1, 100):
            asm.feed(pkt(seq, mid + b"\x00" * 1000))
    asm = KeyframeAssembler("H264", 5000)
    with pytest.raises(RtpError, match="no keyframe within 5000 bytes"):
        for seq in range(100):
            asm.feed(pkt(seq, bytes([0x41]) + b"\x00" * 1000))  # P slices only


@pytest.mark.parametrize("packet", [
    b"", b"\x80\x60", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00",  # short, TLS
    bytes([0x90, 96]) + b"\x00" * 10 + b"\x00\x00\xff\xff",  # extension beyond the packet
    bytes([0xA0, 96]) + b"\x00" * 10 + b"\xff",  # padding longer than the packet
])
def test_garbage_is_an_error(packet: bytes) -> None:
    with pytest.raises(RtpError):
        KeyframeAssembler("H264", 10_000).feed(packet)


@pytest.mark.parametrize("payload", [
    bytes([0x18, 0x00, 0xFF, 0x67]),  # STAP-A whose length runs past the packet
    bytes([0x18]), bytes([0x1C]), bytes([0x1C, 0x05]),  # truncated aggregation / fragments
    bytes([0x19, 0x00]), bytes([0x1A]), bytes([0x1D, 0x85]),  # STAP-B, MTAP, FU-B: skipped
])
def test_odd_payloads_are_survived(payload: bytes) -> None:
    asm = KeyframeAssembler("H264", 10_000)
    assert asm.feed(struct.pack("!BBHII", 0x80, 0xE0, 1, 1, 1) + payload) is None


def test_unsupported_codec_and_bad_sprop() -> None:
    with pytest.raises(RtpError, match="expected H264 or H265"):
        KeyframeAssembler("MJPEG", 10)
    assert sprop_parameter_sets("H264", "sprop-parameter-sets=!!!,Z0IAHg") == \
        [base64.b64decode("Z0IAHg==")]


def test_corrupt_h264_keyframe_is_a_decode_error() -> None:
    aus = encode(SCENE[:1], "H264")
    nals = nal_units(aus[0])
    idr = next(n for n in nals if n[0] & 0x1F == 5)
    bad = bytearray(idr)
    for i in range(len(bad) // 3, len(bad) // 3 + 300):
        bad[i] ^= 0x5A
    from camwatch.probes.rtp import Keyframe
    params = [n for n in nals if n[0] & 0x1F in (7, 8)]
    data = b"".join(b"\x00\x00\x00\x01" + n for n in [*params, bytes(bad)])
    with pytest.raises(DecodeError, match="does not decode"):
        decode(Keyframe("H264", data, 0, len(data)))
    with pytest.raises(DecodeError, match="does not decode"):  # strict for the second too
        decode_grey(Keyframe("H264", data, 0, len(data)))
    with pytest.raises(DecodeError):
        decode(Keyframe("H264", b"\x00\x00\x00\x01\x65" + b"\x00" * 50, 0, 55))


def test_a_kept_decoder_gives_each_keyframe_its_own_picture() -> None:
    """Each pool thread keeps its decoders from one keyframe to the next: the pictures must be
    the ones fresh decoders give, whatever came before (another codec, another size, a corrupt
    keyframe), and a decoder that failed is not used again."""
    from camwatch.probes.rtp import Keyframe
    from camwatch.quality import decode as D

    def keyframes(codec: str, pictures: list[np.ndarray]) -> list[Keyframe]:
        asm = KeyframeAssembler(codec, 10_000_000)
        pk = Packetizer(codec)
        return [kf for i, au in enumerate(encode(pictures, codec))
                for p in pk.access_unit(au, 3000 * i) if (kf := asm.feed(p)) is not None]

    small = keyframes("H264", SCENE)
    other = keyframes("H264", [qi.scene(480, 272, seed=9, shift=i) for i in range(6)])
    hevc = keyframes("H265", SCENE)
    order = [small[0], other[0], hevc[0], small[1], other[1], hevc[1], small[0]]

    def fresh_grey(kf: Keyframe) -> np.ndarray:
        D._DECODERS_OPEN.open.clear()
        return decode(kf, 320).frame.grey

    expected = [fresh_grey(kf) for kf in order]
    D._DECODERS_OPEN.open.clear()
    got = [decode(kf, 320).frame.grey for kf in order]
    for want, have in zip(expected, got, strict=True):
        assert np.array_equal(want, have)
    kept = D._DECODERS_OPEN.open["h264"]
    assert decode(small[1], 320) is not None and D._DECODERS_OPEN.open["h264"] is kept
    # a corrupt keyframe: a DecodeError, its decoder dropped, the next keyframe decodes
    nals = nal_units(encode(SCENE[:1], "H264")[0])
    idr = bytearray(next(n for n in nals if n[0] & 0x1F == 5))
    for i in range(len(idr) // 3, len(idr) // 3 + 300):
        idr[i] ^= 0x5A
    data = b"".join(b"\x00\x00\x00\x01" + n for n in [*nals[:2], bytes(idr)])
    with pytest.raises(DecodeError):
        decode(Keyframe("H264", data, 0, len(data)))
    assert "h264" not in D._DECODERS_OPEN.open
    assert np.array_equal(decode(small[1], 320).frame.grey, expected[3])
