"""``/api/tickets``: the tickets, their history, the maintainers' actions and the assessment;
and ``camwatch ticket list|show|ack|done|note``, which talks to it.

========================================  =====================================================
``GET /api/tickets``                      ``?state=open|closed|cancelled|all|<state>``,
                                          ``county``, ``township``, ``operator``, ``kind``
                                          (``online|quality``), ``limit``
``GET /api/tickets/{no}``                 the ticket and its events (history)
``POST /api/tickets/{no}/ack|done|note``  JSON ``{"by": "张三", "note": "..."}``; 200 with the
                                          ticket, 404 unknown, 409 when its state does not
                                          allow it (the answer says why)
``GET /api/tickets/assessment``           ``?month=2026-11`` (default: this month)
========================================  =====================================================

The POSTs change a ticket on somebody's word, so they are authenticated: with
``repairs.token_env``/``token_file`` set, the token must come as ``X-Camwatch-Token`` (or
``Authorization: Bearer`` when ``http.auth`` is not set); without it, only a client that
passed ``http.auth`` or one on loopback may post.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hmac
import ipaddress
import json
import sys
import time
from typing import Any

from aiohttp import web

from camwatch.log import register_secret
from camwatch.repairs.assess import month_assessment
from camwatch.repairs.desk import RepairDesk
from camwatch.repairs.model import (
    ACTIONS,
    ONLINE_FAULT,
    QUALITY_FAULT,
    STATE_ZH,
    Ticket,
    TicketError,
    TicketEvent,
)
from camwatch.reports.period import parse_month, zone
from camwatch.store.base import Store

MAX_BODY = 8 * 1024
MAX_LIMIT = 1000
STATE_FILTERS = ("open", "closed", "cancelled", "all", *STATE_ZH)


class _Api:
    def __init__(self, desk: RepairDesk, store: Store, clock: Any) -> None:
        self.desk = desk
        self.store = store
        self.clock = clock
        self._for: object = None
        self._token: bytes | None = None

    @property
    def token(self) -> bytes | None:
        """``repairs.token``, resolved again after a reload changed the section."""
        if self._for is not self.desk.rcfg:
            secret = self.desk.rcfg.token()
            if secret is not None:
                register_secret(secret.reveal())
            self._token = secret.reveal().encode() if secret is not None else None
            self._for = self.desk.rcfg
        return self._token

    @property
    def http_auth(self) -> bool:
        return self.desk.cfg.http.auth is not None


API: web.AppKey[_Api] = web.AppKey("repairs-api", _Api)


def add_routes(app: web.Application, desk: RepairDesk, store: Store,
               clock: Any = time.time) -> None:
    """The ticket endpoints, on the daemon's app (called by :func:`camwatch.http.make_app`)."""
    app[API] = _Api(desk, store, clock)
    app.router.add_get("/api/tickets", list_tickets)
    app.router.add_get("/api/tickets/assessment", assessment_view)
    app.router.add_get("/api/tickets/{no}", show_ticket)
    app.router.add_post("/api/tickets/{no}/{action}", act)


def _error(status: int, message: str, **fields: Any) -> web.Response:
    return web.Response(status=status, content_type="application/json",
                        text=json.dumps({"error": message, **fields}, ensure_ascii=False))


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, content_type="application/json",
                        text=json.dumps(body, ensure_ascii=False))


def ticket_json(t: Ticket, tz: dt.tzinfo, link: str, now: float) -> dict[str, Any]:
    d = t.as_dict()
    d.update(state_zh=STATE_ZH.get(t.state, t.state), link=link,
             response_due=t.response_due(now), repair_due=t.repair_due(now))
    for k in ("opened", "fault_since", "acked", "fixed", "repaired", "closed", "cancelled",
              "response_due", "repair_due"):
        v = d.get(k)
        d[f"{k}_iso"] = None if v is None else \
            dt.datetime.fromtimestamp(v, tz).isoformat(timespec="seconds")
    return d


def event_json(e: TicketEvent, tz: dt.tzinfo) -> dict[str, Any]:
    return {**e.as_dict(), "ts_iso": dt.datetime.fromtimestamp(e.ts, tz).isoformat(
        timespec="seconds"), "to_state_zh": STATE_ZH.get(e.to_state, e.to_state)}


def _number(request: web.Request) -> int:
    raw = request.match_info["no"]
    if not raw.isdigit() or len(raw) > 9:
        raise web.HTTPBadRequest(text=json.dumps(
            {"error": f"expected a ticket number like 12, got {raw[:20]!r}"},
            ensure_ascii=False), content_type="application/json")
    return int(raw)


async def list_tickets(request: web.Request) -> web.Response:
    api = request.app[API]
    q = request.query
    unknown = [k for k in q
               if k not in ("state", "county", "township", "operator", "kind", "limit")]
    if unknown:
        return _error(400, f"query parameter {unknown[0]!r}: expected one of state, county, "
                           f"township, operator, kind, limit", parameter=unknown[0])
    kinds = (ONLINE_FAULT, QUALITY_FAULT)
    if q.get("kind", ONLINE_FAULT) not in kinds:
        return _error(400, f"query parameter 'kind': expected one of {', '.join(kinds)}, got "
                           f"{q['kind'][:40]!r}", parameter="kind", choices=list(kinds))
    state = q.get("state", "open")
    if state not in STATE_FILTERS:
        return _error(400, f"query parameter 'state': expected one of "
                           f"{', '.join(STATE_FILTERS)}, got {state[:40]!r}",
                      parameter="state", choices=list(STATE_FILTERS))
    limit_text = q.get("limit", "200")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
        return _error(400, f"query parameter 'limit': expected 1 to {MAX_LIMIT}, got "
                           f"{limit_text[:20]!r}", parameter="limit")
    tickets = await asyncio.to_thread(api.store.tickets, open_only=state == "open")
    if state == "closed":
        tickets = [t for t in tickets if t.state == "closed"]
    elif state == "cancelled":
        tickets = [t for t in tickets if t.state == "cancelled"]
    elif state not in ("open", "all"):
        tickets = [t for t in tickets if t.state == state]
    for key in ("county", "township", "operator", "kind"):
        if key in q:
            tickets = [t for t in tickets if getattr(t, key) == q[key]]
    tickets.sort(key=lambda t: -t.no)
    tz, now = zone(api.desk.timezone), api.clock()
    shown = tickets[:int(limit_text)]
    return _json({"count": len(tickets), "tickets": [
        ticket_json(t, tz, api.desk.link(t.no), now) for t in shown]})


async def show_ticket(request: web.Request) -> web.Response:
    api = request.app[API]
    no = _number(request)
    t = await asyncio.to_thread(api.store.ticket, no)
    if t is None:
        return _error(404, f"no ticket {no}")
    events = await asyncio.to_thread(api.store.ticket_events, no)
    tz = zone(api.desk.timezone)
    return _json({"ticket": ticket_json(t, tz, api.desk.link(no), api.clock()),
                  "events": [event_json(e, tz) for e in events]})


def _allowed(api: _Api, request: web.Request) -> bool:
    try:
        token = api.token
    except (LookupError, OSError):
        return False  # the reference cannot be resolved: nobody gets in
    if token is not None:
        given = request.headers.get("X-Camwatch-Token", "").encode()
        if not given and not api.http_auth:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        return hmac.compare_digest(given, token)
    if api.http_auth:
        return True  # the middleware let it through: authenticated
    try:
        return ipaddress.ip_address((request.remote or "").split("%")[0]).is_loopback
    except ValueError:
        return False


async def act(request: web.Request) -> web.Response:
    api = request.app[API]
    no = _number(request)
    action = request.match_info["action"]
    if action not in ACTIONS:
        return _error(404, f"unknown action {action[:20]!r}; expected one of "
                           f"{', '.join(ACTIONS)}")
    if not _allowed(api, request):
        return _error(403, "ticket changes need repairs.token (X-Camwatch-Token), http.auth, "
                           "or a client on loopback")
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(413, f"expected a JSON body of at most {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    try:
        body = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, ValueError):
        return _error(400, 'expected a JSON body like {"by": "张三", "note": "..."}')
    if not isinstance(body, dict) or len(raw) > MAX_BODY:
        return _error(400, 'expected a JSON object like {"by": "张三", "note": "..."}')
    by, note = body.get("by"), body.get("note", "")
    if not isinstance(by, str) or not 1 <= len(by.strip()) <= 64:
        return _error(400, "'by': expected who does it (1 to 64 characters)", field="by")
    if not isinstance(note, str) or len(note) > 1000:
        return _error(400, "'note': expected text of at most 1000 characters", field="note")
    desk, now = api.desk, api.clock()
    try:
        if no in desk.tickets:
            t, _ = await desk.act(no, action, by, note, now)
        else:
            stored = await asyncio.to_thread(api.store.ticket, no)
            if stored is None:
                return _error(404, f"no ticket {no}")
            if action != "note":
                return _error(409, f"ticket {no} is {STATE_ZH.get(stored.state)} "
                                   f"({stored.state}): nothing to {action}",
                              state=stored.state)
            await desk.note_closed(stored, by, note, now)
            t = stored
    except TicketError as exc:
        return _error(409, str(exc))
    except Exception as exc:  # the store did not take it: nothing changed
        return _error(503, f"the store did not take the change, nothing changed: "
                           f"{type(exc).__name__}")
    return _json({"ticket": ticket_json(t, zone(desk.timezone), desk.link(no), now)})


async def assessment_view(request: web.Request) -> web.Response:
    api = request.app[API]
    tz = zone(api.desk.timezone)
    now = api.clock()
    text = request.query.get("month") or dt.datetime.fromtimestamp(now, tz).strftime("%Y-%m")
    try:
        year, month = parse_month(text)
    except ValueError as exc:
        return _error(400, f"query parameter 'month': {exc}", parameter="month")
    return _json(await asyncio.to_thread(month_assessment, api.store, year, month, tz, now))


# --- camwatch ticket ----------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser, default_listen: str) -> None:
    p.add_argument("-c", "--config", metavar="CONFIG",
                   help="the daemon's config (for its address, auth and repairs.token)")
    p.add_argument("--url", help=f"the daemon's base URL (default: from the config's "
                                 f"http.listen, else http://{default_listen})")
    sub = p.add_subparsers(dest="ticket_command", metavar="ACTION")
    sub.required = True

    def action(name: str, what: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, help=what, description=what[:1].upper() + what[1:] + ".")
        return parser

    ls = action("list", "open tickets, newest first (or --state all, closed, ...)")
    ls.add_argument("--state", default="open", choices=STATE_FILTERS,
                    help="which tickets (default open)")
    ls.add_argument("--json", action="store_true", help="print the raw JSON")
    sh = action("show", "one ticket and its history")
    sh.add_argument("no", type=int, help="the ticket's number")
    sh.add_argument("--json", action="store_true", help="print the raw JSON")
    for name, what in (("ack", "acknowledge a ticket (已响应)"),
                       ("done", "say a ticket is fixed (已处理); camwatch verifies it"),
                       ("note", "add a note to a ticket's history")):
        a = action(name, what)
        a.add_argument("no", type=int, help="the ticket's number")
        a.add_argument("--by", required=True, help="who (e.g. 张三)")
        a.add_argument("--note", default="", required=name == "note", help="text")


def cmd_ticket(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    from camwatch.client import daemon_address, status_error
    from camwatch.config import load_config

    url, headers = daemon_address(args)
    if args.config:
        token = load_config(args.config).repairs.token()
        if token is not None:
            headers["X-Camwatch-Token"] = token.reveal()
    cmd = args.ticket_command
    data: bytes | None = None
    if cmd == "list":
        path = f"/api/tickets?state={args.state}&limit={MAX_LIMIT}"
    elif cmd == "show":
        path = f"/api/tickets/{args.no}"
    else:
        path = f"/api/tickets/{args.no}/{cmd}"
        data = json.dumps({"by": args.by, "note": args.note}, ensure_ascii=False).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url + path, data=data, headers=headers,
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            why = json.loads(exc.read()).get("error", "")
        except ValueError:
            why = ""
        sys.stderr.write(f"error: {url}{path.split('?')[0]} answered HTTP {exc.code}"
                         f"{': ' + why if why else ''}\n")
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        sys.stderr.write(status_error(url, args.config, exc) + "\n")
        return 1
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
        return 0
    if cmd == "list":
        sys.stdout.write(format_list(doc["tickets"]))
    elif cmd == "show":
        sys.stdout.write(format_ticket(doc["ticket"], doc["events"]))
    else:
        t = doc["ticket"]
        sys.stdout.write(f"ticket {t['no']}: {t['state_zh']} ({t['state']})\n")
    return 0


def _when(iso: str | None) -> str:
    """``2026-11-02T12:00:00+08:00`` -> ``2026-11-02 12:00`` (the daemon's time zone)."""
    return "-" if not iso else iso[:16].replace("T", " ")


def format_list(tickets: list[dict[str, Any]]) -> str:
    if not tickets:
        return "no tickets\n"
    lines = [f"{'no':>5}  {'state':<8}  {'opened':<16}  {'repair due':<16}  operator  point"]
    for t in tickets:
        first = t["channels"][0] if t["channels"] else "-"
        point = t["name"] if t["group"] else f"{t['name']} ({first})"
        lines.append(f"{t['no']:>5}  {t['state_zh']:<8}  {_when(t['opened_iso']):<16}  "
                     f"{_when(t['repair_due_iso']):<16}  {t['operator'] or '-':<8}  "
                     f"{t['township']} {point}")
    return "\n".join(lines) + "\n"


def format_ticket(t: dict[str, Any], events: list[dict[str, Any]]) -> str:
    lines = [f"ticket {t['no']}: {t['state_zh']} ({t['state']})",
             f"  point:     {t['county']} {t['township']} {t['village']} {t['name']}",
             f"  channels:  {', '.join(t['channels'])}",
             f"  operator:  {t['operator'] or '-'}",
             f"  opened:    {_when(t['opened_iso'])} ("
             f"{'picture degraded' if t.get('kind') == 'quality' else 'offline'} since "
             f"{_when(t['fault_since_iso'])})",
             f"  due:       response {_when(t['response_due_iso'])}, repair "
             f"{_when(t['repair_due_iso'])}",
             f"  link:      {t['link']}"]
    if t.get("kind") == "quality":  # a quality ticket (画面异常): its faults and thumbnail
        lines.insert(4, f"  faults:    {', '.join(t.get('faults') or []) or '-'}")
        lines.append(f"  snapshot:  {t.get('snapshot') or '-'}")
    lines.append("  history:")
    for e in events:
        who = f" {e['by']}" if e["by"] != "camwatch" else ""
        lines.append(f"    {_when(e['ts_iso'])}  {e['kind']:<15}{who}  {e['note']}".rstrip())
    return "\n".join(lines) + "\n"
