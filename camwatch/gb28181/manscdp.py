"""MANSCDP (GB/T 28181 §A) XML bodies: parse what lower platforms send, build what we ask.

Bodies are declared GB2312 or GB18030 (read as GB18030, their superset), sometimes UTF-8,
sometimes undeclared GB bytes; :func:`camwatch.probes.soap.as_utf8` (the ONVIF probe's
decoder) handles the declared ones, and undeclared bytes that are not UTF-8 are read as
GB18030. Parsing goes through ``defusedxml`` exactly as the ONVIF probe does: any DTD or
entity is refused, and so are bodies over ``MAX_XML`` bytes, deeper than ``MAX_DEPTH`` or
with more than ``MAX_ITEMS`` catalog items. Every failure is :class:`ManscdpError`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from camwatch.probes.soap import as_utf8, local_name

MAX_XML = 256 * 1024
MAX_DEPTH = 16
MAX_ITEMS = 5_000  # in one message (a whole catalog arrives over many)
MAX_TEXT = 256

CHANNEL_EVENTS = ("ON", "OFF", "VLOST", "DEFECT", "ADD", "DEL", "UPDATE")


class ManscdpError(Exception):
    """A body that is not a MANSCDP document we understand (or is hostile)."""


@dataclass(frozen=True, slots=True)
class Item:
    """One catalog entry: a channel, or a tree node (business group 215, virtual
    organisation 216, a platform 200)."""

    device_id: str
    name: str = ""
    parent_id: str = ""
    status: str = ""  # upper-case: ON, OFF, ONLINE, ... ("" when absent)
    event: str = ""  # upper-case, notifications only
    manufacturer: str = ""
    civil_code: str = ""

    @property
    def is_channel(self) -> bool:
        """Type codes 2xx (platform 200, business group 215, virtual organisation 216, ...)
        are catalogue nodes; everything else with an id is counted as a channel."""
        code = self.device_id
        return not (len(code) == 20 and code.isdigit() and code[10] == "2")


@dataclass(frozen=True, slots=True)
class Document:
    root: str  # Query / Response / Notify / Control
    cmd: str  # Keepalive, Catalog, DeviceStatus, ... as sent
    sn: int
    device_id: str
    sum_num: int | None = None
    items: tuple[Item, ...] = ()
    fields: dict[str, str] = field(default_factory=dict)  # other top-level text fields
    # RecordInfo answers: each <RecordList> item's (StartTime, EndTime), as sent
    records: tuple[tuple[str, str], ...] = ()


def decode(data: bytes) -> bytes:
    """The body as UTF-8 XML (see the module docstring)."""
    converted = as_utf8(data)
    if converted is not data:
        return converted
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        return data  # the XML parser says why
    return text.encode("utf-8")


def _text(el: ET.Element | None) -> str:
    if el is None or el.text is None:
        return ""
    t = el.text.strip()
    return t[:MAX_TEXT]


def _children(el: ET.Element) -> dict[str, ET.Element]:
    """Children by lower-case local name, the first of each (one pass: an item's seven
    lookups one by one cost more than the XML parse itself)."""
    out: dict[str, ET.Element] = {}
    for c in el:
        out.setdefault(local_name(c.tag).lower(), c)
    return out


def _depth_ok(root: ET.Element) -> bool:
    level, depth = [root], 1
    while level:
        if depth > MAX_DEPTH:
            return False
        level = [c for el in level for c in el]
        depth += 1
    return True


def _int(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 10:
        raise ManscdpError(f"{what}: expected a number, got {text[:40]!r}")
    return int(text)


def parse(data: bytes) -> Document:
    if len(data) > MAX_XML:
        raise ManscdpError(f"body of {len(data)} bytes, more than {MAX_XML} allowed")
    try:
        root: ET.Element = DET.fromstring(decode(data), forbid_dtd=True,
                                          forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise ManscdpError(f"hostile XML refused ({type(exc).__name__})") from None
    except ET.ParseError as exc:
        raise ManscdpError(f"not XML ({str(exc)[:80]})") from None
    except (ValueError, LookupError, UnicodeError, RecursionError) as exc:
        raise ManscdpError(f"not XML ({type(exc).__name__})") from None
    if not _depth_ok(root):
        raise ManscdpError(f"XML nested deeper than {MAX_DEPTH} levels")
    kind = local_name(root.tag)
    if kind not in ("Query", "Response", "Notify", "Control"):
        raise ManscdpError(f"expected <Query>, <Response>, <Notify> or <Control>, "
                           f"got <{kind[:40]}>")
    top = _children(root)
    cmd = _text(top.get("cmdtype"))
    if not cmd:
        raise ManscdpError(f"<{kind}> without <CmdType>")
    sn_text = _text(top.get("sn"))
    sn = _int(sn_text, "SN") if sn_text else 0
    device_id = _text(top.get("deviceid"))
    sum_text = _text(top.get("sumnum"))
    sum_num = _int(sum_text, "SumNum") if sum_text else None
    items: list[Item] = []
    dl = top.get("devicelist")
    if dl is not None:
        for it in dl:
            if local_name(it.tag).lower() != "item":
                continue
            if len(items) >= MAX_ITEMS:
                raise ManscdpError(f"more than {MAX_ITEMS} items in one message")
            f = _children(it)
            did = _text(f.get("deviceid"))
            if not did:
                continue  # nothing to attach it to
            items.append(Item(
                device_id=did, name=_text(f.get("name")), parent_id=_text(f.get("parentid")),
                status=_text(f.get("status")).upper(), event=_text(f.get("event")).upper(),
                manufacturer=_text(f.get("manufacturer")),
                civil_code=_text(f.get("civilcode"))))
    records: list[tuple[str, str]] = []
    rl = top.get("recordlist")
    if rl is not None:
        for it in rl:
            if local_name(it.tag).lower() != "item":
                continue
            if len(records) >= MAX_ITEMS:
                raise ManscdpError(f"more than {MAX_ITEMS} items in one message")
            f = _children(it)
            records.append((_text(f.get("starttime")), _text(f.get("endtime"))))
    fields = {local_name(c.tag): _text(c) for c in root
              if len(c) == 0 and local_name(c.tag) not in ("CmdType", "SN", "DeviceID")}
    return Document(kind, cmd, sn, device_id, sum_num, tuple(items), fields, tuple(records))


def status_ok(status: str) -> bool | None:
    """A catalog item's Status: True for ON/ONLINE/OK, False for OFF/OFFLINE, None otherwise
    (case-insensitive; vendors write all three forms)."""
    s = status.strip().upper()
    if s in ("ON", "ONLINE", "OK"):
        return True
    if s in ("OFF", "OFFLINE"):
        return False
    return None


def _xml(root: str, cmd: str, sn: int, device_id: str) -> bytes:
    # GB2312 declared, as lower platforms expect; our content is ASCII
    return (f'<?xml version="1.0" encoding="GB2312"?>\r\n<{root}>\r\n'
            f"<CmdType>{cmd}</CmdType>\r\n<SN>{sn}</SN>\r\n"
            f"<DeviceID>{device_id}</DeviceID>\r\n</{root}>\r\n").encode("ascii")


def catalog_query(sn: int, device_id: str) -> bytes:
    return _xml("Query", "Catalog", sn, device_id)


def device_status_query(sn: int, device_id: str) -> bytes:
    return _xml("Query", "DeviceStatus", sn, device_id)


def record_info_query(sn: int, channel_id: str, start: str, end: str) -> bytes:
    """RecordInfo of ``channel_id`` between two local times (``2026-11-29T00:00:00``): every
    recording type, not secret."""
    return (f'<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n'
            f"<CmdType>RecordInfo</CmdType>\r\n<SN>{sn}</SN>\r\n"
            f"<DeviceID>{channel_id}</DeviceID>\r\n<StartTime>{start}</StartTime>\r\n"
            f"<EndTime>{end}</EndTime>\r\n<Secrecy>0</Secrecy>\r\n<Type>all</Type>\r\n"
            f"</Query>\r\n").encode("ascii")
