"""Repair tickets: the state machine as a table, then the desk against the real book and a
real SQLite store (opening, no duplicates, mass outages, flapping, restart, a failed write)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from camwatch.model import State
from camwatch.probes.result import Reason
from camwatch.repairs import machine
from camwatch.repairs.machine import PointView
from camwatch.repairs.model import Ticket, TicketError, TicketState
from tests.repairs_harness import NOV_1, County, D, H, M, channel

S = TicketState
T0 = NOV_1


def ticket(state: str = S.DISPATCHED, **kw: object) -> Ticket:
    base: dict[str, object] = dict(no=1, state=state, channels=["c1"], opened=T0,
                                   fault_since=T0 - 2 * H, response_s=2 * H, repair_s=24 * H)
    base.update(kw)
    return Ticket.from_dict(base)


# --- the machine: maintainers' actions ----------------------------------------------------------

@pytest.mark.parametrize(("state", "action", "to"), [
    (S.PENDING, "ack", S.ACKNOWLEDGED),
    (S.DISPATCHED, "ack", S.ACKNOWLEDGED),
    (S.DISPATCHED, "done", S.FIXED),
    (S.ACKNOWLEDGED, "done", S.FIXED),
    (S.REWORK, "done", S.FIXED),
    (S.CLOSED, "note", S.CLOSED),
])
def test_allowed_actions(state: str, action: str, to: str) -> None:
    t = ticket(state)
    evs = machine.act(t, action, "张三", "到场", T0 + H)
    assert t.state == to and evs[-1].to_state == to and evs[-1].by == "张三"


@pytest.mark.parametrize(("state", "action", "words"), [
    (S.ACKNOWLEDGED, "ack", "already 已响应"),
    (S.REWORK, "ack", "already 处理中"),
    (S.FIXED, "done", "already 已处理"),
    (S.CLOSED, "done", "核实结案"),
    (S.CANCELLED, "ack", "撤销"),
    (S.SUSPENDED, "done", "挂起"),
    (S.DISPATCHED, "close", "expected one of ack, done, note"),
])
def test_refused_actions_say_why(state: str, action: str, words: str) -> None:
    t = ticket(state)
    with pytest.raises(TicketError, match=words):
        machine.act(t, action, "张三", "", T0)
    assert t.state == state


def test_done_without_ack_is_the_response() -> None:
    t = ticket()
    machine.act(t, "done", "李四", "", T0 + 3 * H)
    assert (t.acked, t.acked_by, t.fixed) == (T0 + 3 * H, "李四", T0 + 3 * H)


# --- the machine: verification ------------------------------------------------------------------

V = 30 * M


def online(since: float) -> PointView:
    return PointView(State.ONLINE, since)


def offline(since: float = T0 - 2 * H) -> PointView:
    return PointView(State.OFFLINE, since, "timeout")


@pytest.mark.parametrize(("state", "point", "now", "to", "kind"), [
    # verified only after verify_for of continuous online; the repair ends where it began
    (S.FIXED, online(T0 + 5 * H), T0 + 5 * H + V, S.CLOSED, "verified"),
    (S.FIXED, online(T0 + 5 * H), T0 + 5 * H + V - 1, S.FIXED, None),
    # "fixed" but still down verify_for after the claim: back to 处理中
    (S.FIXED, offline(), T0 + 4 * H + V, S.REWORK, "rejected"),
    (S.FIXED, offline(), T0 + 4 * H + V - 1, S.FIXED, None),
    # not known (camwatch cannot judge): neither verified nor rejected
    (S.FIXED, PointView(State.UNKNOWN, T0), T0 + 9 * H, S.FIXED, None),
    # online again but not yet for verify_for when the claim's time is up: wait, no rejection
    (S.FIXED, online(T0 + 4 * H + 20 * M), T0 + 4 * H + V, S.FIXED, None),
    # recovered without a word from the maintainer: closed as self-recovered
    (S.ACKNOWLEDGED, online(T0 + 5 * H), T0 + 5 * H + V, S.CLOSED, "self_recovered"),
    (S.ACKNOWLEDGED, offline(), T0 + 9 * H, S.ACKNOWLEDGED, None),
])
def test_verification(state: str, point: PointView, now: float, to: str,
                      kind: str | None) -> None:
    t = ticket(state, fixed=T0 + 4 * H if state == S.FIXED else None)
    evs = machine.observe(t, {"c1": point}, now, V)
    assert t.state == to
    assert [e.kind for e in evs] == ([kind] if kind else [])
    if to == S.CLOSED:
        assert (t.repaired, t.closed) == (point.since, now)


def test_rejection_note_names_the_point_and_reason() -> None:
    t = ticket(S.FIXED, fixed=T0 + H)
    (ev,) = machine.observe(t, {"c1": offline()}, T0 + H + V, V)
    assert "核实未通过" in ev.note and "c1（超时）" in ev.note and t.rejections == 1


def test_group_closes_only_when_every_point_is_verified() -> None:
    t = ticket(S.FIXED, channels=["c1", "c2"], fixed=T0 + H)
    now = T0 + 10 * H
    assert machine.observe(t, {"c1": online(T0), "c2": online(now - V + 1)}, now, V) == []
    machine.observe(t, {"c1": online(T0), "c2": online(now - V)}, now, V)
    assert t.state == S.CLOSED and t.repaired == now - V


def test_exemption_suspends_and_moves_the_deadlines() -> None:
    t = ticket(S.ACKNOWLEDGED)
    ex = PointView(State.OFFLINE, T0, "timeout", exempt=True)
    (ev,) = machine.observe(t, {"c1": ex}, T0 + H, V)
    assert ev.kind == "suspended" and t.state == S.SUSPENDED
    assert machine.observe(t, {"c1": ex}, T0 + 5 * H, V) == []
    assert t.repair_due(T0 + 5 * H) == T0 + 28 * H  # 4 h paused so far
    (ev,) = machine.observe(t, {"c1": offline()}, T0 + 7 * H, V)
    assert ev.kind == "resumed" and t.state == S.ACKNOWLEDGED
    assert t.repair_due(T0 + 30 * H) == T0 + 30 * H  # 24 h + 6 h paused
    assert t.net(T0 + 10 * H) == 4 * H


def test_point_leaving_the_ledger_cancels() -> None:
    t = ticket(channels=["c1", "c2"])
    (ev,) = machine.observe(t, {"c1": offline(), "c2": None}, T0 + H, V)
    assert ev.kind == "channel_removed" and t.channels == ["c1"] and t.is_open
    (ev,) = machine.observe(t, {"c1": None}, T0 + 2 * H, V)
    assert ev.kind == "cancelled" and t.state == S.CANCELLED and t.cancelled == T0 + 2 * H


@pytest.mark.parametrize(("acked", "now", "kinds"), [
    (None, T0 + 2 * H - 1, []),
    (None, T0 + 2 * H, ["escalated"]),  # response deadline
    (T0 + H, T0 + 2 * H, []),
    (T0 + H, T0 + 22 * H - 1, []),
    (T0 + H, T0 + 22 * H, ["reminded"]),  # 2 h before the repair deadline
    (T0 + H, T0 + 24 * H, ["escalated"]),  # the repair deadline (no late reminder)
])
def test_deadlines(acked: float | None, now: float, kinds: list[str]) -> None:
    t = ticket(acked=acked)
    assert [e.kind for e in machine.due_events(t, now, 2 * H)] == kinds
    assert machine.due_events(t, now, 2 * H) == []  # once each


# --- the desk -----------------------------------------------------------------------------------

A, B, C, E, F = (f"4116280000132100000{i}" for i in range(1, 6))


@pytest.fixture
def county(tmp_path: Path) -> Iterator[County]:
    chans = [channel(A, "城关镇", "东关村", "移动", 1), channel(B, "城关镇", "东关村", "移动", 2),
             channel(C, "王集乡", "李庄", "联通", 2, host="nvr-1"),
             channel(E, "王集乡", "李庄", "联通", 2, host="nvr-1"),
             channel(F, "王集乡", "张庄", "联通", 3)]
    c = County(tmp_path / "cw.db", chans)
    yield c
    c.close()


def test_opens_after_open_after_once_and_dispatches(county: County) -> None:
    county.down[A] = Reason.TIMEOUT
    county.run_until(T0 + 5 * M + 2 * H - 5 * M)  # offline since T0+5m: 1h55m
    assert county.store.tickets() == []
    county.run_until(T0 + 5 * M + 2 * H)
    (t,) = county.store.tickets()
    assert (t.no, t.state, t.channels, t.opened) == (1, S.DISPATCHED, [A], T0 + 5 * M + 2 * H)
    assert (t.response_s, t.repair_s) == (2 * H, 24 * H)  # class 1's deadlines
    county.run_until(T0 + 10 * H)
    assert len(county.store.tickets()) == 1  # never two open tickets for one fault
    msg, late = county.outbox("ops")
    assert late["details"]["event"] == "escalated" and late["severity"] == "critical"
    assert msg["details"]["event"] == "dispatched" and msg["fingerprint"] == "ticket-1"
    assert msg["ticket"]["no"] == 1
    assert "维修工单 #1" in msg["summary"] and "超时" in msg["summary"]
    assert "http://127.0.0.1:9780/api/tickets/1" in msg["details"]["notes"][-1]
    # the response deadline passed: escalated to the second route, once
    boss = county.outbox("boss")
    assert [m["details"]["event"] for m in boss] == ["escalated"]
    assert [e.kind for e in county.store.ticket_events(1)] == [
        "opened", "dispatched", "escalated"]


def test_open_after_per_class(tmp_path: Path) -> None:
    from tests.repairs_harness import config
    c = County(tmp_path / "cw.db", [channel(A, "城关镇", "东关村", "移动", 1),
                                    channel(B, "城关镇", "东关村", "移动", 2)],
               cfg=config(open_after_by_class={1: "1h"}))
    try:
        c.down[A] = c.down[B] = Reason.TIMEOUT
        # two of two in one village would be a mass outage: keep it to single tickets
        c.cfg = c.cfg.model_copy(update={"alerts": c.cfg.alerts.model_copy(update={
            "rules": c.cfg.alerts.rules.model_copy(update={
                "mass_outage": c.cfg.alerts.rules.mass_outage.model_copy(
                    update={"enabled": False})})})})
        c.desk.configure(c.cfg)
        c.run_until(T0 + H + 5 * M)
        assert [t.channels for t in c.store.tickets()] == [[A]]
        c.run_until(T0 + 2 * H + 5 * M)
        assert [t.channels for t in c.store.tickets()] == [[A], [B]]
    finally:
        c.close()


def test_mass_outage_is_one_ticket_and_later_members_join_it(county: County) -> None:
    county.down[A] = county.down[B] = Reason.UNREACHABLE  # the whole of 东关村
    county.run_until(T0 + 3 * H)
    (t,) = county.store.tickets()
    assert t.group == "township:鹿邑县/城关镇" and sorted(t.channels) == sorted([A, B])
    assert "城关镇" in t.name and t.klass == 1  # the strictest class sets the deadlines


def test_recovery_closes_and_reopens_as_a_new_ticket(county: County) -> None:
    county.down[F] = Reason.REFUSED
    county.run_until(T0 + 3 * H)
    county.act(1, "ack")
    county.act(1, "done")
    del county.down[F]
    county.run_until(T0 + 4 * H)
    (t,) = county.store.tickets()
    assert t.state == S.CLOSED and t.repaired == T0 + 3 * H + 5 * M
    assert t.closed == T0 + 3 * H + 5 * M + 30 * M
    county.down[F] = Reason.REFUSED
    county.run_until(T0 + 7 * H)
    assert [(x.no, x.state) for x in county.store.tickets()] == [(1, S.CLOSED),
                                                                (2, S.DISPATCHED)]


def test_flapping_channel_does_not_loop(county: County) -> None:
    # up and down every 5 minutes for a day: held offline as flapping, one ticket at most,
    # never closed while it flaps
    end = T0 + D
    while county.t < end:
        county.down[F] = Reason.TIMEOUT
        county.run_until(county.t + 5 * M)
        county.down.pop(F)
        county.run_until(county.t + 5 * M)
    tickets = county.store.tickets()
    assert len(tickets) == 1 and tickets[0].is_open
    assert county.book.state(F) is not None and county.book.state(F).reason == "flapping"


def test_restart_keeps_tickets_without_duplicates(county: County, tmp_path: Path) -> None:
    county.down[F] = Reason.TIMEOUT
    county.run_until(T0 + 3 * H)
    county.close()
    again = County(tmp_path / "cw.db", county.channels, t=county.t, down=dict(county.down))
    try:
        assert list(again.desk.tickets) == [1] and again.desk.next_no == 2
        again.run_until(T0 + 6 * H)
        assert [t.no for t in again.store.tickets()] == [1]
        again.down[C] = Reason.TIMEOUT
        again.run_until(T0 + 9 * H)
        assert [t.no for t in again.store.tickets()] == [1, 2]
        sent = [(m["fingerprint"], m["details"]["event"]) for m in again.outbox("ops")]
        assert sent == [("ticket-1", "dispatched"), ("ticket-1", "escalated"),
                        ("ticket-2", "dispatched")]  # none repeated by the restart
    finally:
        again.close()


def test_channel_leaving_the_ledger_cancels_its_ticket(county: County) -> None:
    county.down[F] = Reason.TIMEOUT
    county.run_until(T0 + 3 * H)
    county.swap([c for c in county.channels if c.id != F])
    county.run_until(T0 + 3 * H + 5 * M)
    (t,) = county.store.tickets()
    assert t.state == S.CANCELLED and not county.desk.tickets


def test_failed_write_changes_nothing_and_is_repeated(county: County) -> None:
    county.down[F] = Reason.TIMEOUT
    county.run_until(T0 + 2 * H)
    real = county.store.commit_tickets
    calls = []

    def failing(*args: object, **kw: object) -> None:
        calls.append(1)
        raise OSError(28, "No space left on device")

    county.store.commit_tickets = failing  # type: ignore[method-assign]
    with pytest.raises(OSError):
        county.run_until(T0 + 2 * H + 5 * M)
    assert calls and not county.desk.tickets and county.desk.next_no == 1
    county.store.commit_tickets = real  # type: ignore[method-assign]
    county.run_until(T0 + 2 * H + 10 * M)
    (t,) = county.store.tickets()
    assert t.no == 1 and t.opened == T0 + 2 * H + 10 * M
    assert len(county.outbox("ops")) == 1


def test_metrics_and_the_grafana_panel(county: County) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from camwatch.repairs.metrics import exposition
    from camwatch.sinks.metrics import _esc, _head

    county.down[F] = Reason.TIMEOUT
    county.run_until(T0 + 3 * D)  # opened at 2 h, repair deadline (48 h, class 3) passed
    text = exposition(county.desk, county.t, False, _head, _esc)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (overdue,) = families["camwatch_repair_tickets_overdue"].samples
    assert overdue.labels == {"operator": "联通", "county": "鹿邑县", "township": "王集乡"}
    assert overdue.value == 1
    assert "camwatch_repair_assessment_tickets{" not in text  # not assessed yet
    import asyncio
    asyncio.run(county.desk.refresh_assessment(county.store, county.t, True))
    text = exposition(county.desk, county.t, False, _head, _esc)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    tickets = {s.labels["kind"]: s.value
               for s in families["camwatch_repair_assessment_tickets"].samples}
    assert tickets == {"opened": 1, "closed": 0, "still_open": 1, "repeats": 0}
    within = {(s.labels["operator"], s.labels["deadline"]): s.value
              for s in families["camwatch_repair_assessment_within_ratio"].samples}
    assert within == {("联通", "response"): 0.0, ("联通", "repair"): 0.0}  # both overdue
    states = {s.labels["state"]: s.value for s in families["camwatch_repair_tickets_open"].samples}
    assert states == {"pending": 0, "dispatched": 1, "acknowledged": 0, "fixed": 0,
                      "rework": 0, "suspended": 0}
    import json

    from tests.conftest import ROOT
    doc = json.loads((ROOT / "deploy/grafana/dashboards/camwatch-operators.json").read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    assert any("camwatch_repair_tickets_overdue{" in e for e in exprs)


# --- the desk skips tickets with nothing to do: never one that had something ------------------

@pytest.mark.parametrize("state", [S.DISPATCHED, S.ACKNOWLEDGED, S.REWORK, S.FIXED, S.PENDING,
                                   S.SUSPENDED])
@pytest.mark.parametrize("acked", [None, T0 + H])
@pytest.mark.parametrize("flags", [(False, False, False), (True, True, True),
                                   (False, True, False)])
@pytest.mark.parametrize("now", [T0 + H, T0 + 2 * H, T0 + 22 * H, T0 + 24 * H, T0 + 30 * H])
@pytest.mark.parametrize("point", ["offline", "online", "exempt", "gone"])
def test_waiting_tickets_really_have_nothing_to_do(state: str, acked: float | None,
                                                   flags: tuple[bool, bool, bool], now: float,
                                                   point: str) -> None:
    t = ticket(state, acked=acked, fixed=T0 + H / 2 if state == S.FIXED else None,
               escalated_response=flags[0], reminded=flags[1], escalated_repair=flags[2],
               pauses=[[T0, None]] if state == S.SUSPENDED else [])
    views: dict[str, PointView | None] = {
        "offline": offline(), "online": online(T0), "gone": None,
        "exempt": PointView(State.OFFLINE, T0, "timeout", exempt=True)}
    down = point == "offline"
    if machine.waiting(t, down, now, 2 * H):
        draft = t.copy()
        evs = machine.observe(draft, {"c1": views[point]}, now, V)
        evs += machine.due_events(draft, now, 2 * H)
        assert evs == [] and draft == t


def test_many_due_at_once_open_over_several_steps(county: County,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from camwatch.repairs import desk
    monkeypatch.setattr(desk, "MAX_OPEN_PER_STEP", 2)
    for cid in (A, C, F):  # three places: three tickets
        county.down[cid] = Reason.TIMEOUT
    county.run_until(T0 + 5 * M + 2 * H)
    assert [t.channels for t in county.store.tickets()] == [[A], [C]]
    county.run_until(T0 + 10 * M + 2 * H)
    assert [t.channels for t in county.store.tickets()] == [[A], [C], [F]]


def test_action_on_a_ticket_closed_while_it_waited_says_so(county: County) -> None:
    import asyncio

    county.down[F] = Reason.TIMEOUT
    county.run_until(T0 + 3 * H)
    desk = county.desk

    async def go() -> None:
        async with desk._lock:  # a step holds the desk and closes the ticket meanwhile
            task = asyncio.create_task(desk.act(1, "ack", "张三", "", county.t))
            await asyncio.sleep(0)  # (a yield: the action is now waiting for the lock)
            desk.tickets.pop(1)
        with pytest.raises(TicketError, match="closed or cancelled just now"):
            await task
        with pytest.raises(KeyError):
            await desk.act(1, "ack", "张三", "", county.t)

    asyncio.run(go())
