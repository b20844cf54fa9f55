"""Alert rule evaluation, table by table, with the clock passed in (never slept on)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from camwatch.config import TargetsConfig
from camwatch.inventory import Channel
from camwatch.rules.alert_config import AlertsConfig
from camwatch.rules.alerts import META_KEY, Alert, AlertEvaluator, alert_inputs, fingerprint
from camwatch.rules.rates import Targets, compute_rates
from camwatch.store.base import ChannelState, Transition
from camwatch.store.sqlite import SqliteStore

T0 = 1_800_000_000.0
COUNTY = "鹿邑县"


def chans(n: int, *, township: str = "城关镇", village: str = "王庄村", host: str = "",
          klass: int = 1, project: str = "雪亮工程", prefix: str = "c",
          operator: str = "移动") -> list[Channel]:
    return [Channel(id=f"{prefix}{i:05d}", name=f"点位{i}", klass=klass, project=project,
                    county=COUNTY, township=township, village=village, operator=operator,
                    installed=True, connected=True, host=host or f"h-{prefix}{i}")
            for i in range(n)]


class World:
    """Channels, their states and an evaluator over one store, for driving the rules."""

    def __init__(self, store: SqliteStore, channels: list[Channel], cfg: dict[str, Any],
                 min_channels: int = 10) -> None:
        self.store = store
        self.channels = channels
        self.cfg = AlertsConfig.model_validate(cfg)
        self.targets = Targets(TargetsConfig())
        self.min_channels = min_channels
        self.states = {c.id: ChannelState(c.id, "online", since=T0 - 86400 * 30)
                       for c in channels}
        self.ev = self.new_evaluator()

    def new_evaluator(self) -> AlertEvaluator:
        return AlertEvaluator(self.cfg, self.targets, self.min_channels,
                              self.store.get_meta(META_KEY))

    def set(self, ids: Iterable[str], state: str, since: float, reason: str | None = None
            ) -> list[Transition]:
        out = []
        for cid in ids:
            old = self.states[cid]
            out.append(Transition(cid, since, old.state, state, reason))
            self.states[cid] = ChannelState(cid, state, reason=reason, since=since)
        return out

    def run(self, now: float, transitions: Sequence[Transition] = (),
            problems: Sequence[str] = ()) -> list[Alert]:
        """One evaluation committed as the daemon's evaluator does: outbox items and state in
        one transaction, then the draft. Every channel is a candidate."""
        rates = compute_rates(self.channels, lambda cid: self.states[cid].state, self.targets)
        inputs = alert_inputs({c.id: c for c in self.channels},
                              self.cfg.rules.mass_outage.levels)
        out = self.ev.evaluate(now, inputs, self.states, list(self.states), rates, transitions,
                               problems)
        self.store.commit_outbox(out.outbox, now,
                                 {META_KEY: out.state} if out.state is not None else {})
        out.commit()
        return out.events


BASE: dict[str, Any] = {
    "receivers": {"county_app": {"type": "webhook", "url_env": "X_URL"}},
    "default_receivers": ["county_app"],
}


def cfg(**rules: Any) -> dict[str, Any]:
    return {**BASE, "rules": rules}


@pytest.fixture
def store(tmp_path: Path) -> Iterable[SqliteStore]:
    s = SqliteStore(tmp_path / "camwatch.db")
    yield s
    s.close()


def ids(chs: Sequence[Channel]) -> list[str]:
    return [c.id for c in chs]


# --- rate_below_target --------------------------------------------------------------------------

COUNTY_ONLY = {"rate_below_target": {"scopes": ["county"]}}


def test_rate_fires_once_after_for_with_the_chinese_summary(store: SqliteStore) -> None:
    chs = chans(500)
    w = World(store, chs, cfg(**COUNTY_ONLY))
    assert w.run(T0) == []
    w.set(ids(chs[:16]), "offline", T0, "timeout")
    assert w.run(T0) == []  # pending
    assert w.run(T0 + 899) == []  # one side of ``for``
    fired = w.run(T0 + 900)  # the other side
    assert [a.name for a in fired] == ["rate_below_target"]
    alert = fired[0]
    assert alert.status == "firing" and alert.severity == "warning"
    assert alert.summary == "鹿邑县 一类视频监控在线率 96.80%，低于目标 98%（在线 484/500）"
    assert alert.labels == {"county": COUNTY, "class": "1"}
    assert alert.starts_at == T0
    assert alert.details["reasons"] == {"timeout": 16}
    assert store.outbox_depth("county_app") == 1
    item = store.due("county_app", T0 + 900)[0]
    assert item.fingerprint == alert.fingerprint and item.payload["summary"] == alert.summary
    assert w.run(T0 + 960) == []  # no repeats
    assert store.outbox_depth() == 1
    assert [a.name for a in w.run(T0 + 86400)] == ["channel_offline_long"] * 16


def test_rate_resolves_only_above_hysteresis_for_resolve_for(store: SqliteStore) -> None:
    chs = chans(500)
    w = World(store, chs, cfg(**COUNTY_ONLY))
    w.set(ids(chs[:16]), "offline", T0, "timeout")
    w.run(T0)
    (fired,) = w.run(T0 + 900)
    # 490/500 = 98.00 %: at target, but not target + 0.5 pp: stays firing
    w.set(ids(chs[:6]), "online", T0 + 1000)
    for t in (1000, 2000, 5000):
        assert w.run(T0 + t) == []
    # 493/500 = 98.60 %: resolving starts
    w.set(ids(chs[6:9]), "online", T0 + 6000)
    assert w.run(T0 + 6000) == []
    # a dip back under target resets the resolve timer
    w.set(ids(chs[:10]), "offline", T0 + 6500, "refused")
    assert w.run(T0 + 6500) == []
    w.set(ids(chs[:10]), "online", T0 + 6600)
    assert w.run(T0 + 6600) == []
    assert w.run(T0 + 6600 + 899) == []
    (resolved,) = w.run(T0 + 6600 + 900)
    assert resolved.status == "resolved" and resolved.fingerprint == fired.fingerprint
    assert resolved.ends_at == T0 + 7500 and resolved.starts_at == T0
    assert resolved.summary.startswith("【已恢复】鹿邑县 一类视频监控在线率 98.80%")
    assert "（在线 494/500，持续 2小时5分钟）" in resolved.summary
    assert w.run(T0 + 9000) == []
    assert store.outbox_depth("county_app") == 2


def test_pending_is_dropped_when_the_rate_recovers_before_for(store: SqliteStore) -> None:
    chs = chans(100)
    w = World(store, chs, cfg(**COUNTY_ONLY))
    w.set(ids(chs[:5]), "offline", T0, "timeout")
    assert w.run(T0) == []
    w.set(ids(chs[:5]), "online", T0 + 600)
    assert w.run(T0 + 600) == []
    w.set(ids(chs[:5]), "offline", T0 + 700, "timeout")
    assert w.run(T0 + 700) == []
    assert w.run(T0 + 900) == []  # the first pending period was forgotten
    assert w.run(T0 + 700 + 899) == []
    assert [a.status for a in w.run(T0 + 700 + 900)] == ["firing"]


@pytest.mark.parametrize(("n", "fires"), [(9, False), (10, True)])
def test_min_channels(store: SqliteStore, n: int, fires: bool) -> None:
    chs = chans(n)
    w = World(store, chs, cfg(**COUNTY_ONLY), min_channels=10)
    w.set(ids(chs), "offline", T0, "timeout")
    w.run(T0)
    got = w.run(T0 + 3600)
    assert [a.name for a in got] == (["rate_below_target"] if fires else [])


def test_unknown_channels_do_not_count_toward_min_channels(store: SqliteStore) -> None:
    chs = chans(12)
    w = World(store, chs, cfg(**COUNTY_ONLY), min_channels=10)
    w.set(ids(chs[:3]), "unknown", T0)
    w.set(ids(chs[3:6]), "offline", T0, "timeout")
    w.run(T0)
    assert w.run(T0 + 3600) == []  # 9 judged channels: reported, not alerted on


def test_project_target_and_township_scope_with_worst_villages(store: SqliteStore) -> None:
    a = chans(20, township="城关镇", village="东村", project="智慧小区", klass=2, prefix="a")
    b = chans(20, township="城关镇", village="西村", project="智慧小区", klass=2, prefix="b")
    w = World(store, a + b, cfg(rate_below_target={"scopes": ["county/township"],
                                                   "for": "0s"}))
    w.set(ids(a[:1]), "offline", T0, "auth")  # 39/40 = 97.5 % < 98 % (project), > 95 % (class 2)
    (alert,) = w.run(T0)
    assert alert.labels == {"county": COUNTY, "township": "城关镇", "project": "智慧小区"}
    assert alert.summary == ("鹿邑县 城关镇 智慧小区视频监控在线率 97.50%，"
                             "低于目标 98%（在线 39/40）")
    assert [x["name"] for x in alert.details["worst"]] == ["东村", "西村"]
    assert any("认证失败 1" in n for n in alert.details["notes"])


def test_restart_neither_refires_nor_loses(store: SqliteStore) -> None:
    chs = chans(200)
    w = World(store, chs, cfg(**COUNTY_ONLY, clock_drift={"threshold": "5s"}))
    w.set(ids(chs[:10]), "offline", T0, "timeout")  # 95 % class 1
    w.run(T0)
    (fired,) = w.run(T0 + 900)
    w.ev = w.new_evaluator()  # restart: active alert loaded
    assert w.run(T0 + 960) == []
    assert store.outbox_depth() == 1
    # a pending alert survives a restart too
    w.states[chs[50].id].clock_drift_s = 30.0
    w.cfg = AlertsConfig.model_validate(cfg(**COUNTY_ONLY))
    w.ev = w.new_evaluator()
    (drift,) = w.run(T0 + 1000)
    assert drift.name == "clock_drift"
    w.set(ids(chs[:10]), "online", T0 + 2000)
    assert w.run(T0 + 2000) == []
    w.ev = w.new_evaluator()  # restart while resolving
    assert w.run(T0 + 2000 + 899) == []
    (resolved,) = w.run(T0 + 2000 + 900)
    assert resolved.fingerprint == fired.fingerprint and resolved.status == "resolved"


def test_pending_survives_restart(store: SqliteStore) -> None:
    chs = chans(100)
    w = World(store, chs, cfg(**COUNTY_ONLY))
    w.set(ids(chs[:10]), "offline", T0, "timeout")
    w.run(T0)
    w.ev = w.new_evaluator()
    assert w.run(T0 + 899) == []
    (alert,) = w.run(T0 + 900)
    assert alert.starts_at == T0


def test_fingerprint_is_stable() -> None:
    assert fingerprint("rate_below_target", [[["county", COUNTY]], 1, None]) == \
        fingerprint("rate_below_target", [[["county", COUNTY]], 1, None])
    assert fingerprint("a", [1]) != fingerprint("b", [1])


# --- channel_offline_long -----------------------------------------------------------------------

OFF_ONLY = {"rate_below_target": {"enabled": False}, "mass_outage": {"enabled": False}}


def test_channel_offline_long_both_sides_and_daily_renotify(store: SqliteStore) -> None:
    chs = chans(3)
    w = World(store, chs, cfg(**OFF_ONLY))
    w.set([chs[0].id], "offline", T0, "timeout")
    assert w.run(T0 + 86399) == []
    (a,) = w.run(T0 + 86400)
    assert a.name == "channel_offline_long" and a.labels["channel"] == chs[0].id
    assert a.labels["operator"] == "移动" and a.labels["township"] == "城关镇"
    assert "离线已超过 1天" in a.summary and a.starts_at == T0
    assert w.run(T0 + 86400 * 2 - 1) == []
    (again,) = w.run(T0 + 86400 * 2)
    assert again.fingerprint == a.fingerprint and again.status == "firing"
    w.set([chs[0].id], "online", T0 + 86400 * 2 + 10)
    (res,) = w.run(T0 + 86400 * 2 + 10)
    assert res.status == "resolved" and res.fingerprint == a.fingerprint
    assert "2天" in res.summary


def test_a_channel_leaving_the_inventory_ends_its_alert_as_removed(store: SqliteStore) -> None:
    """Taken out of the ledger while offline: the alert ends, saying so, never "已恢复"."""
    chs = chans(3)
    w = World(store, chs, cfg(**OFF_ONLY))
    w.set([chs[0].id], "offline", T0, "timeout")
    (a,) = w.run(T0 + 86400)
    w.channels = chs[1:]  # a reload without it
    del w.states[chs[0].id]
    (end,) = w.run(T0 + 86400 + 60)
    assert (end.status, end.fingerprint) == ("resolved", a.fingerprint)
    assert "已移出台账" in end.summary and "恢复" not in end.summary
    assert end.details["resolution"] == "removed_from_inventory"
    assert w.run(T0 + 86400 + 120) == []  # once


def test_a_township_leaving_the_inventory_ends_its_rate_alert_as_removed(
        store: SqliteStore) -> None:
    town = chans(20, township="玄武镇", prefix="x")
    rest = chans(20, prefix="y")
    w = World(store, town + rest, cfg(rate_below_target={"scopes": ["county/township"],
                                                        "for": "0s"},
                                      mass_outage={"enabled": False},
                                      channel_offline_long={"enabled": False}))
    w.set(ids(town[:10]), "offline", T0, "refused")
    fired = w.run(T0)
    assert [(a.name, a.labels.get("township")) for a in fired] == [("rate_below_target",
                                                                    "玄武镇")]
    w.channels = rest
    for c in town:
        del w.states[c.id]
    (end,) = w.run(T0 + 60)
    assert end.status == "resolved" and "已移出台账" in end.summary


def test_channel_going_unknown_keeps_its_alert(store: SqliteStore) -> None:
    chs = chans(2)
    w = World(store, chs, cfg(**OFF_ONLY))
    w.set([chs[0].id], "offline", T0, "timeout")
    w.run(T0 + 86400)
    w.set([chs[0].id], "unknown", T0 + 86500)
    assert w.run(T0 + 86500) == []  # the prober cannot judge: neither resolved nor renotified


# --- clock_drift, prober_unhealthy --------------------------------------------------------------

@pytest.mark.parametrize(("drift", "fires"), [(5.0, False), (-5.0, False), (5.1, True),
                                              (-30.0, True)])
def test_clock_drift_threshold(store: SqliteStore, drift: float, fires: bool) -> None:
    chs = chans(1)
    w = World(store, chs, cfg(**OFF_ONLY))
    w.states[chs[0].id].clock_drift_s = drift
    got = w.run(T0)
    assert [a.name for a in got] == (["clock_drift"] if fires else [])
    if fires:
        w.states[chs[0].id].clock_drift_s = 0.5
        assert [a.status for a in w.run(T0 + 3600)] == ["resolved"]


def test_clock_drift_is_one_alert_per_device(store: SqliteStore) -> None:
    nvr = chans(8, host="nvr-clock", prefix="d")  # the NVR's channels share its clock
    w = World(store, nvr + chans(1, prefix="x"), cfg(**OFF_ONLY))
    for ch in nvr:
        w.states[ch.id].clock_drift_s = 42.0
    got = w.run(T0)
    assert [a.name for a in got] == ["clock_drift"]


def test_prober_unhealthy_for(store: SqliteStore) -> None:
    w = World(store, chans(1), cfg(**OFF_ONLY))
    assert w.run(T0, problems=["sweep overran: 95s > 60s"]) == []
    assert w.run(T0 + 299, problems=["sweep overran: 97s > 60s"]) == []
    (a,) = w.run(T0 + 300, problems=["sweep overran: 97s > 60s"])
    assert a.severity == "critical" and "sweep overran" in a.summary
    assert w.run(T0 + 400) == []
    (r,) = w.run(T0 + 700)
    assert r.status == "resolved" and r.fingerprint == a.fingerprint


# --- mass_outage --------------------------------------------------------------------------------

MASS = {"rate_below_target": {"enabled": False}}


def test_nvr_down_is_one_alert_and_covers_its_channels(store: SqliteStore) -> None:
    nvr = chans(8, host="10.1.2.3", prefix="n")
    rest = chans(40, prefix="r")  # same village, other hosts: the host is the incident
    w = World(store, nvr + rest, cfg(**MASS))
    tr = w.set(ids(nvr), "offline", T0, "timeout")
    (a,) = w.run(T0, tr)
    assert a.name == "mass_outage" and a.labels["level"] == "host"
    assert a.labels["host"] == "10.1.2.3" and a.labels["township"] == "城关镇"
    assert "主机 10.1.2.3（鹿邑县 城关镇 王庄村） 同时离线 8/8 路" in a.summary
    assert "NVR" in a.summary
    assert w.run(T0 + 60) == []
    # a day later the covered channels do not page one by one
    assert w.run(T0 + 86400 + 60) == []
    # the NVR comes back: one resolved message
    w.set(ids(nvr), "online", T0 + 90000)
    (r,) = w.run(T0 + 90000)
    assert r.status == "resolved" and r.fingerprint == a.fingerprint


def test_township_outage_is_one_alert_not_one_per_village_or_host(store: SqliteStore) -> None:
    town = (chans(6, village="东村", host="nvr-east", prefix="e")
            + chans(6, village="西村", host="nvr-west", prefix="w")
            + chans(6, village="南村", host="nvr-south", prefix="s"))
    other = chans(30, township="王皮溜镇", village="李村", host="nvr-li", prefix="o")
    w = World(store, town + other, cfg(**MASS))
    tr = w.set(ids(town), "offline", T0, "unreachable")
    got = w.run(T0, tr)
    assert [(a.name, a.labels["level"]) for a in got] == [("mass_outage", "township")]
    assert got[0].labels["township"] == "城关镇"
    assert "汇聚链路" in got[0].summary


def test_outage_counts_channels_down_within_the_window(store: SqliteStore) -> None:
    nvr = chans(10, host="nvr", prefix="n")
    w = World(store, nvr, cfg(**MASS, mass_outage={"levels": ["host"], "window": "5m"}))
    tr1 = w.set(ids(nvr[:5]), "offline", T0, "timeout")
    assert w.run(T0, tr1) == []
    tr2 = w.set(ids(nvr[5:8]), "offline", T0 + 60, "timeout")
    # two sweeps inside the window: 8/10 went down together, one incident
    (a,) = w.run(T0 + 60, tr2)
    assert a.name == "mass_outage" and a.details["down"] == 8


def test_slow_decay_is_not_a_mass_outage(store: SqliteStore) -> None:
    nvr = chans(10, host="nvr", prefix="n")
    w = World(store, nvr, cfg(**MASS, mass_outage={"levels": ["host"], "window": "5m"}))
    for i in range(9):
        tr = w.set([nvr[i].id], "offline", T0 + i * 3600, "timeout")
        assert w.run(T0 + i * 3600, tr) == []


@pytest.mark.parametrize(("down", "fires", "first"),
                         [(7, False, True), (8, True, True), (7, False, False), (8, True, False)])
def test_outage_share(store: SqliteStore, down: int, fires: bool, first: bool) -> None:
    """``first``: the group's offline members come first in it, or last (the rule gives a
    group up as soon as too few members can be offline: the online ones met first)."""
    nvr = chans(10, host="nvr", prefix="n")
    w = World(store, nvr, cfg(**MASS, mass_outage={"levels": ["host"], "share": "80%"}))
    tr = w.set(ids(nvr[:down] if first else nvr[-down:]), "offline", T0, "timeout")
    assert [a.name for a in w.run(T0, tr)] == (["mass_outage"] if fires else [])


def test_small_group_is_never_a_mass_outage(store: SqliteStore) -> None:
    nvr = chans(3, host="nvr", prefix="n")
    w = World(store, nvr, cfg(**MASS, mass_outage={"levels": ["host"], "min_channels": 4}))
    tr = w.set(ids(nvr), "offline", T0, "timeout")
    assert w.run(T0, tr) == []


# --- routing ------------------------------------------------------------------------------------

def test_routes_and_default_receiver(store: SqliteStore) -> None:
    chs = (chans(20, township="城关镇", prefix="a", operator="移动")
           + chans(20, township="王皮溜镇", prefix="b", operator="联通"))
    conf = {
        "receivers": {
            "county": {"type": "webhook", "url_env": "A"},
            "chengguan": {"type": "wecom", "url_env": "B"},
            "unicom": {"type": "dingtalk", "url_env": "C"},
            "ops": {"type": "alertmanager", "url_env": "D"},
        },
        "routes": [
            {"match": {"township": "城关镇"}, "receivers": ["chengguan"]},
            {"match": {"operator": "联通", "alert": "channel_offline_long"},
             "receivers": ["unicom"]},
            {"match": {"alert": ["prober_unhealthy", "mass_outage"]}, "receivers": ["ops"]},
        ],
        "default_receivers": ["county"],
        "rules": {"rate_below_target": {"enabled": False}, "mass_outage": {"enabled": False}},
    }
    w = World(store, chs, conf)
    w.set([chs[0].id, chs[25].id], "offline", T0, "timeout")
    got = w.run(T0 + 86400, problems=[])
    assert len(got) == 2
    assert store.outbox_depth("chengguan") == 1
    assert store.outbox_depth("unicom") == 1
    assert store.outbox_depth("county") == 0
    assert w.cfg.receivers_for("rate_below_target", {"county": COUNTY}) == ["county"]
    assert w.cfg.receivers_for("mass_outage", {"township": "城关镇"}) == ["chengguan", "ops"]
    assert w.cfg.receivers_for("rate_below_target", {"class": "1"}) == ["county"]
