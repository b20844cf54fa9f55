"""A simulated GB/T 28181 lower platform (下级平台): registers with an upper platform (camwatch)
over UDP or TCP with Digest, sends keepalives, answers Catalog queries in parts of
``per_message`` items, accepts a Catalog SUBSCRIBE and sends catalog events.

Used by the tests and ``bench/bench_gb28181.py`` (many platforms in one process); it speaks
through camwatch's own SIP layer, so the sipp scenarios in ``tests/peers/`` are what checks
camwatch against a third party.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from camwatch.gb28181 import sip
from camwatch.gb28181.digest import expected_response, parse_authorization
from camwatch.gb28181.sip import SipMessage


@dataclass(slots=True)
class SimChannel:
    id: str
    name: str = ""
    status: str = "ON"
    parent: str = ""


@dataclass(slots=True)
class SimPlatform:
    id: str
    password: str
    server: tuple[str, int]
    domain: str = "3402000000"
    server_id: str = "34020000002000000001"
    channels: list[SimChannel] = field(default_factory=list)
    nodes: list[tuple[str, str]] = field(default_factory=list)  # (id, name) tree nodes
    transport: str = "udp"
    per_message: int = 2
    encoding: str = "GB2312"
    answer_catalog: bool = True
    wait_s: float = 5.0  # for an answer to each request (resent meanwhile over UDP)
    catalog_queries: int = 0
    status_queries: int = 0
    # a device's DeviceStatus answer
    online: str = "ONLINE"
    status: str = "OK"
    device_time: str = ""
    subscribed: bool = False
    # the status its catalog gives a channel now (a platform that sees its cameras); None:
    # the channel's own ``status``
    status_of: Callable[[str], str] | None = None
    mute: bool = False  # gone silent: answers nothing camwatch sends (a platform that is down)
    # RecordInfo: (channel id, StartTime, EndTime as asked) -> its recordings' (StartTime,
    # EndTime); None: RecordInfo is not answered
    records_of: Callable[[str, str, str], list[tuple[str, str]]] | None = None
    record_queries: int = 0
    last_record_sn: int = 0
    _udp: asyncio.DatagramTransport | None = None
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _pending: dict[str, asyncio.Future[SipMessage]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _sn: int = 0
    _local: tuple[str, int] = ("127.0.0.1", 0)
    _sub_dialog: tuple[str, str, str] | None = None  # call-id, from (camwatch), to (us)

    # --- transport -------------------------------------------------------------------------

    async def start(self, local_host: str = "127.0.0.1") -> None:
        loop = asyncio.get_running_loop()
        if self.transport == "udp":
            sim = self

            class Proto(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                    with contextlib.suppress(sip.SipError):
                        sim._received(sip.parse_message(data))

            self._udp, _ = await loop.create_datagram_endpoint(
                Proto, local_addr=(local_host, 0), remote_addr=self.server)
            self._local = self._udp.get_extra_info("sockname")[:2]
        else:
            self._reader, self._writer = await asyncio.open_connection(
                *self.server, local_addr=(local_host, 0))
            self._local = self._writer.get_extra_info("sockname")[:2]
            self._task = asyncio.create_task(self._read_tcp(), name=f"sim-gb-{self.id}")

    async def _read_tcp(self) -> None:
        assert self._reader is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, sip.SipError):
            while True:
                head = await self._reader.readuntil(b"\r\n\r\n")
                msg = sip.parse_head(head[:-4])
                n = sip.content_length(msg) or 0
                msg.body = await self._reader.readexactly(n) if n else b""
                self._received(msg)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _send(self, msg: SipMessage) -> None:
        data = sip.serialize(msg)
        if self._udp is not None:
            self._udp.sendto(data)
        elif self._writer is not None:
            self._writer.write(data)

    # --- requests --------------------------------------------------------------------------

    def _headers(self, method: str, cseq: int, call_id: str, to: str = "",
                 from_tag: str = "") -> list[tuple[str, str]]:
        host, port = self._local
        me = f"<sip:{self.id}@{self.domain}>;tag={from_tag or secrets.token_hex(4)}"
        return [("via", f"SIP/2.0/{self.transport.upper()} {host}:{port};rport;"
                        f"branch=z9hG4bK{secrets.token_hex(6)}"),
                ("from", me), ("to", to or f"<sip:{self.id}@{self.domain}>"),
                ("call-id", call_id), ("cseq", f"{cseq} {method}"), ("max-forwards", "70")]

    async def request(self, method: str, headers: list[tuple[str, str]], body: bytes = b"",
                      uri: str = "", wait_s: float | None = None) -> SipMessage:
        call_id = dict(headers)["call-id"]
        fut: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()
        self._pending[f"{call_id} {dict(headers)['cseq']}"] = fut
        if body:
            headers = [*headers, ("content-type", "Application/MANSCDP+xml")]
        msg = SipMessage(method=method, uri=uri or f"sip:{self.server[0]}:{self.server[1]}",
                         headers=headers, body=body)
        self._send(msg)
        async with asyncio.timeout(self.wait_s if wait_s is None else wait_s):
            # over UDP, resent at 0.5 s, 1 s, 2 s, 4 s ... until answered (RFC 3261 Timer E)
            interval = 0.5
            while True:
                done, _ = await asyncio.wait({fut}, timeout=interval)
                if done:
                    return fut.result()
                if self._udp is not None:
                    self._send(msg)
                interval = min(interval * 2, 4.0)

    async def register(self, expires: int = 3600, password: str | None = None) -> int:
        """REGISTER, answering the 401 challenge; returns the final status."""
        call_id = f"{secrets.token_hex(6)}@{self._local[0]}"
        tag = secrets.token_hex(4)
        contact = [("contact", f"<sip:{self.id}@{self._local[0]}:{self._local[1]}>"),
                   ("expires", str(expires))]
        uri = f"sip:{self.domain}"
        resp = await self.request("REGISTER", self._headers("REGISTER", 1, call_id,
                                                            from_tag=tag) + contact, uri=uri)
        if resp.status != 401:
            return resp.status
        challenge = parse_authorization(resp.get("www-authenticate")) or {}
        params = {"username": self.id, "realm": challenge.get("realm", ""),
                  "nonce": challenge.get("nonce", ""), "uri": uri}
        answer = expected_response(params, self.password if password is None else password,
                                   "REGISTER")
        auth = (f'Digest username="{self.id}", realm="{params["realm"]}", '
                f'nonce="{params["nonce"]}", uri="{uri}", response="{answer}", algorithm=MD5')
        resp = await self.request("REGISTER", self._headers("REGISTER", 2, call_id,
                                                            from_tag=tag)
                                  + contact + [("authorization", auth)], uri=uri)
        return resp.status

    def _xml(self, root: str, cmd: str, inner: str, sn: int | None = None) -> bytes:
        if sn is None:
            self._sn += 1
            sn = self._sn
        text = (f'<?xml version="1.0" encoding="{self.encoding}"?>\r\n<{root}>\r\n'
                f"<CmdType>{cmd}</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{self.id}</DeviceID>"
                f"\r\n{inner}</{root}>\r\n")
        return text.encode("gb18030" if self.encoding.upper().startswith("GB") else "utf-8")

    async def message(self, body: bytes) -> int:
        call_id = f"{secrets.token_hex(6)}@{self._local[0]}"
        to = f"<sip:{self.server_id}@{self.domain}>"
        resp = await self.request("MESSAGE", self._headers("MESSAGE", 20, call_id, to), body)
        return resp.status

    async def keepalive(self) -> int:
        return await self.message(self._xml("Notify", "Keepalive", "<Status>OK</Status>\r\n"))

    def _items(self, entries: Iterable[tuple[str, str, str, str]], event: bool = False) -> str:
        out = []
        for did, name, status, parent in entries:
            extra = f"<Event>{status}</Event>" if event else f"<Status>{status}</Status>"
            out.append(f"<Item><DeviceID>{did}</DeviceID><Name>{name}</Name>"
                       f"<Manufacturer>sim</Manufacturer><ParentID>{parent}</ParentID>"
                       f"{extra}</Item>\r\n")
        return "".join(out)

    def catalog_bodies(self, sn: int) -> list[bytes]:
        entries = [(nid, name, "ON", self.id) for nid, name in self.nodes] + \
            [(c.id, c.name or c.id, self.status_of(c.id) if self.status_of else c.status,
              c.parent or self.id) for c in self.channels]
        total = len(entries)
        out = []
        for i in range(0, max(total, 1), self.per_message):
            part = entries[i:i + self.per_message]
            inner = (f"<SumNum>{total}</SumNum>\r\n<DeviceList Num=\"{len(part)}\">\r\n"
                     f"{self._items(part)}</DeviceList>\r\n")
            out.append(self._xml("Response", "Catalog", inner, sn))
        return out

    async def send_catalog(self, sn: int, parts: int | None = None, window: int = 8) -> None:
        """The catalog's MESSAGEs, up to ``window`` awaiting their answer at once."""
        sem = asyncio.Semaphore(window)

        async def one(body: bytes) -> None:
            async with sem:
                await self.message(body)

        await asyncio.gather(*(one(b) for b in self.catalog_bodies(sn)[:parts]))

    def record_bodies(self, sn: int, cid: str, records: list[tuple[str, str]]) -> list[bytes]:
        """A RecordInfo answer in parts of ``per_message`` items."""
        out = []
        total = len(records)
        for i in range(0, max(total, 1), self.per_message):
            part = records[i:i + self.per_message]
            items = "".join(
                f"<Item><DeviceID>{cid}</DeviceID><Name>{cid}</Name><FilePath>/rec/{n}"
                f"</FilePath><Address>sim</Address><StartTime>{a}</StartTime><EndTime>{b}"
                f"</EndTime><Secrecy>0</Secrecy><Type>time</Type></Item>\r\n"
                for n, (a, b) in enumerate(part, start=i))
            text = (f'<?xml version="1.0" encoding="{self.encoding}"?>\r\n<Response>\r\n'
                    f"<CmdType>RecordInfo</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{cid}"
                    f"</DeviceID>\r\n<Name>{cid}</Name>\r\n<SumNum>{total}</SumNum>\r\n"
                    f'<RecordList Num="{len(part)}">\r\n{items}</RecordList>\r\n'
                    f"</Response>\r\n")
            out.append(text.encode("gb18030" if self.encoding.upper().startswith("GB")
                                   else "utf-8"))
        return out

    async def _send_all(self, bodies: list[bytes], window: int = 8) -> None:
        sem = asyncio.Semaphore(window)

        async def one(body: bytes) -> None:
            async with sem:
                await self.message(body)

        await asyncio.gather(*(one(b) for b in bodies))

    async def events(self, events: list[tuple[str, str]]) -> int:
        """Catalog events (channel id, ON/OFF/VLOST/DEFECT/ADD/DEL/UPDATE): a NOTIFY in the
        subscription when camwatch subscribed, else a MESSAGE."""
        by_id = {c.id: c for c in self.channels}
        entries = [(cid, by_id[cid].name if cid in by_id else cid, ev, self.id)
                   for cid, ev in events]
        inner = (f"<SumNum>{len(entries)}</SumNum>\r\n<DeviceList Num=\"{len(entries)}\">"
                 f"\r\n{self._items(entries, event=True)}</DeviceList>\r\n")
        body = self._xml("Notify", "Catalog", inner)
        if self._sub_dialog is None:
            return await self.message(body)
        call_id, theirs, ours = self._sub_dialog
        headers = self._headers("NOTIFY", 100 + self._sn, call_id, to=theirs)
        headers = [(k, ours if k == "from" else v) for k, v in headers]
        headers += [("event", "Catalog"), ("subscription-state", "active;expires=3600")]
        resp = await self.request("NOTIFY", headers, body)
        return resp.status

    # --- what camwatch sends ---------------------------------------------------------------

    def _received(self, msg: SipMessage) -> None:
        if self.mute and msg.is_request:
            return
        if not msg.is_request:
            fut = self._pending.pop(f"{msg.call_id} {msg.get('cseq')}", None)
            if fut is not None and not fut.done() and msg.status >= 200:
                fut.set_result(msg)
            elif fut is not None and msg.status < 200:
                self._pending[f"{msg.call_id} {msg.get('cseq')}"] = fut
            return
        tag = secrets.token_hex(4)
        self._send(sip.response(msg, 200, to_tag=tag))
        if msg.method == "SUBSCRIBE":
            self.subscribed = True
            self._sub_dialog = (msg.call_id, msg.get("from"), f"{msg.get('to')};tag={tag}")
        elif msg.method == "MESSAGE" and b"<CmdType>DeviceStatus</CmdType>" in msg.body:
            self.status_queries += 1
            inner = (f"<Result>OK</Result>\r\n<Online>{self.online}</Online>\r\n"
                     f"<Status>{self.status}</Status>\r\n<DeviceTime>{self.device_time}"
                     f"</DeviceTime>\r\n")
            body = self._xml("Response", "DeviceStatus", inner, _sn_of(msg.body))
            status = asyncio.get_running_loop().create_task(self.message(body))
            status.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        elif msg.method == "MESSAGE" and b"<CmdType>RecordInfo</CmdType>" in msg.body:
            self.record_queries += 1
            self.last_record_sn = _sn_of(msg.body)
            if self.records_of is not None:
                body = msg.body
                cid, start, end = (_field(body, t) for t in ("DeviceID", "StartTime", "EndTime"))
                parts = self.record_bodies(_sn_of(body), cid, self.records_of(cid, start, end))
                task = asyncio.get_running_loop().create_task(self._send_all(parts))
                task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        elif msg.method == "MESSAGE" and b"<CmdType>Catalog</CmdType>" in msg.body:
            self.catalog_queries += 1
            if self.answer_catalog:
                sn = _sn_of(msg.body)
                task = asyncio.get_running_loop().create_task(self.send_catalog(sn))
                task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)


def _sn_of(body: bytes) -> int:
    start = body.find(b"<SN>")
    end = body.find(b"</SN>")
    raw = body[start + 4:end].strip() if 0 <= start < end else b"0"
    return int(raw) if raw.isdigit() else 0


def _field(body: bytes, tag: str) -> str:
    start = body.find(f"<{tag}>".encode())
    end = body.find(f"</{tag}>".encode())
    if not 0 <= start < end:
        return ""
    return body[start + len(tag) + 2:end].decode("ascii", "replace").strip()
