"""A small SIP (RFC 3261) message layer: parse and build requests and responses.

Hand-written on purpose: no maintained Python SIP stack installs here (``pjsua2`` does not
build, ``aiosip`` is abandoned, ``sipsimple`` needs its own C libraries), and an upper
platform needs only a sliver of SIP: REGISTER, MESSAGE, SUBSCRIBE/NOTIFY, without media,
proxies or dialogs beyond a subscription. What we do need is robustness against whatever a
lower platform sends, so everything here is pure, bounded and fuzzed
(``tests/test_gb_sip_fuzz.py``):

- a message is at most ``MAX_HEAD`` bytes of start line and headers plus ``MAX_BODY`` of body,
  at most ``MAX_HEADERS`` header lines;
- header names are case-insensitive and compact forms (``v``, ``f``, ``t``, ``i``, ``m``,
  ``l``, ``c``, ``o``, ...) are expanded; folded lines (a line starting with a space or tab
  continues the previous one) are joined; bare LF line ends are accepted;
- several Via values, in several headers or comma-separated in one, keep their order;
  ``rport`` (RFC 3581) is answered with ``received``/``rport`` filled in.

Every malformed input raises :class:`SipError` with a short, bounded message; nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_HEAD = 16 * 1024
MAX_BODY = 256 * 1024
MAX_HEADERS = 100

COMPACT = {
    "v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
    "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding",
    "o": "event", "u": "allow-events", "x": "session-expires", "r": "refer-to",
}
# how headers are spelled when we write them
CANONICAL = {
    "via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq",
    "contact": "Contact", "content-length": "Content-Length", "content-type": "Content-Type",
    "max-forwards": "Max-Forwards", "expires": "Expires", "event": "Event",
    "www-authenticate": "WWW-Authenticate", "authorization": "Authorization",
    "user-agent": "User-Agent", "date": "Date", "subscription-state": "Subscription-State",
}
REASONS = {100: "Trying", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           423: "Interval Too Brief", 481: "Call/Transaction Does Not Exist",
           489: "Bad Event", 500: "Server Internal Error", 503: "Service Unavailable"}

_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]{1,32}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]{1,64}$")
_URI_USER = re.compile(r"sips?:([^@;>\s]{1,64})@", re.IGNORECASE)
_PARAM = re.compile(r";\s*([A-Za-z0-9.!%*_+`'~-]{1,32})"
                    r"(?:\s*=\s*(\"[^\"]{0,256}\"|[^;,\s]{0,256}))?")


class SipError(Exception):
    """A message that is not SIP, or too big, or lacks what it must carry."""


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n] + "..."


@dataclass(slots=True)
class SipMessage:
    """A parsed request (``method`` set) or response (``status`` set). ``headers`` keeps every
    header line as (lower-case full name, value), in order; Via values are one entry each."""

    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str, default: str = "") -> str:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    @property
    def call_id(self) -> str:
        return self.get("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        raw = self.get("cseq")
        num, _, method = raw.strip().partition(" ")
        if not num.isdigit() or len(num) > 10:
            raise SipError(f"CSeq: expected '<number> <method>', got {_clip(raw)!r}")
        return int(num), method.strip().upper()

    def from_user(self) -> str:
        return uri_user(self.get("from"))

    def to_user(self) -> str:
        return uri_user(self.get("to"))

    def expires(self, default: int) -> int:
        """The Expires header, else the contact's ``expires`` parameter, else ``default``."""
        raw = self.get("expires").strip()
        if not raw:
            raw = header_params(self.get("contact")).get("expires", "").strip()
        if not raw:
            return default
        if not raw.isdigit() or len(raw) > 10:
            raise SipError(f"Expires: expected seconds, got {_clip(raw)!r}")
        return int(raw)


def uri_user(value: str) -> str:
    """``"name" <sip:34020000002000000001@3402000000>;tag=x`` -> ``34020000002000000001``."""
    m = _URI_USER.search(value)
    return m.group(1) if m else ""


def header_params(value: str) -> dict[str, str]:
    """The ``;name=value`` parameters of a header value (after any ``<...>``), names lower-case,
    quotes removed; a parameter without a value maps to ``""``."""
    rest = value[value.rfind(">") + 1:] if ">" in value else value
    out: dict[str, str] = {}
    for m in _PARAM.finditer(rest):
        v = m.group(2) or ""
        out[m.group(1).lower()] = v[1:-1] if v.startswith('"') and v.endswith('"') else v
    return out


def _split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and angle brackets."""
    out: list[str] = []
    cur: list[str] = []
    quoted, angle = False, 0
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle += 1
        elif not quoted and ch == ">":
            angle = max(0, angle - 1)
        if ch == "," and not quoted and not angle:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [v for v in out if v]


@dataclass(frozen=True, slots=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str]

    @property
    def branch(self) -> str:
        return self.params.get("branch", "")


_VIA = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z]{2,5})\s+"
                  r"(\[[0-9A-Fa-f:.]{2,45}\]|[^\s;:]{1,255})"
                  r"(?:\s*:\s*(\d{1,5}))?\s*(;.*)?$", re.DOTALL)


def parse_via(value: str) -> Via:
    m = _VIA.match(value.strip())
    if m is None:
        raise SipError(f"Via: expected 'SIP/2.0/UDP host:port;branch=...', got {_clip(value)!r}")
    port = int(m.group(3)) if m.group(3) else None
    if port is not None and not 0 < port <= 65535:
        raise SipError(f"Via: port {port} out of range")
    return Via(m.group(1).upper(), m.group(2).strip("[]"), port, header_params(m.group(4) or ""))


def _lines(head: str) -> list[str]:
    return head.replace("\r\n", "\n").split("\n")


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """Head and the rest at the first empty line (CRLF CRLF, or LF LF)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = data.find(sep)
        if i >= 0:
            if i > MAX_HEAD:
                break
            return data[:i], data[i + len(sep):]
    if len(data) > MAX_HEAD:
        raise SipError(f"header block longer than {MAX_HEAD} bytes")
    raise SipError("no empty line after the headers")


def parse_head(head: bytes) -> SipMessage:
    """The start line and headers of a message (no body)."""
    if len(head) > MAX_HEAD:
        raise SipError(f"header block longer than {MAX_HEAD} bytes")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # header values may carry GB18030 display names from Chinese firmware
        text = head.decode("gb18030", errors="replace")
    lines = _lines(text.lstrip("\r\n"))
    start = lines[0].strip()
    msg = SipMessage()
    if start.startswith("SIP/2.0 "):
        code, _, reason = start[8:].partition(" ")
        if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
            raise SipError(f"status line: expected 'SIP/2.0 <3 digits> reason', "
                           f"got {_clip(start)!r}")
        msg.status, msg.reason = int(code), reason.strip()[:128]
    else:
        parts = start.split()
        if len(parts) != 3 or parts[2] != "SIP/2.0" or not _TOKEN.match(parts[0]):
            raise SipError(f"start line: expected 'METHOD uri SIP/2.0' or a status line, "
                           f"got {_clip(start)!r}")
        msg.method, msg.uri = parts[0].upper(), parts[1][:512]
    # unfold continuation lines
    joined: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not joined:
                raise SipError("a folded line before any header")
            joined[-1] += " " + line.strip()
        elif line.strip():
            joined.append(line)
    if len(joined) > MAX_HEADERS:
        raise SipError(f"more than {MAX_HEADERS} header lines")
    for line in joined:
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not _HEADER_NAME.match(name):
            raise SipError(f"header line: expected 'Name: value', got {_clip(line)!r}")
        key = name.lower()
        key = COMPACT.get(key, key)
        value = value.strip()
        if key == "via":
            msg.headers.extend(("via", v) for v in _split_commas(value))
        else:
            msg.headers.append((key, value))
    if msg.is_request:
        for need in ("via", "from", "to", "call-id", "cseq"):
            if not msg.get(need):
                raise SipError(f"request without a {CANONICAL.get(need, need)} header")
        _, cseq_method = msg.cseq
        if cseq_method != msg.method:
            raise SipError(f"CSeq method {cseq_method!r} is not the request's {msg.method!r}")
    return msg


def content_length(msg: SipMessage) -> int | None:
    raw = msg.get("content-length").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise SipError(f"Content-Length: expected a number of bytes, got {_clip(raw)!r}")
    n = int(raw)
    if n > MAX_BODY:
        raise SipError(f"body of {n} bytes, more than the {MAX_BODY} allowed")
    return n


def parse_message(data: bytes) -> SipMessage:
    """One whole message (a UDP datagram). Raises :class:`SipError` for anything else."""
    if len(data) > MAX_HEAD + MAX_BODY + 4:
        raise SipError(f"message of {len(data)} bytes, more than "
                       f"{MAX_HEAD + MAX_BODY} allowed")
    head, rest = split_head(data)
    msg = parse_head(head)
    n = content_length(msg)
    if n is None:
        if len(rest) > MAX_BODY:
            raise SipError(f"body of {len(rest)} bytes, more than the {MAX_BODY} allowed")
        msg.body = rest  # UDP: the datagram's end ends the body
    elif len(rest) < n:
        raise SipError(f"Content-Length {n} but only {len(rest)} bytes of body")
    else:
        msg.body = rest[:n]
    return msg


def _header_lines(headers: list[tuple[str, str]]) -> str:
    return "".join(f"{CANONICAL.get(k, k.title())}: {v}\r\n" for k, v in headers)


def serialize(msg: SipMessage) -> bytes:
    start = f"{msg.method} {msg.uri} SIP/2.0" if msg.is_request else \
        f"SIP/2.0 {msg.status} {msg.reason or REASONS.get(msg.status, 'Unknown')}"
    headers = [(k, v) for k, v in msg.headers if k != "content-length"]
    headers.append(("content-length", str(len(msg.body))))
    return (start + "\r\n" + _header_lines(headers) + "\r\n").encode("utf-8") + msg.body


def response(req: SipMessage, status: int, *, source: tuple[str, int] | None = None,
             to_tag: str = "", extra: list[tuple[str, str]] | None = None,
             body: bytes = b"", content_type: str = "") -> SipMessage:
    """The response to ``req``: its Vias (the top one with ``received``/``rport`` from
    ``source``, RFC 3581), From, To (with ``to_tag`` when it has none), Call-ID, CSeq."""
    headers: list[tuple[str, str]] = []
    for i, via in enumerate(req.get_all("via")):
        if i == 0 and source is not None:
            via = _stamp_via(via, source)
        headers.append(("via", via))
    to = req.get("to")
    if to_tag and "tag" not in header_params(to):
        to = f"{to};tag={to_tag}"
    headers += [("from", req.get("from")), ("to", to), ("call-id", req.call_id),
                ("cseq", req.get("cseq"))]
    headers += extra or []
    if body:
        headers.append(("content-type", content_type or "Application/MANSCDP+xml"))
    return SipMessage(status=status, reason=REASONS.get(status, ""), headers=headers,
                      body=body)


def _stamp_via(via: str, source: tuple[str, int]) -> str:
    """Add ``received=`` and fill an empty ``rport`` with the source address (RFC 3581)."""
    host, port = source
    parts = [p for p in via.split(";")]
    out = [parts[0]]
    has_received = False
    for p in parts[1:]:
        name = p.partition("=")[0].strip().lower()
        if name == "rport":
            out.append(f"rport={port}")
        else:
            if name == "received":
                has_received = True
            out.append(p)
    if not has_received:
        out.append(f"received={host}")
    return ";".join(out)


def reply_address(req: SipMessage, source: tuple[str, int]) -> tuple[str, int]:
    """Where a UDP response goes: the source address when the top Via asks for ``rport`` or
    its host is not where the packet came from (NAT), else the Via's host and port."""
    vias = req.get_all("via")
    if not vias:
        return source
    try:
        via = parse_via(vias[0])
    except SipError:
        return source
    if "rport" in via.params or via.host != source[0]:
        return source
    return (via.host, via.port or 5060)
