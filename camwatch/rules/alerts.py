"""Alert rules, evaluated by the daemon after every sweep.

:class:`AlertEvaluator` looks at the current channels, states and rates (the same
:class:`~camwatch.rules.rates.RateRow` objects reports use: one rate definition), keeps for each
alert a small state machine (pending -> firing -> resolving -> resolved) and, for every alert
that changed, enqueues one outbox item per receiver it routes to. The outbox delivers.

Every rule turns what it sees into *observations* keyed by a stable fingerprint:

- ``bad``: the condition holds (a pending alert waits ``for``, a firing one stays firing);
- ``between``: not bad, but not good enough to resolve (rate under target + hysteresis);
- ``good``: the condition is over (a firing alert resolves after ``resolve_for``);
- ``nodata``: cannot judge (scope under ``min_channels``, channel ``unknown``, channel covered
  by a mass outage): timers neither start, advance nor reset.

A firing alert the rule no longer mentions is ``good`` (a channel that is online again), or
*removed* when its subject left the inventory (台账): it ends with a "已移出台账" message, never
with "已恢复".

Evaluation is two-phase and does no I/O: :meth:`AlertEvaluator.evaluate` works on a draft of
the alert state and returns an :class:`Outcome` (the events, their outbox items, the state to
save); the caller writes the items and the state in one transaction and only then calls
:meth:`Outcome.commit`. A failed write leaves the evaluator as it was, so the next evaluation
fires the same alerts again: nothing is lost, nothing is marked sent that was not written.
Time comes only from the ``now`` argument: the rules are testable without sleeping.

Cost follows the changes, not the fleet: the channel rules look only at the *candidate*
channels the caller names (offline ones, changed ones), the mass-outage groups are built once
per inventory (:func:`alert_inputs`), and a message's details are built only when it is sent.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, Literal, Protocol

import structlog

from camwatch.inventory import Channel
from camwatch.localtime import CST as _CST
from camwatch.localtime import format_time, local_zone
from camwatch.model import CLASS_NAMES, ChannelState, State, Transition, reason_zh
from camwatch.quality.names import CHECK_ZH
from camwatch.rules.alert_config import AlertsConfig, RateBelowTargetRule
from camwatch.rules.rates import RateRow, Targets, format_rate

log = structlog.get_logger(__name__)

META_KEY = "alerts.evaluator.v1"


def shard_meta_key(shard: int) -> str:
    """In a cluster, each shard's alert state is a ``meta`` key of its own
    (``alerts.evaluator.v1.shard.3``): the instance that owns the shard writes it, the next
    owner starts from it (docs/scale-out.md, Alerts in a cluster)."""
    return f"{META_KEY}.shard.{shard}"


@dataclass(frozen=True, slots=True)
class ShardScope:
    """What an instance of a cluster alerts on: the subjects (a channel, a township, a host,
    a rate's scope) that lie inside one of the shards it owns. ``of`` maps an alert's labels
    to its shard, or None when the subject spans shards (a county split by township, the
    whole site, an operator across counties, the prober itself): those are Prometheus'."""

    owned: frozenset[int]
    of: Callable[[Mapping[str, str]], int | None]

    def inside(self, rows: Sequence[RateRow]) -> list[RateRow]:
        """The rate rows of scopes inside the owned shards: what this instance may publish
        as a scope's rate (retained MQTT topics), where another instance's part of the same
        scope would otherwise overwrite it."""
        owned, of = self.owned, self.of
        return [r for r in rows if (s := of(dict(r.scope))) is not None and s in owned]

_LEVEL_NAMES = {"township": "乡镇", "village": "村", "host": "主机", "platform": "下级平台"}

Status = Literal["bad", "between", "good", "nodata"]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert event: it started firing, fired again (re-notification), or resolved.

    ``fingerprint`` is the same for every event of one alert (and across restarts), so
    receivers can de-duplicate the at-least-once deliveries of the outbox.
    """

    name: str
    fingerprint: str
    severity: str
    status: Literal["firing", "resolved"]
    starts_at: float
    ends_at: float | None
    labels: dict[str, str]
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    timezone: str = "Asia/Shanghai"  # report.timezone: how receivers show the times

    def as_payload(self) -> dict[str, Any]:
        """The outbox payload (JSON); the sinks render it for their receiver."""
        return {
            "version": 1,
            "name": self.name,
            "fingerprint": self.fingerprint,
            "severity": self.severity,
            "status": self.status,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "labels": dict(self.labels),
            "summary": self.summary,
            "details": self.details,
            "timezone": self.timezone,
        }


def fingerprint(name: str, key: Sequence[object]) -> str:
    """Stable over restarts and versions: the alert name and its identity, hashed."""
    raw = json.dumps([name, *key], ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]


def format_target(target: float) -> str:
    """``0.98`` -> ``98%``, ``0.995`` -> ``99.5%``: targets are written as people set them."""
    return f"{round(target * 100, 2):g}%"


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}天{hours}小时" if hours else f"{days}天"
    if hours:
        return f"{hours}小时{minutes}分钟" if minutes else f"{hours}小时"
    return f"{minutes}分钟" if minutes else f"{seconds}秒"


def _reasons_text(counts: Mapping[str, int], top: int = 5) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return "、".join(f"{reason_zh(r)} {n}" for r, n in items) or "-"


@dataclass(slots=True)
class _Obs:
    status: Status
    labels: dict[str, str]
    build: Callable[[], tuple[dict[str, Any], dict[str, Any]]]  # -> template fields, details
    starts_at: float | None = None  # when the subject began (a channel's offline ``since``)


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    severity: str
    for_: float
    resolve_for: float
    renotify: float | None


@dataclass(frozen=True, slots=True)
class AlertInputs:
    """What the rules need of an inventory, built once per inventory (off the event loop)."""

    channels: Mapping[str, Channel]  # connected channels
    groups: dict[tuple[str, str], list[Channel]]  # (level, key) -> members, for mass_outage
    levels: tuple[str, ...]  # the mass_outage levels the groups were built for
    # GB/T 28181: channel id -> the lower platform it is reached through, and platform names
    # (changed in place by set_platform: catalogs change without an inventory reload)
    platforms: dict[str, str] = field(default_factory=dict)
    platform_names: dict[str, str] = field(default_factory=dict)

    def key_of(self, ch: Channel, level: str) -> str:
        if level == "platform":
            return self.platforms.get(ch.id, "")
        return _group_key(ch, level)


def set_platform(inputs: AlertInputs, pid: str, name: str, cids: Iterable[str]) -> None:
    """Group (in place) the channels a lower platform lists, for mass outages by platform;
    O(that platform's channels), so one platform's new catalog does not regroup them all."""
    if "platform" not in inputs.levels:
        return
    for ch in inputs.groups.pop(("platform", pid), []):
        if inputs.platforms.get(ch.id) == pid:
            del inputs.platforms[ch.id]
    members = [c for cid in cids if (c := inputs.channels.get(cid)) is not None]
    if members:
        inputs.groups[("platform", pid)] = members
    for c in members:
        inputs.platforms[c.id] = pid
    inputs.platform_names[pid] = name


def alert_inputs(channels: Mapping[str, Channel], levels: Sequence[str]) -> AlertInputs:
    groups: dict[tuple[str, str], list[Channel]] = defaultdict(list)
    for ch in channels.values():
        for lv in levels:
            key = _group_key(ch, lv)
            if key:
                groups[(lv, key)].append(ch)
    return AlertInputs(channels, dict(groups), tuple(levels))


class PictureRecord(Protocol):
    """What the quality rules read of a channel's picture
    (:class:`camwatch.quality.book.QualityRecord`)."""

    @property
    def quality(self) -> str: ...  # ok | degraded | unknown
    @property
    def since(self) -> float: ...  # the first sample of the current run of this quality
    @property
    def streak(self) -> int: ...  # samples in that run
    @property
    def faults(self) -> Sequence[Any]: ...  # each with .check


@dataclass(frozen=True, slots=True)
class QualityInputs:
    """Picture quality for the rules quality_degraded and intact_rate_below_target (only
    with ``quality.enabled``): the quality book's records, the channels whose last picture was
    degraded, and the 完好率 rows (:func:`camwatch.quality.rates.intact_rates`, against
    ``targets.intact``)."""

    records: Mapping[str, PictureRecord]
    degraded: Iterable[str]
    intact: Sequence[RateRow]


@dataclass(slots=True)
class Outcome:
    """An evaluation not yet committed: write ``outbox`` (and ``state`` when not None, under
    ``META_KEY``) in one transaction, then call :meth:`commit`."""

    events: list[Alert]
    outbox: list[tuple[str, str, dict[str, Any]]]  # (receiver, fingerprint, payload)
    state: dict[str, Any] | None
    _apply: Callable[[], None]

    def commit(self) -> None:
        self._apply()


class AlertEvaluator:
    def __init__(self, cfg: AlertsConfig, targets: Targets, min_channels: int,
                 saved: Any = None, timezone: str = "Asia/Shanghai",
                 scope: ShardScope | None = None) -> None:
        self.cfg = cfg
        self.scope = scope  # in a cluster: only the owned shards' subjects are alerted on
        self.targets = targets
        self.min_channels = min_channels
        self.timezone = timezone
        self.tz = local_zone(timezone)
        self._state: dict[str, dict[str, Any]] = {}
        self._fp_cache: dict[tuple[str, str], str] = {}
        if isinstance(saved, dict) and isinstance(saved.get("alerts"), dict):
            self._state = {fp: e for fp, e in saved["alerts"].items() if isinstance(e, dict)}
            log.info("alert state loaded", active=self.active_count(),
                     pending=len(self._state) - self.active_count())
        # the draft of the evaluation in progress (see evaluate)
        self._draft: dict[str, dict[str, Any]] = self._state
        self._dirty = False

    def saved(self) -> dict[str, Any]:
        """The committed state, as the store keeps it (a new evaluator starts from it)."""
        return {"alerts": self._state}

    # --- in a cluster: the state per shard ------------------------------------------------------

    def shard_of(self, entry: Mapping[str, Any]) -> int | None:
        """The shard an alert's state belongs to: kept in the entry when it was created (an
        inventory edit that moves its subject does not move its state)."""
        shard = entry.get("shard")
        if isinstance(shard, int):
            return shard
        return self.scope.of(entry.get("labels", {})) if self.scope is not None else None

    def split(self, state: Mapping[str, Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
        """``state`` (fingerprint -> entry) per owned shard, every owned shard present."""
        assert self.scope is not None
        out: dict[int, dict[str, Any]] = {s: {} for s in self.scope.owned}
        for fp, entry in state.items():
            shard = self.shard_of(entry)
            if shard in out:
                out[shard][fp] = entry
        return out

    def shard_state(self, draft: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The ``meta`` keys to write for ``draft`` (an outcome's state): one per owned
        shard whose alerts changed since the committed state."""
        new, old = self.split(draft), self.split(self._state)
        return {shard_meta_key(s): {"alerts": part} for s, part in sorted(new.items())
                if part != old[s]}

    def use_shards(self, scope: ShardScope, saved: Mapping[int, Any]) -> None:
        """The owned shards changed (or the inventory they are cut from): keep the committed
        state of the shards still owned, drop that of the shards given up (their new owner
        goes on from it: no "removed from the inventory" message), and take the committed
        state of the shards claimed (``saved``: shard -> its ``meta`` value) as the previous
        owner left it: its active alerts are not fired again, its pending ones keep their
        ``pending_since``. Never between :meth:`evaluate` and the outcome's commit."""
        before = self.scope.owned if self.scope is not None else frozenset()
        self.scope = scope
        kept = {fp: e for fp, e in self._state.items()
                if self.shard_of(e) in scope.owned and self.shard_of(e) in before}
        for shard, value in sorted(saved.items()):
            if shard not in scope.owned or shard in before:
                continue
            alerts = value.get("alerts") if isinstance(value, dict) else None
            if not isinstance(alerts, dict):
                continue
            for fp, e in alerts.items():
                if isinstance(e, dict):
                    kept[fp] = {**e, "shard": shard}
        dropped = sum(1 for e in self._state.values() if self.shard_of(e) not in scope.owned)
        self._state = self._draft = kept
        log.info("alert state of the owned shards", shards=sorted(scope.owned),
                 active=self.active_count(), pending=len(kept) - self.active_count(),
                 dropped=dropped)

    def active_count(self) -> int:
        return sum(1 for e in self._state.values() if e.get("active"))

    def channels_with_alerts(self) -> set[str]:
        """Channels named by an alert of a channel rule (firing or pending)."""
        return {str(e["labels"]["channel"]) for e in self._state.values()
                if e["name"] in ("channel_offline_long", "clock_drift")
                and "channel" in e.get("labels", {})}

    # --- the entry point ---------------------------------------------------------------------

    def evaluate(self, now: float, inputs: AlertInputs, states: Mapping[str, ChannelState],
                 candidates: Iterable[str], rates: Sequence[RateRow],
                 new_transitions: Sequence[Transition],
                 prober_problems: Sequence[str],
                 quality: QualityInputs | None = None) -> Outcome:
        """Run every rule once on a draft of the alert state. ``candidates``: the channels
        the channel rules look at (at least every offline channel, every channel changed
        since the last committed evaluation and every channel with an alert). ``quality``:
        picture quality, for the quality rules (None: they are not evaluated)."""
        self._draft = dict(self._state)
        self._dirty = False
        try:
            events = self._rules(now, inputs, states, candidates, rates, new_transitions,
                                 prober_problems, quality)
        finally:
            draft, dirty = self._draft, self._dirty
            self._draft = self._state
        outbox: list[tuple[str, str, dict[str, Any]]] = []
        routed: list[tuple[Alert, list[str]]] = []
        for alert in events:
            receivers = self.cfg.receivers_for(alert.name, alert.labels)
            routed.append((alert, receivers))
            payload = alert.as_payload()
            outbox += [(r, alert.fingerprint, payload) for r in receivers]

        def apply() -> None:
            self._state = self._draft = draft
            for alert, receivers in routed:
                if not receivers:
                    log.warning("alert has no receiver", alert=alert.name,
                                fingerprint=alert.fingerprint, status=alert.status)
                log.info("alert " + alert.status, alert=alert.name,
                         fingerprint=alert.fingerprint, receivers=receivers,
                         summary=alert.summary)

        return Outcome(events, outbox, {"alerts": draft} if dirty else None, apply)

    def _rules(self, now: float, inputs: AlertInputs, states: Mapping[str, ChannelState],
               candidates: Iterable[str], rates: Sequence[RateRow],
               new_transitions: Sequence[Transition],
               prober_problems: Sequence[str],
               quality: QualityInputs | None = None) -> list[Alert]:
        if not self.cfg.enabled:
            return []
        rules = self.cfg.rules
        events: list[Alert] = []
        covered: set[str] = set()
        if rules.mass_outage.enabled:
            obs, covered = self._mass_outage(now, inputs, states, new_transitions)
            events += self._step(self._spec("mass_outage"), obs, now, skip_missing=False,
                                 present=lambda labels: (str(labels.get("level", "")),
                                                         str(labels.get("group", "")))
                                 in inputs.groups)
        if rules.rate_below_target.enabled:
            obs = self._rate_below_target(inputs, states, rates)
            # Without rates (before the first sweep) there is nothing to judge.
            scopes = {tuple(sorted(dict(r.scope).items())) for r in rates}
            events += self._step(
                self._spec("rate_below_target"), obs, now, skip_missing=not rates,
                present=lambda labels: tuple(sorted(
                    (k, v) for k, v in labels.items() if k not in ("class", "project")))
                in scopes)
        if rules.channel_offline_long.enabled or rules.clock_drift.enabled:
            offline, drift = self._channel_rules(now, inputs, states, candidates, covered)
            present = self._channel_present(inputs)
            if rules.channel_offline_long.enabled:
                events += self._step(self._spec("channel_offline_long"), offline, now,
                                     skip_missing=False, present=present)
            if rules.clock_drift.enabled:
                events += self._step(self._spec("clock_drift"), drift, now,
                                     skip_missing=False, present=present)
        if rules.prober_unhealthy.enabled:
            events += self._step(self._spec("prober_unhealthy"),
                                 self._prober(prober_problems), now, skip_missing=False)
        if quality is not None and rules.quality_degraded.enabled:
            events += self._step(self._spec("quality_degraded"),
                                 self._quality_degraded(inputs, states, quality), now,
                                 skip_missing=False, present=self._channel_present(inputs))
        if quality is not None and rules.intact_rate_below_target.enabled:
            rule = rules.intact_rate_below_target
            obs = self._rate_rule("intact_rate_below_target", rule, inputs, states,
                                  quality.intact, quality)
            scopes = {tuple(sorted(dict(r.scope).items())) for r in quality.intact}
            events += self._step(
                self._spec("intact_rate_below_target"), obs, now,
                skip_missing=not quality.intact,
                present=lambda labels: tuple(sorted(
                    (k, v) for k, v in labels.items() if k not in ("class", "project")))
                in scopes)
        return events

    @staticmethod
    def _channel_present(inputs: AlertInputs) -> Callable[[dict[str, str]], bool]:
        return lambda labels: labels.get("channel") in inputs.channels

    # --- the state machine (on the draft) -----------------------------------------------------

    def _edit(self, fp: str) -> dict[str, Any]:
        """The draft's entry ``fp``, copied before its first change in this evaluation (the
        committed state is never touched until the outcome is committed)."""
        entry = dict(self._draft[fp])
        self._draft[fp] = entry
        self._dirty = True
        return entry

    def _spec(self, name: str) -> _Spec:
        r = self.cfg.rules
        if name == "rate_below_target":
            rb = r.rate_below_target
            return _Spec(name, rb.severity, rb.for_, rb.resolve_for, rb.renotify)
        if name == "channel_offline_long":
            co = r.channel_offline_long
            return _Spec(name, co.severity, 0.0, 0.0, co.renotify)
        if name == "clock_drift":
            return _Spec(name, r.clock_drift.severity, 0.0, 0.0, None)
        if name == "mass_outage":
            return _Spec(name, r.mass_outage.severity, 0.0, 0.0, None)
        if name == "quality_degraded":
            qd = r.quality_degraded
            return _Spec(name, qd.severity, 0.0, 0.0, qd.renotify)
        if name == "intact_rate_below_target":
            ib = r.intact_rate_below_target
            return _Spec(name, ib.severity, ib.for_, ib.resolve_for, ib.renotify)
        pu = r.prober_unhealthy
        return _Spec(name, pu.severity, pu.for_, pu.resolve_for, None)

    def _step(self, spec: _Spec, obs: dict[str, _Obs], now: float, skip_missing: bool,
              present: Callable[[dict[str, str]], bool] | None = None) -> list[Alert]:
        events: list[Alert] = []
        draft = self._draft
        shards: dict[str, int] = {}
        if self.scope is not None:  # a cluster: only what lies inside the owned shards
            owned, of = self.scope.owned, self.scope.of
            for key, seen in obs.items():
                if (shard := of(seen.labels)) is not None and shard in owned:
                    shards[key] = shard
            obs = {fp: o for fp, o in obs.items() if fp in shards}
        mine = [fp for fp, e in draft.items() if e["name"] == spec.name]
        for fp in sorted(set(obs) | set(mine)):
            o = obs.get(fp)
            entry = draft.get(fp)
            if entry is not None and present is not None and not present(entry["labels"]):
                # its subject left the inventory: end it as removed, not recovered
                if entry.get("active"):
                    events.append(self._resolve(spec, fp, None, now, removed=True))
                else:
                    del draft[fp]
                    self._dirty = True
                continue
            if o is None and skip_missing:
                continue
            status: Status = o.status if o is not None else "good"
            if entry is None or not entry.get("active"):
                if status == "bad":
                    assert o is not None
                    if entry is None:
                        draft[fp] = {
                            "name": spec.name, "labels": o.labels, "severity": spec.severity,
                            "pending_since": now, "active": False}
                        if fp in shards:
                            draft[fp]["shard"] = shards[fp]
                        self._dirty = True
                        entry = draft[fp]
                    if now - entry["pending_since"] >= spec.for_:
                        events.append(self._fire(spec, fp, o, now))
                elif entry is not None and status != "nodata":
                    del draft[fp]  # back to normal before ``for`` ran out
                    self._dirty = True
                continue
            if status == "bad":
                if entry.get("resolving_since") is not None:
                    self._edit(fp)["resolving_since"] = None
                if spec.renotify and now - entry["last_notified"] >= spec.renotify:
                    assert o is not None
                    events.append(self._fire(spec, fp, o, now))
            elif status == "between":
                if entry.get("resolving_since") is not None:
                    self._edit(fp)["resolving_since"] = None
            elif status == "good":
                if entry.get("resolving_since") is None:
                    entry = self._edit(fp)
                    entry["resolving_since"] = now
                if now - entry["resolving_since"] >= spec.resolve_for:
                    events.append(self._resolve(spec, fp, o, now))
        return events

    def _fire(self, spec: _Spec, fp: str, o: _Obs, now: float) -> Alert:
        entry = self._edit(fp)
        starts = entry.get("starts_at") or o.starts_at or entry["pending_since"]
        fields, details = o.build()
        fields["duration"] = format_duration(now - starts)
        entry.update(active=True, starts_at=starts, last_notified=now, resolving_since=None,
                     labels=o.labels, fields=fields, details=details)
        summary = self._render(spec.name, fields)
        return Alert(spec.name, fp, spec.severity, "firing", starts, None, dict(o.labels),
                     summary, details, self.timezone)

    def _resolve(self, spec: _Spec, fp: str, o: _Obs | None, now: float,
                 removed: bool = False) -> Alert:
        entry = self._draft[fp]
        if o is not None:
            fields, details = o.build()
        else:  # the rule no longer sees it: say so with what we knew when it fired
            fields, details = dict(entry.get("fields", {})), dict(entry.get("details", {}))
        fields["duration"] = format_duration(now - entry["starts_at"])
        if removed:
            details = {**details, "resolution": "removed_from_inventory",
                       "notes": ["已移出台账：告警结束，并非恢复在线"]}
        del self._draft[fp]
        self._dirty = True
        summary = self._render(spec.name + (".removed" if removed else ".resolved"), fields)
        return Alert(spec.name, fp, entry["severity"], "resolved", entry["starts_at"], now,
                     dict(entry["labels"]), summary, details, self.timezone)

    def _render(self, key: str, fields: dict[str, Any]) -> str:
        template = self.cfg.template(key)
        try:
            return template.format(**fields)
        except (KeyError, ValueError, IndexError) as exc:  # validated at load; belt and braces
            log.error("alert template failed", template=key, error=str(exc))
            return template

    # --- rule: rate_below_target -------------------------------------------------------------

    def _rate_below_target(self, inputs: AlertInputs, states: Mapping[str, ChannelState],
                           rates: Sequence[RateRow]) -> dict[str, _Obs]:
        return self._rate_rule("rate_below_target", self.cfg.rules.rate_below_target, inputs,
                               states, rates)

    def _rate_rule(self, name: str, rule: RateBelowTargetRule, inputs: AlertInputs,
                   states: Mapping[str, ChannelState], rates: Sequence[RateRow],
                   quality: QualityInputs | None = None) -> dict[str, _Obs]:
        """rate_below_target, or with ``quality`` intact_rate_below_target (the same scopes,
        status and hysteresis; rows of the 完好率: ``online`` = intact, ``connected`` =
        judged)."""
        dims = rule.scope_dims()
        children: dict[tuple[Any, ...], list[RateRow]] = defaultdict(list)
        for row in rates:
            if len(row.scope) >= 2 and row.scope[-1][0] in ("township", "village"):
                children[(row.scope[:-1], row.klass, row.project)].append(row)
        out: dict[str, _Obs] = {}
        for row in rates:
            if row.target is None or tuple(k for k, _ in row.scope) not in dims:
                continue
            if row.klass is None and row.project is None:
                continue
            fp = fingerprint(name, [list(row.scope), row.klass, row.project])
            rate = row.rate
            status: Status
            if rate is None or row.connected < self.min_channels:
                status = "nodata"  # reported, not alerted on
            elif row.meets_target is False:
                status = "bad"
            elif round(rate * 100, 2) >= round((row.target + rule.hysteresis) * 100, 2):
                status = "good"
            else:
                status = "between"
            labels = dict(row.scope)
            if row.klass is not None:
                labels["class"] = str(row.klass)
            if row.project is not None:
                labels["project"] = row.project
            subs = children.get((row.scope, row.klass, row.project), [])
            out[fp] = _Obs(status, labels, self._rate_builder(row, subs, inputs, states)
                           if quality is None else
                           self._intact_builder(row, subs, inputs, states, quality))
        return out

    def _intact_builder(self, row: RateRow, subs: list[RateRow], inputs: AlertInputs,
                        states: Mapping[str, ChannelState], quality: QualityInputs
                        ) -> Callable[[], tuple[dict[str, Any], dict[str, Any]]]:
        def build() -> tuple[dict[str, Any], dict[str, Any]]:
            rule = self.cfg.rules.intact_rate_below_target
            scope = dict(row.scope)
            what = (CLASS_NAMES.get(row.klass, str(row.klass)) if row.klass is not None
                    else row.project or "")
            worst_rows = sorted((r for r in subs if r.connected),
                                key=lambda r: (r.rate or 0.0, -r.connected))[:rule.worst]
            worst_text = "、".join(f"{r.scope[-1][1]} {format_rate(r.rate)}"
                                   for r in worst_rows) or "-"
            faults: Counter[str] = Counter()
            degraded = offline = 0
            for ch in inputs.channels.values():
                if any(getattr(ch, k) != v for k, v in scope.items()) or \
                        (row.klass is not None and ch.klass != row.klass) or \
                        (row.project is not None and ch.project != row.project):
                    continue
                st = states.get(ch.id)
                if st is not None and st.state == State.OFFLINE:
                    offline += 1
                    continue
                rec = quality.records.get(ch.id)
                if st is not None and st.state == State.ONLINE and rec is not None \
                        and rec.quality == "degraded":
                    degraded += 1
                    faults.update(f.check for f in rec.faults)
            faults_text = "、".join(f"{_check_zh(c)} {n}"
                                   for c, n in faults.most_common(5)) or "-"
            fields: dict[str, Any] = {
                "scope": " ".join(v for _, v in row.scope) or "全域", "what": what,
                "rate": format_rate(row.rate), "target": format_target(row.target or 0.0),
                "intact": row.online, "judged": row.connected, "not_intact": row.offline,
                "degraded": degraded, "offline": offline, "worst": worst_text,
                "faults": faults_text}
            notes = [f"画面异常 {degraded} 路（{faults_text}），离线 {offline} 路"]
            if worst_rows:
                sub_name = "村" if len(row.scope) >= 2 else "乡镇"
                notes.append(f"完好率最低的{sub_name}：{worst_text}")
            if row.unknown:
                notes.append(f"未能判定 {row.unknown} 路（在线状态未知或画面未诊断，不计入完好率）")
            details = {"rate": row.rate, "target": row.target, "intact": row.online,
                       "judged": row.connected, "not_intact": row.offline,
                       "unknown": row.unknown, "degraded": degraded, "offline": offline,
                       "faults": dict(faults.most_common()),
                       "worst": [{"name": r.scope[-1][1], "rate": r.rate, "intact": r.online,
                                  "judged": r.connected} for r in worst_rows],
                       "notes": notes}
            return fields, details

        return build

    # --- rule: quality_degraded ----------------------------------------------------------------

    def _quality_degraded(self, inputs: AlertInputs, states: Mapping[str, ChannelState],
                          quality: QualityInputs) -> dict[str, _Obs]:
        """A channel whose last ``samples`` pictures were degraded (its run of degraded
        samples, kept across restarts in the store): bad from the run's first sample; good at
        the first ok picture; nodata while offline (channel_offline_long speaks then) or
        while its picture cannot be sampled. O(degraded channels + alerts)."""
        rule = self.cfg.rules.quality_degraded
        alerted = {str(e["labels"].get("channel")) for e in self._draft.values()
                   if e["name"] == "quality_degraded"}
        out: dict[str, _Obs] = {}
        for cid in sorted(set(quality.degraded) | alerted):
            ch = inputs.channels.get(cid)
            if ch is None:
                continue  # left the inventory: _step ends an alert as removed
            rec = quality.records.get(cid)
            st = states.get(cid)
            fp = self._channel_fp("quality_degraded", cid)
            labels = _channel_labels(ch)
            status: Status
            if rec is None or rec.quality == "ok":
                status = "good"
            elif (st is not None and st.state == State.OFFLINE) or rec.quality != "degraded":
                status = "nodata"
            elif rec.streak >= rule.samples:
                status = "bad"
            elif cid in alerted:
                status = "bad"  # still degraded: a failed sample broke the run, not the fault
            else:
                continue  # not yet: fewer samples than the rule asks for
            out[fp] = _Obs(status, labels, _quality_builder(ch, rec, self.tz)
                           if rec is not None else _no_build,
                           rec.since if rec is not None else None)
        return out

    def _rate_builder(self, row: RateRow, subs: list[RateRow], inputs: AlertInputs,
                      states: Mapping[str, ChannelState]
                      ) -> Callable[[], tuple[dict[str, Any], dict[str, Any]]]:
        def build() -> tuple[dict[str, Any], dict[str, Any]]:
            rule = self.cfg.rules.rate_below_target
            scope = dict(row.scope)
            what = (CLASS_NAMES.get(row.klass, str(row.klass)) if row.klass is not None
                    else row.project or "")
            worst_rows = sorted((r for r in subs if r.connected),
                                key=lambda r: (r.rate or 0.0, -r.connected))[:rule.worst]
            worst = [{"name": r.scope[-1][1], "rate": r.rate, "online": r.online,
                      "connected": r.connected} for r in worst_rows]
            reasons: Counter[str] = Counter()
            for ch in inputs.channels.values():
                if any(getattr(ch, k) != v for k, v in scope.items()):
                    continue
                if row.klass is not None and ch.klass != row.klass:
                    continue
                if row.project is not None and ch.project != row.project:
                    continue
                st = states.get(ch.id)
                if st is not None and st.state == State.OFFLINE:
                    reasons[st.reason or "unknown"] += 1
            worst_text = "、".join(f"{r.scope[-1][1]} {format_rate(r.rate)}"
                                   for r in worst_rows) or "-"
            fields: dict[str, Any] = {
                "scope": " ".join(v for _, v in row.scope) or "全域", "what": what,
                "rate": format_rate(row.rate),
                "target": format_target(row.target or 0.0), "online": row.online,
                "connected": row.connected, "offline": row.offline, "unknown": row.unknown,
                "worst": worst_text, "reasons": _reasons_text(reasons)}
            sub_name = "村" if len(row.scope) >= 2 else "乡镇"
            notes = []
            if worst:
                notes.append(f"在线率最低的{sub_name}：{worst_text}")
            if reasons:
                notes.append(f"主要离线原因：{fields['reasons']}")
            if row.unknown:
                notes.append(f"未能判定 {row.unknown} 路（不计入在线率）")
            details = {"rate": row.rate, "target": row.target, "online": row.online,
                       "connected": row.connected, "offline": row.offline,
                       "unknown": row.unknown, "worst": worst,
                       "reasons": dict(reasons.most_common()), "notes": notes}
            return fields, details

        return build

    # --- rules: channel_offline_long, clock_drift ----------------------------------------------

    def _channel_rules(self, now: float, inputs: AlertInputs,
                       states: Mapping[str, ChannelState], candidates: Iterable[str],
                       covered: set[str]) -> tuple[dict[str, _Obs], dict[str, _Obs]]:
        co = self.cfg.rules.channel_offline_long
        cd = self.cfg.rules.clock_drift
        offline: dict[str, _Obs] = {}
        drift: dict[str, _Obs] = {}
        draft = self._draft
        alerted = {str(e["labels"].get("channel")) for e in draft.values()
                   if e["name"] == "channel_offline_long"}
        drift_alerts = any(e["name"] == "clock_drift" for e in draft.values())
        threshold = cd.threshold
        # Most candidates are channels that merely changed and are fine (all of them in the
        # first sweep, 100,000 at once): passed over with a few comparisons before the sort,
        # which is then of the few that can raise or end an alert.
        wanted = sorted(
            c for c in set(candidates)
            if c in inputs.channels and (st := states.get(c)) is not None
            and (st.state == State.OFFLINE or c in alerted or drift_alerts
                 or abs(st.clock_drift_s or 0.0) > threshold))
        for cid in wanted:
            st = states[cid]
            ch = inputs.channels[cid]
            long_offline = st.state == State.OFFLINE and st.since is not None \
                and now - st.since >= co.after
            if long_offline or cid in alerted:
                labels = _channel_labels(ch)
                fp = self._channel_fp("channel_offline_long", cid)
                if long_offline:
                    status: Status = "nodata" if cid in covered else "bad"
                    offline[fp] = _Obs(status, labels, _offline_builder(ch, st, self.tz),
                                       st.since)
                elif st.state == State.UNKNOWN or cid in covered:
                    offline[fp] = _Obs("nodata", labels, _offline_builder(ch, st, self.tz))
                elif fp in draft:
                    offline[fp] = _Obs("good", labels, _offline_builder(ch, st, self.tz))
            # the clock is the device's: one alert per device (an NVR's channels share it)
            measured = st.clock_drift_s is not None and st.state != State.OFFLINE
            bad = measured and abs(st.clock_drift_s or 0.0) > cd.threshold
            if not bad and not drift_alerts:
                continue
            dfp = self._channel_fp("clock_drift", ch.onvif_url or ch.host or cid)
            if dfp in drift:
                continue
            if measured:
                if bad or dfp in draft:
                    drift[dfp] = _Obs("bad" if bad else "good", _channel_labels(ch),
                                      _drift_builder(ch, st.clock_drift_s or 0.0,
                                                     cd.threshold))
            elif dfp in draft:
                drift[dfp] = _Obs("nodata", _channel_labels(ch),
                                  _drift_builder(ch, 0.0, cd.threshold))
        # an alert whose channel was not among the candidates: unchanged, so nodata
        for fp, e in draft.items():
            if e["name"] == "channel_offline_long" and fp not in offline:
                offline[fp] = _Obs("nodata", e["labels"], _no_build)
            elif e["name"] == "clock_drift" and fp not in drift:
                drift[fp] = _Obs("nodata", e["labels"], _no_build)
        return offline, drift

    def _channel_fp(self, name: str, channel_id: str) -> str:
        key = (name, channel_id)
        fp = self._fp_cache.get(key)
        if fp is None:
            fp = self._fp_cache[key] = fingerprint(name, [channel_id])
        return fp

    # --- rule: mass_outage -------------------------------------------------------------------

    def _mass_outage(self, now: float, inputs: AlertInputs,
                     states: Mapping[str, ChannelState], new_transitions: Sequence[Transition]
                     ) -> tuple[dict[str, _Obs], set[str]]:
        """Most of one host / village / township went offline together: one alert, naming
        the likely cause. Levels are tried coarse to fine, and a group whose newly-offline
        channels all lie in a bigger group already found is not reported again. Returns the
        observations and the channels the firing (or new) outages cover."""
        rule = self.cfg.rules.mass_outage
        groups = inputs.groups
        levels = set(rule.levels)
        touched = {(lv, key) for t in new_transitions if t.to_state == State.OFFLINE
                   and (ch := inputs.channels.get(t.channel_id)) is not None
                   for lv in inputs.levels if lv in levels and (key := inputs.key_of(ch, lv))}

        def offline_ids(members: Iterable[Channel]) -> list[Channel]:
            return [c for c in members
                    if (s := states.get(c.id)) is not None and s.state == State.OFFLINE]

        out: dict[str, _Obs] = {}
        covered: set[str] = set()
        # Firing outages stay on while at least half the ``share`` of the group is offline.
        for fp, e in self._draft.items():
            if e["name"] != "mass_outage" or not e.get("active"):
                continue
            lvl, gkey = str(e["labels"].get("level", "")), str(e["labels"].get("group", ""))
            members = groups.get((lvl, gkey))
            if members is None:
                continue  # the group left the inventory: _step ends it as removed
            down = offline_ids(members)
            good = len(down) < rule.share / 2 * len(members)
            if not good:
                covered.update(c.id for c in members)
            out[fp] = _Obs("good" if good else "bad", e["labels"],
                           _mass_builder(lvl, gkey, members, down, states,
                                         inputs.platform_names))
        # a platform first: when it stops its keepalives, that is the cause, wherever its
        # channels are
        order = {lvl: i for i, lvl in enumerate(("platform", "township", "village", "host"))}
        for level, key in sorted(touched, key=lambda gk: (order[gk[0]], gk[1])):
            fp = fingerprint("mass_outage", [level, key])
            if fp in out:
                continue
            members = groups[(level, key)]
            if len(members) < rule.min_channels:
                continue
            recent = _recently_offline(members, states, now - rule.window,
                                       rule.share * len(members))
            if recent is None:
                continue
            if all(c.id in covered for c in recent):
                continue  # a bigger group (or a firing outage) already explains it
            covered.update(c.id for c in members)
            labels = {**_common_labels(members), "level": level, "group": key}
            if level in ("host", "platform"):
                labels[level] = key
            out[fp] = _Obs("bad", labels,
                           _mass_builder(level, key, members, offline_ids(members), states,
                                         inputs.platform_names))
        return out, covered

    # --- rule: prober_unhealthy --------------------------------------------------------------

    def _prober(self, problems: Sequence[str]) -> dict[str, _Obs]:
        fp = fingerprint("prober_unhealthy", [])
        text = "；".join(problems)

        def build() -> tuple[dict[str, Any], dict[str, Any]]:
            return {"problems": text or "-"}, {"problems": list(problems),
                                               "notes": list(problems)}

        return {fp: _Obs("bad" if problems else "good", {}, build)}


def _recently_offline(members: Sequence[Channel], states: Mapping[str, ChannelState],
                      since: float, need: float) -> list[Channel] | None:
    """The members offline since ``since`` or later, or None as soon as fewer than ``need``
    of them can be: a township of thousands touched by one channel going offline is given
    up after about a fifth of it (share 0.8), not read through at every evaluation."""
    spare = len(members) - need  # members that may fail the test before it is hopeless
    found: list[Channel] = []
    for c in members:
        s = states.get(c.id)
        if s is not None and s.state == State.OFFLINE and s.since is not None \
                and s.since >= since:
            found.append(c)
        else:
            spare -= 1
            if spare < 0:
                return None
    return found


def _check_zh(check: str) -> str:
    return CHECK_ZH.get(check, check)


def _quality_builder(ch: Channel, rec: PictureRecord, tz: tzinfo = _CST
                     ) -> Callable[[], tuple[dict[str, Any], dict[str, Any]]]:
    checks = [f.check for f in rec.faults]
    scores = {f.check: f.score for f in rec.faults}
    since, streak = rec.since, rec.streak

    def build() -> tuple[dict[str, Any], dict[str, Any]]:
        faults = "、".join(_check_zh(c) for c in checks) or "-"
        fields = {**_channel_fields(ch), "faults": faults, "samples": streak,
                  "since": format_time(since, tz)}
        notes = [f"画面异常：{faults}", f"自 {fields['since']} 起连续 {streak} 次诊断异常",
                 f"运营商：{fields['operator']}",
                 f"最近画面：/api/channels/{ch.id}/snapshot.jpg"]
        return fields, {"faults": [{"check": c, "score": scores[c]} for c in checks],
                        "degraded_since": since, "samples": streak, "notes": notes}

    return build


def _no_build() -> tuple[dict[str, Any], dict[str, Any]]:
    raise AssertionError("a nodata observation is never rendered")


# --- helpers ------------------------------------------------------------------------------------

def _channel_labels(ch: Channel) -> dict[str, str]:
    labels = {"county": ch.county, "township": ch.township, "village": ch.village,
              "operator": ch.operator, "project": ch.project,
              "class": "" if ch.klass is None else str(ch.klass), "host": ch.host,
              "channel": ch.id}
    return {k: v for k, v in labels.items() if v}


def _channel_fields(ch: Channel) -> dict[str, Any]:
    return {"channel": ch.id, "name": ch.name or ch.id, "county": ch.county or "-",
            "township": ch.township or "-", "village": ch.village or "-",
            "operator": ch.operator or "-", "host": ch.host or "-"}


def _offline_builder(ch: Channel, st: ChannelState, tz: tzinfo = _CST
                     ) -> Callable[[], tuple[dict[str, Any], dict[str, Any]]]:
    reason, since = st.reason, st.since

    def build() -> tuple[dict[str, Any], dict[str, Any]]:
        fields = {**_channel_fields(ch), "reason": reason_zh(reason),
                  "since": format_time(since, tz) if since is not None else "-"}
        notes = [f"运营商：{fields['operator']}", f"离线原因：{fields['reason']}",
                 f"离线时间：{fields['since']}"]
        if ch.host:
            notes.append(f"所属主机：{ch.host}")
        return fields, {"reason": reason, "offline_since": since, "notes": notes}

    return build


def _drift_builder(ch: Channel, drift: float, threshold: float
                   ) -> Callable[[], tuple[dict[str, Any], dict[str, Any]]]:
    def build() -> tuple[dict[str, Any], dict[str, Any]]:
        fields = {**_channel_fields(ch), "drift": f"{drift:+.1f}秒",
                  "threshold": f"{threshold:g}秒"}
        return fields, {"drift_s": drift, "threshold_s": threshold,
                        "notes": ["时钟偏差会使录像时间失真，并导致 ONVIF 认证失败"]}

    return build


def _group_key(ch: Channel, level: str) -> str:
    if level == "platform":
        return ""  # from the catalogs, not the inventory (AlertInputs.key_of)
    if level == "township":
        return f"{ch.county}/{ch.township}" if ch.township else ""
    if level == "village":
        return f"{ch.county}/{ch.township}/{ch.village}" if ch.village else ""
    return ch.host


def _common_labels(members: Sequence[Channel]) -> dict[str, str]:
    out = {}
    for k in ("county", "township", "village", "operator", "project"):
        values = {getattr(c, k) for c in members}
        if len(values) == 1 and (v := values.pop()):
            out[k] = v
    return out


def _likely_cause(level: str, reasons: Counter[str]) -> str:
    top = reasons.most_common(1)[0][0] if reasons else ""
    if top == "auth":
        return "设备密码被修改或账户被锁定"
    if top == "refused":
        return "设备服务异常（端口拒绝连接）"
    if level == "platform" or top == "platform_down":
        return "下级平台离线（心跳超时或注销），或其与本平台间链路中断"
    if level == "host":
        return "NVR/主机故障、断电或其上联中断"
    if level == "village":
        return "村级上联链路中断或停电"
    return "乡镇汇聚链路中断或大面积停电"


def _mass_builder(level: str, key: str, members: Sequence[Channel], down: Sequence[Channel],
                  states: Mapping[str, ChannelState],
                  platform_names: Mapping[str, str] | None = None,
                  ) -> Callable[[], tuple[dict[str, Any], dict[str, Any]]]:
    def build() -> tuple[dict[str, Any], dict[str, Any]]:
        common = _common_labels(members)
        reasons: Counter[str] = Counter(
            (states[c.id].reason or "unknown") for c in down if c.id in states)
        place = " ".join(common[k] for k in ("county", "township", "village") if k in common)
        group = f"主机 {key}" + (f"（{place}）" if place else "") if level == "host" else place
        if level == "platform":
            name = (platform_names or {}).get(key, "")
            group = f"下级平台 {name}（{key}）" if name else f"下级平台 {key}"
        cause = _likely_cause(level, reasons)
        fields = {"group": group or key, "kind": _LEVEL_NAMES.get(level, level),
                  "cause": cause, "down": len(down), "total": len(members),
                  "county": common.get("county", "-"), "township": common.get("township", "-"),
                  "village": common.get("village", "-"),
                  "host": key if level == "host" else "-", "reasons": _reasons_text(reasons)}
        notes = [f"离线原因：{fields['reasons']}",
                 f"已合并为一条告警，所涉 {len(members)} 路点位不再逐路告警"]
        return fields, {"level": level, "group": key, "down": len(down),
                        "total": len(members), "reasons": dict(reasons.most_common()),
                        "cause": cause, "down_channels": sorted(c.id for c in down)[:50],
                        "notes": notes}

    return build
