from __future__ import annotations

import pytest

from camwatch.config import TargetOverride, TargetsConfig
from camwatch.inventory import Channel
from camwatch.rules.rates import RateRow, Targets, compute_rates, format_rate, online_rate


def ch(i: int, klass: int, township: str, project: str = "雪亮工程",
       connected: bool = True) -> Channel:
    return Channel(id=f"c{i}", klass=klass, project=project, county="鹿邑县",
                   township=township, village="村", operator="移动", installed=True,
                   connected=connected, rtsp_url="rtsp://127.0.0.1/x")


def find(rows: list[RateRow], scope: dict[str, str], klass: int | None = None,
         project: str | None = None) -> RateRow:
    (row,) = [r for r in rows if r.scope_dict() == scope and r.klass == klass
              and r.project == project]
    return row


def test_sum_of_counts_not_average_of_ratios() -> None:
    # township A: 1/1 online (100 %), township B: 1/9 online (11 %). Mean of ratios = 55.6 %,
    # the right county rate is 2/10 = 20 %.
    chans = [ch(0, 1, "A")] + [ch(i, 1, "B") for i in range(1, 10)]
    online = {"c0", "c1"}
    rows = compute_rates(chans, lambda c: "online" if c in online else "offline",
                         Targets(TargetsConfig()))
    county = find(rows, {"county": "鹿邑县"}, klass=1)
    assert (county.online, county.connected) == (2, 10)
    assert county.rate == pytest.approx(0.2)
    assert find(rows, {"county": "鹿邑县", "township": "A"}, klass=1).rate == 1.0


def test_unknown_and_not_connected_are_left_out() -> None:
    chans = [ch(0, 2, "A"), ch(1, 2, "A"), ch(2, 2, "A"), ch(3, 2, "A", connected=False)]
    states = {"c0": "online", "c1": "offline", "c2": "unknown", "c3": "online"}
    rows = compute_rates(chans, states.__getitem__, Targets(TargetsConfig()))
    site = find(rows, {}, klass=2)
    assert (site.online, site.connected, site.offline, site.unknown) == (1, 2, 1, 1)
    assert site.target == 0.95 and site.meets_target is False


def test_targets_defaults_projects_and_overrides() -> None:
    cfg = TargetsConfig(overrides=(
        TargetOverride(county="鹿邑县", class_=1, target=0.99),
        TargetOverride(county="鹿邑县", township="A", class_=1, target=0.97)))
    t = Targets(cfg)
    assert t.target_for({}, 1, None) == 0.98
    assert t.target_for({}, 3, None) == 0.95
    assert t.target_for({}, 4, None) is None
    assert t.target_for({}, None, "智慧小区") == 0.98
    assert t.target_for({}, None, "数字乡村") is None
    assert t.target_for({}, None, None) is None
    assert t.target_for({"county": "鹿邑县"}, 1, None) == 0.99
    assert t.target_for({"county": "鹿邑县", "township": "A"}, 1, None) == 0.97
    assert t.target_for({"county": "鹿邑县", "township": "B"}, 1, None) == 0.99


def test_meets_target_at_published_precision() -> None:
    row = RateRow((), 1, None, online=97995, connected=100000, offline=2005, unknown=0,
                  target=0.98)
    assert format_rate(row.rate) == "98.00%"  # shown as meeting 98 %, so it does
    assert row.meets_target is True
    below = RateRow((), 1, None, online=484, connected=500, offline=16, unknown=0, target=0.98)
    assert format_rate(below.rate) == "96.80%" and below.meets_target is False


def test_empty_scope_has_no_rate() -> None:
    assert online_rate(0, 0) is None
    assert format_rate(None) == "-"
