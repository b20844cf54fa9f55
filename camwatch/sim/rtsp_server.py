"""The simulator's RTSP server, also camwatch's fake RTSP server for tests.

One :class:`asyncio.Protocol` per connection and no task per connection: timers
(``loop.call_later``) drive the slow paths (fake RTP, DRIP), so one process can serve
100,000 channels across thousands of devices. Every request re-reads the channel's fault
(``device.effective_fault(path)``), so a fault changed at run time applies at once.

What it speaks: OPTIONS (no auth, like most cameras), DESCRIBE (SDP with one H264/H265 video
track and an optional PCMA audio track), SETUP (TCP interleaved only; UDP gets 461), PLAY
(then ~5 small fake RTP packets per second on the interleaved channel, or, for a channel with
a ``picture``, a real H.264/H.265 clip of it at 2 keyframes a second: camwatch.sim.pictures),
TEARDOWN and
GET_PARAMETER (keep-alive). Authentication follows ``device.rtsp_auth``: Digest MD5 with
``qop=auth`` (default; also offers Basic first, so a client must prefer Digest), Digest without
qop, Basic, or none. ``device.rtsp_nonce_max_uses`` > 0 makes nonces go stale.

Faults: HANG (never answers), AUTH_FAIL (401 forever), NOT_FOUND (DESCRIBE 404), NO_MEDIA (SDP
without video), BUSY (DESCRIBE 503), GARBAGE (TLS-like bytes), DRIP (a reply at 1 byte/s),
OVERSIZED (an endless header block), REDIRECT (DESCRIBE 302 to the alias ``/_moved<path>``,
which works), RESET (half a reply then RST), NO_RTP (PLAY 200, no RTP ever). REFUSED is the
fleet's job: close the returned server (and start a new one on the same port to come back).

Parsing here is deliberately separate from the client's (``camwatch.probes.rtsp``): a shared
parser would let one bug hide itself on both sides.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
from typing import Final, cast
from urllib.parse import urlsplit

from camwatch.sim.model import Fault, RtspAuth, SimChannel, SimDevice
from camwatch.sim.pictures import FPS, Clip, Picture, clip, rtp_packets

__all__ = ["MOVED_PREFIX", "start_rtsp_server"]

MOVED_PREFIX: Final = "/_moved"  # REDIRECT sends clients here; the alias itself never redirects
RTP_INTERVAL_S: Final = 0.2
MAX_REQUEST_BYTES: Final = 16 * 1024
_GARBAGE: Final = bytes.fromhex("160303003102000002d03030000000000000000000000000") + b"\x00" * 24
_PAD: Final = b"X-Pad: " + b"x" * 1000 + b"\r\n"
_PARAM_SPLIT: Final = ","


# Fault.CLOSE_AFTER_401: the Digest nonce (and opaque) of a device, kept across connections
_DEVICE_NONCES: dict[int, tuple[str, str]] = {}


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _auth_params(value: str) -> dict[str, str]:
    """``k=v, k="v"`` pairs of an Authorization header (our own client's format is simple)."""
    out: dict[str, str] = {}
    i, n = 0, len(value)
    while i < n:
        eq = value.find("=", i)
        if eq < 0:
            break
        key = value[i:eq].strip(" ,").lower()
        j = eq + 1
        if j < n and value[j] == '"':
            end = j + 1
            chars = []
            while end < n and value[end] != '"':
                if value[end] == "\\" and end + 1 < n:
                    end += 1
                chars.append(value[end])
                end += 1
            out[key] = "".join(chars)
            i = end + 1
        else:
            end = value.find(_PARAM_SPLIT, j)
            end = n if end < 0 else end
            out[key] = value[j:end].strip()
            i = end + 1
    return out


class _Conn(asyncio.Protocol):
    __slots__ = ("buf", "device", "drip", "flood", "loop", "nonce", "nonce_uses", "opaque",
                 "paused", "rtp_ch", "rtp_handle", "rtp_seq", "session", "transport", "video",
                 "video_i")

    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.nonce = ""
        self.nonce_uses = 0
        self.opaque = os.urandom(4).hex()
        self.session = ""
        self.rtp_ch = 0
        self.rtp_seq = 0
        self.rtp_handle: asyncio.TimerHandle | None = None
        self.video: Clip | None = None  # the clip PLAY streams (a channel with a picture)
        self.video_i = 0
        self.drip: asyncio.TimerHandle | None = None
        self.flood = False
        self.paused = False

    # -- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: cast, don't assert.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        for h in (self.rtp_handle, self.drip):
            if h is not None:
                h.cancel()
        self.rtp_handle = self.drip = None
        self.flood = False
        self.transport = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.flood:
            self._flood()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while buf and self.transport is not None:
            if buf[0] == 0x24:  # interleaved RTCP from the client: skip it
                if len(buf) < 4:
                    return
                size = 4 + ((buf[2] << 8) | buf[3])
                if len(buf) < size:
                    return
                del buf[:size]
                continue
            if buf[0] in (0x0D, 0x0A):
                del buf[:1]
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_REQUEST_BYTES:
                    self.transport.abort()
                return
            head = bytes(buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            raw_len = headers.get("content-length", "0").strip() or "0"
            if not (raw_len.isascii() and raw_len.isdigit()) or len(raw_len) > 6:
                self._write(400, "Bad Request", headers.get("cseq", "0"))
                self.transport.close()
                return
            body_len = int(raw_len)
            if len(buf) < end + 4 + body_len:
                return
            del buf[: end + 4 + body_len]
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("RTSP/"):
                self._write(400, "Bad Request", headers.get("cseq", "0"))
                continue
            self._handle(parts[0], parts[1], headers)

    # -- request handling ---------------------------------------------------------------------

    def _handle(self, method: str, url: str, headers: dict[str, str]) -> None:
        cseq = headers.get("cseq", "0")
        path = urlsplit(url).path or "/"
        moved = path.startswith(MOVED_PREFIX + "/")
        if moved:
            path = path[len(MOVED_PREFIX):]
        channel, track = self._channel(path)
        fault = self.device.effective_fault(channel.path if channel else None)
        if fault is Fault.HANG:
            return
        if fault is Fault.GARBAGE:
            self._send(_GARBAGE)
            return
        if fault is Fault.RESET:
            self._reset(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPub")
            return
        if fault is Fault.OVERSIZED:
            self._send(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n".encode())
            self.flood = True
            self._flood()
            return
        if method == "OPTIONS":
            self._write(200, "OK", cseq, "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, "
                        "GET_PARAMETER\r\n", fault=fault)
            return
        if not self._authorized(method, url, headers, cseq, fault):
            return
        if channel is None:
            self._write(404, "Not Found", cseq, fault=fault)
            return
        if method == "DESCRIBE":
            self._describe(url, path, channel, cseq, fault, moved)
        elif method == "SETUP":
            self._setup(track, headers, cseq, fault)
        elif method == "PLAY":
            if headers.get("session", "").split(";")[0] != self.session or not self.session:
                self._write(454, "Session Not Found", cseq, fault=fault)
                return
            self._write(200, "OK", cseq, f"Session: {self.session}\r\nRange: npt=0.000-\r\n",
                        fault=fault)
            if fault is not Fault.NO_RTP and self.rtp_handle is None:
                channel.plays += 1
                if channel.picture is not None:
                    shown = Picture.OK if channel.picture is Picture.SCENE_CHANGED and \
                        channel.plays == 1 else channel.picture
                    self.video = clip(shown, channel.codec)
                    self.video_i = 0
                    self._frame()
                else:
                    self._rtp()
        elif method == "TEARDOWN":
            self._stop_rtp()
            self._write(200, "OK", cseq, fault=fault)
            self.session = ""
        elif method == "GET_PARAMETER":
            self._write(200, "OK", cseq, fault=fault)
        else:
            self._write(405, "Method Not Allowed", cseq, fault=fault)

    def _channel(self, path: str) -> tuple[SimChannel | None, int]:
        chans = self.device.channels
        ch = chans.get(path) or chans.get(path.rstrip("/"))
        if ch is not None:
            return ch, 0
        base, _, last = path.rstrip("/").rpartition("/")
        if last.startswith("trackID="):
            num = last[8:]
            return chans.get(base), int(num) if num.isascii() and num.isdigit() else -1
        return None, 0

    def _authorized(self, method: str, url: str, headers: dict[str, str], cseq: str,
                    fault: Fault) -> bool:
        mode = self.device.rtsp_auth
        if fault is Fault.CLOSE_AFTER_401 and id(self.device) in _DEVICE_NONCES:
            self.nonce, self.opaque = _DEVICE_NONCES[id(self.device)]  # valid across connections
        if mode is RtspAuth.NONE and fault is not Fault.AUTH_FAIL:
            return True
        got = headers.get("authorization", "")
        ok = False
        stale = False
        scheme, _, rest = got.partition(" ")
        scheme = scheme.lower()
        if fault is Fault.AUTH_FAIL:
            ok = False
        elif mode is RtspAuth.BASIC and scheme == "basic":
            try:
                ok = base64.b64decode(rest.strip(), validate=True).decode() == (
                    f"{self.device.username}:{self.device.password}")
            except ValueError:
                ok = False
        elif mode in (RtspAuth.DIGEST, RtspAuth.DIGEST_NO_QOP) and scheme == "digest":
            ok, stale = self._check_digest(method, _auth_params(rest))
        if ok:
            return True
        self._challenge(cseq, stale, fault)
        return False

    def _check_digest(self, method: str, p: dict[str, str]) -> tuple[bool, bool]:
        d = self.device
        if not self.nonce or p.get("nonce") != self.nonce or p.get("username") != d.username:
            return False, False
        if d.rtsp_auth is RtspAuth.DIGEST and p.get("opaque") != self.opaque:
            return False, False
        ha1 = _md5(f"{d.username}:{self._realm()}:{d.password}")
        ha2 = _md5(f"{method}:{p.get('uri', '')}")
        if d.rtsp_auth is RtspAuth.DIGEST:
            if p.get("qop") != "auth" or not p.get("nc") or not p.get("cnonce"):
                return False, False
            want = _md5(f"{ha1}:{self.nonce}:{p['nc']}:{p['cnonce']}:auth:{ha2}")
        else:
            want = _md5(f"{ha1}:{self.nonce}:{ha2}")
        if p.get("response") != want:
            return False, False
        self.nonce_uses += 1
        if d.rtsp_nonce_max_uses and self.nonce_uses > d.rtsp_nonce_max_uses:
            return False, True  # right credentials, expired nonce: stale=true
        return True, False

    def _realm(self) -> str:
        return f"IP Camera({self.device.serial[-5:]})"  # the Hikvision style

    def _challenge(self, cseq: str, stale: bool, fault: Fault) -> None:
        mode = self.device.rtsp_auth
        self.nonce = os.urandom(16).hex()
        self.nonce_uses = 0
        if fault is Fault.CLOSE_AFTER_401:
            self.nonce, self.opaque = _DEVICE_NONCES.setdefault(id(self.device),
                                                                (self.nonce, self.opaque))
        realm = self._realm()
        lines = ""
        if mode is RtspAuth.DIGEST:
            # Basic first on purpose: a client must still prefer Digest.
            lines += f'WWW-Authenticate: Basic realm="{realm}"\r\n'
            lines += (f'WWW-Authenticate: Digest realm="{realm}", nonce="{self.nonce}", '
                      f'qop="auth", opaque="{self.opaque}", algorithm=MD5'
                      f'{", stale=TRUE" if stale else ""}\r\n')
        elif mode is RtspAuth.DIGEST_NO_QOP or (mode is RtspAuth.NONE):
            lines += (f'WWW-Authenticate: Digest realm="{realm}", nonce="{self.nonce}"'
                      f'{", stale=true" if stale else ""}\r\n')
        else:
            lines += f'WWW-Authenticate: Basic realm="{realm}"\r\n'
        self._write(401, "Unauthorized", cseq, lines, fault=fault)
        if fault is Fault.CLOSE_AFTER_401 and self.transport is not None:
            self.transport.close()  # after the 401 is written out

    def _describe(self, url: str, path: str, channel: SimChannel, cseq: str, fault: Fault,
                  moved: bool) -> None:
        if fault is Fault.NOT_FOUND:
            self._write(404, "Not Found", cseq, fault=fault)
            return
        if fault is Fault.BUSY:
            self._write(503, "Service Unavailable", cseq, fault=fault)
            return
        parts = urlsplit(url)
        if fault is Fault.REDIRECT and not moved:
            self._write(302, "Moved Temporarily", cseq,
                        f"Location: rtsp://{parts.netloc}{MOVED_PREFIX}{path}\r\n", fault=fault)
            return
        host = parts.hostname or "127.0.0.1"
        lines = ["v=0", f"o=- {abs(hash(path)) % 10**9} 1 IN IP4 {host}", "s=camwatch-sim",
                 "c=IN IP4 0.0.0.0", "t=0 0", "a=control:*"]
        if fault is not Fault.NO_MEDIA:
            name = "H265" if channel.codec.upper() in ("H265", "HEVC") else "H264"
            lines += ["m=video 0 RTP/AVP 96", f"a=rtpmap:96 {name}/90000",
                      "a=fmtp:96 packetization-mode=1", "a=control:trackID=1"]
        if channel.audio or fault is Fault.NO_MEDIA:
            lines += ["m=audio 0 RTP/AVP 8", "a=rtpmap:8 PCMA/8000", "a=control:trackID=2"]
        sdp = ("\r\n".join(lines) + "\r\n").encode()
        # Content-Base with a trailing slash, as Hikvision sends it.
        base = f"rtsp://{parts.netloc}{parts.path.rstrip('/')}/"
        self._write(200, "OK", cseq, f"Content-Base: {base}\r\nContent-Type: application/sdp\r\n",
                    body=sdp, fault=fault)

    def _setup(self, track: int, headers: dict[str, str], cseq: str, fault: Fault) -> None:
        if track not in (1, 2):
            self._write(404, "Not Found", cseq, fault=fault)
            return
        transport = headers.get("transport", "")
        if "TCP" not in transport.upper() or "interleaved=" not in transport:
            self._write(461, "Unsupported Transport", cseq, fault=fault)
            return
        ch = transport.split("interleaved=", 1)[1].split(";", 1)[0].split("-", 1)[0]
        self.rtp_ch = int(ch) if ch.isascii() and ch.isdigit() and int(ch) < 255 else 0
        if track == 1 or not self.session:
            self.session = self.session or os.urandom(6).hex().upper()
        self._write(200, "OK", cseq,
                    f"Session: {self.session};timeout=60\r\n"
                    f"Transport: RTP/AVP/TCP;unicast;interleaved={self.rtp_ch}-{self.rtp_ch + 1};"
                    f"ssrc=1A2B3C4D;mode=\"play\"\r\n", fault=fault)

    # -- output -------------------------------------------------------------------------------

    def _write(self, status: int, reason: str, cseq: str, extra: str = "", body: bytes = b"",
               fault: Fault = Fault.NONE) -> None:
        head = f"RTSP/1.0 {status} {reason}\r\nCSeq: {cseq}\r\nServer: camwatch-sim\r\n{extra}"
        if body:
            head += f"Content-Length: {len(body)}\r\n"
        data = f"{head}\r\n".encode() + body
        if fault is Fault.DRIP:
            self._drip(data)
        else:
            self._send(data)

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _drip(self, data: bytes) -> None:
        if self.transport is None:
            return
        self.transport.write(data[:1])
        if len(data) > 1:
            self.drip = self.loop.call_later(1.0, self._drip, data[1:])
        else:
            self.drip = None

    def _flood(self) -> None:
        """OVERSIZED: header lines until the client goes away (flow-controlled)."""
        while self.flood and not self.paused and self.transport is not None:
            self.transport.write(_PAD * 16)

    def _reset(self, partial: str) -> None:
        t = self.transport
        if t is None:
            return
        t.write(partial.encode())
        sock = t.get_extra_info("socket")
        if sock is not None:  # linger 0: close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t.abort()

    def _rtp(self) -> None:
        t = self.transport
        if t is None:
            self.rtp_handle = None
            return
        self.rtp_seq = (self.rtp_seq + 1) & 0xFFFF
        payload = b"\x65\x88\x84" + b"\x00" * 61  # a fake IDR slice NAL
        header = struct.pack("!BBHII", 0x80, 96, self.rtp_seq, self.rtp_seq * 18000, 0x1A2B3C4D)
        size = len(header) + len(payload)
        t.write(struct.pack("!cBH", b"$", self.rtp_ch, size) + header + payload)
        self.rtp_handle = self.loop.call_later(RTP_INTERVAL_S, self._rtp)

    def _frame(self) -> None:
        """The clip's next picture, its RTP packets at once, then the next one 1/FPS later;
        skipped (not queued) while the client does not read."""
        t, c = self.transport, self.video
        if t is None or c is None:
            self.rtp_handle = None
            return
        if not self.paused:
            packets, self.rtp_seq = rtp_packets(c, self.video_i, self.rtp_seq)
            t.write(b"".join(struct.pack("!cBH", b"$", self.rtp_ch, len(p)) + p
                             for p in packets))
        self.video_i += 1
        self.rtp_handle = self.loop.call_later(1.0 / FPS, self._frame)

    def _stop_rtp(self) -> None:
        if self.rtp_handle is not None:
            self.rtp_handle.cancel()
            self.rtp_handle = None


async def start_rtsp_server(
    device: SimDevice, host: str, port: int = 0
) -> asyncio.base_events.Server:
    """Serve ``device`` on ``host:port`` (0: a free port; read it from ``server.sockets``).

    Close with ``server.close(); await server.wait_closed()``; start again on the same port
    with another call (the listener sets SO_REUSEADDR).
    """
    loop = asyncio.get_running_loop()
    # Under uvloop this is uvloop's Server, which has the same interface.
    return await loop.create_server(lambda: _Conn(device), host, port, reuse_address=True)
