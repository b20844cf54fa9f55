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

So the per-round calls use a minimal HTTP/1.1 + SOAP 1.2 client on ``asyncio`` streams
(:mod:`camwatch.probes.soap`): every
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
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import aiohttp
import structlog

from camwatch.probes import ProbeSettings, Target
from camwatch.probes.result import ProbeResult, Reason
from camwatch.probes.soap import (
    ENV12,
    Conn,
    Endpoint,
    HttpStatusError,
    ProtocolError,
    SoapError,
    SoapFault,
    as_utf8,
    charset_of,
    clip,
    local_name,
    parse_reply,
    qlocal,
    tls_context,
)
from camwatch.probes.tcp import classify_os_error
from camwatch.secrets import credential_forms, redact_text

__all__ = [
    "KIND",
    "HttpStatusError",
    "ProtocolError",
    "SoapError",
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


def parse_system_date_and_time(data: bytes, status: int = 200) -> dt.datetime | None:
    """The camera's UTC time from a GetSystemDateAndTime reply (whole seconds, as sent); None
    for a reply with only a LocalDateTime (old firmware): the camera answered, but its
    clock cannot be compared (the POSIX TZ beside it is too often wrong to turn it into
    UTC), so its drift is not measured. A reply with neither is a protocol error."""
    el = _expect(parse_reply(data, status), "GetSystemDateAndTimeResponse")
    utc = el.find(".//{*}UTCDateTime")
    if utc is None:
        if el.find(".//{*}LocalDateTime") is not None:
            return None
        raise ProtocolError("GetSystemDateAndTime reply has neither UTCDateTime nor "
                            "LocalDateTime")
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
        out[key] = clip(text.strip(), _MAX_FIELD)
    return out


def _expect(el: ET.Element, name: str) -> ET.Element:
    if local_name(el.tag) != name:
        raise ProtocolError(f"expected <{name}>, got <{clip(local_name(el.tag), 60)}>")
    return el


def _endpoint(target: Target) -> Endpoint | None:
    # Without an ONVIF URL, the ONVIF default address on the channel's host.
    url = target.onvif_url or (f"http://{target.host}/onvif/device_service" if target.host
                               else None)
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    tls = parts.scheme == "https"
    return Endpoint(parts.hostname, parts.port or (443 if tls else 80),
                     parts.path or "/onvif/device_service", tls)


# -- the probe -------------------------------------------------------------------------------


@dataclass(slots=True)
class _State:
    operation: str = "GetSystemDateAndTime"
    drift_s: float | None = None
    auth_always: bool = False
    local_clock_only: bool = False  # the reply had a LocalDateTime only
    device: dict[str, str] = field(default_factory=dict)


async def probe(target: Target, settings: ProbeSettings) -> ProbeResult:
    """GetSystemDateAndTime (+ GetDeviceInformation with digest auth); never raises."""
    ep = _endpoint(target)
    if ep is None:
        return ProbeResult.failure(KIND, Reason.INTERNAL, "channel has no usable ONVIF address")
    start = time.perf_counter()
    phases: dict[str, float] = {}
    state = _State()
    conn = Conn(ep, settings, phases)
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
    if state.local_clock_only:
        info["clock"] = "local_only"  # no UTCDateTime in its reply: drift not measured
    log.debug("onvif_probe", channel=target.channel_id, ok=True, drift_s=state.drift_s)
    return ProbeResult.success(KIND, latency_s=time.perf_counter() - start, phases=phases,
                               clock_drift_s=state.drift_s, info=info)


async def _exchange(conn: Conn, target: Target, settings: ProbeSettings,
                    state: _State) -> None:
    creds = (target.username, target.password.reveal()) if (
        target.username and target.password) else None
    phase = "get_system_date_and_time"
    try:
        ex = await conn.call(f"{_TDS}/GetSystemDateAndTime", _request("GetSystemDateAndTime"),
                             phase)
    except SoapError as exc:
        if creds is None or _reason(exc) is not Reason.AUTH:
            raise
        # Axis firmware (and ipycam) authenticate every request, GetSystemDateAndTime
        # included, answering 401 without a token: ask once more, with one.
        state.auth_always = True
        ex = await conn.call(f"{_TDS}/GetSystemDateAndTime",
                             _request("GetSystemDateAndTime", username_token(*creds)), phase)
    camera = parse_system_date_and_time(ex.body)
    if camera is None:  # local time only: alive, its drift not measured
        state.local_clock_only = True
    else:
        # The camera sends whole seconds, truncated: its true time lies in [t, t+1): +0.5.
        state.drift_s = camera.timestamp() + 0.5 - (ex.sent_wall + ex.rtt / 2)
    if creds is None or not settings.onvif_device_info:
        return
    state.operation = "GetDeviceInformation"
    ex = await conn.call(f"{_TDS}/GetDeviceInformation",
                         _request("GetDeviceInformation", username_token(*creds)),
                         "get_device_information")
    state.device = parse_device_information(ex.body)


def _failed(exc: Exception, target: Target, settings: ProbeSettings, ep: Endpoint,
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
    pw = target.password.reveal() if target.password else None
    detail = redact_text(detail, credential_forms(target.username, pw))  # a fault may echo
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


async def _stream_uri(ep: Endpoint, target: Target, settings: ProbeSettings) -> str | None:
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
        subs = tuple(qlocal(getattr(s, "localname", str(s))) for s in (exc.subcodes or ()))
        return SoapFault(0, qlocal(str(exc.code or "")), subs, clip(str(exc.message), 200))
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
                connector=aiohttp.TCPConnector(limit=1, ssl=tls_context()),
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
            reply = as_utf8(bytes(data), charset_of(ctype))  # GBK firmware: lxml gets UTF-8
            if reply.lstrip()[:1] == b"<":
                try:
                    parse_reply(reply, status)  # refuses DTDs before zeep parses
                except SoapFault:
                    pass  # zeep raises its own Fault for it
                except ProtocolError:
                    if status != 200:
                        raise HttpStatusError(status) from None
                    raise
            out = Response()
            out._content = reply
            out.status_code = status
            out.headers = CaseInsensitiveDict({"Content-Type": ctype})
            return out

        def load(self, url: str) -> bytes:
            raise RuntimeError("remote WSDL loading is disabled")

        async def aclose(self) -> None:
            await self._session.close()

    return _Bounded()
