"""The repair desk: opens tickets from what the channel book sees, moves them on, dispatches
them, and keeps every change in the store.

Like the alert evaluator (:mod:`camwatch.evaluator`), each step is two-phase: the open
tickets are copied into a draft, the pure machine (:mod:`camwatch.repairs.machine`) moves the
draft on, the changed tickets, their events and their outbox items are written in one
transaction through the store writer, and only then does the draft replace the tickets in
memory. A write that fails changes nothing: the next step does it again, so a restart or a
full disk neither loses nor repeats a ticket. One lock serialises the steps and the
maintainers' actions (``ack``, ``done``, ``note``), both of which await the writer.

Cost follows the faults, not the fleet: a step looks at the book's offline channels and the
channels of open tickets only.

Opening (docs/repairs.md): a channel offline for ``repairs.open_after`` (per class) without an
open ticket gets one, unless an exemption (报备) covers it. Where most of a group (township,
village, host: ``alerts.rules.mass_outage``'s levels, ``min_channels`` and ``share``) is
offline, the group gets one ticket listing its offline channels, and a channel of that group
going down later joins it. A channel is in at most one open ticket. A flapping channel is held
offline by the book (one transition), so it opens one ticket and closes it only after
``verify_for`` of stable online: no loop.

Quality tickets (with ``quality.enabled``): an online channel whose picture was ``degraded`` at
``repairs.quality_after`` consecutive samples (the quality book's run) and that no open ticket
covers gets a ticket of its own, its checks at fault as the reason and its snapshot URL
attached. A channel already in a ticket of either kind gets no second one: that ticket covers
whatever comes next, since closing it needs the channel online and its picture not degraded
(:mod:`camwatch.repairs.machine`). Cost: O(degraded channels) a step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from camwatch.config import Config
from camwatch.inventory import Channel
from camwatch.localtime import local_zone
from camwatch.model import ChannelState, Quality, State
from camwatch.quality.book import QualityBook
from camwatch.repairs import machine
from camwatch.repairs.assess import month_assessment
from camwatch.repairs.machine import PointView, faults_zh
from camwatch.repairs.model import QUALITY_FAULT, Ticket, TicketError, TicketEvent, TicketState
from camwatch.repairs.notify import NOTIFIED, labels, payload
from camwatch.store.base import Store
from camwatch.store.writer import StoreWriter

log = structlog.get_logger(__name__)
_LEVELS = ("township", "village", "host")
MAX_OPEN_PER_STEP = 500
ASSESS_EVERY_S = 300.0
_LEVEL_ZH = {"township": "乡镇", "village": "村", "host": "主机"}


@dataclass(slots=True)
class Step:
    """A step's outcome before it is written: the changed tickets, their events and the
    outbox items."""

    tickets: dict[int, Ticket]
    events: list[TicketEvent]
    items: list[tuple[str, str, dict[str, object]]]
    next_no: int = 0  # the number of the next ticket this step opens


def active_exemptions(store: Store, now: float) -> set[str]:
    """Channels an exemption (报备) covers at ``now``: their tickets are suspended."""
    return {e.channel_id for e in store.exemptions(now, now + 1e-3)}


class RepairDesk:
    def __init__(self, cfg: Config, writer: StoreWriter, open_tickets: Iterable[Ticket],
                 last_no: int) -> None:
        self.writer = writer
        self.tickets: dict[int, Ticket] = {t.no: t for t in open_tickets if t.is_open}
        self.next_no = last_no + 1
        self.channels: Mapping[str, Channel] = {}
        self.groups: dict[tuple[str, str], list[Channel]] = {}
        self._key_of: Callable[[Channel, str], str] = lambda ch, lv: ""
        self._levels: tuple[str, ...] = ()
        self._lock = asyncio.Lock()
        self.on_enqueued: Callable[[], None] = lambda: None
        # a ticket just claimed fixed (已处理), committed: the engine has its pictures sampled
        self.on_fixed: Callable[[Ticket], None] = lambda t: None
        self.opened_total = 0
        self._listening = ""  # the address finally bound (--listen, port 0), when known
        # this month's assessment so far, for the metrics (refresh_assessment)
        self.assessment: dict[str, Any] | None = None
        self.assessed_at = -math.inf
        self.configure(cfg)

    @classmethod
    def from_store(cls, cfg: Config, store: Store, writer: StoreWriter) -> RepairDesk:
        desk = cls(cfg, writer, store.tickets(open_only=True), store.last_ticket_no())
        if desk.tickets:
            log.info("open repair tickets loaded", tickets=len(desk.tickets))
        return desk

    def configure(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rcfg = cfg.repairs
        self.timezone = cfg.report.timezone
        self.tz = local_zone(cfg.report.timezone)
        base = self.rcfg.link_base.rstrip("/")
        if not base:
            host, _, port = (self._listening or cfg.http.listen).rpartition(":")
            host = "127.0.0.1" if host in ("0.0.0.0", "[::]", "::") else host
            base = f"{'https' if cfg.http.tls_cert else 'http'}://{host}:{port}"
        self.link_base = base

    def listening(self, address: str) -> None:
        """The daemon's address as bound (``host:port``): the links' default base."""
        self._listening = address
        self.configure(self.cfg)

    def swap(self, channels: Mapping[str, Channel],
             groups: Mapping[tuple[str, str], list[Channel]],
             key_of: Callable[[Channel, str], str], levels: Sequence[str]) -> None:
        """A new inventory: its channels and its mass-outage groups, with how they were made
        (the alert inputs' own), so that a channel's groups are worked out when a step needs
        them, for the few offline channels it looks at, not mapped for every channel here."""
        self.channels = channels
        self.groups = dict(groups)
        self._key_of, self._levels = key_of, tuple(levels)

    def _groups_of(self, cid: str) -> Sequence[tuple[str, str]]:
        """The mass-outage groups a channel is in."""
        ch = self.channels.get(cid)
        if ch is None:
            return ()
        return [(lv, key) for lv in self._levels
                if (key := self._key_of(ch, lv)) and (lv, key) in self.groups]

    # --- read --------------------------------------------------------------------------------

    def covering(self) -> dict[str, int]:
        """channel id -> the open ticket covering it."""
        return {c: t.no for t in self.tickets.values() for c in t.channels}

    def being_verified(self, cid: str) -> bool:
        """Whether an open ticket claimed fixed (已处理, being verified) covers ``cid``."""
        return any(t.state == TicketState.FIXED and cid in t.channels
                   for t in self.tickets.values())

    def link(self, no: int) -> str:
        return f"{self.link_base}/api/tickets/{no}"

    # --- a step ------------------------------------------------------------------------------

    async def step(self, now: float, states: Mapping[str, ChannelState],
                   offline: Iterable[str], exempt: Iterable[str] = (),
                   quality: QualityBook | None = None) -> list[TicketEvent]:
        """Open, move on and dispatch tickets at ``now``; returns the events written. Raises
        when the store could not take them (nothing changed then: the next step repeats).
        ``quality``: the pictures' book when sampling is on (quality tickets, and pictures
        checked at verification)."""
        async with self._lock:
            draft = self.draft(now, states, offline, set(exempt), quality)
            await self._write(draft, now)
            return draft.events

    async def refresh_assessment(self, store: Store, now: float, changed: bool) -> None:
        """This month's assessment so far (read from the store in a thread), after a step
        that changed tickets or every ``ASSESS_EVERY_S``: what the metrics show."""
        if not changed and now - self.assessed_at < ASSESS_EVERY_S:
            return
        local = dt.datetime.fromtimestamp(now, self.tz)
        self.assessment = await asyncio.to_thread(month_assessment, store, local.year,
                                                  local.month, self.tz, now)
        self.assessed_at = now

    async def act(self, no: int, action: str, by: str, note: str, now: float
                  ) -> tuple[Ticket, list[TicketEvent]]:
        """A maintainer's action on ticket ``no``; raises ``KeyError`` for a ticket that is
        not open (the caller looks it up in the store), ``TicketError`` for one whose state
        does not allow it."""
        if no not in self.tickets:
            raise KeyError(no)
        async with self._lock:
            live = self.tickets.get(no)
            if live is None:  # closed by the step that held the lock
                raise TicketError(f"ticket {no} was closed or cancelled just now; see its "
                                  f"history")
            t = live.copy()
            step = Step({no: t}, machine.act(t, action, by, note, now), [])
            await self._write(step, now)
        if any(e.kind == "fixed" for e in step.events):
            self.on_fixed(t)
        return t, step.events

    async def note_closed(self, t: Ticket, by: str, note: str, now: float
                          ) -> list[TicketEvent]:
        """A note on a closed or cancelled ticket (read from the store by the caller)."""
        async with self._lock:
            t = t.copy()
            step = Step({t.no: t}, machine.act(t, "note", by, note, now), [])
            await self._write(step, now)
            return step.events

    async def _write(self, step: Step, now: float) -> None:
        if not step.events:
            return
        tickets = list(step.tickets.values())
        events, items = step.events, step.items
        await self.writer.run(lambda s: s.commit_tickets(tickets, events, items, now))
        self.opened_total += sum(1 for e in events if e.kind == "opened")
        for t in tickets:  # committed: the draft is the truth now
            if t.is_open:
                self.tickets[t.no] = t
            else:
                self.tickets.pop(t.no, None)
            if t.no >= self.next_no:
                self.next_no = t.no + 1
        if items:
            self.on_enqueued()

    def draft(self, now: float, states: Mapping[str, ChannelState], offline: Iterable[str],
              exempt: set[str], quality: QualityBook | None = None) -> Step:
        """The step at ``now`` as a draft (pure: nothing in the desk changes)."""
        step = Step({}, [], [], self.next_no)
        rcfg = self.rcfg
        channels = self.channels
        for no, live in self.tickets.items():
            down = True
            for c in live.channels:
                st = states.get(c)
                if c not in channels or st is None or c in exempt or (
                        st.state == State.ONLINE
                        and (quality is None or c not in quality.degraded)):
                    # (online with a degraded picture is still down: nothing can close)
                    down = False
                    break
            if machine.waiting(live, down, now, rcfg.remind_before):
                continue
            t = live.copy()
            points = {c: self._view(c, states, exempt, quality) for c in t.channels}
            evs = machine.observe(t, points, now, rcfg.verify_for)
            evs += machine.due_events(t, now, rcfg.remind_before)
            if t.state == TicketState.PENDING:
                evs += self._dispatch(t, now)
            if evs:
                step.tickets[no] = t
                self._emit(step, t, evs)
        covered = {c for t in self.tickets.values() if t.no not in step.tickets for c in t.channels}
        covered |= {c for t in step.tickets.values() if t.is_open for c in t.channels}
        self._open(step, now, states, offline, exempt, covered)
        if quality is not None:
            self._open_quality(step, now, states, quality, exempt, covered)
        return step

    def _view(self, cid: str, states: Mapping[str, ChannelState], exempt: set[str],
              quality: QualityBook | None = None) -> PointView | None:
        if cid not in self.channels:
            return None
        st = states.get(cid)
        view = PointView(State.UNKNOWN, None, None, cid in exempt) if st is None else \
            PointView(st.state, st.since, st.reason, cid in exempt)
        if quality is None:
            return view
        rec = quality.get(cid)
        if rec is None:  # not sampled (yet, or since a restart)
            return dataclasses.replace(view, quality=Quality.UNKNOWN.value)
        return dataclasses.replace(view, quality=rec.quality.value, quality_since=rec.since,
                                   quality_ts=rec.ts, faults=tuple(f.check for f in rec.faults))

    def _emit(self, step: Step, t: Ticket, evs: Sequence[TicketEvent]) -> None:
        step.events += evs
        for ev in evs:
            if ev.kind not in NOTIFIED:
                continue
            receivers = list(t.receivers)
            if ev.kind == "escalated":
                receivers += [r for r in self.rcfg.escalation_receivers if r not in receivers]
            if not receivers:
                continue
            body = payload(t, ev, self.link(t.no), self.tz, self.timezone)
            step.items += [(r, f"ticket-{t.no}", body) for r in receivers]

    def _dispatch(self, t: Ticket, now: float) -> list[TicketEvent]:
        receivers = self.rcfg.receivers_for(labels(t))
        if not receivers:
            return []
        t.receivers = receivers
        ev = TicketEvent(t.no, now, "dispatched", t.state, TicketState.DISPATCHED,
                         note=f"已派单至 {'、'.join(receivers)}", data={"receivers": receivers})
        t.state, t.updated = TicketState.DISPATCHED, now
        return [ev]

    # --- opening -----------------------------------------------------------------------------

    def _open(self, step: Step, now: float, states: Mapping[str, ChannelState],
              offline: Iterable[str], exempt: set[str], covered: set[str]) -> None:
        rcfg = self.rcfg

        def down(cid: str) -> bool:
            st = states.get(cid)
            return st is not None and st.state == State.OFFLINE and st.since is not None \
                and cid not in exempt and cid not in covered

        offline_ids = [cid for cid in offline if cid not in covered]  # most are, in a crisis
        due: list[str] = []
        for cid in offline_ids:
            ch = self.channels.get(cid)
            if ch is None or not down(cid):
                continue
            since = states[cid].since
            assert since is not None
            if now - since >= rcfg.open_after_for(ch.klass):
                due.append(cid)
        if not due:
            return
        due.sort()  # tickets numbered in channel order
        # a bounded number per step: opening one costs ~0.2 ms on the loop (its message
        # included), so thousands at once would stall it; the rest open at the next step
        del due[MAX_OPEN_PER_STEP:]
        # a channel of a group whose ticket is open joins that ticket
        open_groups = {t.group: t for t in [*self.tickets.values(), *step.tickets.values()]
                       if t.group and t.is_open}
        rest: list[str] = []
        for cid in due:
            joined = next((open_groups[g] for lv, key in self._groups_of(cid)
                           if (g := f"{lv}:{key}") in open_groups), None)
            if joined is None:
                rest.append(cid)
                continue
            t = step.tickets.get(joined.no) or joined.copy()
            step.tickets[t.no] = t
            t.channels.append(cid)
            covered.add(cid)
            ev = TicketEvent(t.no, now, "channel_added", t.state, t.state,
                             note=f"同组点位 {cid} 离线，并入本工单", data={"channel": cid})
            self._emit(step, t, [ev])
        # mass outages: one ticket for the group, coarse levels first
        rule = self.cfg.alerts.rules.mass_outage
        remaining = set(rest)
        if rule.enabled and rest:
            # offline channels per group, to look only at the groups that may qualify
            offline_in: Counter[tuple[str, str]] = Counter(
                g for cid in offline_ids for g in self._groups_of(cid))
            for level in (lv for lv in _LEVELS if lv in rule.levels):
                keys = sorted({key for cid in remaining for lv, key in self._groups_of(cid)
                               if lv == level})
                for key in keys:
                    members = self.groups[(level, key)]
                    if len(members) < rule.min_channels or \
                            offline_in[(level, key)] < rule.share * len(members):
                        continue
                    gone = [c for c in members if down(c.id)]
                    if len(gone) < rule.share * len(members) or \
                            not any(c.id in remaining for c in gone):
                        continue
                    self._new(step, now, states, gone, f"{level}:{key}")
                    covered.update(c.id for c in gone)
                    remaining -= {c.id for c in gone}
        for cid in rest:
            if cid in remaining:
                self._new(step, now, states, [self.channels[cid]], "")
                covered.add(cid)

    def _open_quality(self, step: Step, now: float, states: Mapping[str, ChannelState],
                      quality: QualityBook, exempt: set[str], covered: set[str]) -> None:
        """Quality tickets: one per online channel degraded at ``quality_after`` samples in a
        row, not exempted and in no open ticket (an offline channel is the online path's:
        its last picture is from before the outage)."""
        due = []
        for cid in quality.degraded:
            if cid in covered:  # most, once their tickets are open
                continue
            rec = quality.get(cid)
            st = states.get(cid)
            if rec is None or rec.quality is not Quality.DEGRADED or \
                    rec.streak < self.rcfg.quality_after or cid not in self.channels or \
                    cid in covered or cid in exempt or st is None or st.state != State.ONLINE:
                continue
            due.append(cid)
        for cid in sorted(due)[:MAX_OPEN_PER_STEP]:
            rec = quality.get(cid)
            assert rec is not None
            faults = [f.check for f in rec.faults]
            snapshot = f"{self.link_base}/api/channels/{cid}/snapshot.jpg" \
                if quality.jpeg(cid) is not None else ""
            self._new(step, now, states, [self.channels[cid]], "",
                      quality=(faults, rec.since, rec.streak, snapshot))
            covered.add(cid)

    def _new(self, step: Step, now: float, states: Mapping[str, ChannelState],
             members: Sequence[Channel], group: str,
             quality: tuple[list[str], float, int, str] | None = None) -> None:
        def common(attr: str) -> str:
            values = {getattr(c, attr) for c in members}
            return values.pop() if len(values) == 1 else ""

        def most(attr: str) -> str:
            counts = Counter(getattr(c, attr) for c in members if getattr(c, attr))
            return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if counts else ""

        classes = [c.klass for c in members if c.klass is not None]
        klass = min(classes) if classes else None  # the strictest deadline of the group
        project = most("project")
        response_s, repair_s = self.rcfg.deadlines_for(klass, project)
        since = min(states[c.id].since or now for c in members)
        reasons = Counter(states[c.id].reason or "" for c in members)
        reason = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] or None
        if group:
            level, key = group.split(":", 1)
            name = f"{' '.join(key.split('/'))}" if level != "host" else f"主机 {key}"
            name = f"{name}（{_LEVEL_ZH[level]}）"
        else:
            name = members[0].name or members[0].id
        step.next_no += 1
        t = Ticket(no=step.next_no - 1, state=TicketState.PENDING,
                   channels=[c.id for c in members], opened=now,
                   fault_since=since, response_s=response_s, repair_s=repair_s, reason=reason,
                   group=group, name=name, county=common("county") or most("county"),
                   township=common("township") or most("township"), village=common("village"),
                   operator=most("operator"), project=project, klass=klass, updated=now)
        step.tickets[t.no] = t
        note = f"离线已超过 {self.rcfg.open_after_for(klass) / 3600:g} 小时，自动生成工单"
        if quality is not None:
            faults, since, streak, snapshot = quality
            t.kind, t.faults, t.snapshot = QUALITY_FAULT, faults, snapshot
            t.reason, t.fault_since = (faults[0] if faults else None), since
            note = f"画面异常（{faults_zh(faults)}），连续 {streak} 次抽检，自动生成工单"
        opened = TicketEvent(t.no, now, "opened", "", TicketState.PENDING,
                             note=note, data={"channels": t.channels})
        self._emit(step, t, [opened, *self._dispatch(t, now)])
