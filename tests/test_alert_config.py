"""The alerts: section: the example loads, and mistakes are named at load."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from camwatch.config import load_config
from camwatch.rules.alert_config import AlertsConfig, MqttReceiver
from tests.conftest import ROOT


def test_example_alerts_section_loads() -> None:
    cfg = load_config(ROOT / "config.example.yaml").alerts
    assert cfg.rules.rate_below_target.for_ == 900.0
    assert cfg.rules.rate_below_target.hysteresis == pytest.approx(0.005)
    assert cfg.rules.channel_offline_long.after == 86400.0
    assert cfg.rules.clock_drift.threshold == 5.0
    assert {n: r.type for n, r in cfg.receivers.items()} == {
        "county_mqtt": "mqtt", "chengguan_wecom": "wecom", "unicom_dingtalk": "dingtalk",
        "ops_alertmanager": "alertmanager"}
    assert isinstance(cfg.receivers["county_mqtt"], MqttReceiver)
    assert cfg.receivers_for("channel_offline_long",
                             {"township": "城关镇", "operator": "联通"}) == [
        "chengguan_wecom", "unicom_dingtalk"]
    assert cfg.receivers_for("rate_below_target", {"county": "鹿邑县"}) == ["county_mqtt"]


@pytest.mark.parametrize(("doc", "expected"), [
    ({"receivers": {"w": {"type": "wecom", "url": "https://x/?key=k"}}}, "url"),
    ({"receivers": {"w": {"type": "wecom"}}}, "url_env or url_file"),
    ({"receivers": {"w": {"type": "sms", "url_env": "X"}}}, "type"),
    ({"default_receivers": ["nobody"]}, "unknown receiver(s) default_receivers: 'nobody'"),
    ({"routes": [{"match": {"alert": "rate_low"}, "receivers": []}]}, "rate_low"),
    ({"templates": {"rate_below_target": "{scope} {oops}"}}, "unknown field {oops}"),
    ({"templates": {"nope": "x"}}, "nope: expected one of"),
    ({"rules": {"rate_below_target": {"scopes": ["province"]}}}, "province"),
    ({"rules": {"rate_below_target": {"for": 60}}}, "expected a duration"),
    ({"receivers": {"d": {"type": "dingtalk", "url_env": "A", "secret_env": "B",
                          "secret_file": "/x"}}}, "either secret_env or secret_file"),
])
def test_mistakes_are_named(doc: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        AlertsConfig.model_validate(doc)
    assert expected in str(info.value)


def test_defaults_are_the_issue_s() -> None:
    cfg = AlertsConfig()
    rb = cfg.rules.rate_below_target
    assert (rb.for_, rb.resolve_for, rb.hysteresis) == (900.0, 900.0, 0.005)
    assert cfg.rules.channel_offline_long.renotify == 86400.0
    assert cfg.template("rate_below_target").format(
        scope="鹿邑县", what="一类", rate="96.80%", target="98%", online=484,
        connected=500) == "鹿邑县 一类视频监控在线率 96.80%，低于目标 98%（在线 484/500）"
