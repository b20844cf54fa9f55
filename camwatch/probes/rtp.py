"""RTP depacketising of H.264 (RFC 6184) and H.265 (RFC 7798) until one decodable keyframe.

Sans-IO: :meth:`KeyframeAssembler.feed` takes one RTP packet (the payload of an interleaved
``$`` frame) and returns a :class:`Keyframe` once an access unit holding an IDR (H.264) or an
IRAP picture (H.265: BLA, IDR, CRA) is complete and the parameter sets it needs are known (sent
in-band, or taken from the SDP's ``sprop-*`` attributes). The keyframe is an Annex B byte
string (start codes), ready for a decoder.

Packetisations handled: single NAL unit packets, aggregation (STAP-A; H.265 AP) and
fragmentation (FU-A; H.265 FU). STAP-B, MTAP, FU-B and H.265 PACI are rare on cameras and
skipped; an access unit that lost a fragment (a sequence gap) is dropped, never decoded
half-way. Only parameter sets and keyframe slices are kept: the P-frames between keyframes
are looked at (one header) and thrown away.

Bounds: the bytes fed are counted and :class:`RtpError` is raised past ``max_bytes`` (a
keyframe that never comes, an endless FU-A); every length field is checked against the packet
it is in. Written by hand: no maintained Python package depacketises RTP without also
wanting to own the socket (PyAV's RTSP demuxer would, through FFmpeg's own network code, with
no byte bound and no way to classify failures).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final

from camwatch.errors import CamwatchError

__all__ = ["Keyframe", "KeyframeAssembler", "RtpError", "sprop_parameter_sets"]

START: Final = b"\x00\x00\x00\x01"
CODECS: Final = ("H264", "H265")

# H.264 NAL unit types (ITU-T H.264 table 7-1) and RTP payload types (RFC 6184 §5.2)
_H264_IDR, _H264_SPS, _H264_PPS = 5, 7, 8
_STAP_A, _FU_A = 24, 28
# H.265 (ITU-T H.265 table 7-1; RFC 7798 §4.4)
_H265_IRAP = range(16, 22)  # BLA_W_LP .. CRA_NUT
_H265_VPS, _H265_SPS, _H265_PPS = 32, 33, 34
_AP, _FU = 48, 49


class RtpError(CamwatchError):
    """The stream cannot give a keyframe: not RTP, or nothing decodable within the bounds."""


@dataclass(frozen=True, slots=True)
class Keyframe:
    codec: str  # H264 | H265
    data: bytes  # Annex B: parameter sets, then the keyframe's slices
    rtp_timestamp: int
    bytes_read: int  # RTP bytes fed until it was complete


def sprop_parameter_sets(codec: str, fmtp: str) -> list[bytes]:
    """Parameter sets from an SDP ``a=fmtp`` value: H.264 ``sprop-parameter-sets`` (RFC 6184
    §8.1), H.265 ``sprop-vps``/``sprop-sps``/``sprop-pps`` (RFC 7798 §7.1). Bad base64 is
    skipped: in-band ones may still come."""
    wanted = ("sprop-parameter-sets",) if codec == "H264" else \
        ("sprop-vps", "sprop-sps", "sprop-pps")
    found: dict[str, str] = {}
    for part in fmtp.split(";"):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() in wanted:
            found[name.strip().lower()] = value.strip()
    out: list[bytes] = []
    for key in wanted:
        for item in found.get(key, "").split(","):
            if not item:
                continue
            try:
                nal = base64.b64decode(item + "=" * (-len(item) % 4), validate=True)
            except (binascii.Error, ValueError):
                continue
            if nal:
                out.append(nal)
    return out


class KeyframeAssembler:
    """Feed RTP packets of one H.264 or H.265 stream; get :class:`Keyframe` objects out."""

    __slots__ = ("_au_broken", "_au_irap", "_au_ts", "_frag", "_frag_keep", "_last_seq",
                 "_params", "bytes_read", "codec", "keyframes", "max_bytes", "packets")

    def __init__(self, codec: str, max_bytes: int, parameter_sets: list[bytes] | None = None
                 ) -> None:
        codec = codec.upper()
        if codec not in CODECS:
            raise RtpError(f"codec {codec} has no keyframe depacketiser (expected H264 or H265)")
        self.codec = codec
        self.max_bytes = max_bytes
        self.bytes_read = 0
        self.packets = 0
        self.keyframes = 0
        self._params: dict[int, bytes] = {}  # NAL type -> the latest parameter set of it
        for nal in parameter_sets or ():
            self._take_param(nal)
        self._au_ts: int | None = None
        self._au_irap: list[bytes] = []
        self._au_broken = False
        self._frag: bytearray | None = None  # a fragmented NAL being kept
        self._frag_keep = False  # the fragmented NAL in progress is one we keep
        self._last_seq: int | None = None

    @property
    def receiving_keyframe(self) -> bool:
        """Whether an access unit with keyframe slices is in progress (the fetch reads the
        socket without pauses then)."""
        return bool(self._au_irap) or (self._frag is not None and self._frag_keep)

    # -- NAL units --------------------------------------------------------------------------

    def _type(self, nal: bytes | bytearray) -> int:
        return nal[0] & 0x1F if self.codec == "H264" else (nal[0] >> 1) & 0x3F

    def _is_irap(self, t: int) -> bool:
        return t == _H264_IDR if self.codec == "H264" else t in _H265_IRAP

    def _kept(self, t: int) -> bool:
        """A NAL unit of type ``t`` is kept: a keyframe slice or a parameter set."""
        return self._is_irap(t) or self._is_param(t)

    def _is_param(self, t: int) -> bool:
        return t in ((_H264_SPS, _H264_PPS) if self.codec == "H264"
                     else (_H265_VPS, _H265_SPS, _H265_PPS))

    def _needed(self) -> tuple[int, ...]:
        return (_H264_SPS, _H264_PPS) if self.codec == "H264" \
            else (_H265_VPS, _H265_SPS, _H265_PPS)

    def _take_param(self, nal: bytes) -> None:
        if len(nal) >= 2 and self._is_param(self._type(nal)):
            self._params[self._type(nal)] = nal

    def _nal(self, nal: bytes) -> None:
        if not nal:
            return
        t = self._type(nal)
        if self._is_irap(t):
            self._au_irap.append(nal)
        elif self._is_param(t):
            self._take_param(nal)

    # -- access units -----------------------------------------------------------------------

    def _end_au(self) -> Keyframe | None:
        ready = self._au_irap and not self._au_broken and self._frag is None \
            and all(t in self._params for t in self._needed())
        kf = None
        if ready:
            params = [self._params[t] for t in self._needed()]
            data = b"".join(START + n for n in (*params, *self._au_irap))
            kf = Keyframe(self.codec, data, self._au_ts or 0, self.bytes_read)
            self.keyframes += 1
        self._au_irap = []
        self._au_broken = False
        self._frag = None
        self._frag_keep = False
        return kf

    def feed(self, packet: bytes) -> Keyframe | None:
        """One RTP packet in; the keyframe it completed, if any."""
        self.packets += 1
        self.bytes_read += len(packet)
        if self.bytes_read > self.max_bytes:
            what = "an RTP fragment that never ends" if self._frag is not None else \
                "no keyframe"
            raise RtpError(f"{what} within {self.max_bytes} bytes "
                           f"({self.packets} packets, {self.keyframes} keyframes)")
        n = len(packet)
        if n < 12 or packet[0] >> 6 != 2:
            raise RtpError(f"not an RTP packet (starts {packet[:4].hex(' ')})")
        cc = packet[0] & 0x0F
        pos = 12 + 4 * cc
        if packet[0] & 0x10:  # header extension (RFC 3550 §5.3.1)
            if n < pos + 4:
                raise RtpError("RTP header extension beyond the packet")
            pos += 4 + 4 * ((packet[pos + 2] << 8) | packet[pos + 3])
        end = n
        if packet[0] & 0x20:  # padding: the last byte says how much
            end -= packet[-1]
        if pos > end:
            raise RtpError("RTP header or padding longer than the packet")
        marker = bool(packet[1] & 0x80)
        seq = (packet[2] << 8) | packet[3]
        ts = int.from_bytes(packet[4:8], "big")
        kf = None
        if self._au_ts is not None and ts != self._au_ts:
            kf = self._end_au()  # a new timestamp: the previous access unit is over
        self._au_ts = ts
        if self._last_seq is not None and seq != (self._last_seq + 1) & 0xFFFF:
            self._au_broken = True  # lost or reordered: this access unit is not decodable
            self._frag = None
        self._last_seq = seq
        if pos < end and self._skippable(packet, pos, end):
            pass  # a slice we do not keep: its header was enough, no copy of the payload
        elif pos < end:
            payload = packet[pos:end]
            if self.codec == "H264":
                self._h264(payload)
            else:
                self._h265(payload)
        if marker:  # the last packet of an access unit (RFC 6184 §5.1, RFC 7798 §4.1)
            done = self._end_au()
            self._au_ts = None
            return done or kf
        return kf

    def _skippable(self, packet: bytes, pos: int, end: int) -> bool:
        """Whether the payload at ``packet[pos:end]`` is a slice (or a fragment of one) that is
        neither a keyframe nor a parameter set (:meth:`_kept`), with no kept fragment in
        progress: then the NAL header byte(s) are all there is to look at, and a fragment's
        start and end go to :meth:`_fragment` without its bytes. Most packets of a stream are
        these (the P-frames of a GOP, read while waiting for the next keyframe); going
        through :meth:`_h264` / :meth:`_h265` for them cost a payload copy and three calls
        each (~2.8 µs a packet against ~0.8 µs here)."""
        if self._frag is not None and self._frag_keep:
            return False  # a kept fragment in progress takes every middle piece: slow path
        if self.codec == "H264":
            t, fu_at, mask = packet[pos] & 0x1F, pos + 1, 0x1F
            single = 1 <= t <= 23
            fragmented = t == _FU_A
        else:
            if end - pos < 2:
                return True  # _h265 ignores it
            t, fu_at, mask = (packet[pos] >> 1) & 0x3F, pos + 2, 0x3F
            single = t < _AP
            fragmented = t == _FU
        if single:
            return not self._kept(t)
        if not fragmented or fu_at >= end:
            return False
        fu = packet[fu_at]
        if self._kept(fu & mask):
            return False
        self._fragment(bool(fu & 0x80), bool(fu & 0x40), fu & mask, b"", b"")
        return True

    def _aggregate(self, payload: bytes, start: int) -> None:
        i, n = start, len(payload)
        while i + 2 <= n:
            size = (payload[i] << 8) | payload[i + 1]
            i += 2
            if size == 0 or i + size > n:
                self._au_broken = True  # a length beyond the packet: garbage, not a NAL
                return
            self._nal(payload[i:i + size])
            i += size

    def _fragment(self, start: bool, end: bool, t: int, header: bytes, data: bytes) -> None:
        if start:
            keep = self._kept(t)
            # a NAL we do not keep is still tracked (its end is expected), contents dropped
            self._frag = bytearray(header) if keep else bytearray()
            self._frag_keep = keep
        elif self._frag is None:
            self._au_broken = self._au_broken or self._is_irap(t)  # a middle without a start
            return
        if self._frag_keep:
            self._frag += data
        if end:
            frag, self._frag = self._frag, None
            if self._frag_keep and frag is not None:
                self._nal(bytes(frag))

    def _h264(self, p: bytes) -> None:
        t = p[0] & 0x1F
        if 1 <= t <= 23:
            self._nal(p)
        elif t == _STAP_A:
            self._aggregate(p, 1)
        elif t == _FU_A and len(p) >= 2:
            fu = p[1]
            self._fragment(bool(fu & 0x80), bool(fu & 0x40), fu & 0x1F,
                           bytes([(p[0] & 0xE0) | (fu & 0x1F)]), p[2:])

    def _h265(self, p: bytes) -> None:
        if len(p) < 2:
            return
        t = (p[0] >> 1) & 0x3F
        if t < _AP:
            self._nal(p)
        elif t == _AP:
            self._aggregate(p, 2)
        elif t == _FU and len(p) >= 3:
            fu = p[2]
            ft = fu & 0x3F
            self._fragment(bool(fu & 0x80), bool(fu & 0x40), ft,
                           bytes([(p[0] & 0x81) | (ft << 1), p[1]]), p[3:])
