"""Repair tickets (维修工单) verified by probing, and the operators' monthly assessment.

- :mod:`camwatch.repairs.model`: the ticket, its states and events (pure data);
- :mod:`camwatch.repairs.machine`: the state machine (pure);
- :mod:`camwatch.repairs.desk`: the daemon's side: opening, dispatch, persistence;
- :mod:`camwatch.repairs.assess`: the assessment (考核评价), a pure function;
- :mod:`camwatch.repairs.api`: ``/api/tickets`` and ``camwatch ticket``.
"""

from camwatch.repairs.model import STATE_ZH, Ticket, TicketError, TicketEvent, TicketState

__all__ = ["STATE_ZH", "Ticket", "TicketError", "TicketEvent", "TicketState"]
