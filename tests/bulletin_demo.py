"""The month ``camwatch demo`` leaves in its store, built without running it: the demo's
2,000-channel county (same generator, same seed) watched for the last 11 minutes of a month
that is still running, with the demo's faults (dead, hung, wrong password, no such stream,
flapping) and its township losing the uplink for five minutes; nothing in the month before.

The transitions follow what the daemon writes: every channel ``unknown`` -> ``online`` at its
first sweep, a failing one ``unknown`` -> ``offline`` after three failed probes, channels
behind a host that is down with ``host_down``.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

from camwatch.config import load_config
from camwatch.inventory import Channel, load_inventory
from camwatch.reports.compute import Bulletin, ReportSettings, compute_bulletin
from camwatch.reports.period import Period, zone
from camwatch.sim.inventory_gen import InventorySpec, plan_inventory, write_all
from camwatch.store.base import Transition
from camwatch.store.sqlite import SqliteStore

TZ = zone("Asia/Shanghai")
NOW = dt.datetime(2026, 11, 30, 20, 22, tzinfo=TZ).timestamp()
WATCHED = 660.0  # 11 minutes
INTERVAL = 20.0  # the demo's probe interval


def demo_channels(tmp: Path) -> tuple[list[Channel], str]:
    """The demo's inventory, loaded as ``camwatch report`` loads it; and the victim
    township (the demo's third)."""
    spec = InventorySpec(connected=2000, seed=1)
    plan = plan_inventory(spec)
    files = write_all(plan, tmp, "pw")
    cfg = load_config(files.config)
    inv = load_inventory(cfg.inventory, known_credentials=cfg.credentials)
    return inv.channels, plan.county.townships[2].name


def demo_history(channels: list[Channel], victim: str, seed: int = 1) -> list[Transition]:
    rng = random.Random(seed)
    t0 = NOW - WATCHED
    hosts: dict[str, int] = {}
    for ch in channels:
        hosts[ch.host] = hosts.get(ch.host, 0) + 1
    out: list[Transition] = []
    for ch in channels:
        if not ch.connected:
            continue
        first = t0 + rng.uniform(0, INTERVAL)
        r = rng.random()
        fault = ("refused" if r < 0.01 else "timeout" if r < 0.015 else "auth" if r < 0.02
                 else "not_found" if r < 0.025 else "flapping" if r < 0.027 else None)
        if fault is not None and fault != "flapping":
            out.append(Transition(ch.id, first + 2 * INTERVAL, "unknown", "offline", fault))
            continue
        out.append(Transition(ch.id, first, "unknown", "online"))
        if fault == "flapping":
            t, state = first, "online"
            while t < NOW - 3 * INTERVAL:
                t += rng.uniform(2, 4) * INTERVAL
                new = "offline" if state == "online" else "online"
                out.append(Transition(ch.id, t, state, new,
                                      "timeout" if new == "offline" else None))
                state = new
        elif ch.township == victim:
            behind = hosts.get(ch.host, 0) > 1
            down = t0 + 120 + 3 * INTERVAL + rng.uniform(0, INTERVAL)
            up = t0 + 420 + rng.uniform(0, 2 * INTERVAL)
            out.append(Transition(ch.id, down, "online", "offline",
                                  "host_down" if behind else "refused"))
            out.append(Transition(ch.id, up, "offline", "online"))
    out.sort(key=lambda x: x.ts)
    return out


def demo_bulletin(tmp: Path, settings: ReportSettings | None = None) -> Bulletin:
    channels, victim = demo_channels(tmp)
    store = SqliteStore(":memory:")
    store.write_batch([], demo_history(channels, victim))
    return compute_bulletin(store, channels, Period.month("2026-11", TZ),
                            settings or ReportSettings(), site="鹿邑县",
                            inventory_source="demo", now=NOW)
