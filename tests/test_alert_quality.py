"""The quality alert rules (issue #13), table by table with the clock passed in, on the real
quality book and a real store: quality_degraded (a channel after N consecutive degraded
samples) and intact_rate_below_target (a scope's 完好率 under targets.intact); a restart keeps
both quiet (alert state and quality state from the store)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from camwatch.config import TargetsConfig
from camwatch.inventory import Channel
from camwatch.model import Quality
from camwatch.quality.book import QualityBook
from camwatch.quality.checks import Fault
from camwatch.quality.rates import intact_rates
from camwatch.quality.sample import QualityVerdict
from camwatch.rules.alert_config import AlertsConfig
from camwatch.rules.alerts import META_KEY, Alert, AlertEvaluator, QualityInputs, alert_inputs
from camwatch.rules.rates import RateIndex, Targets, compute_rates
from camwatch.store.base import ChannelState
from camwatch.store.sqlite import SqliteStore
from tests.test_alert_rules import BASE, COUNTY, T0, chans

H = 3600.0


class World:
    """Channels online, a quality book fed verdicts, an evaluator committing to a store."""

    def __init__(self, store: SqliteStore, channels: list[Channel], rules: dict[str, Any],
                 intact: dict[str, Any] | None = None) -> None:
        self.store = store
        self.channels = channels
        self.cfg = AlertsConfig.model_validate({**BASE, "rules": {
            "rate_below_target": {"enabled": False}, "mass_outage": {"enabled": False},
            **rules}})
        self.targets = TargetsConfig.model_validate({"min_channels": 5, "intact": intact})
        self.states = {c.id: ChannelState(c.id, "online", since=T0 - 30 * 86400)
                       for c in channels}
        self.book = QualityBook()
        self.book.swap([c.id for c in channels])
        self.ev = self.new_evaluator()

    def new_evaluator(self) -> AlertEvaluator:
        return AlertEvaluator(self.cfg, Targets(self.targets), 5, self.store.get_meta(META_KEY))

    def picture(self, ids: Iterable[str], q: Quality, ts: float,
                faults: Sequence[str] = ("signal_lost",)) -> None:
        for cid in ids:
            fs = tuple(Fault(f, 0.99) for f in faults) if q is Quality.DEGRADED else ()
            self.book.record(QualityVerdict(cid, q, ts, faults=fs))

    def run(self, now: float) -> list[Alert]:
        by_id = {c.id: c for c in self.channels}
        index = RateIndex(self.channels)
        intact = intact_rates(index, lambda cid: self.states[cid].state, self.book.quality_of,
                              Targets(self.targets.intact_targets()))
        rates = compute_rates(self.channels, lambda cid: self.states[cid].state,
                              Targets(self.targets))
        out = self.ev.evaluate(now, alert_inputs(by_id, ()), self.states, list(self.states),
                               rates, [], [], QualityInputs(self.book.records,
                                                            self.book.degraded, intact))
        self.store.commit_outbox(out.outbox, now,
                                 {META_KEY: out.state} if out.state is not None else {})
        out.commit()
        return out.events


@pytest.fixture
def store(tmp_path: Path) -> Iterable[SqliteStore]:
    s = SqliteStore(tmp_path / "camwatch.db")
    yield s
    s.close()


QD = {"quality_degraded": {"samples": 3}, "intact_rate_below_target": {"enabled": False}}


def test_quality_degraded_after_n_samples_and_resolved_at_the_first_ok(
        store: SqliteStore) -> None:
    chs = chans(3)
    w = World(store, chs, QD)
    a = chs[0].id
    w.picture([a], Quality.OK, T0)
    assert w.run(T0) == []
    for i in (1, 2):  # two degraded samples: one short of the rule
        w.picture([a], Quality.DEGRADED, T0 + i * H, ("signal_lost", "too_dark"))
        assert w.run(T0 + i * H) == []
    w.picture([a], Quality.DEGRADED, T0 + 3 * H, ("signal_lost", "too_dark"))
    (fired,) = w.run(T0 + 3 * H)
    assert (fired.name, fired.status, fired.severity) == ("quality_degraded", "firing",
                                                          "warning")
    assert fired.starts_at == T0 + H  # the run's first degraded sample
    assert fired.summary == (f"{COUNTY} 城关镇 王庄村 点位「点位0」({a}) 画面异常：信号缺失、"
                             "画面过暗（连续 3 次诊断，自 2027-01-15 17:00，运营商 移动）")
    assert fired.labels["channel"] == a
    assert [f["check"] for f in fired.details["faults"]] == ["signal_lost", "too_dark"]
    assert store.outbox_depth("county_app") == 1
    w.picture([a], Quality.DEGRADED, T0 + 4 * H)
    assert w.run(T0 + 4 * H) == []  # firing already: no repeat
    w.picture([a], Quality.OK, T0 + 5 * H)
    (resolved,) = w.run(T0 + 5 * H)
    assert resolved.status == "resolved" and resolved.ends_at == T0 + 5 * H
    assert resolved.summary.startswith("【已恢复】") and "异常 4小时" in resolved.summary


@pytest.mark.parametrize(("state", "quality", "resolves"), [
    ("offline", Quality.DEGRADED, False),  # offline: channel_offline_long's, not judged here
    ("online", Quality.UNKNOWN, False),  # the sample failed: cannot judge
    ("online", Quality.OK, True),
])
def test_quality_degraded_holds_while_it_cannot_judge(store: SqliteStore, state: str,
                                                      quality: Quality, resolves: bool) -> None:
    chs = chans(2)
    w = World(store, chs, {**QD, "quality_degraded": {"samples": 1}})
    a = chs[0].id
    w.picture([a], Quality.DEGRADED, T0)
    assert [x.status for x in w.run(T0)] == ["firing"]
    w.states[a] = ChannelState(a, state, since=T0 + H)
    w.picture([a], quality, T0 + H)
    assert [x.status for x in w.run(T0 + H)] == (["resolved"] if resolves else [])
    if not resolves:  # and once degraded again, still firing without a second message
        w.states[a] = ChannelState(a, "online", since=T0 + 2 * H)
        w.picture([a], Quality.DEGRADED, T0 + 2 * H)
        assert w.run(T0 + 2 * H) == []
        assert store.outbox_depth() == 1


def test_restart_neither_refires_nor_forgets(store: SqliteStore) -> None:
    """The alert state (meta) and the quality state (quality_state) both come back from the
    store: the degraded run goes on, the alert stays firing, no second message."""
    chs = chans(2)
    w = World(store, chs, QD)
    a = chs[0].id
    for i in range(3):
        w.picture([a], Quality.DEGRADED, T0 + i * H)
    assert [x.status for x in w.run(T0 + 2 * H)] == ["firing"]
    store.write_quality(*w.book.take_writes())
    # a new process: a new book loaded from the store, a new evaluator from the meta
    w.book = QualityBook()
    w.book.swap([c.id for c in chs])
    w.book.load(store.load_quality())
    w.ev = w.new_evaluator()
    w.picture([a], Quality.DEGRADED, T0 + 3 * H)
    rec = w.book.get(a)
    assert rec is not None and (rec.streak, rec.since) == (4, T0)
    assert w.run(T0 + 3 * H) == []
    assert store.outbox_depth() == 1
    w.picture([a], Quality.OK, T0 + 4 * H)
    assert [x.status for x in w.run(T0 + 4 * H)] == ["resolved"]


def test_quality_degraded_ends_as_removed_when_the_channel_leaves(store: SqliteStore) -> None:
    chs = chans(2)
    w = World(store, chs, {**QD, "quality_degraded": {"samples": 1}})
    w.picture([chs[0].id], Quality.DEGRADED, T0)
    assert len(w.run(T0)) == 1
    w.channels = chs[1:]
    (gone,) = w.run(T0 + H)
    assert gone.status == "resolved" and gone.summary.startswith("【已移出台账】")
    assert gone.details["resolution"] == "removed_from_inventory"


IRT = {"quality_degraded": {"enabled": False},
       "intact_rate_below_target": {"for": "1h", "resolve_for": "0s", "scopes": ["county"]}}


def test_intact_rate_below_target_per_scope(store: SqliteStore) -> None:
    """20 class-1 channels: 19 sampled ok and 1 degraded = 95.00 % < 98 %, fires after ``for``
    (1 h); an offline one counts as not intact too; a picture not sampled is left out;
    resolves at target + 0.5 pp."""
    chs = chans(20)
    w = World(store, chs, IRT)
    cids = [c.id for c in chs]
    w.picture(cids[1:], Quality.OK, T0)
    w.picture(cids[:1], Quality.DEGRADED, T0, ("frozen",))
    assert w.run(T0) == []  # pending
    assert w.run(T0 + H - 1) == []
    (fired,) = w.run(T0 + H)
    assert fired.name == "intact_rate_below_target"
    assert fired.labels == {"county": COUNTY, "class": "1"}
    assert fired.summary == (f"{COUNTY} 一类视频监控完好率 95.00%，低于目标 98%"
                             "（完好 19/20，画面异常 1，离线 0）")
    assert fired.details["faults"] == {"frozen": 1}
    # the online rate (100 %) is fine: only the intact alert fires
    assert w.run(T0 + 2 * H) == []
    w.picture(cids[:1], Quality.OK, T0 + 3 * H)
    (resolved,) = w.run(T0 + 3 * H)
    assert resolved.status == "resolved" and "完好 20/20" in resolved.summary


def test_intact_rate_uses_targets_intact(store: SqliteStore) -> None:
    chs = chans(20)
    w = World(store, chs, {**IRT, "intact_rate_below_target": {"for": "0s",
                                                                "scopes": ["county"]}},
              intact={"class": {1: "90%"}})
    cids = [c.id for c in chs]
    w.picture(cids[2:], Quality.OK, T0)
    w.picture(cids[:1], Quality.DEGRADED, T0)  # 18/19 = 94.74 % >= 90 %; cids[1] unsampled
    assert w.run(T0) == []
    w.states[cids[1]] = ChannelState(cids[1], "offline", "timeout", since=T0 + 60)
    w.states[cids[2]] = ChannelState(cids[2], "offline", "timeout", since=T0 + 60)
    # 1 and 2 offline, 0 and 3 degraded: 16/20 = 80 % < 90 %
    w.picture(cids[3:4], Quality.DEGRADED, T0 + 60)
    (fired,) = w.run(T0 + 60)
    assert fired.summary.endswith("完好率 80.00%，低于目标 90%（完好 16/20，画面异常 2，离线 2）")


def test_quality_alert_config_is_validated() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="greater than 0"):
        AlertsConfig.model_validate({"rules": {"quality_degraded": {"samples": 0}}})
    with pytest.raises(ValidationError, match="expected scopes among"):
        AlertsConfig.model_validate({"rules": {"intact_rate_below_target": {
            "scopes": ["province"]}}})
    with pytest.raises(ValidationError, match="unknown field"):
        AlertsConfig.model_validate({"templates": {"quality_degraded": "{nope}"}})
