"""The GB/T 28181 part of ``camwatch demo``: the simulated county's platforms (the county's
own, and two operator clouds whose few hundred channels camwatch reaches only through them)
register with the daemon; the demo prints their catalogs, the ledger reconciliation (台账核对),
then one cloud stops its keepalives and its channels go offline as ``platform_down``, with
one mass-outage alert naming it, received by a duty group's webhook on loopback (值班群).

The demo's pace: keepalives every 10 s, a platform is down after 30 s of silence, catalogs
every minute (production: 60 s, 180 s, 10 min).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from camwatch.daemon import Daemon
from camwatch.rules.rates import format_rate
from camwatch.sim.fleet import Fleet
from camwatch.sim.receiver import webhook_receiver

HOOK_ENV = "CAMWATCH_DEMO_DUTY_URL"
RECEIVER = "值班群"
KEEPALIVE_S = 10.0
KEEPALIVE_TIMEOUT = "30s"
CATALOG_INTERVAL = "60s"
SHOWN = 3  # examples printed per reconciliation list
RECORD_PER_MINUTE = 3000  # RecordInfo queries (production default 120): all of them in a minute


def demo_config(doc: dict[str, Any]) -> None:
    """The demo's pace for the platforms, and mass outages sent to the duty group."""
    gb = doc.get("gb28181")
    if not gb:
        return
    gb["keepalive_timeout"] = KEEPALIVE_TIMEOUT
    gb["catalog_interval"] = CATALOG_INTERVAL
    gb["recording"] = {"enabled": True, "per_minute": RECORD_PER_MINUTE}
    alerts = doc.setdefault("alerts", {})
    alerts.setdefault("receivers", {})[RECEIVER] = {"type": "webhook", "url_env": HOOK_ENV}
    alerts["routes"] = [*alerts.get("routes", []),
                        {"match": {"alert": "mass_outage"}, "receivers": [RECEIVER]}]


@asynccontextmanager
async def duty_group(say: Callable[[str], None]) -> AsyncIterator[str]:
    """A webhook on loopback standing for the duty group's robot: prints every mass-outage
    message it gets (a township's, a platform's). Sets :data:`HOOK_ENV`."""

    def show(alert: dict[str, Any]) -> None:
        say(f"  {RECEIVER}收到：{alert.get('summary')}")

    async with webhook_receiver("/duty", HOOK_ENV, show) as url:
        yield url


def recording_line(doc: dict[str, Any], day: str) -> str:
    """录像完整率 of the previous day in one line, with the channels recorded least."""
    low = [r for r in doc["lowest"] if (r["coverage"] or 0.0) < 1.0]
    shown = "；".join(f"{r['channel']} {r['name']} {format_rate(r['coverage'])}"
                     for r in low[:SHOWN])
    return (f"录像完整率（{day}，平台 RecordInfo）：{format_rate(doc['coverage'])}，"
            f"{doc['channels']} 路，其中 {len(low)} 路不完整" + (f"：{shown} 等" if low else ""))


def reconciliation_lines(rec: dict[str, Any]) -> list[str]:
    """台账核对 in a few lines, with a few examples of each list."""
    lines = [f"台账核对：上云率 台账 {format_rate(rec['declared_rate'])}  实测 "
             f"{format_rate(rec['measured_rate'])}（已安装 {rec['installed']}，台账已上云 "
             f"{rec['declared_connected']}，在目录中 {rec['measured_connected']}）"
             + ("" if rec["complete"] else "（有目录不完整）")]
    kinds: tuple[tuple[str, str, Callable[[dict[str, Any]], str]], ...] = (
        ("missing", "台账已上云、不在任何目录", lambda r: f"{r['channel']} {r['name']}"),
             ("not_in_ledger", "目录中有、台账中没有",
              lambda r: f"{r['channel']} {r['name']}（{r['platform']}）"),
             ("names_differ", "名称不一致",
              lambda r: f"{r['channel']} 台账「{r['ledger']}」目录「{r['catalog']}」"),
             ("not_connected_in_ledger", "在目录中、台账写未上云",
              lambda r: f"{r['channel']} {r['name']}"))
    for key, title, fmt in kinds:
        rows = rec[key]
        more = f" 等 {rec[key + '_count']} 路" if rec[key + "_count"] > SHOWN else ""
        lines.append(f"  {title} {rec[key + '_count']} 路"
                     + (f"：{'；'.join(fmt(r) for r in rows[:SHOWN])}{more}" if rows else ""))
    return lines


async def story(daemon: Daemon, fleet: Fleet, say: Callable[[str], None]) -> None:
    """Print each platform's registration and catalog, the reconciliation once every catalog
    is in, and each platform going down and coming back."""
    eng = daemon.engine
    clouds = fleet.gb
    if clouds is None or not daemon.cfg.gb28181.enabled:
        return
    while (gb := eng.gb) is None:  # the daemon starts the upper platform as it starts
        if await eng.wait(0.2):
            return
    expected = set(clouds.names)
    seen: set[str] = set()
    down: set[str] = set()
    reconciled = False
    recordings_due: int | None = None  # answers expected once the catalogs are in
    while not await eng.wait(1.0):
        for p in list(gb.peers.values()):
            if p.catalog.at is not None and p.id not in seen:
                seen.add(p.id)
                listed = len(p.catalog.channels)
                inv = sum(1 for cid in p.catalog.channels if cid in eng.book.channels)
                say(f"演示：下级平台 {p.name or p.id}（{p.id}）已注册（{p.transport.upper()}），"
                    f"目录 {listed} 路通道，其中 {inv} 路在台账")
            if not p.up and p.id not in down and p.id in seen:
                down.add(p.id)
                lost = sum(1 for cid in p.catalog.channels if cid in eng.book.channels)
                say(f"演示：下级平台 {p.name or p.id} 心跳超时（{p.down_reason}），其 {lost} 路"
                    f"通道离线（下级平台离线 platform_down），合为一条批量离线告警")
            elif p.up and p.id in down:
                down.discard(p.id)
                say(f"演示：下级平台 {p.name or p.id} 恢复心跳，重新查询目录")
        if not reconciled and expected <= seen:
            reconciled = True
            for line in reconciliation_lines(gb.reconciliation()):
                say(line)
            if gb.cfg.recording.enabled:
                recordings_due = len({cid for p in gb.peers.values() if p.up
                                      for cid in p.catalog.channels if gb.wants_records(cid)})
        if recordings_due is not None and len(gb.recordings) >= recordings_due:
            recordings_due = None
            day = next(iter(gb.recordings.values())).day if gb.recordings else "-"
            say(recording_line(gb.recordings_json(lambda ts: None), day))
