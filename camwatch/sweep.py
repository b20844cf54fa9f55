"""Running probes under bounds, and the one-shot sweep (``camwatch sweep``).

:class:`ProbeRunner` is what the daemon's scheduler and the one-shot sweep share: it turns an
inventory channel into a probe :class:`Target` (credentials resolved once), and runs a probe
under the global and per-host concurrency bounds with the overall timeout. The caller owns the
timeout, as in blackbox_exporter: a probe that overruns is cut and counted as ``timeout``; a
probe that raises is a camwatch bug and is counted as ``internal``. The RTSP probes hold that
same deadline around their whole exchange and report it with the phase that overran, so the
runner adds no second timer around them (:data:`SELF_TIMED`).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from camwatch.config import Config
from camwatch.errors import ConfigError, Problem
from camwatch.inventory import Channel, Inventory
from camwatch.log import register_secret
from camwatch.probes import Level, ProbeResult, ProbeSettings, Reason, Target, get_prober
from camwatch.rules.rates import RateRow, Targets, compute_rates, online_rate
from camwatch.secrets import Secret, split_userinfo

log = structlog.get_logger(__name__)

#: Levels whose probe bounds its whole exchange by ``settings.timeout_s`` itself
#: (``camwatch.probes.rtsp``): the runner adds no timer of its own around them.
SELF_TIMED = frozenset({Level.DESCRIBE, Level.STREAM})

GC_THRESHOLD0 = 20_000  # young collections: every this many net new objects, not 700


def tune_gc(full: bool = True) -> None:
    """Keep the cyclic collector off the probe path (bench/bench_engine.py: it took a fifth
    to a third of the CPU of a 100,000-channel sweep).

    * What lives as long as the engine (inventory, targets, states, config) is frozen out of
      its sight, so full collections stop re-scanning objects that cannot be garbage.
      Unfreezing first lets this collection reclaim cycles frozen at the previous (re)load
      that died since, so reloads do not pile anything up.
    * The youngest generation is collected after 20,000 net new objects rather than 700:
      a thousand probes in flight, each holding a few dozen objects for a few milliseconds,
      otherwise trigger a collection every few probes that finds nothing.

    After a reload (``full=False``) the new inventory is only frozen: a full collection of a
    100,000-channel heap holds the GIL for seconds, the stall a reload must not cause. The
    old inventory, frozen before, is still freed by reference counting (it holds no cycles).
    """
    if full:
        gc.unfreeze()
        gc.collect()
    gc.freeze()
    t0, t1, t2 = gc.get_threshold()
    if t0:  # 0: collection disabled by whoever owns the process; leave it so
        gc.set_threshold(max(t0, GC_THRESHOLD0), t1, t2)


def probe_settings(cfg: Config) -> ProbeSettings:
    return ProbeSettings(timeout_s=cfg.probing.timeout, user_agent=cfg.probing.user_agent)


def resolve_credentials(cfg: Config, channels: Iterable[Channel]
                        ) -> dict[str, tuple[str, Secret | None]]:
    """Resolve every credential reference now. One that cannot be resolved (env var unset, file
    unreadable) stops the start, with a message naming the reference (never a value), when a
    channel that will be probed uses it; one that no such channel uses (every RTSP URL carries
    its own user:pass@, say) is a warning, as in ``check-config``."""
    users = Counter(ch.credentials for ch in channels
                    if ch.connected and ch.url_username is None)
    out: dict[str, tuple[str, Secret | None]] = {}
    problems = []
    for name, cred in cfg.credentials.items():
        try:
            secret = cred.password()
        except LookupError as exc:
            if users[name]:
                n = users[name]
                problems.append(Problem(cfg.source, f"$.credentials.{name}",
                                        f"{exc} (used by {n} connected channel{'s' * (n != 1)})"))
            else:
                log.warning("credential_unresolved_unused", credential=name, problem=str(exc),
                            note="no connected channel uses it: not needed now")
            continue
        if secret is not None:
            register_secret(secret.reveal())
        out[name] = (cred.username, secret)
    if problems:
        raise ConfigError(problems)
    return out


def make_target(ch: Channel, creds: dict[str, tuple[str, Secret | None]]) -> Target:
    user, password = creds.get(ch.credentials, (None, None))
    if ch.url_username is not None:  # credentials written into the RTSP URL win
        user = ch.url_username
        password = ch.url_password
        if password is not None:
            register_secret(password.reveal())
    return Target(channel_id=ch.id, host=ch.host, rtsp_url=ch.rtsp_url or None,
                  onvif_url=ch.onvif_url or None, username=user, password=password)


class ProbeRunner:
    """Global and per-host concurrency bounds plus the overall timeout around every probe."""

    def __init__(self, settings: ProbeSettings, concurrency: int, per_host: int) -> None:
        self.settings = settings
        self._global = asyncio.Semaphore(concurrency)
        self._per_host_limit = per_host
        self._hosts: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}
        self._stream_uris: dict[str, str] = {}  # channel id -> RTSP URL found over ONVIF

    def _host_sem(self, host: str) -> tuple[asyncio.Semaphore, list[int]]:
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = (asyncio.Semaphore(self._per_host_limit), [0])
        return entry

    async def run(self, level: Level, target: Target) -> ProbeResult:
        sem, users = self._host_sem(target.host)
        users[0] += 1
        try:
            async with sem, self._global:
                return await self._run_one(level, target)
        finally:
            users[0] -= 1
            if users[0] == 0:  # keep the map as small as the hosts being probed now
                self._hosts.pop(target.host, None)

    async def _rtsp_url_from_onvif(self, level: Level, target: Target
                                   ) -> Target | ProbeResult:
        """Rows that have only an ONVIF address: ask the device for its stream URI once
        (GetProfiles + GetStreamUri) and probe that. When it gives none, the ONVIF probe says
        why (refused, timeout, auth ...)."""
        from camwatch.probes import onvif

        uri = self._stream_uris.get(target.channel_id)
        if uri is None:
            uri = await onvif.get_stream_uri(target, self.settings)
            if uri is None:
                r = await onvif.probe(target, self.settings)
                if r.ok:
                    return ProbeResult.failure(level.value, Reason.NOT_FOUND,
                                               "no RTSP URL in the inventory and the device's "
                                               "ONVIF GetStreamUri gave none",
                                               latency_s=r.latency_s, phases=r.phases)
                return r
            # some devices put user:pass@ into the URI: the configured credentials are used
            uri = split_userinfo(uri)[0]
            self._stream_uris[target.channel_id] = uri
        return replace(target, rtsp_url=uri)

    async def _run_one(self, level: Level, target: Target) -> ProbeResult:
        prober = get_prober(level)
        start = time.perf_counter()
        if level in SELF_TIMED and target.rtsp_url:
            # The RTSP probe's whole exchange already runs under asyncio.timeout(timeout_s),
            # whose expiry it reports with the phase: a second timer around it (one libuv
            # timer made and closed per probe under uvloop, ~5 µs) would never fire first.
            try:
                return await prober(target, self.settings)
            except Exception as exc:  # a probe must not raise: this is our bug
                return self._internal(level, target, exc, start)
        try:
            # A little grace over the probe's own deadline: probes bound themselves, and
            # this outer cut only fires for one that does not.
            async with asyncio.timeout(self.settings.timeout_s + 0.5):
                if level in (Level.DESCRIBE, Level.STREAM) and not target.rtsp_url \
                        and target.onvif_url:
                    found = await self._rtsp_url_from_onvif(level, target)
                    if isinstance(found, ProbeResult):
                        return found
                    target = found
                return await prober(target, self.settings)
        except TimeoutError:
            took = time.perf_counter() - start
            return ProbeResult.failure(level.value, Reason.TIMEOUT,
                                       f"no verdict within {self.settings.timeout_s:g}s",
                                       latency_s=took)
        except Exception as exc:  # a probe must not raise: this is our bug
            return self._internal(level, target, exc, start)

    @staticmethod
    def _internal(level: Level, target: Target, exc: Exception, start: float) -> ProbeResult:
        log.error("probe raised", channel=target.channel_id, level=level.value,
                  error=type(exc).__name__)
        return ProbeResult.failure(level.value, Reason.INTERNAL, type(exc).__name__,
                                   latency_s=time.perf_counter() - start)


@dataclass(slots=True)
class SweepResult:
    results: dict[str, ProbeResult]
    duration_s: float
    rates: list[RateRow] = field(default_factory=list)


def by_turns(channels: list[Channel]) -> list[Channel]:
    """``channels`` taking turns by device: every device's first channel (in inventory order),
    then every device's second, and so on, so that probes in flight spread over devices."""
    seen: Counter[str] = Counter()
    keyed = []
    for ch in channels:
        keyed.append((seen[ch.host], ch))
        seen[ch.host] += 1
    keyed.sort(key=lambda kc: kc[0])  # stable: inventory order within a turn
    return [ch for _, ch in keyed]


async def sweep_once(cfg: Config, inventory: Inventory,
                     progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Probe every connected channel once at the configured level (no hysteresis)."""
    creds = resolve_credentials(cfg, inventory.channels)
    runner = ProbeRunner(probe_settings(cfg), cfg.probing.concurrency,
                         cfg.probing.per_host_concurrency)
    todo = by_turns([ch for ch in inventory.channels if ch.connected])
    results: dict[str, ProbeResult] = {}
    start = time.perf_counter()
    done = 0
    level = cfg.probing.level
    queue = iter(todo)  # shared by the workers: each channel is taken once

    # ``concurrency`` workers, not a task per channel parked on the runner's semaphores
    # (10,000 tasks, ~12 µs each of parking and waking, bench/bench_sweep.py); the per-host
    # bound still holds in the runner, and by_turns keeps a worker from waiting on it while
    # other devices have channels left
    async def worker() -> None:
        nonlocal done
        for ch in queue:
            results[ch.id] = await runner.run(level, make_target(ch, creds))
            done += 1
            if progress is not None:
                progress(done, len(todo))

    async with asyncio.TaskGroup() as tg:
        for i in range(min(cfg.probing.concurrency, len(todo))):
            tg.create_task(worker(), name=f"sweep:{i}")
    duration = time.perf_counter() - start

    def state_of(cid: str) -> str:
        r = results.get(cid)
        return "unknown" if r is None else "online" if r.ok else "offline"

    rates = compute_rates(inventory.channels, state_of, Targets(cfg.targets))
    return SweepResult(results, duration, rates)


def sweep_json(inventory: Inventory, sweep: SweepResult) -> dict[str, Any]:
    """The JSON contract of ``camwatch sweep --json`` (documented in README.md)."""
    channels = []
    for ch in inventory.channels:
        r = sweep.results.get(ch.id)
        reason: str | None
        if not ch.connected or r is None:
            state, reason, latency, drift = "unknown", "not_connected", None, None
        else:
            state = "online" if r.ok else "offline"
            reason = None if r.ok else (r.reason.value if r.reason else None)
            latency = round(r.latency_s * 1000, 1)
            drift = r.clock_drift_s
        channels.append({
            "id": ch.id, "state": state, "reason": reason, "latency_ms": latency,
            "clock_drift_s": drift, "class": ch.klass, "project": ch.project or None,
            "county": ch.county or None, "township": ch.township or None,
            "operator": ch.operator or None,
        })
    return {
        "channels": channels,
        "rates": [r.as_json() for r in sweep.rates],
        "summary": sweep_summary(inventory, sweep),
    }


def sweep_summary(inventory: Inventory, sweep: SweepResult) -> dict[str, Any]:
    """The ``summary`` object of ``sweep --json``; also what the table view prints."""
    summary = inventory.summary()
    online = sum(1 for r in sweep.results.values() if r.ok)
    return {
        "planned": summary["planned"],
        "installed": summary["installed"],
        "connected": summary["connected"],
        "install_rate": _round(summary["install_rate"]),
        "cloud_rate": _round(summary["cloud_rate"]),
        "online": online,
        "online_rate": _round(online_rate(online, len(sweep.results))),
        "duration_s": round(sweep.duration_s, 3),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def reasons_count(results: Iterable[ProbeResult]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        if not r.ok and r.reason is not None:
            out[r.reason.value] = out.get(r.reason.value, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
