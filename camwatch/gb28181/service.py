"""The upper platform wired into the engine: what lower platforms say becomes verdicts in the
channel book (source ``gb28181``), and the platforms are served to ``/api/platforms`` and
``/metrics``.

- A catalog item's ``Status`` and a catalog event map to a verdict (:func:`verdict_of`);
  channels are matched to the inventory by their id. The platform already applied its own
  hysteresis, so its OFF is taken at once (``firm``), not after three of them.
- A platform that misses ``keepalive_timeout`` (or whose registration expires, or that
  unregisters) takes every channel it listed offline with reason ``platform_down`` (except
  channels another registered platform also lists); the evaluator groups channels by
  platform, so the outage is one ``mass_outage`` alert naming the platform.
- A deeper source (an RTSP probe that succeeded a minute ago) still wins over the platform's
  word: :func:`camwatch.rules.sources.admits` decides, as for any source.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from camwatch.gb28181.config import GB_ID, GbConfig
from camwatch.gb28181.manscdp import Document, Item, status_ok
from camwatch.gb28181.peers import Peer
from camwatch.gb28181.records import RecordQuery, local_time
from camwatch.gb28181.server import UpperPlatform
from camwatch.model import Source, State, Verdict, Why
from camwatch.probes.result import ProbeResult
from camwatch.store.base import Recording

if TYPE_CHECKING:
    from camwatch.book import ChannelBook
    from camwatch.config import Config
    from camwatch.evaluator import Evaluator
    from camwatch.inventory import Inventory
    from camwatch.store.writer import StoreWriter


class Engine(Protocol):
    """What the service needs of :class:`camwatch.engine.Engine` (which holds the service:
    a protocol here, not an import, keeps the two from importing each other)."""

    book: ChannelBook
    evaluator: Evaluator
    cfg: Config
    inventory: Inventory
    stopping: asyncio.Event
    gb: GbService | None
    writer: StoreWriter

log = structlog.get_logger(__name__)

GROUPS_DELAY_S = 1.0
MAX_LISTED = 200  # disagreements listed by /api/platforms (all are counted)
REFUSED_REASONS = ("unknown_id", "bad_password", "bad_nonce", "bad_username", "rate_limited",
                   "not_registered", "no_password", "too_many_peers", "tcp_limit")
EVENTS = ("ON", "OFF", "VLOST", "DEFECT", "ADD", "DEL", "UPDATE")
METHODS = ("REGISTER", "MESSAGE", "NOTIFY")


def verdict_of(event: str, status: str = "", detail: str = "") -> Verdict | None:
    """A catalog event (or, for ADD/UPDATE and full catalogs, the item's Status) as a
    verdict; None when it says nothing about the channel's state (DEL, an unknown status)."""
    if not detail:
        key = (event, status)
        if key not in _VERDICTS:
            if len(_VERDICTS) > 1000:
                _VERDICTS.clear()
            _VERDICTS[key] = _verdict_of(event, status, "")
        return _VERDICTS[key]
    return _verdict_of(event, status, detail)


# verdicts are immutable: a catalog's 10,000 items share the few there are
_VERDICTS: dict[tuple[str, str], Verdict | None] = {}


def _verdict_of(event: str, status: str, detail: str) -> Verdict | None:
    ev = event.strip().upper()
    if ev in ("", "ADD", "UPDATE"):
        ok = status_ok(status)
        if ok is None:
            return None
        ev = "ON" if ok else "OFF"
    if ev == "ON":
        return Verdict(True, None, source=Source.GB28181, detail=detail, firm=True)
    reason = {"OFF": Why.GB_OFF, "VLOST": Why.VIDEO_LOST, "DEFECT": Why.GB_DEFECT}.get(ev)
    if reason is None:
        return None
    return Verdict(False, reason, source=Source.GB28181, detail=detail, firm=True)


def device_drift(text: str, now: float, tz_name: str) -> float | None:
    """``2026-11-30T15:00:00[.123]`` (the device's local time, taken in ``tz_name``) minus
    ``now``, in seconds; None when absent or not such a time."""
    from camwatch.reports.period import zone  # (camwatch.config imports this package)

    t = local_time(text.strip()[:26], zone(tz_name))
    return None if t is None else round(t - now, 3)


def _esc(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class GbService:
    """The :class:`~camwatch.gb28181.server.Listener` that judges channels."""

    def __init__(self, cfg: GbConfig, engine: Engine,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.engine = engine
        self.clock = clock
        self.server = UpperPlatform(cfg, self, clock)
        self.verdicts = 0
        self._groups_due: asyncio.TimerHandle | None = None
        self._regroup: set[str] = set()  # platforms whose catalog changed
        # channels the platform and camwatch's own fresh probe judge differently:
        # channel id -> (platform id, the platform's verdict, the probe's state/reason, since)
        self.disagreements: dict[str, tuple[str, str, str, float]] = {}
        # RecordInfo (录像完整率): each channel's latest answer
        self.recordings: dict[str, Recording] = {}
        from camwatch.reports.period import zone  # (camwatch.config imports this package)

        self.server.tz = zone(engine.cfg.report.timezone)

    def configure(self, cfg: GbConfig) -> None:
        self.cfg = cfg
        self.server.configure(cfg)

    async def start(self) -> None:
        await self.server.start()

    async def run(self) -> None:
        """The engine's ``extra`` task: timers until the engine stops, then close."""
        try:
            await self.server.run(self.engine.stopping)
        finally:
            if self._groups_due is not None:
                self._groups_due.cancel()
            await self.server.close()

    @property
    def peers(self) -> dict[str, Peer]:
        return self.server.peers

    # --- what the platforms say ------------------------------------------------------------

    def _judge(self, cid: str, v: Verdict, now: float, pid: str = "") -> None:
        book = self.engine.book
        if cid not in book.channels:
            return
        self.verdicts += 1
        st = book.state(cid)
        fresh = st is not None and st.last_probe is not None and v.ok is not None and \
            now - st.last_probe <= book.fresh_for.get(book.primary, 3 * book.interval)
        if fresh and st is not None and st.state in (State.ONLINE, State.OFFLINE) \
                and (st.state == State.ONLINE) != v.ok:
            said = "online" if v.ok else f"offline {v.reason}"
            probe = "online" if st.state == State.ONLINE else f"offline {st.reason}"
            old = self.disagreements.get(cid)
            self.disagreements[cid] = (pid, said, probe, old[3] if old else now)
        else:
            self.disagreements.pop(cid, None)
        book.judge(cid, v, now)

    def peer_up(self, peer: Peer, now: float) -> None:
        pass  # its channels are judged when its catalog arrives (queried now)

    def peer_down(self, peer: Peer, now: float) -> None:
        self._platform_groups()  # current before its channels go down: one outage, named
        elsewhere = {cid for p in self.peers.values() if p.up and p is not peer
                     for cid in p.catalog.channels}
        v = Verdict(False, Why.PLATFORM_DOWN, source=Source.GB28181, firm=True,
                    detail=f"platform {peer.id} {peer.down_reason}")
        for cid in peer.catalog.channels:
            if cid not in elsewhere:
                self._judge(cid, v, now, peer.id)
        if peer.is_device and not peer.catalog.channels:
            self._judge(peer.id, v, now, peer.id)  # a camera registered directly is its own channel

    def catalog_items(self, peer: Peer, items: Iterable[Item], now: float) -> None:
        for it in items:
            if it.is_channel and (v := verdict_of("", it.status)) is not None:
                self._judge(it.device_id, v, now, peer.id)

    def catalog(self, peer: Peer, partial: bool, now: float) -> None:
        self._groups_soon(peer)
        self._keep_catalog(peer, now)

    def _keep_catalog(self, peer: Peer, now: float) -> None:
        """The platform's catalog as the month's latest in the store, for the bulletin's
        reconciliation (台账核对), through the one store writer: ids and names only (about
        50 bytes a channel). A failed write is counted by the writer; the next catalog (every
        ``catalog_interval``) writes it again."""
        from camwatch.reports.period import zone  # (camwatch.config imports this package)

        month = dt.datetime.fromtimestamp(now, zone(self.engine.cfg.report.timezone)) \
            .strftime("%Y-%m")
        c = peer.catalog
        data = {"name": peer.name, "partial": c.partial, "declared": c.declared,
                "channels": {cid: it.name for cid, it in c.channels.items()}}
        self.engine.writer.submit(lambda s: s.save_gb_catalog(month, peer.id, now, data))

    def channel_event(self, peer: Peer, item: Item, now: float) -> None:
        v = verdict_of(item.event, item.status, detail=f"platform {peer.id} event "
                                                       f"{item.event or 'UPDATE'}")
        if v is not None:
            self._judge(item.device_id, v, now, peer.id)
        if item.event in ("ADD", "DEL"):
            self._groups_soon(peer)

    def device_status(self, peer: Peer, doc: Document, now: float) -> None:
        """A directly registered device's DeviceStatus: ``Online`` ONLINE/OFFLINE and
        ``Status`` OK/ERROR judge the device's own id (when the ledger has it);
        ``DeviceTime`` (local time, ``report.timezone``) gives its clock drift."""
        online = doc.fields.get("Online", "").strip().upper()
        status = doc.fields.get("Status", "").strip().upper()
        if online == "OFFLINE":
            v: Verdict | None = verdict_of("OFF")
        elif status == "ERROR":
            v = verdict_of("DEFECT")
        elif online == "ONLINE":
            v = verdict_of("ON")
        else:
            v = None
        if v is not None:
            self._judge(peer.id, v, now, peer.id)
        drift = device_drift(doc.fields.get("DeviceTime", ""), now,
                             self.engine.cfg.report.timezone)
        if drift is not None and peer.id in self.engine.book.channels:
            self.engine.book.device_info(peer.id, ProbeResult.success(
                "gb28181", clock_drift_s=drift))

    def wants_records(self, channel_id: str) -> bool:
        """RecordInfo is asked for the channels of the ledger only, by their 20-digit ids
        (an inventory read with ``id_format: any`` may hold others: they are not asked)."""
        return channel_id in self.engine.book.channels and GB_ID.match(channel_id) is not None

    def records(self, peer: Peer, q: RecordQuery, partial: bool, now: float) -> None:
        """A channel's recordings of a day: kept for the API and the metrics, and written
        to the store (through the one writer) for the bulletin's 录像完整率."""
        rec = Recording(q.channel_id, peer.id, q.day, q.recorded(), q.end - q.start, partial,
                        now)
        self.recordings[q.channel_id] = rec
        self.engine.writer.submit(lambda s: s.save_gb_recording(rec))

    def _groups_soon(self, peer: Peer) -> None:
        """Regroup the platform's channels within a second (a burst of ADD events regroups
        once)."""
        self._regroup.add(peer.id)
        if self._groups_due is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._platform_groups()
            return
        self._groups_due = loop.call_later(GROUPS_DELAY_S, self._platform_groups)

    def _platform_groups(self) -> None:
        """Tell the evaluator which channels the platforms whose catalog changed list (mass
        outages by platform)."""
        if self._groups_due is not None:
            self._groups_due.cancel()
            self._groups_due = None
        todo, self._regroup = self._regroup, set()
        for pid in todo:
            if (p := self.peers.get(pid)) is not None:
                self.engine.evaluator.set_platform(p.id, p.name, p.catalog.channels)

    # --- read API --------------------------------------------------------------------------

    def platforms_json(self, iso: Callable[[float | None], str | None]) -> dict[str, Any]:
        now = self.clock()
        book = self.engine.book
        out = []
        for p in sorted(self.peers.values(), key=lambda p: p.id):
            matched = [cid for cid in p.catalog.channels if cid in book.channels]
            online = sum(1 for cid in matched if book.state_of(cid) == State.ONLINE)
            out.append({
                "id": p.id, "name": p.name, "transport": p.transport,
                "address": f"{p.address[0]}:{p.address[1]}", "up": p.up,
                "down_reason": p.down_reason or None,
                "registered_since": p.registered_since,
                "registered_since_iso": iso(p.registered_since),
                "last_keepalive": p.last_keepalive, "last_keepalive_iso": iso(p.last_keepalive),
                "keepalive_age_s": None if p.last_keepalive is None
                else round(now - p.last_keepalive, 1),
                "expires": p.expires_at, "expires_iso": iso(p.expires_at),
                "catalog": {"channels": len(p.catalog.channels), "nodes": p.catalog.nodes,
                            "declared": p.catalog.declared, "partial": p.catalog.partial,
                            "at": p.catalog.at, "at_iso": iso(p.catalog.at)},
                "channels": len(matched), "online": online,
            })
        return {"enabled": True, "listen": f"{self.server.host}:{self.server.port}",
                "transport": self.cfg.transport, "sip_id": self.cfg.sip_id,
                "domain": self.cfg.domain, "platforms": out,
                "disagreements": {
                    "count": len(self.disagreements),
                    "channels": [{"channel": cid, "platform": pid, "platform_says": said,
                                  "probe_says": probe, "since": since, "since_iso": iso(since)}
                                 for cid, (pid, said, probe, since)
                                 in sorted(self.disagreements.items())[:MAX_LISTED]]},
                "refused": {r: self.server.counters.get(f"refused:{r}", 0)
                            for r in REFUSED_REASONS}}

    def summary(self) -> dict[str, Any]:
        """For ``/api/status`` and ``camwatch status``: the platforms and the reconciliation
        in a few numbers."""
        rec = self.reconciliation()
        return {"platforms": len(self.peers), "up": sum(1 for p in self.peers.values() if p.up),
                "catalog_channels": sum(len(p.catalog.channels) for p in self.peers.values()),
                "declared_rate": rec["declared_rate"], "measured_rate": rec["measured_rate"],
                "missing": rec["missing_count"], "not_in_ledger": rec["not_in_ledger_count"],
                "complete": rec["complete"]}

    def reconciliation(self) -> dict[str, Any]:
        """台账核对 against the catalogs received (``/api/reconciliation``)."""
        from camwatch.gb28181.reconcile import reconcile

        peers = [p for p in self.peers.values() if p.catalog.at is not None]
        r = reconcile(self.engine.inventory.channels,
                      {p.id: p.catalog.channels for p in peers},
                      complete=not any(p.catalog.partial for p in peers))
        return {"enabled": True, "platforms": len(peers), **r.as_json()}

    def metrics_text(self, head: Callable[[str, str, str], str]) -> str:
        """The ``camwatch_gb_*`` families (``head(name, kind, help)`` writes HELP/TYPE):

        - ``camwatch_gb_platform_up{platform}`` 1 registered and keeping alive, else 0;
        - ``camwatch_gb_platform_info{platform,name,transport}`` 1;
        - ``camwatch_gb_keepalive_age_seconds{platform}`` since its last keepalive/REGISTER;
        - ``camwatch_gb_catalog_channels{platform}``, ``camwatch_gb_catalog_nodes{platform}``,
          ``camwatch_gb_catalog_partial{platform}`` (1: the last catalog missed its SumNum),
          ``camwatch_gb_catalog_inventory_channels{platform}`` (those in the inventory);
        - counters ``camwatch_gb_refused_total{reason}``, ``camwatch_gb_events_total{event}``,
          ``camwatch_gb_messages_total{method}``, ``camwatch_gb_catalogs_total{result}``,
          ``camwatch_gb_bad_messages_total``;
        - ``camwatch_gb_disagreements``: channels the platform and a fresh probe disagree on.
        """
        now = self.clock()
        book = self.engine.book
        c = self.server.counters
        peers = sorted(self.peers.values(), key=lambda p: p.id)
        out: list[str] = []
        add = out.append

        def gauge(name: str, text: str, value: Callable[[Peer], float]) -> None:
            add(head(name, "gauge", text))
            for p in peers:
                add(f'{name}{{platform="{p.id}"}} {value(p):g}\n')

        gauge("camwatch_gb_platform_up", "1 while the lower platform is registered and "
              "keeping alive.", lambda p: 1 if p.up else 0)
        add(head("camwatch_gb_platform_info", "gauge", "A lower platform's name and transport."))
        for p in peers:
            add(f'camwatch_gb_platform_info{{platform="{p.id}",name="{_esc(p.name)}",'
                f'transport="{p.transport}"}} 1\n')
        gauge("camwatch_gb_keepalive_age_seconds", "Seconds since the platform's last "
              "keepalive or REGISTER.", lambda p: round(now - p.alive_at(), 3))
        gauge("camwatch_gb_catalog_channels", "Channels in the platform's catalog.",
              lambda p: len(p.catalog.channels))
        gauge("camwatch_gb_catalog_nodes", "Tree nodes (business groups, virtual "
              "organisations) in the platform's catalog.", lambda p: p.catalog.nodes)
        gauge("camwatch_gb_catalog_partial", "1 when the last catalog did not reach its "
              "SumNum in time.", lambda p: 1 if p.catalog.partial else 0)
        gauge("camwatch_gb_catalog_inventory_channels", "Catalog channels that are in the "
              "inventory.", lambda p: sum(1 for cid in p.catalog.channels
                                          if cid in book.channels))
        counters: list[tuple[str, str, str, Iterable[str], str]] = [
            ("camwatch_gb_refused_total", "reason", "refused:", REFUSED_REASONS,
             "Requests refused, by reason (bad_password: a wrong Digest answer)."),
            ("camwatch_gb_events_total", "event", "events:", EVENTS,
             "Catalog events received, by event."),
            ("camwatch_gb_messages_total", "method", "messages:", METHODS,
             "SIP requests received, by method."),
        ]
        for name, label, prefix, values, text in counters:
            add(head(name, "counter", text))
            for v in values:
                add(f'{name}{{{label}="{v}"}} {c.get(prefix + v, 0)}\n')
        add(head("camwatch_gb_catalogs_total", "counter",
                 "Catalogs taken, complete or partial (deadline passed)."))
        add(f'camwatch_gb_catalogs_total{{result="complete"}} {c.get("catalogs", 0)}\n')
        add(f'camwatch_gb_catalogs_total{{result="partial"}} {c.get("catalogs_partial", 0)}\n')
        add(head("camwatch_gb_disagreements", "gauge", "Channels the platform and camwatch's "
                 "own fresh probe judge differently (the probe's verdict stands)."))
        add(f"camwatch_gb_disagreements {len(self.disagreements)}\n")
        add(head("camwatch_gb_bad_messages_total", "counter",
                 "Datagrams or bodies that were not SIP or MANSCDP we understand."))
        add(f"camwatch_gb_bad_messages_total {c.get('bad_message', 0) + c.get('bad_body', 0)}\n")
        if self.cfg.recording.enabled:
            add(self._recording_metrics(head, peers))
        return "".join(out)

    def _recording_metrics(self, head: Callable[[str, str, str], str],
                           peers: list[Peer]) -> str:
        """``camwatch_gb_record_coverage_ratio{platform}`` (Σ recorded ÷ Σ day over its
        channels' latest answers), ``camwatch_gb_record_channels{platform}`` (channels with
        an answer) and ``camwatch_gb_record_queries_total{result}``."""
        sums: dict[str, list[float]] = {p.id: [0.0, 0.0, 0] for p in peers}
        for r in self.recordings.values():
            if (acc := sums.get(r.platform_id)) is not None:
                acc[0] += r.recorded_s
                acc[1] += r.period_s
                acc[2] += 1
        out = [head("camwatch_gb_record_coverage_ratio", "gauge",
                    "Recorded share of the previous day (录像完整率) of the platform's "
                    "channels, Σ recorded / Σ day.")]
        out += [f'camwatch_gb_record_coverage_ratio{{platform="{pid}"}} {a[0] / a[1]:.6g}\n'
                for pid, a in sums.items() if a[1] > 0]
        out.append(head("camwatch_gb_record_channels", "gauge",
                        "Channels of the platform with a RecordInfo answer."))
        out += [f'camwatch_gb_record_channels{{platform="{pid}"}} {a[2]:g}\n'
                for pid, a in sums.items()]
        out.append(head("camwatch_gb_record_queries_total", "counter",
                        "RecordInfo queries by result (unanswered: nothing by the deadline)."))
        c = self.server.counters
        out += [f'camwatch_gb_record_queries_total{{result="{r}"}} {c.get("records:" + r, 0)}\n'
                for r in ("complete", "partial", "unanswered")]
        return "".join(out)

    def recordings_json(self, iso: Callable[[float | None], str | None]) -> dict[str, Any]:
        """``/api/recordings``: the latest 录像完整率 answers, Σ recorded ÷ Σ day overall and
        by platform, and the channels with the least recorded first (200 listed)."""
        recs = list(self.recordings.values())
        book = self.engine.book
        by_platform: dict[str, list[float]] = {}
        for r in recs:
            acc = by_platform.setdefault(r.platform_id, [0.0, 0.0, 0])
            acc[0] += r.recorded_s
            acc[1] += r.period_s
            acc[2] += 1
        total = sum(r.period_s for r in recs)
        worst = sorted(recs, key=lambda r: (r.recorded_s / r.period_s if r.period_s else 0.0,
                                            r.channel_id))[:MAX_LISTED]
        return {
            "enabled": self.cfg.recording.enabled,
            "channels": len(recs),
            "coverage": round(sum(r.recorded_s for r in recs) / total, 6) if total else None,
            "partial": sum(1 for r in recs if r.partial),
            "platforms": [{"id": pid, "name": p.name if (p := self.peers.get(pid)) else "",
                           "channels": int(a[2]),
                           "coverage": round(a[0] / a[1], 6) if a[1] else None}
                          for pid, a in sorted(by_platform.items())],
            "lowest": [{"channel": r.channel_id,
                        "name": ch.name if (ch := book.channels.get(r.channel_id)) else "",
                        "platform": r.platform_id, "day": r.day,
                        "coverage": round(r.recorded_s / r.period_s, 6) if r.period_s else None,
                        "recorded_s": round(r.recorded_s, 3), "partial": r.partial,
                        "at": r.at, "at_iso": iso(r.at)} for r in worst],
        }


async def start_service(cfg: GbConfig, engine: Engine) -> GbService:
    """Bind the listeners (so the port is known before the daemon says it is ready)."""
    svc = GbService(cfg, engine)
    await svc.start()
    engine.gb = svc
    await asyncio.sleep(0)
    return svc
