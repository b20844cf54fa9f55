"""The upper platform's SIP side: UDP and TCP listeners, REGISTER with Digest, keepalives,
catalog queries and subscriptions. It knows nothing of channel states: what it learns goes to
a :class:`Listener` (:class:`camwatch.gb28181.service.GbService` turns it into verdicts).

Bounds (besides the message limits of :mod:`camwatch.gb28181.sip`): TCP connections in total
(``max_tcp_connections``) and per address (``MAX_TCP_PER_HOST``); a TCP message's head and body
must arrive within ``MESSAGE_TIMEOUT_S`` of its first byte, and a connection with nothing to
say for ``keepalive_timeout`` + 30 s is closed; REGISTERs from unknown ids are answered at most
``unknown_per_minute`` times a minute per source address, the rest dropped unanswered. Nothing
here waits on a peer: UDP is answered in the datagram callback, each TCP connection has its
own reader task, outgoing requests are fire-and-forget (a lost catalog query is repeated at the
next ``catalog_interval``; a lost part makes the catalog partial at its deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import structlog

from camwatch.gb28181 import manscdp, sip
from camwatch.gb28181.config import GB_ID, GbConfig
from camwatch.gb28181.digest import Authenticator, parse_authorization
from camwatch.gb28181.manscdp import Item, ManscdpError
from camwatch.gb28181.peers import Assembly, Peer
from camwatch.gb28181.records import RecordQuery, local_text, previous_day
from camwatch.gb28181.sip import SipError, SipMessage

log = structlog.get_logger(__name__)

MESSAGE_TIMEOUT_S = 10.0
MAX_TCP_PER_HOST = 16
MAX_PEERS = 10_000
MAX_OUTSTANDING = 10_000  # our requests awaiting an answer (call-id -> what it was)
MAX_ANSWERS = 4096  # our last UDP answers kept for retransmitted requests
TICK_S = 0.5
T1, T2 = 0.5, 4.0  # RFC 3261 timers: first UDP retransmission, longest gap
SUBSCRIBE_EXPIRES_S = 3600
DEFAULT_EXPIRES_S = 3600
MAX_RECORD_QUERIES = 1000  # RecordInfo queries awaiting their (whole) answer at once


class Listener(Protocol):
    def peer_up(self, peer: Peer, now: float) -> None: ...

    def peer_down(self, peer: Peer, now: float) -> None: ...

    def catalog_items(self, peer: Peer, items: Iterable[Item], now: float) -> None: ...

    def catalog(self, peer: Peer, partial: bool, now: float) -> None: ...

    def channel_event(self, peer: Peer, item: Item, now: float) -> None: ...

    def device_status(self, peer: Peer, doc: manscdp.Document, now: float) -> None: ...

    def wants_records(self, channel_id: str) -> bool: ...

    def records(self, peer: Peer, q: RecordQuery, partial: bool, now: float) -> None: ...


def _transaction(req: SipMessage) -> tuple[str, str, str]:
    vias = req.get_all("via")
    branch = sip.header_params(vias[0]).get("branch", "") if vias else ""
    return (req.call_id, req.get("cseq"), branch)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: UpperPlatform) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.received(data, (addr[0], addr[1]), "udp", None)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable of a sendto
        log.debug("udp error", error=type(exc).__name__)


class UpperPlatform:
    def __init__(self, cfg: GbConfig, listener: Listener,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.listener = listener
        self.clock = clock
        self.auth = Authenticator(cfg.domain)
        self.peers: dict[str, Peer] = {}
        self.counters: Counter[str] = Counter()  # refused:<reason>, messages:<method>, ...
        self.host, self.port = cfg.address
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: dict[str, asyncio.StreamWriter] = {}  # peer id -> its TCP connection
        self._per_host: Counter[str] = Counter()
        self._tcp_open = 0
        self._unknown: dict[str, tuple[float, int]] = {}  # source host -> (minute, count)
        self._outstanding: dict[str, tuple[str, str]] = {}  # call-id -> (peer id, kind)
        # UDP requests not yet answered: call-id -> [data, address, next resend, interval, end]
        self._resend: dict[str, list[Any]] = {}
        # our last UDP answers by request (Call-ID, CSeq, branch): a peer's retransmission is
        # answered again, not handled again (RFC 3261 §17.2.2); a busy loop answering late
        # otherwise handles each catalog part several times over
        self._answers: OrderedDict[tuple[str, str, str], tuple[bytes, tuple[str, int]]] = \
            OrderedDict()
        self._sn = secrets.randbelow(100_000)
        self._cseq = 1
        self._tasks: set[asyncio.Task[None]] = set()
        # RecordInfo (gb28181.recording): the local day being covered, channels asked for it,
        # those still to ask (peer id, channel id), answers being assembled by SN, and the
        # query budget (tokens refilled at recording.per_minute)
        self.tz: dt.tzinfo = dt.UTC  # report.timezone: the days and the local times
        self._record_day = ""
        self._record_asked: set[str] = set()
        self._record_todo: deque[tuple[str, str]] = deque()
        self._record_queued: set[str] = set()  # channels in _record_todo (each once)
        self._records: dict[int, RecordQuery] = {}
        self._record_tokens = 0.0
        self._record_tick: float | None = None

    def configure(self, cfg: GbConfig) -> None:
        """A reloaded section (listen and transport need a restart; the daemon says so)."""
        self.cfg = cfg
        if cfg.domain != self.auth.realm:
            self.auth = Authenticator(cfg.domain)

    # --- sockets ---------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.cfg.address
        want_udp = self.cfg.transport in ("udp", "both")
        want_tcp = self.cfg.transport in ("tcp", "both")
        for _ in range(20):  # port 0: find one free for both UDP and TCP
            try:
                if want_udp:
                    udp, _p = await loop.create_datagram_endpoint(
                        lambda: _Udp(self), local_addr=(host, port))
                    self._udp = udp
                    port = udp.get_extra_info("sockname")[1]
                if want_tcp:
                    self._tcp = await asyncio.start_server(
                        self._tcp_client, host, port, limit=sip.MAX_HEAD + 4)
                    port = self._tcp.sockets[0].getsockname()[1]
                break
            except OSError:
                if self._udp is not None:
                    self._udp.close()
                    self._udp = None
                if self.cfg.address[1] != 0:
                    raise
                port = 0
        self.host, self.port = host, port
        log.info("gb28181 listening", listen=f"{host}:{port}", transport=self.cfg.transport,
                 sip_id=self.cfg.sip_id)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for w in list(self._conns.values()):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._tcp.wait_closed()

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        source = (str(peer[0]), int(peer[1]))
        if self._tcp_open >= self.cfg.max_tcp_connections or \
                self._per_host[source[0]] >= MAX_TCP_PER_HOST:
            self.counters["refused:tcp_limit"] += 1
            writer.close()
            return
        self._tcp_open += 1
        self._per_host[source[0]] += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        idle = self.cfg.keepalive_timeout + 30.0
        try:
            while True:
                async with asyncio.timeout(idle):
                    first = await reader.read(1)
                    while first in (b"\r", b"\n"):  # CRLF keep-alive pings (RFC 5626)
                        first = await reader.read(1)
                if not first:
                    return
                async with asyncio.timeout(MESSAGE_TIMEOUT_S):
                    head = first + await reader.readuntil(b"\r\n\r\n")
                    msg = sip.parse_head(head[:-4])
                    n = sip.content_length(msg)
                    if n is None:
                        raise SipError("a message over TCP without Content-Length")
                    msg.body = await reader.readexactly(n) if n else b""
                self.handle(msg, source, "tcp", writer)
        except (SipError, asyncio.LimitOverrunError, asyncio.IncompleteReadError,
                ValueError) as exc:
            self.counters["bad_message"] += 1
            log.info("gb28181 tcp connection closed: bad message", source=source[0],
                     error=str(exc)[:120])
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._tcp_open -= 1
            self._per_host[source[0]] -= 1
            if not self._per_host[source[0]]:
                del self._per_host[source[0]]
            for pid, w in list(self._conns.items()):
                if w is writer:
                    del self._conns[pid]
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    def received(self, data: bytes, source: tuple[str, int], transport: str,
                 writer: asyncio.StreamWriter | None) -> None:
        if not data.strip(b"\r\n"):
            return  # keep-alive ping
        try:
            msg = sip.parse_message(data)
        except SipError as exc:
            self.counters["bad_message"] += 1
            log.debug("gb28181 bad message", source=source[0], error=str(exc)[:120])
            return
        self.handle(msg, source, transport, writer)

    def handle(self, msg: SipMessage, source: tuple[str, int], transport: str,
               writer: asyncio.StreamWriter | None) -> None:
        """One message from a peer; a bug here is logged and counted, never raised into the
        socket's callback."""
        try:
            self._handle(msg, source, transport, writer)
        except Exception as exc:
            self.counters["internal"] += 1
            log.error("gb28181 message handling failed", source=source[0],
                      error=repr(exc)[:200])

    def _send(self, data: bytes, address: tuple[str, int], transport: str,
              writer: asyncio.StreamWriter | None) -> bool:
        if transport == "tcp":
            if writer is None or writer.is_closing():
                return False
            writer.write(data)
            return True
        if self._udp is None:
            return False
        self._udp.sendto(data, address)
        return True

    def _reply(self, req: SipMessage, status: int, source: tuple[str, int], transport: str,
               writer: asyncio.StreamWriter | None,
               extra: list[tuple[str, str]] | None = None) -> None:
        resp = sip.response(req, status, source=source, to_tag=secrets.token_hex(4),
                            extra=[("user-agent", "camwatch"), *(extra or [])])
        address = sip.reply_address(req, source) if transport == "udp" else source
        data = sip.serialize(resp)
        if transport == "udp":
            self._answers[_transaction(req)] = (data, address)
            if len(self._answers) > MAX_ANSWERS:
                self._answers.popitem(last=False)
        self._send(data, address, transport, writer)

    # --- requests from peers ---------------------------------------------------------------

    def _handle(self, msg: SipMessage, source: tuple[str, int], transport: str,
                writer: asyncio.StreamWriter | None) -> None:
        if not msg.is_request:
            self._answered(msg)
            return
        if transport == "udp" and msg.method != "ACK":
            again = self._answers.get(_transaction(msg))
            if again is not None:
                self.counters["retransmissions"] += 1
                self._send(again[0], again[1], "udp", None)
                return
        self.counters[f"messages:{msg.method}"] += 1
        try:
            if msg.method == "REGISTER":
                self._register(msg, source, transport, writer)
            elif msg.method == "MESSAGE":
                self._message(msg, source, transport, writer)
            elif msg.method == "NOTIFY":
                self._notify(msg, source, transport, writer)
            elif msg.method in ("ACK", "CANCEL"):
                return
            elif msg.method == "BYE":
                self._reply(msg, 200, source, transport, writer)
            else:
                self._reply(msg, 405, source, transport, writer,
                            [("allow", "REGISTER, MESSAGE, NOTIFY, BYE")])
        except SipError as exc:
            self.counters["bad_message"] += 1
            log.debug("gb28181 bad request", source=source[0], error=str(exc)[:120])
            self._reply(msg, 400, source, transport, writer)

    def _refuse(self, msg: SipMessage, reason: str, source: tuple[str, int], transport: str,
                writer: asyncio.StreamWriter | None, status: int = 403) -> None:
        self.counters[f"refused:{reason}"] += 1
        self._reply(msg, status, source, transport, writer)

    def _unknown_allowed(self, host: str, now: float) -> bool:
        minute = now // 60
        seen_minute, n = self._unknown.get(host, (minute, 0))
        if seen_minute != minute:
            n = 0
        if len(self._unknown) > 10_000:
            self._unknown.clear()
        self._unknown[host] = (minute, n + 1)
        return n < self.cfg.unknown_per_minute

    def _register(self, msg: SipMessage, source: tuple[str, int], transport: str,
                  writer: asyncio.StreamWriter | None) -> None:
        now = self.clock()
        pid = msg.from_user()
        known = pid in self.cfg.peers
        if (not known and not self.cfg.allow_unknown) or not GB_ID.match(pid):
            if not self._unknown_allowed(source[0], now):
                self.counters["refused:rate_limited"] += 1
                return  # a flood: not even an answer
            self._refuse(msg, "unknown_id", source, transport, writer)
            return
        if pid not in self.peers and len(self.peers) >= MAX_PEERS:
            self._refuse(msg, "too_many_peers", source, transport, writer, 503)
            return
        try:
            password = self.cfg.password_for(pid)
        except (LookupError, OSError) as exc:
            log.error("gb28181 password not readable", peer=pid, error=str(exc)[:160])
            self._refuse(msg, "no_password", source, transport, writer, 500)
            return
        creds = parse_authorization(msg.get("authorization"))
        if creds is None:
            self.counters["challenges"] += 1
            self._reply(msg, 401, source, transport, writer,
                        [("www-authenticate", self.auth.challenge(now))])
            return
        if creds.get("username") != pid:
            self._refuse(msg, "bad_username", source, transport, writer)
            return
        check = self.auth.check(creds, password.reveal() if password else "", "REGISTER", now)
        if check.stale:
            self._reply(msg, 401, source, transport, writer,
                        [("www-authenticate", self.auth.challenge(now, stale=True))])
            return
        if not check.ok:
            reason = "bad_password" if check.why == "wrong password" else "bad_nonce"
            log.warning("gb28181 registration refused", peer=pid, source=source[0],
                        why=check.why)
            self._refuse(msg, reason, source, transport, writer)
            return
        expires = min(msg.expires(DEFAULT_EXPIRES_S), int(self.cfg.register_expires_max))
        peer = self.peers.get(pid)
        if peer is None:
            peer = self.peers[pid] = Peer(pid, name=self._peer_name(pid))
        peer.transport, peer.address, peer.call_id = transport, source, msg.call_id
        if transport == "tcp" and writer is not None:
            self._conns[pid] = writer
        date = dt.datetime.fromtimestamp(now).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        self._reply(msg, 200, source, transport, writer,
                    [("contact", msg.get("contact") or f"<sip:{pid}@{source[0]}:{source[1]}>"),
                     ("expires", str(expires)), ("date", date)])
        if expires == 0:
            if peer.up:
                self._down(peer, "unregistered", now)
            peer.expires_at = now
            return
        peer.expires_at = now + expires
        if not peer.up:
            peer.registered_since = now
            self._up(peer, now)
        else:
            peer.registered_since = peer.registered_since or now
            # a refresh is a sign of life too (keepalive_timeout counts from either)
            peer.last_keepalive = now

    def _peer_name(self, pid: str) -> str:
        p = self.cfg.peers.get(pid)
        return p.name if p is not None else ""

    def _up(self, peer: Peer, now: float) -> None:
        peer.up, peer.down_reason = True, ""
        peer.last_keepalive = now
        peer.next_catalog = now  # ask at once
        peer.next_status = now
        peer.subscribed_until = 0.0
        log.info("gb28181 peer registered", peer=peer.id, address=peer.address[0],
                 transport=peer.transport)
        self.listener.peer_up(peer, now)
        self._due(peer, now)

    def _down(self, peer: Peer, why: str, now: float) -> None:
        peer.up, peer.down_reason = False, why
        peer.assemblies.clear()
        log.warning("gb28181 peer down", peer=peer.id, why=why,
                    channels=len(peer.catalog.channels))
        self.listener.peer_down(peer, now)

    def _from_peer(self, msg: SipMessage, source: tuple[str, int], transport: str,
                   writer: asyncio.StreamWriter | None) -> Peer | None:
        peer = self.peers.get(msg.from_user())
        if peer is None or (not peer.up and peer.expires_at <= self.clock()):
            # not registered: a refusal makes a device register again
            self._refuse(msg, "not_registered", source, transport, writer)
            return None
        return peer

    def _body_from_peer(self, msg: SipMessage, source: tuple[str, int], transport: str,
                        writer: asyncio.StreamWriter | None
                        ) -> tuple[Peer, manscdp.Document] | None:
        """A registered peer's MESSAGE or NOTIFY body, answered 200 when it parses (400, and
        None, when it does not; None too for a peer that is not registered)."""
        peer = self._from_peer(msg, source, transport, writer)
        if peer is None:
            return None
        try:
            doc = manscdp.parse(msg.body)
        except ManscdpError as exc:
            self.counters["bad_body"] += 1
            log.info("gb28181 bad MANSCDP body", peer=peer.id, error=str(exc)[:120])
            self._reply(msg, 400, source, transport, writer)
            return None
        self._reply(msg, 200, source, transport, writer)
        return peer, doc

    def _message(self, msg: SipMessage, source: tuple[str, int], transport: str,
                 writer: asyncio.StreamWriter | None) -> None:
        accepted = self._body_from_peer(msg, source, transport, writer)
        if accepted is None:
            return
        peer, doc = accepted
        now = self.clock()
        peer.messages += 1
        cmd = doc.cmd.lower()
        if cmd == "keepalive":
            peer.keepalives += 1
            peer.last_keepalive = now
            # where it is now (a NAT may have moved it): our requests follow
            peer.address, peer.transport = source, transport
            if transport == "tcp" and writer is not None:
                self._conns[peer.id] = writer
            if not peer.up:  # it came back before its registration expired
                self._up(peer, now)
        elif cmd == "catalog" and doc.root == "Response":
            self._catalog_part(peer, doc, now)
        elif cmd == "catalog" and doc.root == "Notify":
            self._events(peer, doc.items, now)
        elif cmd == "devicestatus" and doc.root == "Response":
            self.counters["device_status"] += 1
            self.listener.device_status(peer, doc, now)
        elif cmd == "recordinfo" and doc.root == "Response":
            self._record_part(peer, doc, now)

    def _notify(self, msg: SipMessage, source: tuple[str, int], transport: str,
                writer: asyncio.StreamWriter | None) -> None:
        accepted = self._body_from_peer(msg, source, transport, writer)
        if accepted is None:
            return
        peer, doc = accepted
        if doc.cmd.lower() == "catalog":
            self._events(peer, doc.items, self.clock())

    def _catalog_part(self, peer: Peer, doc: manscdp.Document, now: float) -> None:
        sum_num = doc.sum_num if doc.sum_num is not None else len(doc.items)
        # each part's statuses count as they arrive (a status is true whatever the rest
        # says): a 10,000-item catalog is judged in 500 small steps, not one long one
        self.listener.catalog_items(peer, doc.items, now)
        try:
            done = peer.catalog_part(doc.sn, sum_num, doc.items, now, self.cfg.catalog_timeout)
        except ValueError as exc:
            self.counters["bad_body"] += 1
            log.info("gb28181 catalog refused", peer=peer.id, error=str(exc))
            return
        if done is not None:
            self._take(peer, done, False, now)

    def _record_part(self, peer: Peer, doc: manscdp.Document, now: float) -> None:
        q = self._records.get(doc.sn)
        if q is None or q.peer_id != peer.id:
            self.counters["records:unknown"] += 1  # late (after the deadline) or not ours
            return
        try:
            q.add(doc.sum_num, doc.records, self.tz)
        except ValueError as exc:
            self.counters["bad_body"] += 1
            log.info("gb28181 record answer refused", peer=peer.id, error=str(exc))
            del self._records[doc.sn]
            return
        if q.complete:
            del self._records[doc.sn]
            self.counters["records:complete"] += 1
            self.listener.records(peer, q, False, now)

    def _take(self, peer: Peer, a: Assembly, partial: bool, now: float) -> None:
        if self.cfg.recording.enabled:  # its channels, for the day's RecordInfo queries
            new = [cid for cid in a.items if cid not in self._record_asked
                   and cid not in self._record_queued and self.listener.wants_records(cid)]
            self._record_todo.extend((peer.id, cid) for cid in new)
            self._record_queued.update(new)
        peer.take_catalog(a, now, partial)
        self.counters["catalogs_partial" if partial else "catalogs"] += 1
        if partial:
            log.warning("gb28181 catalog partial", peer=peer.id, got=len(a.items),
                        declared=a.sum_num)
        self.listener.catalog(peer, partial, now)

    def _events(self, peer: Peer, items: Iterable[Item], now: float) -> None:
        for it in items:
            if not it.is_channel:
                continue
            event = it.event or ("UPDATE" if it.status else "")
            if event == "DEL":
                peer.catalog.channels.pop(it.device_id, None)
            elif event in ("ADD", "UPDATE"):
                old = peer.catalog.channels.get(it.device_id)
                peer.catalog.channels[it.device_id] = it if old is None or it.name else \
                    Item(it.device_id, old.name, old.parent_id, it.status or old.status,
                         it.event, old.manufacturer, old.civil_code)
            elif event not in manscdp.CHANNEL_EVENTS:
                continue
            self.counters[f"events:{event}"] += 1
            self.listener.channel_event(peer, it, now)

    # --- our requests ----------------------------------------------------------------------

    def _answered(self, resp: SipMessage) -> None:
        self._resend.pop(resp.call_id, None)
        what = self._outstanding.pop(resp.call_id, None)
        if what is None:
            return
        pid, kind = what
        peer = self.peers.get(pid)
        if peer is None:
            return
        if kind == "SUBSCRIBE":
            if 200 <= resp.status < 300:
                expires = resp.expires(SUBSCRIBE_EXPIRES_S) or SUBSCRIBE_EXPIRES_S
                peer.subscribed_until = self.clock() + expires
            elif resp.status >= 300:
                log.info("gb28181 catalog subscription refused", peer=pid, status=resp.status)
        elif resp.status >= 300:
            log.info("gb28181 query refused", peer=pid, kind=kind, status=resp.status)

    def next_sn(self) -> int:
        self._sn = self._sn % 2_000_000_000 + 1
        return self._sn

    def _request(self, peer: Peer, method: str, body: bytes,
                 extra: list[tuple[str, str]] | None = None) -> bool:
        self._cseq += 1
        proto = peer.transport.upper()
        call_id = f"{secrets.token_hex(8)}@{self.host}"
        host, port = peer.address
        headers = [
            ("via", f"SIP/2.0/{proto} {self.host}:{self.port};rport;"
                    f"branch=z9hG4bK{secrets.token_hex(8)}"),
            ("from", f"<sip:{self.cfg.sip_id}@{self.cfg.domain}>;tag={secrets.token_hex(4)}"),
            ("to", f"<sip:{peer.id}@{self.cfg.domain}>"),
            ("call-id", call_id), ("cseq", f"{self._cseq} {method}"), ("max-forwards", "70"),
            ("user-agent", "camwatch"), *(extra or []),
            ("content-type", "Application/MANSCDP+xml")]
        msg = SipMessage(method=method, uri=f"sip:{peer.id}@{host}:{port}", headers=headers,
                         body=body)
        if len(self._outstanding) >= MAX_OUTSTANDING:
            self._outstanding.clear()  # answers that never came
            self._resend.clear()
        self._outstanding[call_id] = (peer.id, method)
        data = sip.serialize(msg)
        if peer.transport == "udp":
            now = self.clock()
            self._resend[call_id] = [data, peer.address, now + T1, T1, now + 64 * T1]
        return self._send(data, peer.address, peer.transport, self._conns.get(peer.id))

    def _retransmit(self, now: float) -> None:
        """UDP requests without an answer are sent again at T1, 2·T1, ... up to T2 apart,
        for 64·T1 (RFC 3261 §17.1.2.2, at the tick's granularity)."""
        for call_id, entry in list(self._resend.items()):
            data, address, due, interval, end = entry
            if now >= end:
                del self._resend[call_id]
                self._outstanding.pop(call_id, None)
            elif now >= due:
                interval = min(interval * 2, T2)
                entry[2], entry[3] = now + interval, interval
                self._send(data, address, "udp", None)

    def query_catalog(self, peer: Peer) -> int:
        sn = self.next_sn()
        self._request(peer, "MESSAGE", manscdp.catalog_query(sn, peer.id))
        return sn

    def query_status(self, peer: Peer) -> None:
        self._request(peer, "MESSAGE", manscdp.device_status_query(self.next_sn(), peer.id))

    def query_records(self, peer: Peer, channel_id: str, day: str, start: float,
                      end: float) -> int:
        """RecordInfo of ``channel_id`` through ``peer`` for ``[start, end)``."""
        sn = self.next_sn()
        self.counters["records:asked"] += 1
        if len(self._records) >= MAX_RECORD_QUERIES:  # the oldest will time out anyway
            del self._records[min(self._records.values(), key=lambda q: q.deadline).sn]
        self._records[sn] = RecordQuery(sn, peer.id, channel_id, day, start, end,
                                        self.clock() + self.cfg.recording.timeout)
        self._request(peer, "MESSAGE", manscdp.record_info_query(
            sn, channel_id, local_text(start, self.tz), local_text(end, self.tz)))
        return sn

    def _records_due(self, now: float) -> None:
        """Ask, within the budget, for the previous day's recordings of every catalog
        channel not yet asked for that day; a new day asks them all again."""
        rec = self.cfg.recording
        for sn, q in list(self._records.items()):
            if now >= q.deadline:
                del self._records[sn]
                peer = self.peers.get(q.peer_id)
                if q.messages and peer is not None:
                    self.counters["records:partial"] += 1
                    self.listener.records(peer, q, True, now)
                else:
                    self.counters["records:unanswered"] += 1
        day, start, end = previous_day(now, self.tz)
        if day != self._record_day:
            self._record_day, self._record_asked = day, set()
            self._record_todo, self._record_queued = deque(), set()
            for p in self.peers.values():
                if p.up:
                    new = [cid for cid in p.catalog.channels if cid not in self._record_queued
                           and self.listener.wants_records(cid)]
                    self._record_todo.extend((p.id, cid) for cid in new)
                    self._record_queued.update(new)
        last, self._record_tick = self._record_tick, now
        elapsed = TICK_S if last is None else max(0.0, now - last)
        self._record_tokens = min(float(rec.per_minute),
                                  self._record_tokens + rec.per_minute * elapsed / 60.0)
        while self._record_tokens >= 1.0 and self._record_todo:
            pid, cid = self._record_todo.popleft()
            self._record_queued.discard(cid)
            peer = self.peers.get(pid)
            if cid in self._record_asked or peer is None or not peer.up \
                    or cid not in peer.catalog.channels:
                continue  # asked through another platform, or asked again at its catalog
            self._record_asked.add(cid)
            self._record_tokens -= 1.0
            self.query_records(peer, cid, day, start, end)

    def subscribe_catalog(self, peer: Peer) -> None:
        self._request(peer, "SUBSCRIBE", manscdp.catalog_query(self.next_sn(), peer.id), [
            ("event", "Catalog"), ("expires", str(SUBSCRIBE_EXPIRES_S)),
            ("contact", f"<sip:{self.cfg.sip_id}@{self.host}:{self.port}>")])

    # --- time ------------------------------------------------------------------------------

    def _due(self, peer: Peer, now: float) -> None:
        if now >= peer.next_catalog:
            peer.next_catalog = now + self.cfg.catalog_interval
            self.query_catalog(peer)
        if peer.is_device and peer.catalog.at is not None and not peer.catalog.channels \
                and now >= peer.next_status:
            # a camera registered directly, with no channel of its own in its catalog: its
            # DeviceStatus says whether its video works (and its clock)
            peer.next_status = now + self.cfg.catalog_interval
            self.query_status(peer)
        if self.cfg.subscribe and now >= peer.subscribed_until - 60.0:
            # retried at the catalog interval until a 200 moves it to the subscription's end
            peer.subscribed_until = now + self.cfg.catalog_interval + 60.0
            self.subscribe_catalog(peer)

    def tick(self, now: float | None = None) -> None:
        """Keepalive timeouts, registration expiry, catalog deadlines, queries due."""
        now = self.clock() if now is None else now
        self._retransmit(now)
        for peer in list(self.peers.values()):
            for a in peer.overdue(now):
                if peer.up and a.items:
                    self._take(peer, a, True, now)
            if not peer.up:
                continue
            if now >= peer.expires_at:
                self._down(peer, "expired", now)
            elif now - peer.alive_at() > self.cfg.keepalive_timeout:
                self._down(peer, "keepalive_timeout", now)
            else:
                self._due(peer, now)
        if self.cfg.recording.enabled:
            self._records_due(now)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                self.tick()
            except Exception as exc:  # a bug here must not stop the daemon
                log.error("gb28181 tick failed", error=repr(exc)[:200])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await stopping.wait()
