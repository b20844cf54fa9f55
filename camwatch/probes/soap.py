"""SOAP over a bounded HTTP/1.1 client, for the probes that speak SOAP (ONVIF).

Hand-written because no maintained async client bounds what a hostile device can send: every
read is capped (the header block by the stream reader's limit, the body by ``max_body``, refused
as soon as a Content-Length or a chunk total exceeds it) and replies are parsed with
``defusedxml`` refusing any DTD, so XXE and entity expansion never happen (SOAP forbids DTDs
anyway). The figures behind this choice are in :mod:`camwatch.probes.onvif`.

Errors raised here are secret-free by construction and classified by the caller.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import re
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from camwatch.probes import ProbeSettings

ENV12 = "http://www.w3.org/2003/05/soap-envelope"
ENV11 = "http://schemas.xmlsoap.org/soap/envelope/"


class SoapError(Exception):
    """A failed SOAP exchange, already understood. Messages are secret-free by construction."""


class ProtocolError(SoapError):
    """The reply is not HTTP, not SOAP, too big, hostile, or misses what it must carry."""


class HttpStatusError(SoapError):
    """A non-200 HTTP status without a readable SOAP fault."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"HTTP {status}")


class SoapFault(SoapError):
    """A SOAP fault (1.1 or 1.2). ``subcodes`` are local names, outermost first."""

    def __init__(self, status: int, code: str, subcodes: tuple[str, ...], text: str) -> None:
        self.status, self.code, self.subcodes, self.text = status, code, subcodes, text
        chain = "/".join((code, *subcodes))
        super().__init__(f"SOAP fault {chain} ({text}), HTTP {status}")


# The encoding an XML declaration names, and the charset a Content-Type names.
_XML_ENCODING = re.compile(rb"""\s*<\?xml\s[^>]*?encoding\s*=\s*["']([A-Za-z][\w.:-]{0,39})["']""")
_XML_DECL = re.compile(r"\s*<\?xml\s[^>]*\?>")
_CHARSET = re.compile(rb"""charset\s*=\s*["']?([A-Za-z][\w.:-]{0,39})""", re.IGNORECASE)
# Firmware that says GB2312 (or GBK) sends GBK's extra characters too: read both as GB18030,
# their superset (as the inventory does for Chinese Excel's CSV).
_SUPERSET = {"gb2312": "gb18030", "gbk": "gb18030"}


def charset_of(content_type: bytes | str) -> str | None:
    """The ``charset=`` of a Content-Type header value, if any."""
    raw = content_type.encode("latin-1") if isinstance(content_type, str) else content_type
    m = _CHARSET.search(raw)
    return m.group(1).decode("ascii") if m else None


def as_utf8(data: bytes, charset: str | None = None) -> bytes:
    """``data`` as UTF-8 XML when its XML declaration or ``charset`` (the reply's Content-Type)
    names another encoding Python knows: expat itself reads only UTF-8/16, ASCII and Latin-1,
    and calls a GB2312 or GBK reply (common on Chinese firmware) "not XML".

    A byte-order mark wins; then the declaration (written by the code that encoded the body,
    while web servers often send a fixed Content-Type), then ``charset``; the next one is
    tried when a declared encoding does not decode the bytes. Returns ``data`` itself when
    there is nothing to convert or nothing decodes it (UTF-8, nothing declared, an unknown
    name, bytes that are not what they claim): the XML parser then says why. Never raises.
    """
    if data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data
    m = _XML_ENCODING.match(data)
    names = [n for n in (m.group(1).decode("ascii") if m else None, charset) if n]
    codecs_seen: list[str] = []
    for name in names:
        try:
            codec = codecs.lookup(name).name
        except LookupError:
            continue
        codec = _SUPERSET.get(codec, codec)
        if codec not in codecs_seen:
            codecs_seen.append(codec)
    if not codecs_seen or codecs_seen == ["utf-8"]:
        return data
    for codec in codecs_seen:
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        if codec == "utf-8":
            return data
        # without its declaration, expat reads the text as what it now is: UTF-8
        return _XML_DECL.sub("", text, count=1).encode("utf-8")
    return data


def parse_reply(data: bytes, status: int = 200) -> ET.Element:
    """The first element inside the SOAP Body of ``data``.

    Raises :class:`SoapFault` when that element is a Fault and :class:`ProtocolError` for
    anything else that is not a SOAP envelope, including any DTD (so no XXE, no entity
    expansion). Never raises anything else, whatever the bytes. An encoding other than
    UTF-8 named by the XML declaration is decoded (:func:`as_utf8`).
    """
    data = as_utf8(data)
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
    if ns not in (ENV12, ENV11) or local_name(root.tag) != "Envelope":
        raise ProtocolError(f"not a SOAP envelope (root <{local_name(root.tag)}>)")
    body = root.find(f"{{{ns}}}Body")
    if body is None or len(body) == 0:
        raise ProtocolError("SOAP envelope without a Body element")
    first = body[0]
    if local_name(first.tag) == "Fault":
        raise _fault(first, ns, status)
    return first


def _fault(el: ET.Element, ns: str, status: int) -> SoapFault:
    if ns == ENV12:
        code = qlocal(el.findtext(f"{{{ns}}}Code/{{{ns}}}Value"))
        subcodes: list[str] = []
        sub = el.find(f"{{{ns}}}Code/{{{ns}}}Subcode")
        while sub is not None and len(subcodes) < 8:
            subcodes.append(qlocal(sub.findtext(f"{{{ns}}}Value")))
            sub = sub.find(f"{{{ns}}}Subcode")
        text = el.findtext(f"{{{ns}}}Reason/{{{ns}}}Text") or ""
    else:  # SOAP 1.1, still spoken by old firmware: faultcode/faultstring, unqualified
        code, subcodes = qlocal(el.findtext("faultcode")), []
        text = el.findtext("faultstring") or ""
    return SoapFault(status, code or "?", tuple(subcodes), clip(text, 200))


def local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def qlocal(text: str | None) -> str:
    return (text or "").strip().rpartition(":")[2][:60]


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + "…"


# -- bounded HTTP/1.1 over asyncio streams ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    path: str
    tls: bool

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literal
        return f"{host}:{self.port}"


@dataclass(slots=True)
class Exchange:
    body: bytes
    sent_wall: float  # time.time() when the request was written
    rtt: float


@dataclass(slots=True)
class Conn:
    """One keep-alive connection to the device, opened on first use and reopened only when
    the device asked to close it. ``close()`` aborts it: nothing lingers after a probe."""

    ep: Endpoint
    settings: ProbeSettings
    phases: dict[str, float]
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _reusable: bool = False

    async def call(self, action: str, body: bytes, phase: str) -> Exchange:
        if self._writer is None or not self._reusable or self._writer.transport.is_closing():
            self.close()
            with timed(self.phases, "connect"):
                ctx = tls_context() if self.ep.tls else None
                self._reader, self._writer = await asyncio.open_connection(
                    self.ep.host, self.ep.port, ssl=ctx,
                    limit=self.settings.max_header_bytes)
        assert self._reader is not None and self._writer is not None
        head = (f"POST {self.ep.path} HTTP/1.1\r\nHost: {self.ep.where}\r\n"
                f"User-Agent: {self.settings.user_agent}\r\n"
                f'Content-Type: application/soap+xml; charset=utf-8; action="{action}"'
                f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        with timed(self.phases, phase):
            sent_wall, t0 = time.time(), time.perf_counter()
            self._writer.write(head + body)
            await self._writer.drain()
            status, data, self._reusable = await read_response(
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
        return Exchange(data, sent_wall, rtt)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()  # no FIN handshake to wait for: we are done
        self._reader = self._writer = None


_STATUS = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: |$)")


async def read_response(reader: asyncio.StreamReader, max_body: int) -> tuple[int, bytes, bool]:
    """(status, body, connection reusable). The head is bounded by the reader's limit, the
    body by ``max_body``: a declared length over the cap fails before reading a byte of it.
    A body in another charset than UTF-8 (Content-Type or XML declaration) comes back as
    UTF-8 (:func:`as_utf8`)."""
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
    if b"chunked" not in headers.get(b"transfer-encoding", b"").lower() and (
            b"content-length" not in headers):
        reusable = False  # the body ends when the device closes
    charset = charset_of(headers.get(b"content-type", b""))
    return status, as_utf8(await _read_body(reader, headers, max_body), charset), reusable


async def _read_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes],
                     max_body: int) -> bytes:
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return await read_chunked(reader, max_body)
    if (cl := headers.get(b"content-length")) is not None:
        if not cl.isdigit():
            raise ProtocolError("malformed Content-Length")
        length = int(cl)
        if length > max_body:
            raise ProtocolError(f"reply body of {length} bytes is over the {max_body}-byte cap")
        try:
            return await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise ProtocolError("connection closed in the middle of the reply body") from None
    parts: list[bytes] = []  # no length: the body ends when the device closes (not reusable)
    total = 0
    while chunk := await reader.read(65536):
        total += len(chunk)
        if total > max_body:
            raise ProtocolError(f"reply body over the {max_body}-byte cap")
        parts.append(chunk)
    return b"".join(parts)


async def read_chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
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


def tls_context() -> ssl.SSLContext:
    """Cameras carry self-signed certificates: we judge liveness, not identity, and the
    password never crosses the wire (only its digest)."""
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
        _TLS.check_hostname = False
        _TLS.verify_mode = ssl.CERT_NONE
    return _TLS


@contextlib.contextmanager
def timed(phases: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0
