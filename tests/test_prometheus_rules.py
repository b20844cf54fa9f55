"""The Prometheus rules and example config under ``deploy/prometheus`` pass a real promtool
(check + unit tests), and every alert carries what an on-call person needs: a ``for:``, a
severity, a summary, a description, a runbook link to a section that exists, and a promtool
test on both sides of its ``for:`` window."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, need_binary

PROM = ROOT / "deploy" / "prometheus"
RULES = sorted((PROM / "rules").glob("*.yaml"))
TESTS = sorted((PROM / "tests").glob("*.yaml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
# the alerts about camwatch itself: routed to whoever runs it, whatever their scope
OPS_ALERTS = {"CamwatchDown", "CamwatchSweepLagging", "CamwatchProberUnhealthy",
              "CamwatchStoreWritesFailing", "CamwatchShardUnowned", "CamwatchQualityLagging"}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need_binary("promtool"), *map(str, args)], cwd=PROM,
                          capture_output=True, text=True, timeout=120)


def alerts() -> list[dict[str, Any]]:
    out = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text("utf-8"))["groups"]:
            out += [r for r in group["rules"] if "alert" in r]
    return out


def duration_s(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", text))


@pytest.mark.peer
def test_promtool_check_rules_and_config() -> None:
    assert RULES and TESTS
    out = promtool("check", "rules", *RULES)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 11 rules found" in out.stdout  # the alerts file; lint clean
    out = promtool("check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.peer
def test_promtool_unit_tests() -> None:
    out = promtool("test", "rules", *TESTS)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(TESTS), out.stdout + out.stderr


@pytest.mark.peer
def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests would notice a changed threshold: one less minute of ``for:``."""
    broken = tmp_path / "rules"
    broken.mkdir()
    for path in RULES:
        text = path.read_text("utf-8").replace("for: 15m", "for: 14m")
        (broken / path.name).write_text(text, encoding="utf-8")
    (tmp_path / "tests").mkdir()
    test = PROM / "tests" / "camwatch-alerts.test.yaml"
    (tmp_path / "tests" / test.name).write_text(test.read_text("utf-8"), encoding="utf-8")
    out = subprocess.run([need_binary("promtool"), "test", "rules", f"tests/{test.name}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "alertname: CamwatchOnlineRateBelowTarget, time: 24m" in out.stdout + out.stderr


def test_every_alert_is_complete_and_has_a_runbook_section() -> None:
    sections = {re.sub(r"[^a-z0-9]", "", m.lower())
                for m in re.findall(r"^## (.+)$", RUNBOOK.read_text("utf-8"), re.M)}
    names = set()
    for rule in alerts():
        name = rule["alert"]
        names.add(name)
        assert duration_s(rule.get("for", "")) > 0, name
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), name
        ann = rule["annotations"]
        assert ann["summary"].strip() and ann["description"].strip(), name
        anchor = ann["runbook_url"].rsplit("#", 1)[1]
        assert ann["runbook_url"].split("#")[0].endswith("docs/runbook.md"), name
        assert anchor == name.lower() and anchor in sections, name
    assert names == {"CamwatchOnlineRateBelowTarget", "CamwatchDown", "CamwatchSweepLagging",
                     "CamwatchProberUnhealthy", "CamwatchStoreWritesFailing",
                     "CamwatchShardUnowned", "CamwatchIntactRateBelowTarget",
                     "CamwatchQualityLagging"}


def test_every_alert_is_tested_on_both_sides_of_its_for_window() -> None:
    window = {r["alert"]: duration_s(r["for"]) for r in alerts()}
    quiet: dict[str, set[int]] = {}
    firing: dict[str, set[int]] = {}
    for path in TESTS:
        for case in yaml.safe_load(path.read_text("utf-8"))["tests"]:
            for t in case.get("alert_rule_test", []):
                bucket = firing if t.get("exp_alerts") else quiet
                bucket.setdefault(t["alertname"], set()).add(duration_s(t["eval_time"]))
    for name, for_s in window.items():
        assert name in firing and name in quiet, f"{name}: needs a firing and a quiet case"
        # some quiet evaluation exactly one step (1m) before a firing one
        assert any(f - 60 in quiet[name] for f in firing[name]), name
        assert for_s >= 300, name


def _expected_alerts() -> list[dict[str, str]]:
    """The label sets the promtool tests expect the rules to fire with."""
    out = []
    for path in TESTS:
        for case in yaml.safe_load(path.read_text("utf-8"))["tests"]:
            for t in case.get("alert_rule_test", []):
                out += [{"alertname": t["alertname"], **{k: str(v) for k, v in
                                                         a["exp_labels"].items()}}
                        for a in t.get("exp_alerts") or []]
    return out


def _desk(labels: dict[str, str]) -> str:
    if labels["alertname"] in OPS_ALERTS:
        return "camwatch-ops"
    level = labels.get("level")
    if level == "city":
        return "zhoukou-city-ops" if labels.get("city") == "周口市" else "city-ops"
    return {"province": "province-ops", None: "county-ops"}[level]


@pytest.mark.peer
def test_alertmanager_routes_each_scope_to_its_desk() -> None:
    """The example Alertmanager config is valid and routes every alert the rules fire (with
    the labels the promtool tests expect of them) by its ``level``: the city's and the
    province's alerts to their desks, the county's to the county, camwatch's own health to
    its operators."""
    amtool = need_binary("amtool")
    out = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    alerts = _expected_alerts()
    desks = set()
    for labels in alerts:
        desk = _desk(labels)
        desks.add(desk)
        out = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}",
             f"--verify.receivers={desk}", *(f"{k}={v}" for k, v in sorted(labels.items()))],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (labels, out.stdout + out.stderr)
    assert desks == {"camwatch-ops", "county-ops", "city-ops", "zhoukou-city-ops",
                     "province-ops"}, desks
