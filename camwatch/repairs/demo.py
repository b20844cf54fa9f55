"""The repair-ticket story of ``camwatch demo``: one camera's password is changed, a ticket
is opened and dispatched to a simulated maintainers' group (a webhook on loopback that prints
what it gets), the "maintainer" acknowledges it, says it is fixed while the camera still
refuses the password, is sent back (处理中), really fixes it, and camwatch closes the ticket
after seeing the camera online (核实结案).

The demo's pace: a ticket opens after three probe intervals offline and a repair is verified
after three intervals online (``repairs.open_after`` and ``verify_for``; a minute each at the
demo's 20 s interval).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from camwatch.daemon import Daemon
from camwatch.repairs.model import TicketState
from camwatch.sim.fleet import Fleet
from camwatch.sim.model import Fault
from camwatch.sim.receiver import webhook_receiver

HOOK_ENV = "CAMWATCH_DEMO_MAINTAINERS_URL"
RECEIVER = "维修群"
BY = "演示-张三"


def demo_config(doc: dict[str, Any], interval_s: float) -> None:
    """Turn the repair desk on in the demo's config, with its maintainers' group."""
    step = f"{max(3 * interval_s, 3.0):g}s"
    doc.setdefault("alerts", {}).setdefault("receivers", {})[RECEIVER] = {
        "type": "webhook", "url_env": HOOK_ENV}
    doc["repairs"] = {"enabled": True, "open_after": step, "verify_for": step,
                      "response": "10m", "repair": "30m", "deadlines": [],
                      "remind_before": "5m", "default_receivers": [RECEIVER]}


@asynccontextmanager
async def maintainers_group(say: Callable[[str], None], watched: set[str]
                            ) -> AsyncIterator[str]:
    """A webhook on loopback standing for the maintainers' robot: prints the messages of the
    tickets of the ``watched`` channels (the others are many: a county always has some
    cameras down). Sets :data:`HOOK_ENV`."""

    def show(alert: dict[str, Any]) -> None:
        if watched & set(alert.get("ticket", {}).get("channels", [])):
            say(f"  维修群收到：{alert.get('summary')}")
            for note in alert.get("details", {}).get("notes", [])[:1]:
                say(f"            {note}")

    async with webhook_receiver("/hook", HOOK_ENV, show) as url:
        yield url


def pick_channel(fleet: Fleet, avoid_township: str) -> str | None:
    """A healthy channel outside the township whose uplink the demo takes down."""
    for cid in fleet.channel_ids():
        info = fleet.channel_info(cid)
        if info["effective_fault"] == Fault.NONE.value and info["township"] != avoid_township:
            return cid
    return None


async def story(daemon: Daemon, fleet: Fleet, cid: str, say: Callable[[str], None],
                watched: set[str]) -> None:
    eng = daemon.engine
    desk = eng.repairs
    interval = eng.cfg.probing.interval

    async def until(cond: Callable[[], object]) -> bool:
        while not cond():
            if await eng.wait(1.0):
                return False
        return True

    if await eng.wait(interval):
        return
    watched.add(cid)
    await fleet.set_channel_fault(cid, Fault.AUTH_FAIL)
    say(f"演示：点位 {cid} 的密码被改，探测认证失败；离线 {desk.rcfg.open_after:g} 秒后生成工单")
    if not await until(lambda: cid in desk.covering()):
        return
    no = desk.covering()[cid]
    say(f"演示：工单 #{no} 已生成并派单至「{RECEIVER}」（{desk.link(no)}）")
    for action, note in (("ack", "收到，前往现场"), ("done", "已处理（其实密码还没改回）")):
        if await eng.wait(interval):
            return
        await desk.act(no, action, BY, note, eng.clock())
        say(f"演示：{BY} {'响应' if action == 'ack' else '报告已处理'}工单 #{no}")
    if not await until(lambda: (t := desk.tickets.get(no)) is None
                       or t.state == TicketState.REWORK):
        return
    say(f"演示：camwatch 核实点位仍离线，工单 #{no} 退回处理中")
    await fleet.set_channel_fault(cid, None)
    if await eng.wait(interval):
        return
    await desk.act(no, "done", BY, "已恢复设备密码", eng.clock())
    say(f"演示：{BY} 真正修好并再次报告；camwatch 在线满 {desk.rcfg.verify_for:g} 秒后核实结案")
    if await until(lambda: no not in desk.tickets):
        say(f"演示：工单 #{no} 核实结案（camwatch ticket show {no}）")
