"""The simulator's ONVIF device and media service: a fake ONVIF camera on loopback.

One :func:`start_onvif_server` per :class:`SimDevice`. It is a bare ``asyncio`` server with a
minimal HTTP/1.1 reader (Content-Length bodies, keep-alive), so one process can hold ~10,000
devices: a device costs one listening socket and a few KB until somebody connects. Raw sockets
also let it misbehave precisely (hang, drip, reset, endless body), which a web framework would
not allow.

Served at ``/onvif/device_service``: GetSystemDateAndTime (device clock = now +
``clock_skew_s``), GetDeviceInformation (WS-UsernameToken PasswordDigest: digest, nonce replay,
``Created`` window against the *device* clock), GetCapabilities, GetServices. At
``/onvif/media_service``: GetProfiles and GetStreamUri (``rtsp://<host>:<rtsp_port><path of the
first channel>``). SOAP 1.2 replies; SOAP 1.1 requests are understood too.

The device's fault is read at every request (``device.effective_fault()``), so tests and the
control API can change it while the server runs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import hmac
import socket
import struct
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

import defusedxml.ElementTree as DET
import structlog
from defusedxml import DefusedXmlException

from camwatch.sim.model import Fault, SimDevice

__all__ = ["DEVICE_PATH", "MEDIA_PATH", "OnvifServer", "start_onvif_server"]

log = structlog.get_logger(__name__)

DEVICE_PATH = "/onvif/device_service"
MEDIA_PATH = "/onvif/media_service"
DEFAULT_CLOCK_SKEW_S = 600.0  # Fault.CLOCK_SKEW when the device has no clock_skew_s of its own
REPLAY_WINDOW_S = 300.0  # a UsernameToken whose Created is further off the device clock fails
DRIP_INTERVAL_S = 1.0
MAX_REQUEST_BYTES = 256 * 1024
_MAX_NONCES = 4096  # per device; older ones are forgotten first

_ENV12 = "http://www.w3.org/2003/05/soap-envelope"
_ENV11 = "http://schemas.xmlsoap.org/soap/envelope/"
_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_TDS = "http://www.onvif.org/ver10/device/wsdl"
_TRT = "http://www.onvif.org/ver10/media/wsdl"
_NS_DECL = (
    f'xmlns:env="{_ENV12}" xmlns:tds="{_TDS}" xmlns:trt="{_TRT}" '
    'xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:ter="http://www.onvif.org/ver10/error"'
)
# Operations that ONVIF Core allows before authentication (§5.9.4.3, "PRE_AUTH").
_PRE_AUTH = frozenset({"GetSystemDateAndTime", "GetServices", "GetCapabilities",
                       "GetWsdlUrl", "GetServiceCapabilities", "GetEndpointReference"})
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            500: "Internal Server Error"}


class _BadRequest(Exception):
    """The client sent something this small HTTP reader will not serve."""


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


@dataclass(slots=True)
class _Reply:
    status: int
    body: bytes


@dataclass(eq=False, slots=True)
class OnvifServer:
    """A running fake ONVIF device. ``await close()`` (or ``async with``) stops it and drops
    every open connection."""

    device: SimDevice
    host: str
    port: int
    _server: asyncio.Server | None = None
    _conns: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _nonces: dict[bytes, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The device service address, as an inventory row would carry it."""
        return f"http://{self.host}:{self.port}{DEVICE_PATH}"

    @property
    def connections(self) -> int:
        """Connections currently open (tests use it to see that clients hung up)."""
        return len(self._conns)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._conns):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> OnvifServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connection handling -------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._conns.add(writer)
        try:
            while True:
                req = await _read_request(reader)
                if req is None:
                    break
                if not await self._serve(req, reader, writer):
                    break
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _BadRequest):
            pass
        except asyncio.CancelledError:  # close() cancels the handlers; nobody awaits them
            pass
        except Exception:  # the simulator must survive any client
            log.exception("onvif_sim_error", host=self.host, port=self.port)
        finally:
            self._conns.discard(writer)
            writer.transport.abort()
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, req: _Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must end."""
        fault = self.device.effective_fault()
        if fault is Fault.REFUSED:  # cannot refuse once listening: the closest is an abort
            return False
        if fault is Fault.HANG:
            while await reader.read(65536):  # hold the socket until the client gives up
                pass
            return False
        if fault is Fault.NOT_FOUND or req.path not in (DEVICE_PATH, MEDIA_PATH):
            await _write(writer, _Reply(404, b"not found"), keep_alive=req.keep_alive)
            return req.keep_alive
        if req.method != "POST":
            await _write(writer, _Reply(400, b"POST a SOAP envelope"), keep_alive=False)
            return False
        if fault is Fault.DRIP:
            await _drip(writer, _http(200, _envelope(b"<tds:GetSystemDateAndTimeResponse/>")))
            return False
        if fault is Fault.OVERSIZED:
            await _endless(writer)
            return False
        if fault is Fault.RESET:
            await _reset(writer)
            return False
        if fault is Fault.GARBAGE:
            await _write(writer, _Reply(200, _GARBAGE), keep_alive=req.keep_alive)
            return req.keep_alive
        if fault in _HOSTILE:
            await _write(writer, _Reply(200, _hostile(fault, self.device.xxe_path)),
                         keep_alive=req.keep_alive)
            return req.keep_alive
        await _write(writer, self._soap(req, fault), keep_alive=req.keep_alive)
        return req.keep_alive

    # -- SOAP ------------------------------------------------------------------------------

    def _soap(self, req: _Request, fault: Fault) -> _Reply:
        try:
            root = DET.fromstring(req.body, forbid_dtd=True)
        except (ET.ParseError, DefusedXmlException, ValueError):
            return _fault(400, "env:Sender", "ter:WellFormed", "request is not well-formed XML")
        header = _child(root, "Header")
        body = _child(root, "Body")
        if body is None or len(body) == 0:
            return _fault(400, "env:Sender", "ter:WellFormed", "no SOAP Body")
        op = _local(body[0].tag)
        now = time.time() + self._skew(fault)
        if fault is Fault.AUTH_FAIL and (op not in _PRE_AUTH or self.device.onvif_auth_always):
            # the inventory's credentials are wrong: whatever the client sends is refused
            return _fault(401, "env:Sender", "ter:NotAuthorized", "Sender not Authorized")
        if op not in _PRE_AUTH or self.device.onvif_auth_always:
            problem = self._check_token(header, now)
            if problem is not None:
                status = 401 if self.device.onvif_auth_always and op in _PRE_AUTH else 400
                return _fault(status, "env:Sender", "ter:NotAuthorized", problem)
        handler = _OPS.get((req.path, op))
        if handler is None:
            return _fault(500, "env:Receiver", "ter:ActionNotSupported", f"{op} not supported")
        return _Reply(200, _envelope(handler(self, now).encode()))

    def _skew(self, fault: Fault) -> float:
        if fault is Fault.CLOCK_SKEW and self.device.clock_skew_s == 0:
            return DEFAULT_CLOCK_SKEW_S
        return self.device.clock_skew_s

    def _check_token(self, header: ET.Element | None, now: float) -> str | None:
        """None when the UsernameToken is valid, else why not (the fault text)."""
        tok = None
        if header is not None:
            tok = header.find(f"{{{_WSSE}}}Security/{{{_WSSE}}}UsernameToken")
        if tok is None:
            return "Sender not Authorized: no UsernameToken"
        user = tok.findtext(f"{{{_WSSE}}}Username") or ""
        pw = tok.find(f"{{{_WSSE}}}Password")
        nonce_b64 = tok.findtext(f"{{{_WSSE}}}Nonce") or ""
        created = tok.findtext(f"{{{_WSU}}}Created") or ""
        if pw is None or "PasswordDigest" not in pw.get("Type", "PasswordDigest"):
            return "Sender not Authorized: PasswordDigest required"
        try:
            nonce = base64.b64decode(nonce_b64, validate=True)
            when = dt.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        except (binascii.Error, ValueError):
            return "Sender not Authorized: bad Nonce or Created"
        if abs(when - now) > REPLAY_WINDOW_S:
            return "Sender not Authorized: Created outside the device's time window"
        expected = base64.b64encode(hashlib.sha1(
            nonce + created.encode() + self.device.password.encode()).digest()).decode()
        ok_user = hmac.compare_digest(user.encode(), self.device.username.encode())
        if not (hmac.compare_digest(expected.encode(), (pw.text or "").strip().encode())
                and ok_user):
            return "Sender not Authorized"
        if nonce in self._nonces:
            return "Sender not Authorized: nonce replayed"
        for old in [n for n, t in self._nonces.items() if t < now - REPLAY_WINDOW_S]:
            del self._nonces[old]
        if len(self._nonces) >= _MAX_NONCES:
            del self._nonces[next(iter(self._nonces))]
        self._nonces[nonce] = now
        return None

    def _media_xaddr(self) -> str:
        return f"http://{self.host}:{self.port}{MEDIA_PATH}"

    def _device_xaddr(self) -> str:
        return f"http://{self.host}:{self.port}{DEVICE_PATH}"


# -- operations ------------------------------------------------------------------------------


def _op_system_date_and_time(srv: OnvifServer, now: float) -> str:
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    loc = t + dt.timedelta(hours=8)

    def stamp(d: dt.datetime) -> str:
        return (f"<tt:Time><tt:Hour>{d.hour}</tt:Hour><tt:Minute>{d.minute}</tt:Minute>"
                f"<tt:Second>{d.second}</tt:Second></tt:Time><tt:Date><tt:Year>{d.year}"
                f"</tt:Year><tt:Month>{d.month}</tt:Month><tt:Day>{d.day}</tt:Day></tt:Date>")

    utc = "" if srv.device.effective_fault() is Fault.LOCAL_TIME_ONLY else \
        f"<tt:UTCDateTime>{stamp(t)}</tt:UTCDateTime>"
    return ("<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
            "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
            "<tt:TimeZone><tt:TZ>CST-8</tt:TZ></tt:TimeZone>"
            f"{utc}<tt:LocalDateTime>{stamp(loc)}</tt:LocalDateTime>"
            "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>")


def _op_device_information(srv: OnvifServer, now: float) -> str:
    d = srv.device
    return ("<tds:GetDeviceInformationResponse>"
            f"<tds:Manufacturer>{escape(d.manufacturer)}</tds:Manufacturer>"
            f"<tds:Model>{escape(d.model)}</tds:Model>"
            f"<tds:FirmwareVersion>{escape(d.firmware)}</tds:FirmwareVersion>"
            f"<tds:SerialNumber>{escape(d.serial)}</tds:SerialNumber>"
            "<tds:HardwareId>camwatch-sim</tds:HardwareId>"
            "</tds:GetDeviceInformationResponse>")


def _op_capabilities(srv: OnvifServer, now: float) -> str:
    return ("<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{srv._device_xaddr()}</tt:XAddr></tt:Device>"
            f"<tt:Media><tt:XAddr>{srv._media_xaddr()}</tt:XAddr><tt:StreamingCapabilities>"
            "<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>"
            "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>")


def _op_services(srv: OnvifServer, now: float) -> str:
    def svc(ns: str, xaddr: str) -> str:
        return (f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{xaddr}</tds:XAddr>"
                "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version>"
                "</tds:Service>")

    return (f"<tds:GetServicesResponse>{svc(_TDS, srv._device_xaddr())}"
            f"{svc(_TRT, srv._media_xaddr())}</tds:GetServicesResponse>")


def _op_profiles(srv: OnvifServer, now: float) -> str:
    return ('<trt:GetProfilesResponse><trt:Profiles token="Profile_1" fixed="true">'
            "<tt:Name>mainStream</tt:Name></trt:Profiles></trt:GetProfilesResponse>")


def _op_stream_uri(srv: OnvifServer, now: float) -> str:
    d = srv.device
    path = next(iter(d.channels), "/")
    uri = escape(f"rtsp://{d.host}:{d.rtsp_port}{path}")
    return ("<trt:GetStreamUriResponse><trt:MediaUri>"
            f"<tt:Uri>{uri}</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
            "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout>"
            "</trt:MediaUri></trt:GetStreamUriResponse>")


_OPS = {
    (DEVICE_PATH, "GetSystemDateAndTime"): _op_system_date_and_time,
    (DEVICE_PATH, "GetDeviceInformation"): _op_device_information,
    (DEVICE_PATH, "GetCapabilities"): _op_capabilities,
    (DEVICE_PATH, "GetServices"): _op_services,
    (MEDIA_PATH, "GetProfiles"): _op_profiles,
    (MEDIA_PATH, "GetStreamUri"): _op_stream_uri,
}


# -- wire helpers ----------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child(root: ET.Element, name: str) -> ET.Element | None:
    if _local(root.tag) != "Envelope":
        return None
    for ns in (_ENV12, _ENV11):
        if (el := root.find(f"{{{ns}}}{name}")) is not None:
            return el
    return None


_OPEN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope ' + _NS_DECL.encode()
         + b"><env:Body>")


def _envelope(body: bytes) -> bytes:
    return _OPEN + body + b"</env:Body></env:Envelope>"


def _fault(status: int, code: str, subcode: str, text: str) -> _Reply:
    body = (f"<env:Fault><env:Code><env:Value>{code}</env:Value><env:Subcode><env:Value>"
            f"{subcode}</env:Value></env:Subcode></env:Code><env:Reason>"
            f'<env:Text xml:lang="en">{escape(text)}</env:Text></env:Reason></env:Fault>')
    return _Reply(status, _envelope(body.encode()))


def _http(status: int, body: bytes | None, *, keep_alive: bool = True) -> bytes:
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            "Server: camwatch-sim", "Content-Type: application/soap+xml; charset=utf-8"]
    if body is not None:
        head.append(f"Content-Length: {len(body)}")
    if not keep_alive or body is None:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


async def _write(writer: asyncio.StreamWriter, reply: _Reply, *, keep_alive: bool) -> None:
    writer.write(_http(reply.status, reply.body, keep_alive=keep_alive))
    await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """One request, or None at a clean end of the connection. Bodies over
    MAX_REQUEST_BYTES and chunked uploads are refused (raise _BadRequest)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest("truncated request head") from None
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest("not an HTTP/1.x request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise _BadRequest("chunked request bodies are not supported")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise _BadRequest("bad Content-Length") from None
    if not 0 <= length <= MAX_REQUEST_BYTES:
        raise _BadRequest("request body too large")
    body = await reader.readexactly(length) if length else b""
    return _Request(parts[0], parts[1].split("?", 1)[0], headers, body)


async def _drip(writer: asyncio.StreamWriter, data: bytes) -> None:
    for i in range(len(data)):
        writer.write(data[i:i + 1])
        await writer.drain()
        if writer.transport.is_closing():
            return
        await asyncio.sleep(DRIP_INTERVAL_S)  # the fault *is* the slowness


async def _endless(writer: asyncio.StreamWriter) -> None:
    """A 200 without a length whose body never ends (until the client hangs up). The send
    buffer is kept small so that thousands of these flood at the pace their clients read,
    not into kernel buffers."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    writer.write(_http(200, None) + _OPEN + b"<tds:GetSystemDateAndTimeResponse>")
    chunk = b"<tt:Padding>" + b"x" * 16360 + b"</tt:Padding>"
    while not writer.transport.is_closing():
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0)  # drain() does not yield while the kernel takes it all


async def _reset(writer: asyncio.StreamWriter) -> None:
    """Start a reply, then RST the connection (SO_LINGER 0)."""
    body = _envelope(b"<tds:GetSystemDateAndTimeResponse/>")
    writer.write(_http(200, body)[: 120])
    await writer.drain()
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


_GARBAGE = bytes(range(256)) * 4 + b"\x00<<not xml>>\xff"
_HOSTILE = frozenset({Fault.XXE, Fault.XML_BOMB, Fault.DTD})


def _hostile(fault: Fault, xxe_path: str) -> bytes:
    """A reply that a safe XML parser must refuse: each one starts with a DTD."""
    if fault is Fault.XXE:
        dtd = f'<!DOCTYPE env:Envelope [<!ENTITY xxe SYSTEM "file://{escape(xxe_path)}">]>'
        payload = "&xxe;"
    elif fault is Fault.XML_BOMB:
        ents = ['<!ENTITY lol0 "lollollollollollollollollollol">']
        ents += [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
        dtd = f"<!DOCTYPE env:Envelope [{''.join(ents)}]>"
        payload = "&lol9;"
    else:
        dtd = '<!DOCTYPE env:Envelope [<!ELEMENT env:Envelope ANY>]>'
        payload = "CamwatchSim"
    body = (f"<tds:GetSystemDateAndTimeResponse><tds:Manufacturer>{payload}</tds:Manufacturer>"
            "</tds:GetSystemDateAndTimeResponse>")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n{dtd}\n<env:Envelope {_NS_DECL}>'
            f"<env:Body>{body}</env:Body></env:Envelope>").encode()


async def start_onvif_server(device: SimDevice, host: str, port: int = 0) -> OnvifServer:
    """Listen on ``host:port`` (0 = any free port, see ``.port``) as ``device``'s ONVIF
    service. The caller closes the returned server."""
    srv = OnvifServer(device=device, host=host, port=port)
    server = await asyncio.start_server(srv._handle, host, port, limit=64 * 1024,
                                        reuse_address=True, backlog=512)
    srv._server = server
    srv.port = server.sockets[0].getsockname()[1]
    return srv
