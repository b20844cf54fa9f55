"""ONVIF probe: is the device service alive, is its clock right, do our credentials work?

One attempt, two SOAP calls on one keep-alive connection:

1. ``GetSystemDateAndTime`` without authentication (ONVIF Core lets it through before auth):
   liveness, and the clock drift = camera UTC − our UTC at the midpoint of send and receive.
2. ``GetDeviceInformation`` with a WS-UsernameToken PasswordDigest, when
   ``settings.onvif_device_info`` is on and the channel has credentials: manufacturer, model,
   firmware and serial into ``result.info["device"]``.

:func:`get_stream_uri` (``GetCapabilities`` → ``GetProfiles`` → ``GetStreamUri``) fills in
inventory rows that lack an RTSP URL; it runs rarely, not every round.

Why the two per-round calls are hand-written SOAP and not onvif-zeep-async
-------------------------------------------------------------------------
Measured with ``bench/bench_probe_onvif.py`` (Python 3.11, onvif-zeep-async 4.3.0, zeep 4.3.3,
aiohttp 3.14; loopback, simulated devices in another process; 5,000 probes ours / 2,000 zeep,
concurrency 300; CPU of the probing process per probe, two runs):

=====================================  ====================  ===========================
                                       this module           onvif-zeep-async per probe
=====================================  ====================  ===========================
GetSystemDateAndTime only              310-360 µs            1,130-1,380 µs
+ GetDeviceInformation (digest auth)   430-460 µs            1,680-2,070 µs
memory                                 12 KiB per probe      25 KiB retained and 0.5-0.67
                                       in flight, no client  ms CPU per client created
endless 200 body (``oversized``)       PROTOCOL after 1 MiB  no cap: 700 MiB traced
                                       in 0.04 s, 1.2 MiB    (1.1 GiB RSS) in 3 s, ended
                                       peak                  only by our timeout
=====================================  ====================  ===========================

The WSDL is parsed once per process (88 ms); the library builds one aiohttp connector and
session per service, so nothing is shared across devices, as wanted. But its transport does
``await response.read()`` with a 90 s read timeout and its zeep settings set
``xml_huge_tree=True``, with no public knob for a body cap: a daemon probing 10,000 devices
cannot let one hostile camera take a gigabyte, and 4x the CPU matters at that scale too.

So the per-round calls use a minimal HTTP/1.1 + SOAP 1.2 client on ``asyncio`` streams: every
read is bounded (header block by ``settings.max_header_bytes``, body by
``settings.max_soap_bytes``, refused as soon as a Content-Length or chunk total exceeds it),
and replies are parsed with ``defusedxml`` (``forbid_dtd``: any DOCTYPE is refused before an
entity is declared, so XXE and entity expansion never happen; SOAP forbids DTDs anyway).
``get_stream_uri`` keeps onvif-zeep-async (real devices' media answers vary far more than these
two replies), behind a transport that applies the same body cap and DTD refusal before zeep
sees a byte.

Classification lives in one function, :func:`classify`. Secrets: the password only ever
enters a SHA-1 digest; ``detail`` is additionally passed through ``redact_text``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import os
import re
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import aiohttp
import defusedxml.ElementTree as DET
import structlog
from defusedxml import DefusedXmlException

from camwatch.probes import ProbeSettings, Target
from camwatch.probes.result import ProbeResult, Reason
from camwatch.probes.tcp import classify_os_error
from camwatch.secrets import redact_text

__all__ = [
    "KIND",
    "HttpStatusError",
    "OnvifError",
    "ProtocolError",
    "SoapFault",
    "classify",
    "get_stream_uri",
    "parse_device_information",
    "parse_reply",
    "parse_system_date_and_time",
    "probe",
    "username_token",
]

KIND = "onvif"
log = structlog.get_logger(__name__)

ENV12 = "http://www.w3.org/2003/05/soap-envelope"
ENV11 = "http://schemas.xmlsoap.org/soap/envelope/"
_TDS = "http://www.onvif.org/ver10/device/wsdl"
_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_DIGEST = ("http://docs.oasis-open.org/wss/2004/01/"
           "oasis-200401-wss-username-token-profile-1.0#PasswordDigest")
_B64 = ("http://docs.oasis-open.org/wss/2004/01/"
        "oasis-200401-soap-message-security-1.0#Base64Binary")
_MAX_FIELD = 128  # device-info strings are cut to this many characters
# Fault subcodes that mean "your credentials were refused". ONVIF Core uses ter:NotAuthorized;
# WS-Security 1.0 §12 defines the wsse ones, which some firmwares (Dahua, Uniview) send instead.
_AUTH_SUBCODES = frozenset({"NotAuthorized", "FailedAuthentication", "InvalidSecurityToken",
                            "InvalidSecurity"})
_NOT_AUTHORIZED = re.compile(r"not\s+authori[sz]ed|unauthori[sz]ed", re.IGNORECASE)


# -- errors and their classification ---------------------------------------------------------


class OnvifError(Exception):
    """A failed SOAP exchange, already understood. Messages are secret-free by construction."""


class ProtocolError(OnvifError):
    """The reply is not HTTP, not SOAP, too big, hostile, or misses what it must carry."""


class HttpStatusError(OnvifError):
    """A non-200 HTTP status without a readable SOAP fault."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"HTTP {status}")


class SoapFault(OnvifError):
    """A SOAP fault (1.1 or 1.2). ``subcodes`` are local names, outermost first."""

    def __init__(self, status: int, code: str, subcodes: tuple[str, ...], text: str) -> None:
        self.status, self.code, self.subcodes, self.text = status, code, subcodes, text
        chain = "/".join((code, *subcodes))
        super().__init__(f"SOAP fault {chain} ({text}), HTTP {status}")


def classify(exc: BaseException, *, drift_s: float | None = None,
             skew_threshold_s: float = 5.0) -> Reason:
    """The one place that maps a failure to a :class:`Reason`.

    ``drift_s`` is the clock drift measured earlier in the same probe, if any: WS-UsernameToken
    carries a ``Created`` time that devices check against their own clock (often ±5 min), so an
    auth failure from a device whose clock is far off is a clock problem, not a password one.
    """
    reason = _reason(exc)
    if reason is Reason.AUTH and drift_s is not None and abs(drift_s) > skew_threshold_s:
        return Reason.CLOCK_SKEW
    return reason


def _reason(exc: BaseException) -> Reason:
    if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one
        return Reason.TIMEOUT
    if isinstance(exc, SoapFault):
        if (exc.status == 401 or _AUTH_SUBCODES.intersection(exc.subcodes)
                or _NOT_AUTHORIZED.search(exc.text)):
            return Reason.AUTH
        return Reason.NOT_FOUND if exc.status == 404 else Reason.PROTOCOL
    if isinstance(exc, HttpStatusError):
        if exc.status in (401, 403):  # 403: some NVRs answer it for a locked or unprivileged user
            return Reason.AUTH
        return Reason.NOT_FOUND if exc.status == 404 else Reason.PROTOCOL
    if isinstance(exc, ProtocolError | asyncio.IncompleteReadError | asyncio.LimitOverrunError
                  | ssl.SSLError | aiohttp.ClientResponseError | aiohttp.ClientPayloadError
                  | aiohttp.ServerDisconnectedError):
        return Reason.PROTOCOL
    if isinstance(exc, OSError):
        return classify_os_error(exc)
    if isinstance(exc, aiohttp.ClientError):
        return Reason.PROTOCOL
    return Reason.INTERNAL


# -- SOAP messages ---------------------------------------------------------------------------


def username_token(username: str, password: str, *, created: float | None = None,
                   nonce: bytes | None = None) -> str:
    """A WS-Security header with a UsernameToken PasswordDigest:
    Base64(SHA-1(nonce + created + password)), ``created`` in UTC with a Z."""
    nonce = os.urandom(16) if nonce is None else nonce
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    digest = base64.b64encode(hashlib.sha1(nonce + stamp.encode() + password.encode()).digest())
    return (f'<Security s:mustUnderstand="1" xmlns="{_WSSE}"><UsernameToken>'
            f"<Username>{escape(username)}</Username>"
            f'<Password Type="{_DIGEST}">{digest.decode()}</Password>'
            f'<Nonce EncodingType="{_B64}">{base64.b64encode(nonce).decode()}</Nonce>'
            f'<Created xmlns="{_WSU}">{stamp}</Created></UsernameToken></Security>')


def _request(operation: str, security: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{ENV12}">'
            f"<s:Header>{security}</s:Header><s:Body>"
            f'<{operation} xmlns="{_TDS}"/></s:Body></s:Envelope>').encode()


def parse_reply(data: bytes, status: int = 200) -> ET.Element:
    """The first element inside the SOAP Body of ``data``.

    Raises :class:`SoapFault` when that element is a Fault and :class:`ProtocolError` for
    anything else that is not a SOAP envelope, including any DTD (so no XXE, no entity
    expansion). Never raises anything else, whatever the bytes.
    """
    try:
        root: ET.Element = DET.fromstring(data, forbid_dtd=True, forbid_entities=True,
                              forbid_external=True)
    except DefusedXmlException as exc:
        raise ProtocolError(f"hostile XML refused ({type(exc).__name__})") from None
    except ET.ParseError as exc:
        raise ProtocolError(f"not XML ({exc})") from None
    except (ValueError, LookupError, UnicodeError, RecursionError) as exc:
        # expat: unknown encoding declarations (LookupError), bad code points, ...
        raise ProtocolError(f"not XML ({type(exc).__name__})") from None
    ns = root.tag[1:].partition("}")[0] if root.tag.startswith("{") else ""
    if ns not in (ENV12, ENV11) or _local(root.tag) != "Envelope":
        raise ProtocolError(f"not a SOAP envelope (root <{_local(root.tag)}>)")
    body = root.find(f"{{{ns}}}Body")
    if body is None or len(body) == 0:
        raise ProtocolError("SOAP envelope without a Body element")
    first = body[0]
    if _local(first.tag) == "Fault":
        raise _fault(first, ns, status)
    return first


def _fault(el: ET.Element, ns: str, status: int) -> SoapFault:
    if ns == ENV12:
        code = _qlocal(el.findtext(f"{{{ns}}}Code/{{{ns}}}Value"))
        subcodes: list[str] = []
        sub = el.find(f"{{{ns}}}Code/{{{ns}}}Subcode")
        while sub is not None and len(subcodes) < 8:
            subcodes.append(_qlocal(sub.findtext(f"{{{ns}}}Value")))
            sub = sub.find(f"{{{ns}}}Subcode")
        text = el.findtext(f"{{{ns}}}Reason/{{{ns}}}Text") or ""
    else:  # SOAP 1.1, still spoken by old firmware: faultcode/faultstring, unqualified
        code, subcodes = _qlocal(el.findtext("faultcode")), []
        text = el.findtext("faultstring") or ""
    return SoapFault(status, code or "?", tuple(subcodes), _clip(text, 200))


def parse_system_date_and_time(data: bytes, status: int = 200) -> dt.datetime:
    """The camera's UTC time from a GetSystemDateAndTime reply (whole seconds, as sent)."""
    el = _expect(parse_reply(data, status), "GetSystemDateAndTimeResponse")
    utc = el.find(".//{*}UTCDateTime")
    # Old firmware may send only LocalDateTime with a POSIX TZ we cannot trust: not usable.
    if utc is None:
        raise ProtocolError("GetSystemDateAndTime reply has no UTCDateTime")
    parts: dict[str, int] = {}
    for name in ("Year", "Month", "Day", "Hour", "Minute", "Second"):
        text = utc.findtext(f".//{{*}}{name}")
        if text is None or not text.strip().isdigit() or len(text.strip()) > 4:
            raise ProtocolError(f"GetSystemDateAndTime reply has no usable {name}")
        parts[name] = int(text)
    try:
        return dt.datetime(parts["Year"], parts["Month"], parts["Day"], parts["Hour"],
                           parts["Minute"], parts["Second"], tzinfo=dt.UTC)
    except ValueError as exc:
        raise ProtocolError(f"GetSystemDateAndTime reply has an impossible date ({exc})") from None


def parse_device_information(data: bytes, status: int = 200) -> dict[str, str]:
    """Manufacturer, model, firmware, serial (and hardware id when present)."""
    el = _expect(parse_reply(data, status), "GetDeviceInformationResponse")
    out: dict[str, str] = {}
    for key, name in (("manufacturer", "Manufacturer"), ("model", "Model"),
                      ("firmware", "FirmwareVersion"), ("serial", "SerialNumber"),
                      ("hardware_id", "HardwareId")):
        text = el.findtext(f"{{*}}{name}")
        if text is None:
            if key == "hardware_id":
                continue
            raise ProtocolError(f"GetDeviceInformation reply has no {name}")
        out[key] = _clip(text.strip(), _MAX_FIELD)
    return out


def _expect(el: ET.Element, name: str) -> ET.Element:
    if _local(el.tag) != name:
        raise ProtocolError(f"expected <{name}>, got <{_clip(_local(el.tag), 60)}>")
    return el


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _qlocal(text: str | None) -> str:
    return (text or "").strip().rpartition(":")[2][:60]


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + "…"


# -- bounded HTTP/1.1 over asyncio streams ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Endpoint:
    host: str
    port: int
    path: str
    tls: bool

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literal
        return f"{host}:{self.port}"


def _endpoint(target: Target) -> _Endpoint | None:
    # Without an ONVIF URL, the ONVIF default address on the channel's host.
    url = target.onvif_url or (f"http://{target.host}/onvif/device_service" if target.host
                               else None)
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    tls = parts.scheme == "https"
    return _Endpoint(parts.hostname, parts.port or (443 if tls else 80),
                     parts.path or "/onvif/device_service", tls)


@dataclass(slots=True)
class _Exchange:
    body: bytes
    sent_wall: float  # time.time() when the request was written
    rtt: float


@dataclass(slots=True)
class _Conn:
    """One keep-alive connection to the device, opened on first use and reopened only when
    the device asked to close it. ``close()`` aborts it: nothing lingers after a probe."""

    ep: _Endpoint
    settings: ProbeSettings
    phases: dict[str, float]
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _reusable: bool = False

    async def call(self, operation: str, body: bytes, phase: str) -> _Exchange:
        if self._writer is None or not self._reusable or self._writer.transport.is_closing():
            self.close()
            with _timed(self.phases, "connect"):
                ctx = _tls_context() if self.ep.tls else None
                self._reader, self._writer = await asyncio.open_connection(
                    self.ep.host, self.ep.port, ssl=ctx,
                    limit=self.settings.max_header_bytes)
        assert self._reader is not None and self._writer is not None
        head = (f"POST {self.ep.path} HTTP/1.1\r\nHost: {self.ep.where}\r\n"
                f"User-Agent: {self.settings.user_agent}\r\n"
                f'Content-Type: application/soap+xml; charset=utf-8; action="{_TDS}/{operation}"'
                f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        with _timed(self.phases, phase):
            sent_wall, t0 = time.time(), time.perf_counter()
            self._writer.write(head + body)
            await self._writer.drain()
            status, data, self._reusable = await _read_response(
                self._reader, self.settings.max_soap_bytes)
            rtt = time.perf_counter() - t0
        if status != 200:
            try:
                parse_reply(data, status)
            except SoapFault:
                raise
            except ProtocolError:
                raise HttpStatusError(status) from None
            raise ProtocolError(f"HTTP {status} with a SOAP body that is not a fault")
        return _Exchange(data, sent_wall, rtt)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()  # no FIN handshake to wait for: we are done
        self._reader = self._writer = None


_STATUS = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: |$)")


async def _read_response(reader: asyncio.StreamReader, max_body: int) -> tuple[int, bytes, bool]:
    """(status, body, connection reusable). The head is bounded by the reader's limit, the
    body by ``max_body``: a declared length over the cap fails before reading a byte of it."""
    for _ in range(8):  # interim 1xx heads before the real one; a device looping them is broken
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ProtocolError("reply header block over the limit") from None
        except asyncio.IncompleteReadError as exc:
            what = "a truncated reply head" if exc.partial else "no reply"
            raise ProtocolError(f"connection closed with {what}") from None
        lines = head[:-4].split(b"\r\n")
        m = _STATUS.match(lines[0])
        if m is None:
            raise ProtocolError("reply is not HTTP/1.x")
        status = int(m.group(1))
        if status >= 200:
            break
    else:
        raise ProtocolError("endless interim 1xx replies")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolError("malformed reply header line")
        headers[name.strip().lower()] = value.strip()
    # HTTP/1.0 closes after each reply unless it says keep-alive (ipycam, old NVR web servers)
    conn_header = headers.get(b"connection", b"").lower()
    reusable = conn_header == b"keep-alive" if lines[0].startswith(b"HTTP/1.0") else (
        conn_header != b"close")
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return status, await _read_chunked(reader, max_body), reusable
    if (cl := headers.get(b"content-length")) is not None:
        if not cl.isdigit():
            raise ProtocolError("malformed Content-Length")
        length = int(cl)
        if length > max_body:
            raise ProtocolError(f"reply body of {length} bytes is over the {max_body}-byte cap")
        try:
            return status, await reader.readexactly(length), reusable
        except asyncio.IncompleteReadError:
            raise ProtocolError("connection closed in the middle of the reply body") from None
    parts: list[bytes] = []  # no length: the body ends when the device closes
    total = 0
    while chunk := await reader.read(65536):
        total += len(chunk)
        if total > max_body:
            raise ProtocolError(f"reply body over the {max_body}-byte cap")
        parts.append(chunk)
    return status, b"".join(parts), False


async def _read_chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    try:
        while True:
            line = await reader.readuntil(b"\r\n")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError("malformed chunk size") from None
            if size < 0 or total + size > max_body:
                raise ProtocolError(f"chunked reply body over the {max_body}-byte cap")
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            data = await reader.readexactly(size + 2)
            parts.append(data[:-2])
            total += size
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed in the middle of a chunked body") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError("chunk header over the limit") from None


_TLS: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """Cameras carry self-signed certificates: we judge liveness, not identity, and the
    password never crosses the wire (only its digest)."""
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
        _TLS.check_hostname = False
        _TLS.verify_mode = ssl.CERT_NONE
    return _TLS


@contextlib.contextmanager
def _timed(phases: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0


# -- the probe -------------------------------------------------------------------------------


@dataclass(slots=True)
class _State:
    operation: str = "GetSystemDateAndTime"
    drift_s: float | None = None
    auth_always: bool = False
    device: dict[str, str] = field(default_factory=dict)


async def probe(target: Target, settings: ProbeSettings) -> ProbeResult:
    """GetSystemDateAndTime (+ GetDeviceInformation with digest auth); never raises."""
    ep = _endpoint(target)
    if ep is None:
        return ProbeResult.failure(KIND, Reason.INTERNAL, "channel has no usable ONVIF address")
    start = time.perf_counter()
    phases: dict[str, float] = {}
    state = _State()
    conn = _Conn(ep, settings, phases)
    try:
        async with asyncio.timeout(settings.timeout_s):
            await _exchange(conn, target, settings, state)
    except Exception as exc:
        return _failed(exc, target, settings, ep, state, phases, time.perf_counter() - start)
    finally:
        conn.close()
    info: dict[str, Any] = {}
    if state.device:
        info["device"] = state.device
    if state.auth_always:
        info["auth_always"] = True
    log.debug("onvif_probe", channel=target.channel_id, ok=True, drift_s=state.drift_s)
    return ProbeResult.success(KIND, latency_s=time.perf_counter() - start, phases=phases,
                               clock_drift_s=state.drift_s, info=info)


async def _exchange(conn: _Conn, target: Target, settings: ProbeSettings,
                    state: _State) -> None:
    creds = (target.username, target.password.reveal()) if (
        target.username and target.password) else None
    phase = "get_system_date_and_time"
    try:
        ex = await conn.call("GetSystemDateAndTime", _request("GetSystemDateAndTime"), phase)
    except OnvifError as exc:
        if creds is None or _reason(exc) is not Reason.AUTH:
            raise
        # Axis firmware (and ipycam) authenticate every request, GetSystemDateAndTime
        # included, answering 401 without a token: ask once more, with one.
        state.auth_always = True
        ex = await conn.call("GetSystemDateAndTime",
                             _request("GetSystemDateAndTime", username_token(*creds)), phase)
    camera = parse_system_date_and_time(ex.body)
    # The camera sends whole seconds, truncated: its true time lies in [t, t+1), hence +0.5.
    state.drift_s = camera.timestamp() + 0.5 - (ex.sent_wall + ex.rtt / 2)
    if creds is None or not settings.onvif_device_info:
        return
    state.operation = "GetDeviceInformation"
    ex = await conn.call("GetDeviceInformation",
                         _request("GetDeviceInformation", username_token(*creds)),
                         "get_device_information")
    state.device = parse_device_information(ex.body)


def _failed(exc: Exception, target: Target, settings: ProbeSettings, ep: _Endpoint,
            state: _State, phases: dict[str, float], took: float) -> ProbeResult:
    reason = classify(exc, drift_s=state.drift_s,
                      skew_threshold_s=settings.clock_skew_threshold_s)
    if isinstance(exc, TimeoutError) and exc.errno is None:  # our deadline, not ETIMEDOUT
        what = f"no complete answer within {settings.timeout_s:g} s"
    elif reason is Reason.INTERNAL:
        what = f"internal error {type(exc).__name__}"
    elif isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
        what = exc.strerror or type(exc).__name__
    else:
        what = str(exc) or type(exc).__name__
    detail = f"{state.operation} at {ep.where}: {what}"
    if reason is Reason.CLOCK_SKEW:
        detail += (f"; authentication refused with the camera clock {state.drift_s:+.1f} s"
                   " off (WS-UsernameToken timestamps are checked against it)")
    pw = target.password.reveal() if target.password else ""
    detail = redact_text(detail, (pw,))
    if reason is Reason.INTERNAL:
        log.error("onvif_probe_internal", channel=target.channel_id, error=type(exc).__name__,
                  exc_info=exc)
    else:
        log.debug("onvif_probe", channel=target.channel_id, ok=False, reason=str(reason),
                  error=type(exc).__name__, detail=detail)
    info: dict[str, Any] = {"auth_always": True} if state.auth_always else {}
    return ProbeResult.failure(KIND, reason, detail, latency_s=took, phases=phases,
                               clock_drift_s=state.drift_s, info=info)


# -- stream URI discovery (onvif-zeep-async) -------------------------------------------------


async def get_stream_uri(target: Target, settings: ProbeSettings) -> str | None:
    """The RTSP URI of the device's first media profile, or None (reason logged at DEBUG).

    GetCapabilities (Media XAddr) → GetProfiles → GetStreamUri (RTP-Unicast over RTSP), with
    onvif-zeep-async behind a body-capped, DTD-refusing transport. The URI is returned as the
    device sends it (it may carry user:pass@; split it with ``secrets.split_userinfo``).
    """
    ep = _endpoint(target)
    if ep is None:
        return None
    try:
        async with asyncio.timeout(settings.timeout_s):
            return await _stream_uri(ep, target, settings)
    except Exception as exc:
        reason = classify(_from_zeep(exc))
        log_fn = log.error if reason is Reason.INTERNAL else log.debug
        log_fn("onvif_stream_uri_failed", channel=target.channel_id, reason=str(reason),
               error=type(exc).__name__)
        return None


async def _stream_uri(ep: _Endpoint, target: Target, settings: ProbeSettings) -> str | None:
    from onvif.client import _WSDL_PATH, ONVIFService  # heavy: imported on first use only
    from onvif.definition import SERVICES

    scheme = "https" if ep.tls else "http"
    user = target.username
    pw = target.password.reveal() if target.password else None

    async def service(name: str, xaddr: str) -> Any:
        d = SERVICES[name]
        svc = ONVIFService(xaddr, user, pw, os.path.join(_WSDL_PATH, d["wsdl"]),
                           binding_name=f"{{{d['ns']}}}{d['binding']}", no_cache=True)
        # Same cap and DTD refusal as the probe; the library's own reads are unbounded.
        svc.transport = _bounded_transport(settings)
        services.append(svc)
        await svc.setup()
        return svc

    services: list[Any] = []
    try:
        dev = await service("devicemgmt", f"{scheme}://{ep.where}{ep.path}")
        caps = await dev.GetCapabilities({"Category": "Media"})
        media_xaddr = caps.Media.XAddr if caps is not None and caps.Media is not None else None
        if not media_xaddr:
            raise ProtocolError("GetCapabilities names no Media service")
        # Devices behind NAT advertise their LAN address: keep the path, use the address we
        # reached (the media service sits on the device service's port on every device seen).
        media_path = urlsplit(media_xaddr).path or "/onvif/media_service"
        media = await service("media", f"{scheme}://{ep.where}{media_path}")
        profiles = await media.GetProfiles()
        if not profiles:
            raise ProtocolError("GetProfiles returned no profile")
        uri = await media.GetStreamUri({
            "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
            "ProfileToken": profiles[0].token})
        text = getattr(uri, "Uri", None)
        return text.strip() if isinstance(text, str) and text.strip() else None
    finally:
        for svc in services:
            with contextlib.suppress(Exception):
                await svc.close()


def _from_zeep(exc: Exception) -> BaseException:
    """Translate zeep's exceptions into ours so :func:`classify` stays the one mapping."""
    from zeep.exceptions import Fault, TransportError, XMLSyntaxError

    if isinstance(exc, Fault):
        subs = tuple(_qlocal(getattr(s, "localname", str(s))) for s in (exc.subcodes or ()))
        return SoapFault(0, _qlocal(str(exc.code or "")), subs, _clip(str(exc.message), 200))
    if isinstance(exc, TransportError):
        return HttpStatusError(exc.status_code)
    if isinstance(exc, XMLSyntaxError):
        return ProtocolError("invalid XML")
    return exc


def _bounded_transport(settings: ProbeSettings) -> Any:
    """A zeep transport for one call sequence: own aiohttp session, body cap, no DTDs."""
    from requests import Response
    from requests.structures import CaseInsensitiveDict
    from zeep.transports import Transport
    from zeep.wsdl.utils import etree_to_string

    class _Bounded(Transport):
        def __init__(self) -> None:
            super().__init__(cache=None)  # type: ignore[no-untyped-call]
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1, ssl=_tls_context()),
                timeout=aiohttp.ClientTimeout(total=settings.timeout_s),
                max_line_size=settings.max_header_bytes,
                max_field_size=settings.max_header_bytes)

        async def post_xml(self, address: str, envelope: Any, headers: dict[str, str]) -> Any:
            headers = {**headers, "User-Agent": settings.user_agent}
            body = etree_to_string(envelope)  # type: ignore[no-untyped-call]
            async with self._session.post(address, data=body, headers=headers) as resp:
                cl = resp.content_length
                if cl is not None and cl > settings.max_soap_bytes:
                    raise ProtocolError(f"reply body of {cl} bytes is over the cap")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > settings.max_soap_bytes:
                        raise ProtocolError("reply body over the cap")
                status, ctype = resp.status, resp.headers.get("Content-Type", "")
            if data.lstrip()[:1] == b"<":
                try:
                    parse_reply(bytes(data), status)  # refuses DTDs before zeep parses
                except SoapFault:
                    pass  # zeep raises its own Fault for it
                except ProtocolError:
                    if status != 200:
                        raise HttpStatusError(status) from None
                    raise
            out = Response()
            out._content = bytes(data)
            out.status_code = status
            out.headers = CaseInsensitiveDict({"Content-Type": ctype})
            return out

        def load(self, url: str) -> bytes:
            raise RuntimeError("remote WSDL loading is disabled")

        async def aclose(self) -> None:
            await self._session.close()

    return _Bounded()
