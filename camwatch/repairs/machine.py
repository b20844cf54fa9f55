"""The ticket state machine, pure: a ticket and what camwatch sees in, events out.

Nothing here does I/O or reads a clock: :func:`act` applies a maintainer's action,
:func:`observe` moves a ticket on by the states of its points at ``now``. Both change the
ticket they are given (the desk hands them a draft copy) and return the events, which the desk
writes with the ticket in one transaction.

Rules (docs/repairs.md):

- 核实结案 only when every point of the ticket has been online, continuously, for
  ``verify_for``; the repair time ends where that online run began.
- An "已处理" claim is checked ``verify_for`` after it was made: a point still (or again)
  offline then sends the ticket back to 处理中, with a note the maintainer is told.
- A point that recovers for ``verify_for`` without anybody saying so also closes the ticket
  (``self_recovered``): an open ticket for a working camera helps nobody.
- Every point exempted (报备) at ``now`` suspends the ticket (挂起): the clock and the
  deadlines stop until the exemption ends.
- A point that left the ledger leaves the ticket; the last one cancels it (撤销).
- With quality sampling (``PointView.quality`` not None): a quality ticket also needs the
  picture ``ok``, seen so by samples spanning ``verify_for`` (from the later of the online
  run's and the ok run's start); an online-fault ticket also needs the picture not
  ``degraded``. A degraded picture ``verify_for`` after a "fixed" claim sends either back to
  处理中, like an offline point, when it was sampled at or after the claim (an older sample
  waits for a fresh one: the engine has the sampler take one at the claim).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from camwatch.model import Quality, State, reason_zh
from camwatch.quality.names import CHECK_ZH
from camwatch.repairs.model import (
    FINAL,
    QUALITY_FAULT,
    STATE_ZH,
    Ticket,
    TicketError,
    TicketEvent,
    TicketState,
)

S = TicketState


@dataclass(frozen=True, slots=True)
class PointView:
    """What the machine needs of one point at ``now``."""

    state: str  # camwatch.model.State
    since: float | None  # when that state began
    reason: str | None = None
    exempt: bool = False  # an exemption (报备) covers now
    # the picture (camwatch.quality), None when sampling is off: the last sample's quality,
    # the first and last sample of its run of that quality, the checks at fault
    quality: str | None = None
    quality_since: float | None = None
    quality_ts: float | None = None
    faults: tuple[str, ...] = ()


def faults_zh(faults: Sequence[str]) -> str:
    """``["signal_lost", "noise"]`` -> ``"信号缺失、雪花干扰"``."""
    return "、".join(CHECK_ZH.get(f, f) for f in faults) or "-"


def _good_since(t: Ticket, v: PointView, now: float, verify_for: float) -> float | None:
    """When the point's verified-good run began, if it has lasted ``verify_for`` at ``now``;
    None while it has not (or is not good at all)."""
    if v.state != State.ONLINE or v.since is None:
        return None
    start = v.since
    if v.quality is None:  # sampling off: online is all camwatch can see
        return start if now - start >= verify_for else None
    if v.quality == Quality.DEGRADED:
        return None
    if t.kind != QUALITY_FAULT:
        return start if now - start >= verify_for else None
    if v.quality != Quality.OK or v.quality_since is None or v.quality_ts is None:
        return None
    # the picture is sampled rarely (quality.interval): it counts as ok over the span of its
    # ok samples within the online run, not up to now
    start = max(start, v.quality_since)
    return start if v.quality_ts - start >= verify_for else None


def _bad(v: PointView, claimed: float) -> str | None:
    """Why the point fails the verification of a claim made at ``claimed`` (offline, or its
    picture degraded), or None. A degraded picture counts only when it was sampled at or
    after the claim: one from before says nothing of the repair (with hourly samples it was,
    more often than not, the last one before the maintainer came)."""
    if v.state == State.OFFLINE:
        return reason_zh(v.reason)
    if v.quality == Quality.DEGRADED and (v.quality_ts is None or v.quality_ts >= claimed):
        return f"画面异常：{faults_zh(v.faults)}"
    return None


def _event(t: Ticket, now: float, kind: str, to: str, by: str = "camwatch", note: str = "",
           **data: object) -> TicketEvent:
    ev = TicketEvent(t.no, now, kind, t.state, to, by, note, dict(data))
    t.state = to
    t.updated = now
    return ev


def act(t: Ticket, action: str, by: str, note: str, now: float) -> list[TicketEvent]:
    """A maintainer's ``ack``, ``done`` or ``note``; raises :class:`TicketError` when the
    ticket's state does not allow it."""
    by = by.strip()[:64] or "unknown"
    note = note.strip()[:1000]
    if action == "note":
        if not note:
            raise TicketError("a note needs text")
        return [_event(t, now, "note", t.state, by, note)]
    if t.state in FINAL:
        raise TicketError(f"ticket {t.no} is {STATE_ZH[t.state]} ({t.state}): nothing to "
                          f"{action}")
    if t.state == S.SUSPENDED:
        raise TicketError(f"ticket {t.no} is 挂起 (suspended by an exemption) until the "
                          f"exemption ends")
    if action == "ack":
        if t.state not in (S.PENDING, S.DISPATCHED):
            raise TicketError(f"ticket {t.no} is already {STATE_ZH[t.state]} ({t.state}); "
                              f"ack applies to 待派单/已派单")
        t.acked, t.acked_by = now, by
        return [_event(t, now, "acknowledged", S.ACKNOWLEDGED, by, note)]
    if action == "done":
        if t.state == S.FIXED:
            raise TicketError(f"ticket {t.no} is already 已处理 (fixed), being verified")
        events = []
        if t.acked is None:  # fixed without an ack: the fix is the response
            t.acked, t.acked_by = now, by
        t.fixed, t.fixed_by = now, by
        events.append(_event(t, now, "fixed", S.FIXED, by, note))
        return events
    raise TicketError(f"unknown action {action!r}; expected one of ack, done, note")


def observe(t: Ticket, points: Mapping[str, PointView | None], now: float,
            verify_for: float) -> list[TicketEvent]:
    """Move an open ticket on by its points' states at ``now`` (``None``: the point left the
    ledger). Deadlines are the desk's (:func:`due_events`)."""
    if t.state in FINAL:
        return []
    events: list[TicketEvent] = []
    gone = [c for c in t.channels if points.get(c) is None]
    if gone:
        t.channels = [c for c in t.channels if c not in gone]
        if not t.channels:
            t.cancelled = now
            return [_event(t, now, "cancelled", S.CANCELLED,
                           note="点位已移出台账，工单撤销", channels=gone)]
        events.append(_event(t, now, "channel_removed", t.state,
                             note=f"{len(gone)} 路点位已移出台账", channels=gone))
    views = [v for c in t.channels if (v := points.get(c)) is not None]
    exempt = all(v.exempt for v in views)
    if t.state == S.SUSPENDED:
        if exempt:
            return events
        for p in t.pauses:
            if p[1] is None:
                p[1] = now
        events.append(_event(t, now, "resumed", t.resume_state or S.DISPATCHED,
                             note="报备结束，恢复计时"))
    elif exempt:
        t.pauses.append([now, None])
        t.resume_state = t.state
        return [*events, _event(t, now, "suspended", S.SUSPENDED, note="已报备，暂停计时")]
    starts = [_good_since(t, v, now, verify_for) for v in views]
    if starts and all(s is not None for s in starts):
        run_start = max(s for s in starts if s is not None)
        what = "画面正常、" if t.kind == QUALITY_FAULT else ""
        t.repaired, t.closed = run_start, now
        if t.state == S.FIXED:
            return [*events, _event(t, now, "verified", S.CLOSED,
                                    note=f"核实通过：点位已连续在线、{what}"
                                         f"{_dur(now - run_start)}",
                                    repaired=run_start)]
        return [*events, _event(t, now, "self_recovered", S.CLOSED,
                                note=f"点位已恢复并连续在线、{what}{_dur(now - run_start)}，"
                                     f"未收到维护方报告，核实结案", repaired=run_start)]
    if t.state == S.FIXED and t.fixed is not None and now - t.fixed >= verify_for:
        down = [(c, why) for c in t.channels if (v := points.get(c)) is not None
                and (why := _bad(v, t.fixed)) is not None]
        if down:
            t.rejections += 1
            what = "、".join(f"{c}（{why}）" for c, why in down[:5])
            more = f" 等 {len(down)} 路" if len(down) > 5 else ""
            events.append(_event(t, now, "rejected", S.REWORK,
                                 note=f"核实未通过：报告已处理 {_dur(now - t.fixed)} 后点位仍"
                                      f"{'异常' if t.kind == QUALITY_FAULT else '离线'}："
                                      f"{what}{more}",
                                 down=[c for c, _ in down]))
    return events


def due_events(t: Ticket, now: float, remind_before: float) -> list[TicketEvent]:
    """Reminders and escalations that fall due at ``now`` (each once per ticket)."""
    if t.state in FINAL or t.state == S.SUSPENDED:
        return []
    out = []
    if t.acked is None and not t.escalated_response and now >= t.response_due(now):
        t.escalated_response = True
        out.append(_event(t, now, "escalated", t.state, note="超过响应时限未响应",
                          deadline="response", due=t.response_due(now)))
    repair_due = t.repair_due(now)
    if not t.reminded and now >= repair_due - remind_before and now < repair_due:
        t.reminded = True
        out.append(_event(t, now, "reminded", t.state,
                          note=f"距修复时限还有 {_dur(repair_due - now)}", due=repair_due))
    if not t.escalated_repair and now >= repair_due:
        t.escalated_repair = True
        out.append(_event(t, now, "escalated", t.state, note="超过修复时限未修复",
                          deadline="repair", due=repair_due))
    return out


#: States in which a ticket whose points are all down and whose deadlines are not due has
#: nothing to do (see :func:`waiting`).
_WAITING = frozenset({S.DISPATCHED, S.ACKNOWLEDGED, S.REWORK})


def waiting(t: Ticket, down: bool, now: float, remind_before: float) -> bool:
    """True when :func:`observe` and :func:`due_events` cannot change ``t`` at ``now``:
    ``down`` says every point is still in the ledger, not exempted and not online (the
    caller's check). Most open tickets, most of the time: the desk skips their drafts (at
    5,000 open tickets, copying and observing each took ~100 ms a step)."""
    if not down or t.state not in _WAITING:
        return False
    if t.acked is None and not t.escalated_response and now >= t.response_due(now):
        return False
    repair_due = t.repair_due(now)
    if not t.reminded and now >= repair_due - remind_before:
        return False
    return t.escalated_repair or now < repair_due


def _dur(seconds: float) -> str:
    from camwatch.rules.alerts import format_duration

    return format_duration(seconds)
