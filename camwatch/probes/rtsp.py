"""RTSP probes: ``describe`` (OPTIONS + DESCRIBE) and ``stream`` (+ SETUP, PLAY, first RTP packet).

Why a client of our own rather than a library: the async RTSP clients available for Python fall
short for a health probe. ``aiortsp`` is LGPL-3, had its last release in 2024, and its reader
ends silently on a wrong password, so "wrong credentials" cannot be told from "no stream";
``aio-rtsp-toolkit`` speaks Digest only (many cameras and old NVRs want Basic) and misreports
authentication failures. A probe needs very little of RTSP (five methods, one TCP interleaved
track, no RTCP, no decoding) but needs every failure classified, every read bounded in bytes
and time, and a small CPU cost per probe, since one process probes tens of thousands of channels.

Structure:

* :class:`ResponseParser` and :func:`parse_sdp` are sans-IO: bytes in, :class:`Response` /
  :class:`Interleaved` / :class:`SdpMedia` out, or :class:`RtspParseError`. They are tested
  without sockets (``tests/test_rtsp_parser_fuzz.py``).
* :class:`_Conn` is an :class:`asyncio.Protocol` (cheaper than streams: no reader task, no
  ``StreamReader`` buffer copies) that feeds the parser and wakes the probe coroutine.
* :class:`_Probe` runs the exchange under one deadline (``asyncio.timeout(settings.timeout_s)``),
  records phase timings and turns every failure into a :class:`Reason`.

Camera quirks handled, one line each where they are handled: replies split across reads,
interleaved ``$`` RTP frames before a reply, bare-LF line endings, missing CSeq, stale
duplicated replies, relative / absolute / ``*`` control URLs, ``Content-Base`` without a
trailing slash, multiple ``WWW-Authenticate`` headers, stale Digest nonces, redirects.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import itertools
import os
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, NamedTuple, cast
from urllib.parse import urlsplit

import structlog

from camwatch.errors import CamwatchError
from camwatch.probes import ProbeSettings, Target
from camwatch.probes.result import Level, ProbeResult, Reason
from camwatch.probes.tcp import classify_os_error
from camwatch.secrets import credential_forms, redact_text, split_userinfo

__all__ = [
    "Challenge",
    "Interleaved",
    "Response",
    "ResponseParser",
    "RtspParseError",
    "SdpMedia",
    "parse_challenges",
    "parse_sdp",
    "probe",
    "probe_stream",
    "resolve_control",
]

log = structlog.get_logger(__name__)

DEFAULT_PORT: Final = 554
MAX_REDIRECTS: Final = 3
EARLY_RTP_MAX: Final = 512  # RTP packets kept for a payload consumer not yet attached
# RTP/AVP static payload types a camera may use without an rtpmap line (RFC 3551, table 4/5).
_STATIC_PT: Final = {0: "PCMU", 8: "PCMA", 9: "G722", 14: "MPA", 26: "JPEG", 32: "MPV", 33: "MP2T"}


# --------------------------------------------------------------------------------------------
# Sans-IO parsing
# --------------------------------------------------------------------------------------------


class RtspParseError(CamwatchError):
    """The peer sent bytes that are not a usable RTSP reply or SDP. Always ``Reason.PROTOCOL``."""


@dataclass(slots=True)
class Response:
    """One RTSP reply. Header names are lower-case; a repeated header keeps its last value,
    except ``WWW-Authenticate`` whose every value is kept in ``challenges``."""

    status: int
    reason: str
    headers: dict[str, str]
    challenges: list[str] = field(default_factory=list)
    body: bytes = b""

    @property
    def cseq(self) -> int | None:
        raw = self.headers.get("cseq")
        if raw is None:
            return None
        raw = raw.strip()
        return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 10 else None


class Interleaved(NamedTuple):
    """A complete ``$``-framed interleaved packet (RFC 2326 §10.12); the payload is skipped
    unless the parser keeps payloads (the keyframe fetch of :mod:`camwatch.probes.keyframe`).
    A named tuple, not a frozen dataclass: the keyframe fetch makes one per RTP packet, and a
    frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (10 % of
    the fetch's parsing and depacketising, measured offline on two 1080p GOPs)."""

    channel: int
    length: int
    payload: bytes = b""


def _garbage(buf: bytes | bytearray) -> str:
    head = bytes(buf[:8])
    if head[:1] == b"\x16" and head[1:2] == b"\x03":
        return "TLS handshake on a plain RTSP port"
    if head.startswith(b"HTTP/"):
        return "HTTP reply, not RTSP"
    return f"not an RTSP reply (starts {head.hex(' ')})"


class ResponseParser:
    """Incremental parser of what an RTSP server sends a client: replies and interleaved frames.

    ``feed`` returns the complete messages found so far, in order, and keeps partial ones for
    the next call. Limits: a header block longer than ``max_header_bytes`` or a body longer than
    ``max_body_bytes`` raises :class:`RtspParseError` as soon as it is known, so a hostile peer
    cannot make us buffer more than about ``max_header_bytes + max_body_bytes + 64 KiB``.
    """

    __slots__ = ("_buf", "_frame_ch", "_frame_len", "_keep", "_need", "_payload", "_pending",
                 "_scan", "_skip", "keeps_payload", "max_body_bytes", "max_header_bytes")

    def __init__(self, max_header_bytes: int = 64 * 1024, max_body_bytes: int = 64 * 1024,
                 keep_payload: bool = False) -> None:
        self._keep = keep_payload  # interleaved payloads are returned, not skipped
        self.keeps_payload = keep_payload
        self._payload = bytearray()
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()
        self._scan = 0  # where the search for the end of the header block resumes
        self._pending: Response | None = None  # headers parsed, waiting for ``_need`` body bytes
        self._need = 0
        self._skip = 0  # interleaved payload bytes still to skip
        self._frame_ch = 0
        self._frame_len = 0

    def feed(self, data: bytes) -> list[Response | Interleaved]:
        buf = self._buf
        buf += data
        out: list[Response | Interleaved] = []
        while buf:
            if self._skip:
                n = min(self._skip, len(buf))
                if self._keep:
                    self._payload += buf[:n]
                del buf[:n]
                self._skip -= n
                if not self._skip:
                    payload = b""
                    if self._keep:
                        payload, self._payload = bytes(self._payload), bytearray()
                    out.append(Interleaved(self._frame_ch, self._frame_len, payload))
                continue
            if self._pending is not None:
                if len(buf) < self._need:
                    break
                self._pending.body = bytes(buf[: self._need])
                del buf[: self._need]
                out.append(self._pending)
                self._pending = None
                continue
            first = buf[0]
            if first == 0x24:  # '$': interleaved frame; GStreamer may send RTP before PLAY's reply
                if self._keep and self._frames(buf, out):
                    continue
                if len(buf) < 4:
                    break
                self._frame_ch = buf[1]
                self._frame_len = self._skip = (buf[2] << 8) | buf[3]
                del buf[:4]
                if not self._skip:
                    out.append(Interleaved(self._frame_ch, 0))
                continue
            if first in (0x0D, 0x0A):  # stray line ends between messages (some cameras)
                del buf[:1]
                continue
            if not buf.startswith(b"RTSP/"):
                if len(buf) < 5 and b"RTSP/".startswith(buf):
                    break
                raise RtspParseError(_garbage(buf))
            end, sep = self._header_end(buf)
            if end < 0:
                if len(buf) > self.max_header_bytes:
                    raise RtspParseError(f"header block over {self.max_header_bytes} bytes")
                break
            if end > self.max_header_bytes:
                raise RtspParseError(f"header block over {self.max_header_bytes} bytes")
            resp, need = self._parse_head(buf[:end].decode("latin-1"))
            del buf[: end + sep]
            self._scan = 0
            if need:
                self._pending, self._need = resp, need
            else:
                out.append(resp)
        return out

    @staticmethod
    def _frames(buf: bytearray, out: list[Response | Interleaved]) -> bool:
        """Keeping payloads: every complete interleaved frame at the head of ``buf`` at once,
        each payload copied out once, and one ``del`` for all of them (the keyframe fetch reads
        a few hundred frames a second; through the byte-at-a-time path below each cost two
        more copies). False when not even one frame is complete (the path below keeps it)."""
        i, n = 0, len(buf)
        while i + 4 <= n and buf[i] == 0x24:
            size = (buf[i + 2] << 8) | buf[i + 3]
            if i + 4 + size > n:
                break
            out.append(Interleaved(buf[i + 1], size, bytes(buf[i + 4:i + 4 + size])))
            i += 4 + size
        if i:
            del buf[:i]
        return i > 0

    def _header_end(self, buf: bytearray) -> tuple[int, int]:
        """(length of the header block, length of the blank-line separator) or (-1, 0).
        Accepts CRLF and bare LF line ends (seen on cheap DVRs)."""
        start = max(0, self._scan - 2)
        a = buf.find(b"\n\r\n", start)
        b = buf.find(b"\n\n", start)
        if a < 0 and b < 0:
            self._scan = len(buf)
            return -1, 0
        if b < 0 or (0 <= a < b):
            return a + 1, 2
        return b + 1, 1

    def _parse_head(self, text: str) -> tuple[Response, int]:
        lines = text.split("\n")
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or len(parts[1]) != 3 or not (parts[1].isascii() and parts[1].isdigit()):
            raise RtspParseError(f"bad status line {lines[0][:60]!r}")
        status = int(parts[1])
        if status < 100:
            raise RtspParseError(f"bad status code {status}")
        headers: dict[str, str] = {}
        challenges: list[str] = []
        last = ""
        for line in lines[1:]:
            # a line's CR goes with strip() below; "\r" alone has no ":" and is skipped
            if not line:
                continue
            if line[0] in " \t" and last:  # obsolete line folding
                headers[last] += " " + line.strip()
                if last == "www-authenticate" and challenges:
                    challenges[-1] = headers[last]
                continue
            name, sep, value = line.partition(":")
            if not sep:
                continue  # tolerate a junk header line; the status line was RTSP
            last = name.strip().lower()
            value = value.strip()
            headers[last] = value
            if last == "www-authenticate":
                challenges.append(value)
        resp = Response(status, parts[2].strip() if len(parts) > 2 else "", headers, challenges)
        need = 0
        raw = headers.get("content-length")
        if raw is not None:  # absent = no body (RFC 2326 §12.14)
            if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:
                raise RtspParseError(f"bad Content-Length {raw[:20]!r}")
            need = int(raw)
            if need > self.max_body_bytes:
                raise RtspParseError(f"body of {need} bytes over {self.max_body_bytes}")
        return resp, need


@dataclass(frozen=True, slots=True)
class Challenge:
    """One authentication challenge: scheme in lower case and its parameters (names lower)."""

    scheme: str
    params: dict[str, str]


# One step of a WWW-Authenticate value: a token, optionally ``= value`` (quoted or not).
_AUTH_ITEM: Final = re.compile(
    r'[\s,]*([^\s,="]+)(?:[ \t]*=[ \t]*("[^"\\]*(?:\\.[^"\\]*)*"?|[^,]*))?')
_UNESCAPE: Final = re.compile(r"\\(.)")


def parse_challenges(values: list[str]) -> list[Challenge]:
    """Every challenge of every ``WWW-Authenticate`` value, in order. One header may carry
    several challenges (``Digest realm="a", nonce="b", Basic realm="a"``). Never raises."""
    out: list[Challenge] = []
    for value in values:
        cur: Challenge | None = None
        # finditer searches on from where a match fails: a stray '=' or '"' is skipped
        for m in _AUTH_ITEM.finditer(value):
            token, val = m.groups()
            if val is None:
                cur = Challenge(token.lower(), {})
                out.append(cur)
            elif cur is not None:
                if val.startswith('"'):
                    val = val[1:-1] if len(val) > 1 and val.endswith('"') else val[1:]
                    if "\\" in val:
                        val = _UNESCAPE.sub(r"\1", val)
                cur.params[token.lower()] = val.strip()
    return out


@dataclass(frozen=True, slots=True)
class SdpMedia:
    type: str  # video, audio, application ...
    codec: str  # H264, H265, PCMA ... or "unknown"
    control: str | None  # the a=control value as written (relative, absolute or "*")
    fmtp: str = ""  # the a=fmtp parameters of its payload type (sprop-parameter-sets ...)


def parse_sdp(body: bytes) -> tuple[str | None, list[SdpMedia]]:
    """Session-level ``a=control`` and the media sections of an SDP (RFC 4566).

    Raises :class:`RtspParseError` when the body is not SDP at all (an HTML error page...).
    Lines that do not look like ``x=value`` are skipped: cameras put odd things in SDP.
    """
    text = body.decode("utf-8", "replace").lstrip()
    if not text.startswith("v="):
        raise RtspParseError(f"DESCRIBE body is not SDP (starts {text[:20]!r})")
    session_control: str | None = None
    media: list[SdpMedia] = []
    mtype = ""
    pt = -1
    codec = ""
    control: str | None = None
    fmtp = ""
    in_media = False
    for line in text.splitlines():
        if len(line) < 2 or line[1] != "=":
            continue
        key, value = line[0], line[2:].strip()
        if key == "m":
            if in_media:
                media.append(SdpMedia(mtype, codec or "unknown", control, fmtp))
            fields = value.split()
            in_media = True
            mtype = fields[0].lower() if fields else ""
            fmt = fields[3] if len(fields) > 3 else ""
            pt = int(fmt) if fmt.isascii() and fmt.isdigit() and len(fmt) <= 3 else -1
            codec = _STATIC_PT.get(pt, "")
            control = None
            fmtp = ""
        elif key == "a":
            name, _, arg = value.partition(":")
            if name == "control":
                if in_media:
                    control = arg.strip()
                else:
                    session_control = arg.strip()
            elif name == "rtpmap" and in_media:
                num, _, enc = arg.strip().partition(" ")
                if num.isascii() and num.isdigit() and len(num) <= 3 and int(num) == pt and enc:
                    codec = enc.split("/", 1)[0].strip().upper() or codec
            elif name == "fmtp" and in_media:
                num, _, params = arg.strip().partition(" ")
                if num.isascii() and num.isdigit() and len(num) <= 3 and int(num) == pt:
                    fmtp = params.strip()[:4096]
    if in_media:
        media.append(SdpMedia(mtype, codec or "unknown", control, fmtp))
    return session_control, media


def resolve_control(base: str, control: str | None) -> str:
    """The URL to use for a track or the aggregate, from the base URL and an ``a=control``.

    Relative controls are *appended* to the base (with one ``/``), as ffmpeg, live555 and
    GStreamer do, not resolved by RFC 3986: ``rtsp://h/ch/101`` + ``trackID=1`` must give
    ``rtsp://h/ch/101/trackID=1`` because Hikvision and Dahua send a Content-Base without the
    trailing slash.
    """
    if not control or control == "*":
        return base
    low = control[:8].lower()
    if low.startswith(("rtsp://", "rtsps://", "rtspu://")):
        return control
    if control.startswith("/"):  # absolute path on the same server
        parts = urlsplit(base)
        return f"{parts.scheme}://{parts.netloc}{control}"
    return base + control if base.endswith("/") else f"{base}/{control}"


# --------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _q(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# The client nonce of a Digest answer need only be unpredictable to the camera: a keyed hash of
# a counter, the key drawn once. os.urandom per probe was a system call that released the GIL,
# and the event loop then waited for a worker thread (a scrape, the store writer) to give it
# back: a tenth of the loop's stall samples at 100,000 channels.
_CNONCE_KEY: Final = os.urandom(16)
_cnonce_counter = itertools.count()


def _new_cnonce() -> str:
    return hashlib.blake2b(next(_cnonce_counter).to_bytes(8, "little"), key=_CNONCE_KEY,
                           digest_size=8).hexdigest()


class _Auth:
    """Answers challenges for one probe. Digest (RFC 2617: MD5 / MD5-sess, with or without
    ``qop=auth``) is preferred over Basic when a camera offers both."""

    __slots__ = ("_cnonce", "_ha1", "_nc", "_sess", "algorithm", "nonce", "opaque", "password",
                 "qop", "realm", "scheme", "user")

    def __init__(self, user: str, password: str, ch: Challenge) -> None:
        self.user = user
        self.password = password
        self.scheme = ch.scheme
        self.realm = ch.params.get("realm", "")
        self.algorithm = ch.params.get("algorithm")
        self._sess = (self.algorithm or "").lower() == "md5-sess"
        self._cnonce = _new_cnonce()
        self.nonce = ""
        self.opaque: str | None = None
        self.qop: str | None = None
        self._nc = 0
        self._ha1 = ""
        if self.scheme == "digest":
            self.refresh(ch)

    def refresh(self, ch: Challenge) -> None:
        """Take a new nonce (first challenge, or ``stale=true``)."""
        self.nonce = ch.params.get("nonce", "")
        self.opaque = ch.params.get("opaque")
        qops = [q.strip().lower() for q in ch.params.get("qop", "").split(",")]
        self.qop = "auth" if "auth" in qops else None  # auth-int is not worth it for a probe
        self._nc = 0
        ha1 = _md5(f"{self.user}:{self.realm}:{self.password}")
        self._ha1 = _md5(f"{ha1}:{self.nonce}:{self._cnonce}") if self._sess else ha1

    def header(self, method: str, uri: str) -> str:
        if self.scheme == "basic":
            raw = f"{self.user}:{self.password}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        ha2 = _md5(f"{method}:{uri}")
        parts = [f'Digest username="{_q(self.user)}", realm="{_q(self.realm)}", '
                 f'nonce="{_q(self.nonce)}", uri="{_q(uri)}"']
        if self.qop:
            self._nc += 1
            nc = f"{self._nc:08x}"
            digest = _md5(f"{self._ha1}:{self.nonce}:{nc}:{self._cnonce}:auth:{ha2}")
            parts.append(f', response="{digest}", qop=auth, nc={nc}, cnonce="{self._cnonce}"')
        else:
            parts.append(f', response="{_md5(f"{self._ha1}:{self.nonce}:{ha2}")}"')
        if self.algorithm:
            parts.append(f", algorithm={self.algorithm}")
        if self.opaque is not None:
            parts.append(f', opaque="{_q(self.opaque)}"')
        return "".join(parts)


def _pick(challenges: list[Challenge]) -> Challenge | None:
    digest = basic = None
    for ch in challenges:
        if ch.scheme == "digest" and digest is None:
            if (ch.params.get("algorithm") or "md5").lower() in ("md5", "md5-sess"):
                digest = ch
        elif ch.scheme == "basic" and basic is None:
            basic = ch
    return digest or basic


# --------------------------------------------------------------------------------------------
# Transport
# --------------------------------------------------------------------------------------------


class _PeerClosed(Exception):
    """The camera closed the connection (FIN) before answering."""


class _Fail(Exception):
    """A classified camera-side failure, raised inside the exchange, returned by ``_probe``."""

    def __init__(self, reason: Reason, detail: str, info: dict[str, object] | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.info = info or {}


class _Conn(asyncio.Protocol):
    """One RTSP connection: feeds bytes to the parser, queues replies, notes RTP arrival."""

    def __init__(self, loop: asyncio.AbstractEventLoop, parser: ResponseParser) -> None:
        self.loop = loop
        self.parser = parser
        self.transport: asyncio.Transport | None = None
        self.replies: deque[Response] = deque()
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        # what the waiting task waits for (set by ``until``): input that does not make it
        # hold does not wake the task (the keyframe fetch reads a GOP of RTP between its two
        # keyframes; a task step per read of it was a quarter of the fetch's CPU)
        self.wanted: Callable[[], bool] | None = None
        self.rtp_channel = -1
        self.rtp_seen = False
        # given each RTP payload of the video channel (the keyframe fetch); what it raises
        # ends the connection as a parse error would
        self.on_rtp: Callable[[bytes], None] | None = None
        # given the size of each read, after its RTP has gone to on_rtp (the keyframe fetch
        # paces its reading by it)
        self.after_read: Callable[[int], None] | None = None
        # payloads kept before on_rtp is set (cameras send RTP before PLAY's reply), bounded
        self.early: list[bytes] | None = [] if parser.keeps_payload else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: cast, don't assert.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            events = self.parser.feed(data)
        except RtspParseError as exc:
            self.error = exc
            if self.transport is not None:
                self.transport.abort()  # stop reading an endless header now, not at the deadline
            self._wake()
            return
        for ev in events:
            if type(ev) is Response:
                self.replies.append(ev)
            elif type(ev) is Interleaved and ev.channel == self.rtp_channel:
                self.rtp_seen = True
                if self.on_rtp is None:
                    if self.early is not None and len(self.early) < EARLY_RTP_MAX:
                        self.early.append(ev.payload)
                else:
                    try:
                        self.on_rtp(ev.payload)
                    except Exception as exc:
                        self.error = exc
                        if self.transport is not None:
                            self.transport.abort()
                        self._wake()
                        return
        if self.after_read is not None:
            self.after_read(len(data))
        if events and (self.wanted is None or self.replies or self.wanted()):
            self._wake()

    def eof_received(self) -> bool | None:
        if self.error is None:
            self.error = _PeerClosed()
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            self.error = exc if exc is not None else _PeerClosed()
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def reply(self, cseq: int) -> Response:
        while True:
            while self.replies:
                resp = self.replies.popleft()
                got = resp.cseq
                # We never pipeline, so any reply answers the one request in flight, except a
                # reply with a *lower* CSeq: a late duplicate (some DVRs repeat a reply), which
                # taken as the answer would e.g. read OPTIONS' 200 as DESCRIBE's. Skipped.
                # A missing CSeq (cheap IPCs) or a higher one (broken counters) is accepted:
                # being strict there would mark working cameras offline.
                if got is not None and got < cseq:
                    continue
                return resp
            if self.error is not None:
                raise self.error
            await self._wait()

    async def first_rtp(self) -> None:
        await self.until(lambda: self.rtp_seen)

    async def until(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()`` holds after some input (or raise the connection's error)."""
        self.wanted = done
        try:
            while not done():
                if self.error is not None:
                    raise self.error
                await self._wait()
        finally:
            self.wanted = None


# ``rtsp://`` + a host name or IPv4 address + an optional port, then "/" or nothing
_PLAIN_NETLOC: Final = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?")


def _plain_addr(url: str) -> tuple[str, int | None] | None:
    """``(host, port)`` of a plain ``rtsp://host[:port]/...`` URL, as ``urlsplit`` would give
    them (host in lower case, port None when absent); None for anything else (userinfo, IPv6,
    a query right after the host, blanks, another scheme, a port over 65535), which
    :meth:`_Probe.connect` leaves to ``urlsplit``. urlsplit costs ~4 µs a URL outside its
    128-URL cache, and a sweep has one URL per channel (bench/bench_sweep.py)."""
    if url[:7].lower() != "rtsp://":
        return None
    netloc = url[7:].partition("/")[0]
    if _PLAIN_NETLOC.fullmatch(netloc) is None:
        return None
    host, _, port = netloc.partition(":")
    if not port:
        return host.lower(), None
    n = int(port)
    return (host.lower(), n) if n <= 65535 else None


def _no_userinfo(url: str) -> str:
    return split_userinfo(url)[0]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def _status_reason(status: int) -> Reason:
    if status == 401:
        return Reason.AUTH
    if status in (404, 454):  # Not Found, Session Not Found
        return Reason.NOT_FOUND
    if status in (503, 453):  # Service Unavailable, Not Enough Bandwidth (too many clients)
        return Reason.BUSY
    return Reason.PROTOCOL


# --------------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------------


class _Probe:
    """State of one attempt; ``run`` raises, ``_probe`` classifies."""

    def __init__(self, target: Target, settings: ProbeSettings, stream: bool) -> None:
        self.target = target
        self.settings = settings
        self.stream = stream
        self.loop = asyncio.get_running_loop()
        self.t0 = self.phase_t0 = time.perf_counter()
        self.phase = "connect"
        self.phases: dict[str, float] = {}
        self.conn: _Conn | None = None
        self.cseq = 0
        self.auth: _Auth | None = None
        self.session: str | None = None
        self.url = target.rtsp_url or ""
        self.orig_host = ""
        self.dialed: tuple[str, tuple[str, int | None] | None] = (self.url, None)
        self.redials = 0  # connections opened again after a 401 that closed one
        self.head_extra = f"User-Agent: {settings.user_agent}\r\n"
        # Instead of waiting for the first RTP packet after PLAY, hand the connection and the
        # video track to this (the keyframe fetch, camwatch.probes.keyframe).
        self.collect: Callable[[_Conn, SdpMedia], Awaitable[None]] | None = None
        self.video: SdpMedia | None = None

    # -- bookkeeping --------------------------------------------------------------------------

    def mark(self, phase: str) -> None:
        """End the current phase (adding to it: ``connect`` repeats after a redirect), start
        ``phase``. Names starting with ``_`` are not recorded."""
        now = time.perf_counter()
        if not self.phase.startswith("_"):
            self.phases[self.phase] = self.phases.get(self.phase, 0.0) + (now - self.phase_t0)
        self.phase, self.phase_t0 = phase, now

    def finish(self) -> float:
        self.mark("_done")
        return time.perf_counter() - self.t0

    def close(self, graceful: bool = False) -> None:
        """Release the socket. ``graceful`` lets a written TEARDOWN go out first; every other
        path aborts (no waiting on a peer that may not read)."""
        conn, self.conn = self.conn, None
        if conn is not None and conn.transport is not None:
            if graceful:
                conn.transport.close()
            else:
                conn.transport.abort()

    # -- I/O ----------------------------------------------------------------------------------

    async def connect(self, url: str, addr: tuple[str, int | None] | None) -> None:
        """Connect to ``url``, whose host and port :func:`_plain_addr` may have found."""
        if addr is None:
            parts = urlsplit(url)
            if parts.scheme.lower() != "rtsp" or not parts.hostname:
                raise _Fail(Reason.PROTOCOL, f"not an rtsp:// URL: {_no_userinfo(url)}")
            addr = parts.hostname, parts.port
        host, port = addr
        port = port or DEFAULT_PORT
        s = self.settings
        conn = _Conn(self.loop, ResponseParser(s.max_header_bytes, s.max_sdp_bytes,
                                               keep_payload=self.collect is not None))
        self.conn = conn  # set first: a cancelled connect still has nothing to leak
        self.dialed = (url, addr)
        await self.loop.create_connection(lambda: conn, host, port)

    async def redial(self) -> None:
        """The same address again, on a new connection (:meth:`request`, after a 401 that
        closed the old one)."""
        url, addr = self.dialed
        self.close()
        await self.connect(url, addr)
        self.redials += 1

    async def request(self, method: str, url: str, extra: str = "") -> Response:
        conn = self.conn
        assert conn is not None and conn.transport is not None
        refreshed = False
        sent_credentials = False
        challenged = redialed = False
        while True:
            # Old firmware closes the connection after its 401: the request goes again, with
            # the credentials, on a new connection to the same address; once per request, and
            # before SETUP only (a session's interleaved channels belong to its connection).
            may_redial = challenged and not redialed and self.session is None
            if may_redial and conn.error is not None:
                await self.redial()
                conn, redialed = self.conn, True
                assert conn is not None and conn.transport is not None
            self.cseq += 1
            head = f"{method} {url} RTSP/1.0\r\nCSeq: {self.cseq}\r\n{self.head_extra}"
            if self.auth is not None:
                head += f"Authorization: {self.auth.header(method, url)}\r\n"
                sent_credentials = True
            if self.session is not None:
                head += f"Session: {self.session}\r\n"
            transport = conn.transport
            assert transport is not None
            transport.write(f"{head}{extra}\r\n".encode())
            try:
                resp = await conn.reply(self.cseq)
            except _PeerClosed:
                if not may_redial or redialed:
                    raise
                await self.redial()  # the close came after our request went out
                conn, redialed = self.conn, True
                assert conn is not None and conn.transport is not None
                continue
            if resp.status != 401:
                return resp
            challenged = True
            challenges = parse_challenges(resp.challenges)
            if not sent_credentials:
                self.auth = self.new_auth(challenges, url)
                continue
            # A second 401 after credentials means wrong credentials, unless the nonce expired.
            ch = _pick(challenges)
            stale = ch is not None and ch.params.get("stale", "").lower() == "true"
            if (stale and not refreshed and ch is not None and self.auth is not None
                    and self.auth.scheme == ch.scheme == "digest"):
                self.auth.refresh(ch)
                refreshed = True
                continue
            return resp

    def new_auth(self, challenges: list[Challenge], url: str) -> _Auth:
        ch = _pick(challenges)
        if ch is None:
            offered = ", ".join(sorted({c.scheme for c in challenges})) or "nothing"
            raise _Fail(Reason.AUTH, f"401 with no supported challenge (offered: {offered})")
        t = self.target
        if t.username is None or t.password is None:
            raise _Fail(Reason.AUTH, "camera asks for credentials, none configured")
        # urlsplit's cache holds 128 URLs, a sweep has 100,000: split the original once
        host = self.orig_host if url == self.url else (urlsplit(url).hostname or "")
        if host != self.orig_host:
            # The inventory's credentials belong to the camera, not to whoever it redirects to.
            raise _Fail(Reason.AUTH, f"redirected host {host} asks for credentials; not sent")
        return _Auth(t.username, t.password.reveal(), ch)

    def expect_ok(self, method: str, resp: Response) -> None:
        if 200 <= resp.status < 300:
            return
        if resp.status == 401:
            detail = (f"{method} rejected the credentials (401 after authenticating)"
                      if self.auth is not None else f"{method} answered 401")
        else:
            detail = f"{method} answered {resp.status} {resp.reason[:60]}".rstrip()
        raise _Fail(_status_reason(resp.status), detail)

    # -- the exchange -------------------------------------------------------------------------

    async def run(self) -> ProbeResult:
        url = self.url
        addr = _plain_addr(url)
        self.orig_host = addr[0] if addr is not None else (urlsplit(url).hostname or "")
        redirects = 0
        while True:
            self.phase = "connect"
            self.phase_t0 = time.perf_counter()
            await self.connect(url, addr)
            if redirects == 0:
                self.mark("options")
                resp = await self.request("OPTIONS", url)
                # 405/501: a few NVRs do not implement OPTIONS but DESCRIBE works.
                if resp.status not in (405, 501):
                    self.expect_ok("OPTIONS", resp)
            self.mark("describe")
            resp = await self.request("DESCRIBE", url, "Accept: application/sdp\r\n")
            if resp.status not in (301, 302, 303, 307):
                break
            url = self.redirect_target(url, resp, redirects)
            addr = _plain_addr(url)
            redirects += 1
            self.close()
            self.auth = None  # nonces belong to a connection: authenticate afresh after a hop
        self.expect_ok("DESCRIBE", resp)
        base = resp.headers.get("content-base") or resp.headers.get("content-location") or url
        base = _no_userinfo(base)
        session_control, media = parse_sdp(resp.body)
        info_media: list[dict[str, str]] = []
        video: SdpMedia | None = None
        for m in media:
            entry = {"type": m.type, "codec": m.codec}
            if m.control is not None:
                entry["control"] = _no_userinfo(resolve_control(base, m.control))
            info_media.append(entry)
            if video is None and m.type == "video":
                video = m
        info: dict[str, object] = {"media": info_media,
                                   "auth": self.auth.scheme if self.auth else "none"}
        if redirects:
            info["url"] = _no_userinfo(url)
            info["redirects"] = redirects
        if self.redials:
            info["redials"] = self.redials  # the camera closed the connection after a 401
        if server := resp.headers.get("server"):
            info["server"] = redact_text(server[:100], self.secret_forms())
        if video is None:
            kinds = ", ".join(m.type for m in media) or "no media at all"
            raise _Fail(Reason.NO_MEDIA, f"SDP has no video track ({kinds})", info)
        self.video = video
        if self.stream:
            await self.play(resolve_control(base, video.control),
                            resolve_control(base, session_control))
        latency = self.finish()
        return ProbeResult.success(self.kind, latency_s=latency, phases=self.phases, info=info)

    async def play(self, track_url: str, aggregate_url: str) -> None:
        conn = self.conn
        assert conn is not None and conn.transport is not None
        self.mark("setup")
        resp = await self.request("SETUP", track_url,
                                  "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
        self.expect_ok("SETUP", resp)
        session = resp.headers.get("session", "").split(";", 1)[0].strip()
        if not session:
            raise _Fail(Reason.PROTOCOL, "SETUP reply has no Session header")
        self.session = session
        conn.rtp_channel = _interleaved_channel(resp.headers.get("transport", ""))
        self.mark("play")
        # RTP may arrive before this reply (GStreamer does that): _Conn notes it meanwhile.
        resp = await self.request("PLAY", aggregate_url, "Range: npt=0.000-\r\n")
        self.expect_ok("PLAY", resp)
        self.mark("first_packet")
        if self.collect is not None and self.video is not None:
            await self.collect(conn, self.video)
        else:
            await conn.first_rtp()
        self.mark("_teardown")
        # Best effort, no wait for the reply: the camera frees the session on close anyway.
        self.cseq += 1
        auth = (f"Authorization: {self.auth.header('TEARDOWN', aggregate_url)}\r\n"
                if self.auth is not None else "")
        assert conn.transport is not None
        conn.transport.write(
            f"TEARDOWN {aggregate_url} RTSP/1.0\r\nCSeq: {self.cseq}\r\n{self.head_extra}"
            f"{auth}Session: {session}\r\n\r\n".encode())
        self.close(graceful=True)

    def redirect_target(self, url: str, resp: Response, redirects: int) -> str:
        loc = resp.headers.get("location", "").strip()
        if not loc:
            raise _Fail(Reason.PROTOCOL, f"DESCRIBE answered {resp.status} without Location")
        if redirects >= MAX_REDIRECTS:
            raise _Fail(Reason.PROTOCOL, f"more than {MAX_REDIRECTS} redirects")
        if not loc.lower().startswith("rtsp://"):
            raise _Fail(Reason.PROTOCOL, f"redirect to a non-rtsp URL {_no_userinfo(loc)[:80]}")
        loc = _no_userinfo(loc)  # never use credentials a camera hands out
        host = urlsplit(loc).hostname or ""
        if _is_loopback(self.orig_host) and not _is_loopback(host):
            # Tests and the simulator live on 127.0.0.0/8: never leave it (no stray traffic).
            raise _Fail(Reason.PROTOCOL, f"redirect from loopback to {host} refused")
        return loc

    @property
    def kind(self) -> str:
        return Level.STREAM.value if self.stream else Level.DESCRIBE.value

    def secret_forms(self) -> tuple[str, ...]:
        pw = self.target.password
        return credential_forms(self.target.username, pw.reveal() if pw else None)

    def failure(self, reason: Reason, detail: str, info: dict[str, object] | None = None
                ) -> ProbeResult:
        latency = self.finish()
        # Device text (a reason phrase, a status line, a Location) may echo our Authorization
        # header: the password, its Basic token or the Digest username.
        detail = redact_text(detail, self.secret_forms())
        return ProbeResult.failure(self.kind, reason, detail, latency_s=latency,
                                   phases=self.phases, info=info or {})


def _interleaved_channel(transport: str) -> int:
    """The RTP channel of ``interleaved=a-b`` in a SETUP reply's Transport; 0 when absent."""
    for part in transport.split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == "interleaved":
            first = value.split("-", 1)[0].strip()
            if first.isascii() and first.isdigit() and len(first) <= 3:
                return int(first)
    return 0


async def probe(target: Target, settings: ProbeSettings) -> ProbeResult:
    """``describe`` level: connect, OPTIONS, DESCRIBE; a usable SDP with a video track is ok."""
    return await _probe(target, settings, stream=False)


async def probe_stream(target: Target, settings: ProbeSettings) -> ProbeResult:
    """``stream`` level: as :func:`probe`, then SETUP (TCP interleaved) the video track, PLAY,
    wait for its first RTP packet, TEARDOWN."""
    return await _probe(target, settings, stream=True)


async def _probe(target: Target, settings: ProbeSettings, stream: bool) -> ProbeResult:
    kind = Level.STREAM.value if stream else Level.DESCRIBE.value
    if not target.rtsp_url:
        return ProbeResult.failure(kind, Reason.INTERNAL, "channel has no RTSP URL")
    p = _Probe(target, settings, stream)
    try:
        async with asyncio.timeout(settings.timeout_s):
            return await p.run()
    except _Fail as exc:
        return p.failure(exc.reason, exc.detail, exc.info)
    except TimeoutError:  # before OSError: TimeoutError is one
        return p.failure(Reason.TIMEOUT,
                         f"{p.phase} not done within {settings.timeout_s:g} s")
    except RtspParseError as exc:
        return p.failure(Reason.PROTOCOL, f"{p.phase}: {exc}")
    except _PeerClosed:
        return p.failure(Reason.PROTOCOL, f"{p.phase}: connection closed by the camera")
    except OSError as exc:
        return p.failure(classify_os_error(exc), f"{p.phase}: {exc.strerror or type(exc).__name__}")
    except Exception as exc:  # a camwatch bug: counted apart, never raised to the scheduler
        with contextlib.suppress(Exception):  # a broken log sink must not break the promise
            log.error("rtsp probe failed internally", channel=target.channel_id, phase=p.phase,
                      error=type(exc).__name__, exc_info=True)
        return p.failure(Reason.INTERNAL, f"{p.phase}: internal error {type(exc).__name__}")
    finally:
        p.close()
