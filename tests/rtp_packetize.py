"""A test-side RTP packetiser for H.264 (RFC 6184) and H.265 (RFC 7798): Annex B bitstreams
in, RTP packets out, using every packetisation the depacketiser must read (parameter sets in
one aggregation packet, big NAL units fragmented, small ones single). Written separately from
``camwatch.probes.rtp`` so that one misreading of the RFCs cannot hide itself on both sides."""

from __future__ import annotations

import re
import struct

import numpy as np
import numpy.typing as npt

from camwatch.sim import pictures

MTU = 1400


def nal_units(annexb: bytes) -> list[bytes]:
    parts = re.split(b"\\x00\\x00\\x01", annexb)
    return [p.rstrip(b"\x00") for p in parts if p.rstrip(b"\x00")]


def encode(frames: list[npt.NDArray[np.uint8]], codec: str = "H264") -> list[bytes]:
    """Annex B access units of ``frames`` (RGB) from PyAV's libx264 / libx265, every 4th an
    IDR (the simulator's encoder: the packetiser, not the encoder, is what must be separate)."""
    return list(pictures.encode(frames, codec, gop=4, fps=10))


class Packetizer:
    def __init__(self, codec: str, pt: int = 96, seq: int = 65530) -> None:
        self.codec = codec
        self.pt = pt
        self.seq = seq  # wraps around 65535 within the first access unit

    def _packet(self, payload: bytes, ts: int, marker: bool) -> bytes:
        self.seq = (self.seq + 1) & 0xFFFF
        head = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | self.pt, self.seq, ts,
                           0x11223344)
        return head + payload

    def _is_param(self, nal: bytes) -> bool:
        if self.codec == "H264":
            return nal[0] & 0x1F in (7, 8)
        return (nal[0] >> 1) & 0x3F in (32, 33, 34)

    def access_unit(self, au: bytes, ts: int) -> list[bytes]:
        nals = nal_units(au)
        params = [n for n in nals if self._is_param(n)]
        rest = [n for n in nals if not self._is_param(n)]
        payloads: list[bytes] = []
        if params:  # STAP-A / AP
            agg = b"".join(struct.pack("!H", len(n)) + n for n in params)
            if self.codec == "H264":
                payloads.append(bytes([0x18 | (params[0][0] & 0x60)]) + agg)
            else:
                payloads.append(bytes([48 << 1, 1]) + agg)
        for n in rest:
            if len(n) <= MTU:
                payloads.append(n)
                continue
            if self.codec == "H264":
                ind, t, body, size = (n[0] & 0xE0) | 28, n[0] & 0x1F, n[1:], MTU - 2
                for i in range(0, len(body), size):
                    fu = t | (0x80 if i == 0 else 0) | (0x40 if i + size >= len(body) else 0)
                    payloads.append(bytes([ind, fu]) + body[i:i + size])
            else:
                t = (n[0] >> 1) & 0x3F
                head = bytes([(n[0] & 0x81) | (49 << 1), n[1]])
                body, size = n[2:], MTU - 3
                for i in range(0, len(body), size):
                    fu = t | (0x80 if i == 0 else 0) | (0x40 if i + size >= len(body) else 0)
                    payloads.append(head + bytes([fu]) + body[i:i + size])
        return [self._packet(p, ts, i == len(payloads) - 1) for i, p in enumerate(payloads)]
