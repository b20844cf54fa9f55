"""Ticket messages for the maintainers: outbox payloads shaped like an alert's
(:meth:`camwatch.rules.alerts.Alert.as_payload`), so every receiver the alerts use (WeCom and
DingTalk robots, the JSON webhook, MQTT, Alertmanager) renders them without a line of its own.
The webhook's JSON carries the whole ticket under ``alert.ticket``.

``fingerprint`` is ``ticket-<no>`` for every message of one ticket; ``status`` is ``resolved``
once the ticket is closed or cancelled.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from camwatch.localtime import format_time
from camwatch.model import CLASS_NAMES, reason_zh
from camwatch.repairs.machine import faults_zh
from camwatch.repairs.model import QUALITY_FAULT, STATE_ZH, Ticket, TicketEvent, TicketState
from camwatch.rules.alerts import format_duration

NAME = "repair_ticket"
#: The events a maintainer is told of (the others are in the ticket's history only).
NOTIFIED = frozenset({"dispatched", "rejected", "reminded", "escalated", "verified",
                      "self_recovered", "cancelled", "channel_added"})
_HEADS = {
    "dispatched": "新工单",
    "rejected": "核实未通过，退回处理",
    "reminded": "即将超时",
    "escalated": "已超时",
    "verified": "核实结案",
    "self_recovered": "核实结案（自行恢复）",
    "cancelled": "工单撤销",
    "channel_added": "新增点位",
}


def labels(t: Ticket) -> dict[str, str]:
    """What routes match on (the alert routes' keys)."""
    out = {"county": t.county, "township": t.township, "village": t.village,
           "operator": t.operator, "project": t.project,
           "class": "" if t.klass is None else str(t.klass), "ticket": str(t.no)}
    return {k: v for k, v in out.items() if v}


def place(t: Ticket) -> str:
    return " ".join(p for p in (t.county, t.township, t.village) if p)


def point_text(t: Ticket) -> str:
    if t.group:
        return f"{t.name}（批量离线 {len(t.channels)} 路）"
    cid = t.channels[0] if t.channels else "-"  # (a cancelled ticket may have none left)
    return f"点位「{t.name or cid}」({cid})"


def fault_text(t: Ticket) -> str:
    """The fault in Chinese: ``离线（超时）`` or ``画面异常（信号缺失、雪花干扰）``."""
    if t.kind == QUALITY_FAULT:
        return f"画面异常（{faults_zh(t.faults)}）"
    return f"离线（{reason_zh(t.reason)}）"


def payload(t: Ticket, ev: TicketEvent, link: str, tz: tzinfo, timezone: str
            ) -> dict[str, Any]:
    now = ev.ts
    head = _HEADS.get(ev.kind, ev.kind)
    resp_due = format_time(t.response_due(now), tz)
    repair_due = format_time(t.repair_due(now), tz)
    if t.state == TicketState.CLOSED and t.repaired is not None:
        back = "画面已恢复正常" if t.kind == QUALITY_FAULT else "已恢复在线"
        why = faults_zh(t.faults) if t.kind == QUALITY_FAULT else reason_zh(t.reason)
        summary = (f"【维修工单 #{t.no} {head}】{place(t)} {point_text(t)} {back}"
                   f"（原因：{why}），"
                   f"修复用时 {format_duration(t.net(t.repaired))}")
    elif t.state == TicketState.CANCELLED:
        summary = f"【维修工单 #{t.no} {head}】{place(t)} {point_text(t)} 已移出台账"
    else:
        summary = (f"【维修工单 #{t.no} {head}】{place(t)} {point_text(t)} {fault_text(t)}"
                   f"，请于 {resp_due} 前响应、{repair_due} 前修复")
    notes = [f"工单状态：{STATE_ZH.get(t.state, t.state)}",
             f"运营商：{t.operator or '-'}",
             f"点位类型：{CLASS_NAMES.get(t.klass, '-') if t.klass is not None else '-'}",
             f"{'异常' if t.kind == QUALITY_FAULT else '离线'}时间："
             f"{format_time(t.fault_since, tz)}"
             f"（已 {format_duration(now - t.fault_since)}）"]
    if ev.note:
        notes.insert(0, ev.note)
    if t.group:
        shown = "、".join(t.channels[:20])
        notes.append(f"涉及点位：{shown}{' 等' if len(t.channels) > 20 else ''}")
    if t.snapshot:
        notes.append(f"抽检截图：{t.snapshot}")
    notes.append(f"工单链接：{link}")
    escalation = ev.kind == "escalated"
    resolved = t.state in (TicketState.CLOSED, TicketState.CANCELLED)
    return {
        "version": 1,
        "name": NAME,
        "fingerprint": f"ticket-{t.no}",
        "severity": "critical" if escalation else "warning",
        "status": "resolved" if resolved else "firing",
        "starts_at": t.opened,
        "ends_at": t.final_ts,
        "labels": labels(t),
        "summary": summary,
        "details": {"event": ev.kind, "notes": notes, "link": link},
        "timezone": timezone,
        "ticket": {**t.as_dict(), "state_zh": STATE_ZH.get(t.state, t.state),
                   "response_due": t.response_due(now), "repair_due": t.repair_due(now),
                   "link": link},
    }
