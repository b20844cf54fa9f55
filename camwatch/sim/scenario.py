"""Scenarios: which simulated channels are broken, how, and when.

A :class:`Scenario` holds shares of channels per fault and a timeline of events. It is loaded
from a small YAML file (unknown keys are errors, every error is reported with its place)::

    seed: 7
    dead: 0.02            # share of channels behind a refused device (nothing listens)
    hung: 0.01            # accept, never answer
    auth_fail: 0.005      # every auth answer is 401
    not_found: 0.005      # DESCRIBE 404
    flapping: 0.01        # share of channels whose device goes down and up
    flap_period: 5m       # one down + one up phase
    clock_skew: 0.01      # share of channels whose device clock is off ...
    clock_skew_seconds: 600  # ... by this much
    pictures: true        # cameras send real pictures (camwatch.sim.pictures), for quality
    picture_faults: {frozen: 0.01, signal_lost: 0.005, blur: 0.005}  # shares, by picture
    events:
      - {at: 5m, for: 20m, township: 王皮溜镇, fault: refused}   # uplink lost
      - {at: 10m, for: 2m, device: 127.1.0.9, fault: refused}   # NVR reboots
      - {at: 1m, channel: "41162801001320000007", fault: hang}  # no "for": stays

:func:`assign` turns shares into concrete devices and channels, deterministically for a seed;
:class:`Clock` is injected so tests drive the timeline without waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import yaml

from camwatch.errors import ConfigError, Problem
from camwatch.sim.model import Fault
from camwatch.sim.pictures import Picture

SHARE_KEYS = ("dead", "hung", "auth_fail", "not_found", "flapping", "clock_skew")
_SCENARIO_KEYS = {*SHARE_KEYS, "seed", "flap_period", "clock_skew_seconds", "events",
                  "pictures", "picture_faults"}
_EVENT_KEYS = {"at", "for", "township", "device", "channel", "fault"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``1.5``, ``"30s"``, ``"5m"``, ``"1h30m"``; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"expected a duration >= 0, got {value}")
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text and (parts := _DURATION.findall(text)) and \
                "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _UNIT_S[u] for n, u in parts)
        try:
            return parse_duration(float(text))
        except ValueError:
            pass
    raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {value!r}")


@dataclass(frozen=True, slots=True)
class TimedEvent:
    """``fault`` on one target from ``at_s`` for ``for_s`` seconds (None: until the end)."""

    at_s: float
    fault: Fault
    for_s: float | None = None
    township: str | None = None  # code or name
    device: str | None = None  # device key (its host, or host:port in "ports" addressing)
    channel: str | None = None  # channel id

    @property
    def end_s(self) -> float | None:
        return None if self.for_s is None else self.at_s + self.for_s

    def active(self, t: float) -> bool:
        end = self.end_s
        return self.at_s <= t and (end is None or t < end)

    def describe(self) -> str:
        target = (f"township {self.township}" if self.township is not None else
                  f"device {self.device}" if self.device is not None else
                  f"channel {self.channel}")
        span = "" if self.for_s is None else f" for {self.for_s:g}s"
        return f"{target} {self.fault.value} at t+{self.at_s:g}s{span}"


@dataclass(frozen=True, slots=True)
class Scenario:
    seed: int | None = None  # None: the fleet's seed
    dead: float = 0.0
    hung: float = 0.0
    auth_fail: float = 0.0
    not_found: float = 0.0
    flapping: float = 0.0
    flap_period_s: float = 300.0
    clock_skew: float = 0.0
    clock_skew_s: float = 600.0
    events: tuple[TimedEvent, ...] = ()
    pictures: bool = False  # every camera sends a real (ok) picture ...
    picture_faults: tuple[tuple[Picture, float], ...] = ()  # ... but these shares of them

    @property
    def serves_pictures(self) -> bool:
        return self.pictures or bool(self.picture_faults)

    def shares(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in SHARE_KEYS}


def scenario_from_mapping(data: object, where: str = "scenario") -> Scenario:
    """Validate a parsed YAML document; raises :class:`ConfigError` listing every problem."""
    problems: list[Problem] = []
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError([Problem(where, "$", f"expected a mapping, got {type(data).__name__}")])
    kw: dict[str, object] = {}
    shares: dict[str, float] = {}
    for key in sorted(set(map(str, data)) - _SCENARIO_KEYS):
        problems.append(Problem(where, f"$.{key}", f"unknown key; expected one of "
                                                   f"{', '.join(sorted(_SCENARIO_KEYS))}"))
    for key in SHARE_KEYS:
        if key in data:
            v = data[key]
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
                problems.append(Problem(where, f"$.{key}",
                                        f"expected a share between 0 and 1, got {v!r}"))
            else:
                kw[key] = shares[key] = float(v)
    total = sum(shares.values())
    if total > 1:
        problems.append(Problem(where, "$", f"fault shares add up to {total:g} > 1"))
    if "seed" in data:
        if isinstance(data["seed"], bool) or not isinstance(data["seed"], int):
            problems.append(Problem(where, "$.seed", f"expected an integer, got "
                                                     f"{data['seed']!r}"))
        else:
            kw["seed"] = data["seed"]
    for key, attr in (("flap_period", "flap_period_s"), ("clock_skew_seconds", "clock_skew_s")):
        if key in data:
            try:
                kw[attr] = parse_duration(data[key])
            except ValueError as exc:
                problems.append(Problem(where, f"$.{key}", str(exc)))
    if kw.get("flap_period_s", 1.0) == 0:
        problems.append(Problem(where, "$.flap_period", "must be > 0"))
    if "pictures" in data:
        if not isinstance(data["pictures"], bool):
            problems.append(Problem(where, "$.pictures", f"expected true or false, got "
                                                         f"{data['pictures']!r}"))
        else:
            kw["pictures"] = data["pictures"]
    kw["picture_faults"] = _picture_faults(data.get("picture_faults"), where, problems)
    events: list[TimedEvent] = []
    raw_events = data.get("events", []) or []
    if not isinstance(raw_events, list):
        problems.append(Problem(where, "$.events", "expected a list of events"))
        raw_events = []
    for i, ev in enumerate(raw_events):
        parsed = _event(ev, where, f"$.events[{i}]", problems)
        if parsed is not None:
            events.append(parsed)
    if problems:
        raise ConfigError(problems)
    return Scenario(events=tuple(events), **kw)  # type: ignore[arg-type]


def _picture_faults(raw: object, where: str, problems: list[Problem]
                    ) -> tuple[tuple[Picture, float], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        problems.append(Problem(where, "$.picture_faults", "expected a mapping of picture "
                                                           "fault to share, e.g. {frozen: 0.01}"))
        return ()
    out = []
    names = [p.value for p in Picture if p is not Picture.OK]
    for key, share in raw.items():
        path = f"$.picture_faults.{key}"
        if str(key) not in names:
            problems.append(Problem(where, path, f"unknown picture fault; expected one of "
                                                 f"{', '.join(names)}"))
        elif isinstance(share, bool) or not isinstance(share, int | float) \
                or not 0 <= share <= 1:
            problems.append(Problem(where, path, f"expected a share between 0 and 1, got "
                                                 f"{share!r}"))
        else:
            out.append((Picture(str(key)), float(share)))
    if sum(v for _, v in out) > 1:
        problems.append(Problem(where, "$.picture_faults",
                                f"shares add up to {sum(v for _, v in out):g} > 1"))
    return tuple(out)


def _event(ev: object, where: str, path: str, problems: list[Problem]) -> TimedEvent | None:
    if not isinstance(ev, Mapping):
        problems.append(Problem(where, path, "expected a mapping such as "
                                             "{at: 5m, for: 20m, township: X, fault: refused}"))
        return None
    before = len(problems)
    for key in sorted(set(map(str, ev)) - _EVENT_KEYS):
        problems.append(Problem(where, f"{path}.{key}", f"unknown key; expected one of "
                                                        f"{', '.join(sorted(_EVENT_KEYS))}"))
    targets = [k for k in ("township", "device", "channel") if k in ev]
    if len(targets) != 1:
        problems.append(Problem(where, path, f"expected exactly one of township, device, channel; "
                                             f"got {', '.join(targets) or 'none'}"))
    at = for_s = 0.0
    try:
        at = parse_duration(ev.get("at", 0))
    except ValueError as exc:
        problems.append(Problem(where, f"{path}.at", str(exc)))
    duration: float | None = None
    if ev.get("for") is not None:
        try:
            for_s = parse_duration(ev["for"])
            duration = for_s
        except ValueError as exc:
            problems.append(Problem(where, f"{path}.for", str(exc)))
    try:
        fault = Fault(str(ev.get("fault", "")))
    except ValueError:
        problems.append(Problem(where, f"{path}.fault", f"expected one of "
                                f"{', '.join(f.value for f in Fault)}, got {ev.get('fault')!r}"))
        fault = Fault.NONE
    if len(problems) > before:
        return None
    target = {k: str(ev[k]) for k in targets}
    return TimedEvent(at_s=at, fault=fault, for_s=duration, **target)


def load_scenario(path: Path) -> Scenario:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(path), "", f"cannot read: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(str(path), "", f"not valid YAML: {exc}")]) from None
    return scenario_from_mapping(data, str(path))


@dataclass(frozen=True, slots=True)
class Assignment:
    """Concrete faults for one fleet. Sets are disjoint: a channel has at most one share fault."""

    dead_devices: frozenset[str] = frozenset()  # device keys, refused
    flapping: Mapping[str, float] = field(default_factory=dict)  # device key -> phase offset s
    clock_skew: Mapping[str, float] = field(default_factory=dict)  # device key -> skew s
    channel_faults: Mapping[str, Fault] = field(default_factory=dict)  # channel id -> fault
    # channel id -> the picture it shows, when the scenario serves pictures (else empty)
    pictures: Mapping[str, Picture] = field(default_factory=dict)

    def channel_counts(self, devices: Sequence[tuple[str, Sequence[str]]]) -> dict[str, int]:
        size = {k: len(ids) for k, ids in devices}
        counts = {
            "dead": sum(size[k] for k in self.dead_devices),
            "flapping": sum(size[k] for k in self.flapping),
            "clock_skew": sum(size[k] for k in self.clock_skew),
        }
        for f in (Fault.HANG, Fault.AUTH_FAIL, Fault.NOT_FOUND):
            name = "hung" if f is Fault.HANG else f.value
            counts[name] = sum(1 for x in self.channel_faults.values() if x is f)
        return counts


def assign(scenario: Scenario, devices: Sequence[tuple[str, Sequence[str]]],
           seed: int) -> Assignment:
    """Pick the broken devices and channels. ``devices`` is ``(key, channel ids)`` in a stable
    order. Each share is met exactly (``round(share * channels)``) whenever the device sizes
    allow it: device-level faults (dead, flapping, clock skew) take whole devices, filling up
    with single cameras; channel-level ones (hung, auth_fail, not_found) take channels."""
    rng = random.Random(f"camwatch-sim-scenario:{seed}")
    total = sum(len(ids) for _, ids in devices)
    order = list(range(len(devices)))
    rng.shuffle(order)
    used: set[int] = set()

    def take_devices(share: float) -> list[int]:
        want = round(share * total)
        picked: list[int] = []
        for i in order:
            if want <= 0:
                break
            n = len(devices[i][1])
            if i not in used and 0 < n <= want:
                picked.append(i)
                used.add(i)
                want -= n
        return picked

    dead = take_devices(scenario.dead)
    period = scenario.flap_period_s
    flapping = {devices[i][0]: float(rng.randrange(max(1, int(period))))
                for i in take_devices(scenario.flapping)}
    skew = {devices[i][0]: scenario.clock_skew_s for i in take_devices(scenario.clock_skew)}
    free = [cid for i in range(len(devices)) if i not in used for cid in devices[i][1]]
    rng.shuffle(free)
    faults: dict[str, Fault] = {}
    pos = 0
    for share, fault in ((scenario.hung, Fault.HANG), (scenario.auth_fail, Fault.AUTH_FAIL),
                         (scenario.not_found, Fault.NOT_FOUND)):
        n = min(round(share * total), len(free) - pos)
        for cid in free[pos:pos + n]:
            faults[cid] = fault
        pos += n
    pictures: dict[str, Picture] = {}
    if scenario.serves_pictures:
        # independent of the faults above (a frozen camera may also be unreachable)
        every = [cid for _, ids in devices for cid in ids]
        pictures = dict.fromkeys(every, Picture.OK)
        prng = random.Random(f"camwatch-sim-pictures:{seed}")
        prng.shuffle(every)
        pos = 0
        for kind, share in scenario.picture_faults:
            n = min(round(share * total), len(every) - pos)
            for cid in every[pos:pos + n]:
                pictures[cid] = kind
            pos += n
    return Assignment(frozenset(devices[i][0] for i in dead), flapping, skew, faults,
                      pictures)


def flap_down(offset_s: float, period_s: float, t: float) -> bool:
    """A flapping device is down in the first half of each period (shifted by its offset)."""
    return (t + offset_s) % period_s < period_s / 2


def next_flap_change(offset_s: float, period_s: float, t: float) -> float:
    """The first time after ``t`` when :func:`flap_down` changes."""
    half = period_s / 2
    return t + (half - (t + offset_s) % half)


class Clock(Protocol):
    """Monotonic seconds and a way to wait for a point in time."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class LoopClock:
    """The event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - self.now()))


class ManualClock:
    """A clock that moves only when told to; sleepers wake when :meth:`advance` passes them."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (deadline, self._seq, fut))
        await fut

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    def set(self, now: float) -> None:
        self._now = max(self._now, now)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
