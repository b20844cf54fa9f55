"""Alerts inside a cluster, without processes: which shard an alert's subject lies in
(:class:`~camwatch.cluster.shard.AlertShards`, as a table), and two instances' evaluators over
one store: each alerts only the subjects inside its shards and keeps their state under one
``meta`` key per shard; the instance that takes a shard over starts from that key (an active
alert is not fired again, and resolves when its channel comes back); the instance that gives
a shard up forgets its alerts without a "removed from the inventory" message. The processes
(kill -9, a real webhook receiver) are tests/test_cluster_e2e.py's."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from camwatch.cluster.shard import AlertShards, shard_of
from camwatch.config import TargetsConfig
from camwatch.inventory import Channel
from camwatch.rules.alert_config import AlertsConfig
from camwatch.rules.alerts import (
    META_KEY,
    Alert,
    AlertEvaluator,
    ShardScope,
    alert_inputs,
    shard_meta_key,
)
from camwatch.rules.rates import Targets, compute_rates
from camwatch.store.base import ChannelState, Transition
from camwatch.store.sqlite import SqliteStore

T0 = 1_800_000_000.0
SHARDS = 4


def chan(cid: str, county: str, township: str, host: str = "") -> Channel:
    return Channel(id=cid, name=cid, klass=1, project="雪亮工程", county=county,
                   township=township, village="", operator="移动", installed=True,
                   connected=True, host=host or f"h-{cid}")


def two_townships(by: Any = "township") -> tuple[str, str]:
    """Two townships of 鹿邑县 in two shards (found, not assumed)."""
    names = [f"镇{i}" for i in range(12)]
    first = shard_of(chan("x", "鹿邑县", names[0]), by, SHARDS)
    other = next(n for n in names if shard_of(chan("x", "鹿邑县", n), by, SHARDS) != first)
    return names[0], other


def test_alert_shards_table() -> None:
    t1, t2 = two_townships()
    fleet = [chan("a1", "鹿邑县", t1, "nvr-1"), chan("a2", "鹿邑县", t1, "nvr-1"),
             chan("b1", "鹿邑县", t2, "nvr-2"), chan("c1", "郸城县", t1, "nvr-x"),
             chan("c2", "鹿邑县", t2, "nvr-x")]  # one NVR's channels in two shards
    s1, s2 = shard_of(fleet[0], "township", SHARDS), shard_of(fleet[2], "township", SHARDS)
    m = AlertShards(fleet, "township", SHARDS)
    table: list[tuple[dict[str, str], int | None]] = [
        ({"channel": "a1", "county": "鹿邑县", "township": t1}, s1),
        ({"channel": "b1"}, s2),
        ({"channel": "gone"}, None),  # not in the inventory
        ({"county": "鹿邑县", "township": t1, "class": "1"}, s1),  # a township's rate
        ({"county": "鹿邑县", "township": t2, "operator": "移动"}, s2),
        ({"county": "鹿邑县", "class": "1"}, None),  # a county split by township
        ({"county": "鹿邑县", "township": "无此镇"}, None),
        ({"operator": "移动"}, None),  # above any shard
        ({}, None),  # the site; the prober itself
        ({"level": "host", "group": "nvr-1", "host": "nvr-1", "county": "鹿邑县"}, s1),
        ({"level": "host", "group": "nvr-x", "host": "nvr-x"}, None),  # spans shards
    ]
    for labels, shard in table:
        assert m.of(labels) == shard, labels
    by_county = AlertShards(fleet, "county", SHARDS)
    luyi = shard_of(fleet[0], "county", SHARDS)
    assert by_county.of({"county": "鹿邑县", "class": "1"}) == luyi
    assert by_county.of({"county": "鹿邑县", "township": t2}) == luyi
    assert by_county.of({"county": "郸城县"}) == shard_of(fleet[3], "county", SHARDS)
    assert by_county.of({"operator": "移动"}) is None
    assert m.scope({s1}) == ShardScope(frozenset({s1}), m.of)


def test_only_the_rates_of_scopes_inside_the_owned_shards_are_published() -> None:
    """A county split by township, the site and an operator are partial at every instance:
    publishing them (retained MQTT topics) would let the instances overwrite each other."""
    t1, t2 = two_townships()
    fleet = [chan("a1", "鹿邑县", t1), chan("b1", "鹿邑县", t2)]
    s1 = shard_of(fleet[0], "township", SHARDS)
    rates = compute_rates(fleet, lambda cid: "online", Targets(TargetsConfig()))
    inside = AlertShards(fleet, "township", SHARDS).scope({s1}).inside(rates)
    assert inside and {dict(r.scope).get("township") for r in inside} == {t1}
    assert all(dict(r.scope).get("county") == "鹿邑县" and "township" in dict(r.scope)
               for r in inside)
    assert {r.scope for r in rates if dict(r.scope).get("township") == t1} == \
        {r.scope for r in inside}


CFG = AlertsConfig.model_validate({
    "receivers": {"county_app": {"type": "webhook", "url_env": "X_URL"}},
    "default_receivers": ["county_app"],
    "rules": {"rate_below_target": {"for": "0s", "scopes": ["county", "county/township"]},
              "channel_offline_long": {"after": "1h"},
              "mass_outage": {"enabled": False},
              "prober_unhealthy": {"for": "0s"}}})


class Instance:
    """One cluster member's alert evaluator over the shared store, committed as the daemon's
    evaluator commits (one key per changed shard)."""

    def __init__(self, store: SqliteStore, fleet: list[Channel], owned: Iterable[int],
                 cfg: AlertsConfig | None = None) -> None:
        self.store, self.fleet = store, fleet
        self.shards = AlertShards(fleet, "township", SHARDS)
        self.cfg = cfg or CFG
        self.ev = AlertEvaluator(self.cfg, Targets(TargetsConfig()), 2)
        self.owned: frozenset[int] = frozenset()
        self.own(owned)

    def own(self, owned: Iterable[int]) -> None:
        """Claim and give up shards as ClusterMember.reshard does."""
        owned = frozenset(owned)
        saved = {s: v for s in owned - self.owned
                 if (v := self.store.get_meta(shard_meta_key(s))) is not None}
        self.ev.use_shards(self.shards.scope(owned), saved)
        self.owned = owned

    def run(self, now: float, states: dict[str, ChannelState],
            problems: Iterable[str] = (),
            transitions: Iterable[Transition] = ()) -> list[Alert]:
        mine = [c for c in self.fleet if self.shards.channel[c.id] in self.owned]
        st = {c.id: states[c.id] for c in mine}
        rates = compute_rates(mine, lambda cid: st[cid].state, Targets(TargetsConfig()))
        inputs = alert_inputs({c.id: c for c in mine}, self.cfg.rules.mass_outage.levels)
        out = self.ev.evaluate(now, inputs, st, list(st), rates,
                               [t for t in transitions if t.channel_id in st], list(problems))
        meta = self.ev.shard_state(out.state["alerts"]) if out.state is not None else {}
        self.store.commit_outbox(out.outbox, now, meta)
        out.commit()
        return out.events


@pytest.fixture
def store(tmp_path: Path) -> Iterable[SqliteStore]:
    s = SqliteStore(tmp_path / "camwatch.db")
    yield s
    s.close()


def test_each_instance_alerts_its_shards_and_the_taker_goes_on(store: SqliteStore) -> None:
    t1, t2 = two_townships()
    fleet = [chan(f"a{i}", "鹿邑县", t1) for i in range(4)] + \
            [chan(f"b{i}", "鹿邑县", t2) for i in range(4)]
    s1 = shard_of(fleet[0], "township", SHARDS)
    s2 = shard_of(fleet[4], "township", SHARDS)
    states = {c.id: ChannelState(c.id, "online", since=T0 - 86400) for c in fleet}
    for cid in ("a0", "b0"):
        states[cid] = ChannelState(cid, "offline", "timeout", since=T0 - 7200)
    one, two = Instance(store, fleet, {s1}), Instance(store, fleet, {s2})

    fired1 = one.run(T0, states, problems=["own uplink down"])
    fired2 = two.run(T0, states)
    # each its own channel and its own township's rate (3/4 < 98 %); the county is split
    # over two shards and the prober is an instance's own: neither is alerted on here
    assert sorted((a.name, a.labels.get("channel", a.labels.get("township")))
                  for a in fired1) == [("channel_offline_long", "a0"),
                                       ("rate_below_target", t1)]
    assert sorted((a.name, a.labels.get("channel", a.labels.get("township")))
                  for a in fired2) == [("channel_offline_long", "b0"),
                                       ("rate_below_target", t2)]
    assert store.outbox_depth("county_app") == 4
    assert store.get_meta(META_KEY) is None  # no instance-wide key in a cluster
    saved1 = store.get_meta(shard_meta_key(s1))["alerts"]
    assert {e["labels"].get("channel", e["labels"].get("township")) for e in saved1.values()} \
        == {"a0", t1}
    assert all(e["shard"] == s1 and e["active"] for e in saved1.values())
    assert one.run(T0 + 60, states) == [] and two.run(T0 + 60, states) == []

    # instance one dies; two takes its shard over from the committed key: nothing fires again
    two.own({s1, s2})
    assert two.run(T0 + 120, states) == []
    assert store.outbox_depth("county_app") == 4
    # a0 comes back: the alert two never fired itself resolves, with its first start
    states["a0"] = ChannelState("a0", "online", since=T0 + 150)
    resolved = two.run(T0 + 180, states)
    assert [(a.name, a.status, a.starts_at) for a in resolved if "channel" in a.labels] == \
        [("channel_offline_long", "resolved", T0 - 7200)]
    assert "removal" not in str(resolved[0].details)

    # giving a shard up forgets its alerts, without a "removed from the inventory" message
    two.own({s2})
    assert two.run(T0 + 240, states) == []
    assert store.get_meta(shard_meta_key(s1))["alerts"] != {}  # kept for the next owner
    assert {e["labels"].get("township") for e in two.ev.saved()["alerts"].values()} == {t2}


def test_without_its_key_the_taker_would_fire_again(store: SqliteStore) -> None:
    """The other side: an instance that claims the shard *without* the committed state fires
    the dead owner's active alert again (what the per-shard key prevents)."""
    t1, _ = two_townships()
    fleet = [chan(f"a{i}", "鹿邑县", t1) for i in range(4)]
    s1 = shard_of(fleet[0], "township", SHARDS)
    states = {c.id: ChannelState(c.id, "online", since=T0 - 86400) for c in fleet}
    states["a0"] = ChannelState("a0", "offline", "timeout", since=T0 - 7200)
    assert len(Instance(store, fleet, {s1}).run(T0, states)) == 2
    blank = Instance(store, fleet, set())
    blank.ev.use_shards(blank.shards.scope({s1}), {})  # claimed, its key not read
    blank.owned = frozenset({s1})
    assert len(blank.run(T0 + 60, states)) == 2


def test_a_township_outage_is_its_owners_and_a_split_host_nobodys(store: SqliteStore) -> None:
    """mass_outage by township and by host: the instance owning the township alerts it once;
    an NVR whose channels lie in two shards is seen in part by each owner, so neither alerts
    it (the township outage covers its channels there)."""
    t1, t2 = two_townships()
    fleet = [chan(f"a{i}", "鹿邑县", t1, "nvr-a") for i in range(6)] + \
            [chan(f"x{i}", "鹿邑县", t1 if i < 3 else t2, "nvr-x") for i in range(6)] + \
            [chan(f"b{i}", "鹿邑县", t2, "nvr-b") for i in range(6)]
    s1 = shard_of(fleet[0], "township", SHARDS)
    s2 = shard_of(fleet[-1], "township", SHARDS)
    cfg = AlertsConfig.model_validate({
        "receivers": {"county_app": {"type": "webhook", "url_env": "X_URL"}},
        "default_receivers": ["county_app"],
        "rules": {"rate_below_target": {"enabled": False},
                  "channel_offline_long": {"enabled": False},
                  "prober_unhealthy": {"enabled": False},
                  "mass_outage": {"levels": ["township", "host"], "min_channels": 3}}})
    states = {c.id: ChannelState(c.id, "online", since=T0 - 86400) for c in fleet}
    down = [c.id for c in fleet if c.township == t1]  # 鹿邑县 t1 goes dark: nvr-a, half nvr-x
    trans = [Transition(cid, T0, "online", "offline", "timeout") for cid in down]
    for cid in down:
        states[cid] = ChannelState(cid, "offline", "timeout", since=T0)
    one = Instance(store, fleet, {s1}, cfg)
    two = Instance(store, fleet, {s2}, cfg)
    fired = one.run(T0 + 10, states, transitions=trans)
    assert [(a.labels["level"], a.labels["group"]) for a in fired] == \
        [("township", f"鹿邑县/{t1}")]
    assert two.run(T0 + 10, states, transitions=trans) == []
    # nvr-x alone (its t2 half down too, at the owner of t2): not inside one shard, not alerted
    x_t2 = [c.id for c in fleet if c.host == "nvr-x" and c.township == t2]
    for cid in x_t2:
        states[cid] = ChannelState(cid, "offline", "timeout", since=T0 + 20)
    assert two.run(T0 + 30, states, transitions=[
        Transition(cid, T0 + 20, "online", "offline", "timeout") for cid in x_t2]) == []
    assert AlertShards(fleet, "township", SHARDS).of({"host": "nvr-x"}) is None
    saved = store.get_meta(shard_meta_key(s1))["alerts"]
    assert [e["labels"]["level"] for e in saved.values()] == ["township"]
