"""Quality tickets (画面异常, issue #18 with #13): the machine's verification with pictures as a
table, then the desk against the real quality book, the real channel book and a real SQLite
store, fed quality verdicts on an injected clock (no sockets, no sleeps)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from camwatch.errors import ConfigError
from camwatch.model import Quality, State
from camwatch.probes.result import Reason
from camwatch.quality.book import QualityBook
from camwatch.quality.checks import Fault
from camwatch.quality.sample import QualityVerdict
from camwatch.repairs import machine
from camwatch.repairs.assess import month_assessment
from camwatch.repairs.machine import PointView
from camwatch.repairs.model import ONLINE_FAULT, QUALITY_FAULT, Ticket, TicketState
from tests.repairs_harness import NOV_1, County, H, M, channel, config

S = TicketState
T0 = NOV_1
V = 30 * M
FIXED_AT = T0 + 4 * H


def ticket(kind: str, state: str = S.FIXED) -> Ticket:
    return Ticket.from_dict(dict(no=1, state=state, channels=["c1"], opened=T0,
                                 fault_since=T0 - 2 * H, response_s=2 * H, repair_s=24 * H,
                                 kind=kind, faults=["signal_lost"],
                                 fixed=FIXED_AT if state == S.FIXED else None))


def pic(quality: str | None, since: float | None = None, ts: float | None = None,
        online: float | None = T0 - 3 * H) -> PointView:
    """An online point (since ``online``; None: offline) with its picture's run."""
    faults = ("signal_lost", "noise") if quality == Quality.DEGRADED else ()
    if online is None:
        return PointView(State.OFFLINE, T0 - 2 * H, "timeout", quality=quality,
                         quality_since=since, quality_ts=ts, faults=faults)
    return PointView(State.ONLINE, online, quality=quality, quality_since=since,
                     quality_ts=ts, faults=faults)


OK, BAD, UNK = Quality.OK.value, Quality.DEGRADED.value, Quality.UNKNOWN.value
Q, ON = QUALITY_FAULT, ONLINE_FAULT
LATE = T0 + 9 * H  # long after the claim's verify_for


@pytest.mark.parametrize(("kind", "state", "point", "now", "to", "ev", "repaired"), [
    # a quality ticket: the picture ok over samples spanning verify_for, the channel online
    (Q, S.FIXED, pic(OK, T0 + 5 * H, T0 + 5 * H + V), LATE, S.CLOSED, "verified", T0 + 5 * H),
    (Q, S.FIXED, pic(OK, T0 + 5 * H, T0 + 5 * H + V - 1), LATE, S.FIXED, None, None),
    # one ok sample is not a run, however long ago (the picture is sampled rarely)
    (Q, S.FIXED, pic(OK, T0 + 5 * H, T0 + 5 * H), LATE, S.FIXED, None, None),
    # the ok run counts from the online run's start when that is later (offline between)
    (Q, S.FIXED, pic(OK, T0, T0 + 6 * H, online=T0 + 6 * H - V + 1), LATE, S.FIXED, None,
     None),
    (Q, S.FIXED, pic(OK, T0, T0 + 6 * H, online=T0 + 6 * H - V), LATE, S.CLOSED, "verified",
     T0 + 6 * H - V),
    # still degraded verify_for after the claim: back to 处理中; not before
    (Q, S.FIXED, pic(BAD, T0, T0 + 4 * H), FIXED_AT + V, S.REWORK, "rejected", None),
    (Q, S.FIXED, pic(BAD, T0, T0 + 4 * H), FIXED_AT + V - 1, S.FIXED, None, None),
    # ... by a picture sampled at or after the claim: one from before it says nothing of the
    # repair, and the claim waits for a fresh one (the engine has it taken at the claim)
    (Q, S.FIXED, pic(BAD, T0, FIXED_AT - 1), LATE, S.FIXED, None, None),
    (ON, S.FIXED, pic(BAD, T0, FIXED_AT - 1), LATE, S.FIXED, None, None),
    # offline now: rejected too (the ticket covers the channel, whatever comes next)
    (Q, S.FIXED, pic(UNK, None, None, online=None), FIXED_AT + V, S.REWORK, "rejected", None),
    # not sampled (since a restart): camwatch cannot judge, neither pass nor fail
    (Q, S.FIXED, pic(UNK), LATE, S.FIXED, None, None),
    # recovered without a word: self-recovered, as for online faults
    (Q, S.ACKNOWLEDGED, pic(OK, T0 + 5 * H, T0 + 6 * H), LATE, S.CLOSED, "self_recovered",
     T0 + 5 * H),
    # sampling turned off: online is all camwatch can see
    (Q, S.FIXED, pic(None), LATE, S.CLOSED, "verified", T0 - 3 * H),
    # an online-fault ticket with sampling on: a degraded picture holds it open, rejects a claim
    (ON, S.ACKNOWLEDGED, pic(BAD, T0, T0 + 8 * H), LATE, S.ACKNOWLEDGED, None, None),
    (ON, S.FIXED, pic(BAD, T0, T0 + 8 * H), LATE, S.REWORK, "rejected", None),
    # ... but needs no fresh sample: ok or not sampled closes on online alone
    (ON, S.FIXED, pic(OK, T0 - 9 * H, T0 - 9 * H), LATE, S.CLOSED, "verified", T0 - 3 * H),
    (ON, S.FIXED, pic(UNK), LATE, S.CLOSED, "verified", T0 - 3 * H),
])
def test_verification_with_pictures(kind: str, state: str, point: PointView, now: float,
                                    to: str, ev: str | None, repaired: float | None) -> None:
    t = ticket(kind, state)
    evs = machine.observe(t, {"c1": point}, now, V)
    assert t.state == to
    assert [e.kind for e in evs] == ([ev] if ev else [])
    assert t.repaired == repaired


def test_rejection_note_names_the_pictures_faults() -> None:
    t = ticket(Q)
    (ev,) = machine.observe(t, {"c1": pic(BAD, T0, T0 + 4 * H)}, FIXED_AT + V, V)
    assert "核实未通过" in ev.note and "仍异常" in ev.note
    assert "c1（画面异常：信号缺失、雪花干扰）" in ev.note and t.rejections == 1


# --- the desk against the real quality book ------------------------------------------------------

A, F = "41162800001321000001", "41162800001321000005"
JPEG = b"\xff\xd8" + b"\x00" * 20_000  # a thumbnail's bytes: never copied into the store
SNAP = f"http://127.0.0.1:9780/api/channels/{A}/snapshot.jpg"


@pytest.fixture
def county(tmp_path: Path) -> Iterator[County]:
    c = County(tmp_path / "cw.db", [channel(A, "城关镇", "东关村", "移动", 1),
                                    channel(F, "王集乡", "张庄", "联通", 3)],
               quality=QualityBook())
    assert c.quality is not None
    c.quality.swap(c.by_id)
    yield c
    c.close()


def sample(c: County, cid: str, q: Quality, *checks: str) -> None:
    """A quality verdict taken at the county's clock, as the sampler records it."""
    assert c.quality is not None
    faults = tuple(Fault(ch, 0.99) for ch in checks) if q is Quality.DEGRADED else ()
    c.quality.record(QualityVerdict(cid, q, c.t, faults=faults, jpeg=JPEG))


def at(c: County, ts: float, cid: str, q: Quality, *checks: str) -> None:
    c.run_until(ts)
    sample(c, cid, q, *checks)


def test_quality_ticket_opens_once_is_rejected_then_verified(county: County) -> None:
    c = county
    at(c, T0 + 5 * M, A, Quality.DEGRADED, "signal_lost", "noise")
    at(c, T0 + 10 * M, A, Quality.DEGRADED, "signal_lost", "noise")  # 1 sample: not yet
    assert c.store.tickets() == []
    c.run_until(T0 + 15 * M)  # 2 in a row (repairs.quality_after): one ticket
    (t,) = c.store.tickets()
    assert (t.kind, t.channels, t.state, t.opened) == (QUALITY_FAULT, [A], S.DISPATCHED,
                                                       T0 + 15 * M)
    assert (t.faults, t.reason, t.fault_since, t.snapshot) == (
        ["signal_lost", "noise"], "signal_lost", T0 + 5 * M, SNAP)
    (msg,) = c.outbox("ops")
    assert "画面异常（信号缺失、雪花干扰）" in msg["summary"] and "离线" not in msg["summary"]
    assert f"抽检截图：{SNAP}" in msg["details"]["notes"]
    assert msg["ticket"]["snapshot"] == SNAP and msg["ticket"]["kind"] == "quality"
    with sqlite3.connect(c.path) as db:  # a link in the store, not the JPEG
        (data,) = db.execute("SELECT data FROM repair_tickets").fetchone()
    assert SNAP in data and len(data) < 4000
    # still degraded: never a second ticket
    for ts in (T0 + 20 * M, T0 + 30 * M):
        at(c, ts, A, Quality.DEGRADED, "signal_lost")
    c.act(1, "done", note="已更换")  # at T0+30m, too early
    at(c, T0 + 40 * M, A, Quality.DEGRADED, "signal_lost")
    c.run_until(T0 + 30 * M + V - 5 * M)
    assert c.store.ticket(1).state == S.FIXED  # type: ignore[union-attr]
    c.run_until(T0 + 30 * M + V)
    t1 = c.store.ticket(1)
    assert t1 is not None and t1.state == S.REWORK and t1.rejections == 1
    rejected = c.store.ticket_events(1)[-1]
    assert rejected.kind == "rejected" and "画面异常：信号缺失" in rejected.note
    assert len(c.store.tickets()) == 1
    # really repaired: ok at 70m, claimed at 75m, ok samples until 100m (30 min of ok)
    at(c, T0 + 70 * M, A, Quality.OK)
    c.run_until(T0 + 75 * M)
    c.act(1, "done")
    at(c, T0 + 90 * M, A, Quality.OK)
    c.run_until(T0 + 100 * M)
    assert c.store.ticket(1).state == S.FIXED  # type: ignore[union-attr]  # 20 min of ok
    sample(c, A, Quality.OK)
    c.run_until(T0 + 105 * M)
    t1 = c.store.ticket(1)
    assert t1 is not None and t1.state == S.CLOSED
    assert (t1.repaired, t1.closed) == (T0 + 70 * M, T0 + 105 * M)
    done = c.outbox("ops")[-1]
    assert done["details"]["event"] == "verified" and "画面已恢复正常" in done["summary"]
    # the assessment counts it like any ticket: opened, closed, its repair time
    (row,) = month_assessment(c.store, 2026, 11, c.desk.tz, c.t)["operators"]
    assert (row["key"], row["opened"], row["closed"], row["still_open"]) == ("移动", 1, 1, 0)
    assert row["repair_median_s"] == 55 * M  # opened 15m, ok from 70m


def test_flapping_picture_opens_nothing(county: County) -> None:
    c = county
    for i in range(12):  # degraded and ok in turn for two hours
        at(c, T0 + (i + 1) * 10 * M, A, Quality.DEGRADED if i % 2 else Quality.OK, "blur")
    c.run_until(T0 + 3 * H)
    assert c.store.tickets() == []


def test_offline_ticket_and_a_degraded_picture_are_one_ticket(county: County) -> None:
    c = county
    c.down[A] = Reason.TIMEOUT
    c.run_until(T0 + 5 * M + 2 * H)
    (t,) = c.store.tickets()
    assert t.kind == ONLINE_FAULT
    c.down.pop(A)  # back online (judged at 2h10m), but the picture is black
    for i in range(10):
        at(c, T0 + 2 * H + 15 * M + i * 10 * M, A, Quality.DEGRADED, "signal_lost")
    c.run_until(T0 + 5 * H)
    (t,) = c.store.tickets()  # no quality ticket beside it, and it is not closed
    assert t.kind == ONLINE_FAULT and t.state == S.DISPATCHED
    at(c, T0 + 5 * H, A, Quality.OK)
    c.run_until(T0 + 5 * H + 5 * M)
    t = c.store.tickets()[0]
    assert t.state == S.CLOSED and t.repaired == T0 + 2 * H + 10 * M  # online since then
    assert c.store.ticket_events(1)[-1].kind == "self_recovered"


def test_quality_ticket_covers_the_channel_going_offline(county: County) -> None:
    c = county
    at(c, T0 + 5 * M, A, Quality.DEGRADED, "too_dark")
    at(c, T0 + 10 * M, A, Quality.DEGRADED, "too_dark")
    c.run_until(T0 + 15 * M)
    c.down[A] = Reason.REFUSED
    c.run_until(T0 + 4 * H)  # offline far longer than open_after
    (t,) = c.store.tickets()
    assert t.kind == QUALITY_FAULT and t.is_open
    # back online with the old degraded verdict: neither closed nor a new ticket
    c.down.pop(A)
    c.run_until(T0 + 6 * H)
    (t,) = c.store.tickets()
    assert t.is_open


def test_exempted_channel_opens_no_quality_ticket(county: County) -> None:
    c = county
    c.store.add_exemption(A, T0, T0 + 2 * H, "道路施工", T0)  # 报备 for two hours
    for i in range(1, 12):
        at(c, T0 + i * 10 * M, A, Quality.DEGRADED, "occluded")
    c.run_until(T0 + 115 * M)
    assert c.store.tickets() == []
    c.run_until(T0 + 2 * H + 5 * M)  # the exemption over, still degraded: now it opens
    (t,) = c.store.tickets()
    assert t.kind == QUALITY_FAULT and t.faults == ["occluded"]


def test_without_sampling_a_degraded_record_opens_nothing(tmp_path: Path) -> None:
    c = County(tmp_path / "cw.db", [channel(A, "城关镇", "东关村", "移动", 1)])
    book = QualityBook()  # a book the desk is not given (quality.enabled false)
    try:
        for i in range(1, 6):
            c.run_until(T0 + i * 10 * M)
            book.record(QualityVerdict(A, Quality.DEGRADED, c.t, faults=(Fault("blur", 0.0),)))
        c.run_until(T0 + H)
        assert c.store.tickets() == []
    finally:
        c.close()


@pytest.mark.parametrize(("after", "samples", "opened"), [(1, 1, True), (3, 2, False),
                                                          (3, 3, True)])
def test_quality_after_counts_samples(tmp_path: Path, after: int, samples: int,
                                      opened: bool) -> None:
    c = County(tmp_path / "cw.db", [channel(A, "城关镇", "东关村", "移动", 1)],
               cfg=config(quality_after=after), quality=QualityBook())
    try:
        for i in range(1, samples + 1):
            at(c, T0 + i * 10 * M, A, Quality.DEGRADED, "frozen")
        c.run_until(T0 + (samples + 1) * 10 * M)
        assert len(c.store.tickets()) == (1 if opened else 0)
    finally:
        c.close()


def test_quality_after_config() -> None:
    assert config().repairs.quality_after == 2
    with pytest.raises(ConfigError, match=r"\$\.repairs\.quality_after"):
        config(quality_after=0)


def test_book_runs_of_one_quality() -> None:
    b = QualityBook()
    b.swap(["a"])
    for ts, q in [(1.0, Quality.DEGRADED), (2.0, Quality.DEGRADED), (3.0, Quality.OK),
                  (4.0, Quality.OK), (5.0, Quality.UNKNOWN)]:
        b.record(QualityVerdict("a", q, ts))
        rec = b.get("a")
        assert rec is not None
        assert (rec.since, rec.streak) == {1.0: (1.0, 1), 2.0: (1.0, 2), 3.0: (3.0, 1),
                                           4.0: (3.0, 2), 5.0: (5.0, 1)}[ts]
        assert b.degraded == ({"a"} if ts <= 2.0 else set())
    b.record(QualityVerdict("a", Quality.DEGRADED, 6.0))
    b.swap([])  # left the inventory
    assert b.degraded == set()


def test_cli_show_names_a_quality_tickets_faults_and_snapshot() -> None:
    from camwatch.repairs.api import format_ticket

    base = {"no": 3, "state_zh": "已派单", "state": "dispatched", "county": "鹿邑县",
            "township": "城关镇", "village": "东关村", "name": "东关路口", "channels": [A],
            "operator": "移动", "opened_iso": "2026-11-02T12:00:00+08:00",
            "fault_since_iso": "2026-11-02T11:00:00+08:00", "response_due_iso": None,
            "repair_due_iso": None, "link": "http://127.0.0.1:9780/api/tickets/3"}
    text = format_ticket({**base, "kind": "quality", "faults": ["signal_lost"],
                          "snapshot": SNAP}, [])
    assert "picture degraded since 2026-11-02 11:00" in text
    assert "faults:    signal_lost" in text and f"snapshot:  {SNAP}" in text
    online = format_ticket({**base, "kind": "online"}, [])
    assert "offline since" in online and "snapshot" not in online


def test_a_claim_asks_for_fresh_pictures_and_an_old_one_does_not_reject_it(
        county: County) -> None:
    c = county
    at(c, T0 + 5 * M, A, Quality.DEGRADED, "too_dark")
    at(c, T0 + 10 * M, A, Quality.DEGRADED, "too_dark")
    c.run_until(T0 + 15 * M)
    (t,) = c.store.tickets()
    claimed: list[Ticket] = []
    c.desk.on_fixed = claimed.append
    c.act(t.no, "ack")
    assert claimed == [] and not c.desk.being_verified(A)
    c.act(t.no, "done", note="已清洁镜头")
    assert [(x.no, x.state) for x in claimed] == [(t.no, S.FIXED)]  # after it was committed
    assert c.desk.being_verified(A) and not c.desk.being_verified(F)
    # no picture since the claim: the old dark one neither rejects nor verifies it
    c.run_until(T0 + 15 * M + 2 * V)
    assert c.store.ticket(t.no).state == S.FIXED  # type: ignore[union-attr]
    sample(c, A, Quality.DEGRADED, "too_dark")  # a fresh one, still dark: rejected
    c.run_until(T0 + 20 * M + 2 * V)
    t1 = c.store.ticket(t.no)
    assert t1 is not None and t1.state == S.REWORK and not c.desk.being_verified(A)
