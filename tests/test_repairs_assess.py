"""The assessment's definitions as a table, boundaries included (docs/repairs.md)."""

from __future__ import annotations

from typing import Any

import pytest

from camwatch.repairs.assess import REPEAT_WINDOW_S, assess_by, median, p90
from camwatch.repairs.model import Ticket, TicketState

H = 3600.0
START = 1_000_000.0
END = START + 30 * 86400.0


def tk(no: int, opened: float, *, acked: float | None = None, repaired: float | None = None,
       closed: float | None = None, op: str = "移动", state: str = TicketState.DISPATCHED,
       channels: tuple[str, ...] = ("c1",), **kw: Any) -> Ticket:
    return Ticket(no=no, state=TicketState.CLOSED if closed is not None else state,
                  channels=list(channels), opened=opened, fault_since=opened - 2 * H,
                  response_s=2 * H, repair_s=24 * H, acked=acked, repaired=repaired,
                  closed=closed, operator=op, **kw)


def row(tickets: list[Ticket], now: float = END, key: str = "移动") -> dict[str, Any]:
    rows = {r.key: r.as_dict() for r in assess_by(tickets, lambda t: t.operator, START, END,
                                                  now)}
    return rows[key]


@pytest.mark.parametrize(("values", "med", "p"), [
    ([], None, None), ([5.0], 5.0, 5.0), ([1.0, 2.0], 1.5, 2.0),
    ([float(i) for i in range(1, 11)], 5.5, 9.0),  # ⌈9⌉-th of 10
    ([float(i) for i in range(1, 12)], 6.0, 10.0),  # ⌈9.9⌉ = 10th of 11
])
def test_median_and_nearest_rank_p90(values: list[float], med: float | None,
                                     p: float | None) -> None:
    assert (median(values), p90(values)) == (med, p)


@pytest.mark.parametrize(("acked", "within"), [
    (START + H + 2 * H, 1.0),  # exactly at the deadline: within
    (START + H + 2 * H + 1, 0.0),
])
def test_response_deadline_boundary(acked: float, within: float) -> None:
    r = row([tk(1, START + H, acked=acked)])
    assert (r["response_within"], r["response_due"]) == (within, 1)


def test_unanswered_counts_once_its_deadline_passed() -> None:
    t = tk(1, END - H)  # due an hour after the period: not yet judged
    assert row([t])["response_due"] == 0 and row([t])["response_within"] is None
    late = tk(1, END - 3 * H)
    assert (row([late])["response_due"], row([late])["response_within"]) == (1, 0.0)


def test_pause_is_left_out_of_times_and_moves_deadlines() -> None:
    t = tk(1, START, acked=START + 5 * H, repaired=START + 30 * H, closed=START + 31 * H,
           pauses=[[START + H, START + 4 * H]])
    r = row([t])
    assert (r["response_median_s"], r["response_within"]) == (2 * H, 1.0)
    assert (r["repair_median_s"], r["repair_within"]) == (27 * H, 0.0)


def test_repair_is_the_verified_online_start_not_the_closing() -> None:
    r = row([tk(1, START, acked=START + H, repaired=START + 24 * H,
                closed=START + 24 * H + 1800)])
    assert (r["repair_median_s"], r["repair_within"], r["closed"]) == (24 * H, 1.0, 1)


def test_overdue_open_tickets_count_against_repair() -> None:
    r = row([tk(1, START, acked=START + H)])
    assert (r["still_open"], r["repair_due"], r["repair_within"]) == (1, 1, 0.0)


@pytest.mark.parametrize(("gap", "repeats"), [
    (REPEAT_WINDOW_S, 1), (REPEAT_WINDOW_S + 1, 0),
])
def test_repeat_window(gap: float, repeats: int) -> None:
    later = START + 10 * 86400.0
    before = tk(1, later - gap, acked=later - gap + H, repaired=later - gap + 2 * H,
                closed=later - gap + 3 * H)
    assert row([before, tk(2, later)])["repeats"] == repeats


def test_repeat_needs_the_same_point() -> None:
    assert row([tk(1, START + H), tk(2, START + 9 * H, channels=("c2",))])["repeats"] == 0
    assert row([tk(1, START + H, channels=("c1", "c2")),
                tk(2, START + 9 * H, channels=("c2",))])["repeats"] == 1


def test_cancelled_tickets_are_left_out() -> None:
    t = tk(1, START + H, state=TicketState.CANCELLED, cancelled=START + 2 * H)
    assert assess_by([t], lambda x: x.operator, START, END, END) == []


def test_a_running_month_ends_now() -> None:
    now = START + 10 * H
    r = row([tk(1, START + H), tk(2, START + 20 * H)], now=now)
    assert (r["opened"], r["still_open"], r["response_due"]) == (1, 1, 1)


def test_a_running_month_includes_what_happened_at_now() -> None:
    now = START + 10 * H
    r = row([tk(1, START, acked=START + H, repaired=START + 9 * H, closed=now)], now=now)
    assert (r["closed"], r["still_open"], r["repair_median_s"]) == (1, 0, 9 * H)


def test_ranking() -> None:
    good = tk(1, START, op="移动", acked=START + H, repaired=START + 10 * H,
              closed=START + 11 * H)
    slow = tk(2, START, op="联通", acked=START + H, repaired=START + 20 * H,
              closed=START + 21 * H)
    late = tk(3, START, op="电信", acked=START + 3 * H, repaired=START + 5 * H,
              closed=START + 6 * H)
    nothing_due = tk(4, END - H, op="广电")
    rows = assess_by([nothing_due, late, slow, good], lambda t: t.operator, START, END, END)
    # same repair share: response share, then the median repair time; nothing due: last
    assert [(r.key, r.rank) for r in rows] == [("移动", 1), ("联通", 2), ("电信", 3),
                                               ("广电", 4)]
