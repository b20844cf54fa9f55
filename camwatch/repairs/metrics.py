"""The repair desk's Prometheus exposition (rendered into ``/metrics`` by
:class:`camwatch.sinks.metrics.MetricsRenderer` when ``repairs.enabled``), from the desk's
open tickets in memory: no I/O at scrape time.

- ``camwatch_repair_tickets_open{state}``: open tickets by state (every open state
  pre-created: pending, dispatched, acknowledged, fixed, rework, suspended).
- ``camwatch_repair_tickets_overdue{operator,county,township}``: open tickets past their
  repair deadline (series only where there are some).
- ``camwatch_repair_tickets_opened_total``: counter, tickets opened since camwatch started.
- This month's assessment so far, per operator (``docs/repairs.md``; refreshed after every
  change of a ticket and every 5 minutes): ``camwatch_repair_assessment_tickets{operator,
  kind}`` (kind opened, closed, still_open, repeats), ``camwatch_repair_assessment_seconds{
  operator,what,quantile}`` (what response or repair; quantile 0.5 or 0.9; only when there
  are some), ``camwatch_repair_assessment_within_ratio{operator,deadline}`` (deadline response
  or repair; only when some were due), ``camwatch_repair_assessment_rank{operator}``.
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
    rows = (desk.assessment or {}).get("operators", [])
    out.append(head("camwatch_repair_assessment_tickets", "gauge",
                    "This month's repair tickets per operator: opened, closed (verified), "
                    "still open, repeat faults.", openmetrics))
    for r in rows:
        for kind in ("opened", "closed", "still_open", "repeats"):
            out.append(f'camwatch_repair_assessment_tickets{{operator="{esc(r["key"])}",'
                       f'kind="{kind}"}} {r[kind]}\n')
    out.append(head("camwatch_repair_assessment_seconds", "gauge",
                    "This month's time to respond / to repair (verified) per operator, "
                    "paused time left out: median (0.5) and p90.", openmetrics))
    for r in rows:
        for what in ("response", "repair"):
            for q, key in (("0.5", "median"), ("0.9", "p90")):
                v = r[f"{what}_{key}_s"]
                if v is not None:
                    out.append(f'camwatch_repair_assessment_seconds{{operator="{esc(r["key"])}",'
                               f'what="{what}",quantile="{q}"}} {v!r}\n')
    out.append(head("camwatch_repair_assessment_within_ratio", "gauge",
                    "This month's share of tickets answered / repaired within the deadline, "
                    "per operator.", openmetrics))
    for r in rows:
        for deadline in ("response", "repair"):
            v = r[f"{deadline}_within"]
            if v is not None:
                out.append(f'camwatch_repair_assessment_within_ratio{{operator='
                           f'"{esc(r["key"])}",deadline="{deadline}"}} {v!r}\n')
    out.append(head("camwatch_repair_assessment_rank", "gauge",
                    "This month's operator ranking (1 is best).", openmetrics))
    out += [f'camwatch_repair_assessment_rank{{operator="{esc(r["key"])}"}} {r["rank"]}\n'
            for r in rows]
    return "".join(out)
