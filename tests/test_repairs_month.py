"""A simulated November (the real channel book, repair desk, SQLite store and writer, an
injected clock; a verdict for every channel every 5 minutes, and a restart mid-month): a few
channels break, tickets are acknowledged, one is "fixed" too early and rejected, one is
paused by an exemption, a village loses both its cameras at once, and everything but that
village is really repaired. The assessment is checked against figures computed by hand.

All times are Asia/Shanghai; ``day(2, 10)`` is 2 November 10:00.

=====  =========  ==============  ====================================================  ======
no.    point      opened          what happens                                          repair
=====  =========  ==============  ====================================================  ======
1      A 移动 1类  2 Nov 12:00     down 10:00; ack 13:00 (1 h); "done" 15:00 while still  21 h ✓
                                  down -> rejected 15:30; up 3 Nov 09:00, done 09:10,
                                  verified 09:30
2      C 电信 2类  5 Nov 10:00     down 08:00; escalated 12:00; ack 14:00 (4 h, late);   72 h ✗
                                  up 8 Nov 10:00, done, verified 10:30
3      B 移动 2类  10 Nov 02:00    down 00:00; ack 03:00 (1 h); up 12:00, done 12:05      10 h ✓
4      B 移动 2类  20 Nov 02:00    repeat of 3; ack 02:30 (0.5 h); 报备 20 Nov 06:00 -    34 h ✓
                                  21 Nov 06:00 (24 h paused); up 22 Nov 12:00, done    (58-24)
5      D+E 联通    25 Nov 02:00    李庄 down at 00:00 (one ticket); never acknowledged;   open,
                                  escalated 04:00, repair deadline 27 Nov 02:00 passes  overdue
=====  =========  ==============  ====================================================  ======
"""

from __future__ import annotations

from pathlib import Path

from camwatch.config import TargetsConfig
from camwatch.probes.result import Reason
from camwatch.repairs.assess import assessment
from camwatch.repairs.model import TicketState
from camwatch.reports.compute import ReportSettings, compute_bulletin
from camwatch.reports.html import render_html
from camwatch.reports.period import Period, zone
from camwatch.reports.tables import all_tables
from tests.repairs_harness import NOV_1, County, D, H, M, channel

A, B, C, DD, E, F = (f"41162800001321000{i:02d}" for i in range(1, 7))
CHANNELS = [channel(A, "城关镇", "东关村", "移动", 1), channel(B, "城关镇", "西关村", "移动", 2),
            channel(F, "城关镇", "西关村", "移动", 1), channel(C, "王集乡", "张庄", "电信", 2),
            channel(DD, "王集乡", "李庄", "联通", 2), channel(E, "王集乡", "李庄", "联通", 2)]
DEC_1 = NOV_1 + 30 * D


def day(d: int, h: float, m: float = 0) -> float:
    return NOV_1 + (d - 1) * D + h * H + m * M


def test_a_simulated_month(tmp_path: Path) -> None:
    c = County(tmp_path / "cw.db", CHANNELS)

    def at(ts: float) -> None:  # every tick before ``ts`` done; what follows applies at ts
        c.run_until(ts - c.interval)

    # 1: A, fixed too early once
    at(day(2, 10))
    c.down[A] = Reason.TIMEOUT
    c.run_until(day(2, 13))
    c.act(1, "ack", "张三")
    c.run_until(day(2, 15))
    c.act(1, "done", "张三", "已更换电源")
    c.run_until(day(2, 15, 30))
    assert c.store.ticket(1).state == TicketState.REWORK  # type: ignore[union-attr]
    at(day(3, 9))
    del c.down[A]
    c.run_until(day(3, 9, 10))
    c.act(1, "done", "张三", "已更换光模块")
    # 2: C, late everywhere
    at(day(5, 8))
    c.down[C] = Reason.REFUSED
    c.run_until(day(5, 14))
    c.act(2, "ack", "李四")
    at(day(8, 10))
    del c.down[C]
    c.run_until(day(8, 10))
    c.act(2, "done", "李四")
    # a restart between two faults: nothing lost, nothing repeated
    c.run_until(day(9, 0))
    c.close()
    c = County(tmp_path / "cw.db", CHANNELS, t=c.t)

    def at2(ts: float) -> None:
        c.run_until(ts - c.interval)

    # 3: B
    at2(day(10, 0))
    c.down[B] = Reason.UNREACHABLE
    c.run_until(day(10, 3))
    c.act(3, "ack", "王五")
    at2(day(10, 12))
    del c.down[B]
    c.run_until(day(10, 12, 5))
    c.act(3, "done", "王五")
    # 4: B again, paused by an exemption
    at2(day(20, 0))
    c.down[B] = Reason.UNREACHABLE
    c.run_until(day(20, 2, 30))
    c.act(4, "ack", "王五")
    c.writer.call(lambda s: s.add_exemption(B, day(20, 6), day(21, 6), "道路施工", c.t))
    at2(day(22, 12))
    del c.down[B]
    c.run_until(day(22, 12))
    c.act(4, "done", "王五")
    # 5: the village of 李庄
    at2(day(25, 0))
    c.down[DD] = c.down[E] = Reason.TIMEOUT
    c.run_until(DEC_1)

    tickets = c.store.tickets()
    assert [(t.no, t.state, t.channels) for t in tickets] == [
        (1, TicketState.CLOSED, [A]), (2, TicketState.CLOSED, [C]),
        (3, TicketState.CLOSED, [B]), (4, TicketState.CLOSED, [B]),
        (5, TicketState.DISPATCHED, [DD, E])]
    t1, t2, _t3, t4, t5 = tickets
    assert (t1.opened, t1.acked, t1.repaired, t1.closed, t1.rejections) == (
        day(2, 12), day(2, 13), day(3, 9), day(3, 9, 30), 1)
    assert [e.kind for e in c.store.ticket_events(1)] == [
        "opened", "dispatched", "acknowledged", "fixed", "rejected", "fixed", "verified"]
    assert [e.kind for e in c.store.ticket_events(4)] == [
        "opened", "dispatched", "acknowledged", "suspended", "resumed", "fixed", "verified"]
    assert t4.pauses == [[day(20, 6), day(21, 6)]]
    assert (t2.escalated_response, t2.reminded, t2.escalated_repair) == (True, True, True)
    assert t5.group == "village:鹿邑县/王集乡/李庄" and t5.escalated_repair
    # the maintainer was told of the rejection, and the escalations went to the second route
    ops = [(m["fingerprint"], m["details"]["event"]) for m in c.outbox("ops")]
    assert ("ticket-1", "rejected") in ops and ("ticket-1", "verified") in ops
    assert len([1 for fp, ev in ops if ev == "dispatched"]) == 5
    boss = [(m["fingerprint"], m["details"]["event"]) for m in c.outbox("boss")]
    assert boss == [("ticket-2", "escalated"), ("ticket-2", "escalated"),
                    ("ticket-5", "escalated"), ("ticket-5", "escalated")]

    got = assessment(c.store.tickets(since=NOV_1 - 30 * D, until=DEC_1), NOV_1, DEC_1, c.t)
    bulletin = compute_bulletin(c.store, CHANNELS, Period.month("2026-11", zone("Asia/Shanghai")),
                                ReportSettings(targets=TargetsConfig(min_channels=1)), now=DEC_1)
    c.close()
    # the same figures as the bulletin's sheets (hours) and HTML sections
    tables = {t.key: t for t in all_tables(bulletin)}
    assert tables["assessment_operators"].rows[0] == [
        1, "移动", 3, 3, 0, 1.0, 1.0, 21.0, 34.0, 1.0, 1.0, 1]
    assert [r[1] for r in tables["assessment_townships"].rows] == ["鹿邑县 城关镇",
                                                                  "鹿邑县 王集乡"]
    assert "八、运维考核（运营商）" in render_html(bulletin)
    ops_rows = {r["key"]: r for r in got["operators"]}
    assert ops_rows["移动"] == {
        "key": "移动", "opened": 3, "closed": 3, "still_open": 0,
        "response_median_s": 1 * H, "response_p90_s": 1 * H,
        "repair_median_s": 21 * H, "repair_p90_s": 34 * H,
        "response_within": 1.0, "response_due": 3, "repair_within": 1.0, "repair_due": 3,
        "repeats": 1, "rank": 1}
    assert ops_rows["电信"] == {
        "key": "电信", "opened": 1, "closed": 1, "still_open": 0,
        "response_median_s": 4 * H, "response_p90_s": 4 * H,
        "repair_median_s": 72 * H, "repair_p90_s": 72 * H,
        "response_within": 0.0, "response_due": 1, "repair_within": 0.0, "repair_due": 1,
        "repeats": 0, "rank": 2}
    assert ops_rows["联通"] == {
        "key": "联通", "opened": 1, "closed": 0, "still_open": 1,
        "response_median_s": None, "response_p90_s": None,
        "repair_median_s": None, "repair_p90_s": None,
        "response_within": 0.0, "response_due": 1, "repair_within": 0.0, "repair_due": 1,
        "repeats": 0, "rank": 3}
    towns = {r["key"]: r for r in got["townships"]}
    assert (towns["鹿邑县 城关镇"]["rank"], towns["鹿邑县 王集乡"]["rank"]) == (1, 2)
    wj = towns["鹿邑县 王集乡"]
    assert (wj["opened"], wj["closed"], wj["still_open"], wj["response_median_s"],
            wj["repair_within"], wj["repair_due"]) == (2, 1, 1, 4 * H, 0.0, 2)
    assert got["complete"] is True
