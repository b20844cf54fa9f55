"""The repair desk's Prometheus exposition (rendered into ``/metrics`` by
:class:`camwatch.sinks.metrics.MetricsRenderer` when ``repairs.enabled``), from the desk's
open tickets in memory: no I/O at scrape time.

- ``camwatch_repair_tickets_open{state}``: open tickets by state (every open state
  pre-created: pending, dispatched, acknowledged, fixed, rework, suspended).
- ``camwatch_repair_tickets_overdue{operator,county,township}``: open tickets past their
  repair deadline (series only where there are some).
- ``camwatch_repair_tickets_opened_total``: counter, tickets opened since camwatch started.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from camwatch.repairs.desk import RepairDesk
from camwatch.repairs.model import FINAL, TicketState

Head = Callable[[str, str, str, bool], str]
Esc = Callable[[object], str]


def exposition(desk: RepairDesk, now: float, openmetrics: bool, head: Head, esc: Esc) -> str:
    open_states = [s for s in TicketState if s not in FINAL]
    by_state = Counter(t.state for t in desk.tickets.values())
    overdue = Counter((t.operator, t.county, t.township) for t in desk.tickets.values()
                      if t.state != TicketState.SUSPENDED and now >= t.repair_due(now))
    out = [head("camwatch_repair_tickets_open", "gauge",
                "Open repair tickets (维修工单) by state.", openmetrics)]
    out += [f'camwatch_repair_tickets_open{{state="{s.value}"}} {by_state.get(s, 0)}\n'
            for s in open_states]
    out.append(head("camwatch_repair_tickets_overdue", "gauge",
                    "Open repair tickets past their repair deadline.", openmetrics))
    out += [f'camwatch_repair_tickets_overdue{{operator="{esc(o)}",county="{esc(c)}",'
            f'township="{esc(t)}"}} {n}\n' for (o, c, t), n in sorted(overdue.items())]
    out.append(head("camwatch_repair_tickets_opened_total", "counter",
                    "Repair tickets opened since camwatch started.", openmetrics))
    out.append(f"camwatch_repair_tickets_opened_total {desk.opened_total}\n")
    return "".join(out)
