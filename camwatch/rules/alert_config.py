"""The ``alerts:`` section of the config: rules, message templates, routes and receivers.

Validated once, at load, like the rest of the config: unknown keys are errors, every template
is tried against the fields its alert offers, and every route names receivers that exist.
Webhook URLs, robot keys and MQTT passwords appear by reference only (``*_env`` / ``*_file``);
they are resolved when the dispatcher starts, never stored or logged.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from camwatch.configbase import Duration, Fraction, PositiveInt, _Model
from camwatch.model import SCOPES

ALERT_NAMES = ("rate_below_target", "channel_offline_long", "clock_drift", "mass_outage",
               "prober_unhealthy", "quality_degraded", "intact_rate_below_target")
Severity = Literal["info", "warning", "critical"]

# The fields each alert's templates may use (``str.format`` names); the resolved message of an
# alert sees the same fields, with the values of the moment it resolved.
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "rate_below_target": ("scope", "what", "rate", "target", "online", "connected", "offline",
                          "unknown", "worst", "reasons", "duration"),
    "channel_offline_long": ("channel", "name", "county", "township", "village", "operator",
                             "host", "reason", "since", "duration"),
    "clock_drift": ("channel", "name", "county", "township", "village", "operator", "drift",
                    "threshold", "duration"),
    "mass_outage": ("group", "kind", "cause", "down", "total", "county", "township", "village",
                    "host", "reasons", "duration"),
    "prober_unhealthy": ("problems", "duration"),
    "quality_degraded": ("channel", "name", "county", "township", "village", "operator",
                         "host", "faults", "samples", "since", "duration"),
    "intact_rate_below_target": ("scope", "what", "rate", "target", "intact", "judged",
                                 "not_intact", "degraded", "offline", "worst", "faults",
                                 "duration"),
}

DEFAULT_TEMPLATES: dict[str, str] = {
    "rate_below_target": "{scope} {what}视频监控在线率 {rate}，低于目标 {target}"
                         "（在线 {online}/{connected}）",
    "rate_below_target.resolved": "【已恢复】{scope} {what}视频监控在线率 {rate}，"
                                  "已达到目标 {target}（在线 {online}/{connected}，"
                                  "持续 {duration}）",
    "channel_offline_long": "{county} {township} {village} 点位「{name}」({channel}) "
                            "离线已超过 {duration}（{reason}，运营商 {operator}，自 {since}）",
    "channel_offline_long.resolved": "【已恢复】{county} {township} {village} 点位「{name}」"
                                     "({channel}) 已恢复在线（离线 {duration}）",
    "clock_drift": "{county} {township} 点位「{name}」({channel}) 时钟偏差 {drift}，"
                   "超过 {threshold}",
    "clock_drift.resolved": "【已恢复】{county} {township} 点位「{name}」({channel}) "
                            "时钟偏差 {drift}，已在 {threshold} 以内",
    "mass_outage": "{group} 同时离线 {down}/{total} 路，疑似{cause}",
    "mass_outage.resolved": "【已恢复】{group} 批量离线已恢复（持续 {duration}）",
    "prober_unhealthy": "camwatch 探测服务异常：{problems}",
    "quality_degraded": "{county} {township} {village} 点位「{name}」({channel}) 画面异常："
                        "{faults}（连续 {samples} 次诊断，自 {since}，运营商 {operator}）",
    "quality_degraded.resolved": "【已恢复】{county} {township} {village} 点位「{name}」"
                                 "({channel}) 画面已恢复正常（异常 {duration}）",
    "quality_degraded.removed": "【已移出台账】{county} {township} {village} 点位「{name}」"
                                "({channel}) 已移出台账，画面异常告警结束",
    "intact_rate_below_target": "{scope} {what}视频监控完好率 {rate}，低于目标 {target}"
                                "（完好 {intact}/{judged}，画面异常 {degraded}，离线 {offline}）",
    "intact_rate_below_target.resolved": "【已恢复】{scope} {what}视频监控完好率 {rate}，"
                                         "已达到目标 {target}（完好 {intact}/{judged}，"
                                         "持续 {duration}）",
    "intact_rate_below_target.removed": "【已移出台账】{scope} {what}点位已移出台账，"
                                        "完好率告警结束（持续 {duration}）",
    "prober_unhealthy.resolved": "【已恢复】camwatch 探测服务恢复正常（持续 {duration}）",
    # the subject left the inventory (台账): the alert ends, but nothing recovered
    "channel_offline_long.removed": "【已移出台账】{county} {township} {village} 点位「{name}」"
                                    "({channel}) 已移出台账，告警结束（离线 {duration}）",
    "clock_drift.removed": "【已移出台账】{county} {township} 点位「{name}」({channel}) "
                           "已移出台账，告警结束",
    "mass_outage.removed": "【已移出台账】{group} 的点位已移出台账，批量离线告警结束"
                           "（持续 {duration}）",
    "rate_below_target.removed": "【已移出台账】{scope} {what}点位已移出台账，在线率告警结束"
                                 "（持续 {duration}）",
}


# --- rules ----------------------------------------------------------------------------------


class RateBelowTargetRule(_Model):
    enabled: bool = True
    for_: Duration = Field(default=900.0, alias="for")
    resolve_for: Duration = 900.0
    hysteresis: Fraction = Field(
        default=0.005, description="'0.5%' = resolve only at target + 0.5 percentage points")
    scopes: tuple[str, ...] = Field(
        default=("county", "county/township"),
        description="scopes alerted on, as in the rates: county, county/township, ...")
    severity: Severity = "warning"
    renotify: Duration | None = None
    worst: PositiveInt = 5  # how many worst townships/villages the message lists

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, v: tuple[str, ...]) -> tuple[str, ...]:

        known = {"/".join(s) for s in SCOPES if s}
        bad = [s for s in v if s not in known]
        if bad:
            raise ValueError(f"expected scopes among {', '.join(sorted(known))}, got {bad}")
        return v

    def scope_dims(self) -> set[tuple[str, ...]]:
        return {tuple(s.split("/")) for s in self.scopes}


class ChannelOfflineLongRule(_Model):
    enabled: bool = True
    after: Duration = 86400.0
    renotify: Duration | None = 86400.0
    severity: Severity = "warning"


class ClockDriftRule(_Model):
    enabled: bool = True
    threshold: Duration = 5.0
    severity: Severity = "info"


class MassOutageRule(_Model):
    enabled: bool = True
    min_channels: PositiveInt = 4  # a group smaller than this is never a mass outage
    share: Fraction = 0.8  # this share of the group's connected channels went down together
    window: Duration = Field(
        default=300.0,
        description="'together': went offline within this window (covers a sweep's spread)")
    levels: tuple[Literal["township", "village", "host", "platform"], ...] = (
        "township", "village", "host", "platform")  # platform: a GB/T 28181 lower platform
    severity: Severity = "critical"


class ProberUnhealthyRule(_Model):
    enabled: bool = True
    for_: Duration = Field(default=300.0, alias="for")
    resolve_for: Duration = 300.0
    severity: Severity = "critical"


class QualityDegradedRule(_Model):
    """A channel's picture degraded (画面异常) at ``samples`` consecutive quality samples
    (``quality.interval`` apart: 3 samples = about 2 hours at the default hourly cadence).
    Only with ``quality.enabled``."""

    enabled: bool = True
    samples: PositiveInt = 3
    renotify: Duration | None = None
    severity: Severity = "warning"


class IntactRateBelowTargetRule(RateBelowTargetRule):
    """The 完好率 below ``targets.intact`` (per scope, as rate_below_target). Pictures are
    sampled hourly, so the rate moves slowly: ``for`` and ``resolve_for`` default to 1 h.
    Only with ``quality.enabled``."""

    for_: Duration = Field(default=3600.0, alias="for")
    resolve_for: Duration = 3600.0


class RulesConfig(_Model):
    rate_below_target: RateBelowTargetRule = RateBelowTargetRule()
    channel_offline_long: ChannelOfflineLongRule = ChannelOfflineLongRule()
    clock_drift: ClockDriftRule = ClockDriftRule()
    mass_outage: MassOutageRule = MassOutageRule()
    prober_unhealthy: ProberUnhealthyRule = ProberUnhealthyRule()
    quality_degraded: QualityDegradedRule = QualityDegradedRule()
    intact_rate_below_target: IntactRateBelowTargetRule = IntactRateBelowTargetRule()


# --- routes ---------------------------------------------------------------------------------


def _as_tuple(v: object) -> object:
    if v is None:
        return None
    if isinstance(v, str | int):
        return (v,)
    return v


class RouteMatch(_Model):
    """Every given key must match the alert's label (a list means any of); absent = any."""

    county: Annotated[tuple[str, ...] | None, BeforeValidator(_as_tuple)] = None
    township: Annotated[tuple[str, ...] | None, BeforeValidator(_as_tuple)] = None
    class_: Annotated[tuple[int, ...] | None, BeforeValidator(_as_tuple)] = Field(
        default=None, alias="class")
    project: Annotated[tuple[str, ...] | None, BeforeValidator(_as_tuple)] = None
    operator: Annotated[tuple[str, ...] | None, BeforeValidator(_as_tuple)] = None
    alert: Annotated[tuple[str, ...] | None, BeforeValidator(_as_tuple)] = None

    @field_validator("alert")
    @classmethod
    def _known_alerts(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        bad = [a for a in v or () if a not in ALERT_NAMES]
        if bad:
            raise ValueError(f"expected alert names among {', '.join(ALERT_NAMES)}, got {bad}")
        return v

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        checks: tuple[tuple[tuple[object, ...] | None, str | None], ...] = (
            (self.county, labels.get("county")),
            (self.township, labels.get("township")),
            (tuple(str(c) for c in self.class_) if self.class_ else None, labels.get("class")),
            (self.project, labels.get("project")),
            (self.operator, labels.get("operator")),
            (self.alert, name),
        )
        return all(want is None or got in want for want, got in checks)


class Route(_Model):
    match: RouteMatch = RouteMatch()
    receivers: tuple[str, ...]


# --- receivers ------------------------------------------------------------------------------


from camwatch.sinks.config import (  # noqa: E402  (receivers are the sinks' business)
    AlertmanagerReceiver,
    DeliveryConfig,
    DingtalkReceiver,
    MqttReceiver,
    Receiver,
    WebhookReceiver,
    WecomReceiver,
)

__all__ = ["ALERT_NAMES", "AlertmanagerReceiver", "AlertsConfig", "DeliveryConfig",
           "DingtalkReceiver", "MqttReceiver", "Receiver", "WebhookReceiver", "WecomReceiver"]


class AlertsConfig(_Model):
    enabled: bool = True
    rules: RulesConfig = RulesConfig()
    templates: dict[str, str] = Field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    default_receivers: tuple[str, ...] = ()
    receivers: dict[str, Receiver] = Field(default_factory=dict)
    delivery: DeliveryConfig = DeliveryConfig()

    @field_validator("templates")
    @classmethod
    def _templates_format(cls, v: dict[str, str]) -> dict[str, str]:
        problems = []
        for key, text in v.items():
            name = key.removesuffix(".resolved").removesuffix(".removed")
            if name not in TEMPLATE_FIELDS:
                problems.append(f"{key}: expected one of "
                                f"{', '.join(sorted(DEFAULT_TEMPLATES))}")
                continue
            sample = {f: "x" for f in TEMPLATE_FIELDS[name]}
            try:
                text.format(**sample)
            except KeyError as exc:
                problems.append(f"{key}: unknown field {{{exc.args[0]}}}; expected among "
                                f"{', '.join(TEMPLATE_FIELDS[name])}")
            except (ValueError, IndexError) as exc:
                problems.append(f"{key}: not a valid str.format template: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @model_validator(mode="after")
    def _receivers_exist(self) -> AlertsConfig:
        known = set(self.receivers)
        missing: list[str] = []
        for i, route in enumerate(self.routes):
            missing += [f"routes[{i}]: {r!r}" for r in route.receivers if r not in known]
        missing += [f"default_receivers: {r!r}" for r in self.default_receivers
                    if r not in known]
        if missing:
            names = ", ".join(sorted(known)) or "none defined"
            raise ValueError(f"unknown receiver(s) {'; '.join(missing)}; receivers: {names}")
        return self

    def template(self, key: str) -> str:
        return self.templates.get(key, DEFAULT_TEMPLATES[key])

    def receivers_for(self, name: str, labels: dict[str, str]) -> list[str]:
        """Every matching route's receivers (in config order, once each); the default
        receivers when no route matches."""
        out: list[str] = []
        for route in self.routes:
            if route.match.matches(name, labels):
                out += [r for r in route.receivers if r not in out]
        return out if out else list(self.default_receivers)
