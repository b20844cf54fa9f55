"""The bulletin for machines: one JSON document, or one CSV file per table.

JSON rates are fractions (0.9551 for 95.51 %) rounded to six decimals; ``change_pp`` is in
percentage points; times are local ISO strings with their offset. CSV files are UTF-8 with a
byte-order mark (Excel on a Chinese Windows then reads them right) and the tables' Chinese
headers; rates are fractions there too. A text cell that a spreadsheet would run as a formula
(it starts with ``= + - @``, a tab or a carriage return: a 点位名称 of ``=HYPERLINK(...)``)
is written with a leading ``'``, as OWASP recommends against CSV injection.

``events`` lists the mass outages (a township's, a village's, a host's channels going offline
together, one item each); every outage, grouped or not, is in ``outages``.

Offline reasons are codes in JSON (``reason``, what the API and the store say) with their
Chinese name beside them (``reason_zh``); in the CSV they are in Chinese.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

from camwatch.inventory import Channel
from camwatch.model import CLASS_NAMES, reason_zh
from camwatch.reports.compute import Bulletin, Figures, OutageEvent, OutageRow, Part
from camwatch.reports.gcpause import gc_paused
from camwatch.reports.tables import all_tables


def _r(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(x, nd)


def _iso(ts: float | None, tz: dt.tzinfo) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, tz).isoformat()


def _part(p: Part) -> dict[str, Any]:
    return {
        "class": p.klass,
        "class_name": p.name if p.klass is not None else None,
        "project": p.project,
        "channels": p.channels,
        "target": p.target,
        "rate": _r(p.rate),
        "rate_time_weighted": _r(p.tw.rate),
        "rate_snapshot": _r(p.snap.rate),
        "meets_target": p.meets_target,
        **_intact(p),
    }


def _intact(f: Figures | Part) -> dict[str, Any]:
    """The 完好率 keys (only when the bulletin has it: ``itw`` is set)."""
    if f.itw is None or f.isnap is None:
        return {}
    out: dict[str, Any] = {
        "intact_rate": _r(f.intact_rate),
        "intact_rate_time_weighted": _r(f.itw.rate),
        "intact_rate_snapshot": _r(f.isnap.rate),
        "intact_seconds": f.itw.online / 1000.0,
        "intact_judged_seconds": f.itw.connected / 1000.0,
        "intact_channels": f.isnap.online,
        "intact_judged_channels": f.isnap.connected,
    }
    if isinstance(f, Part):
        out["intact_target"] = f.intact_target
    else:  # a scope: its 环比, as the online rate's previous / change_pp
        out["previous_intact_rate"] = _r(f.previous_intact)
        out["intact_change_pp"] = _r(f.intact_change_pp, 4)
    out["intact_meets_target"] = f.intact_meets_target
    return out


def _figures(f: Figures) -> dict[str, Any]:
    return {
        **dict(f.scope),
        "rank": f.rank or None,
        "planned": f.planned,
        "installed": f.installed,
        "install_rate": _r(f.install_rate),
        "connected": f.connected,
        "cloud_rate": _r(f.cloud_rate),
        "online_rate": _r(f.rate),
        "online_rate_time_weighted": _r(f.tw.rate),
        "online_rate_snapshot": _r(f.snap.rate),
        "online_seconds": f.tw.online / 1000.0,
        "monitored_seconds": f.tw.connected / 1000.0,
        "unknown_seconds": f.tw.unknown / 1000.0,
        "online_channels": f.snap.online,
        "offline_channels": f.snap.offline,
        "unknown_channels": f.snap.unknown,
        "previous_online_rate": _r(f.previous),
        "change_pp": _r(f.change_pp, 4),
        "target": _r(f.target),
        "meets_target": f.meets_target,
        "below_target": [_part(p) for p in f.failing],
        "by_class": [_part(p) for p in f.classes],
        **_intact(f),
    }


def _channel(ch: Channel) -> dict[str, Any]:
    return {"id": ch.id, "name": ch.name, "county": ch.county, "township": ch.township,
            "village": ch.village, "operator": ch.operator, "class": ch.klass,
            "class_name": CLASS_NAMES.get(ch.klass) if ch.klass is not None else None}


def _outage(o: OutageRow, tz: dt.tzinfo) -> dict[str, Any]:
    return {**_channel(o.channel), "start": _iso(o.start, tz), "end": _iso(o.end, tz),
            "seconds": o.seconds, "reason": o.reason, "reason_zh": reason_zh(o.reason)}


def _event(e: OutageEvent, tz: dt.tzinfo) -> dict[str, Any]:
    ch = e.first
    return {
        "level": e.level, "county": ch.county, "township": ch.township,
        "village": ch.village if e.level != "township" else None,
        "channel_id": ch.id if e.level == "channel" else None,
        "place": e.place, "start": _iso(e.start, tz), "end": _iso(e.end, tz),
        "seconds": e.seconds, "channels": e.channels, "still_offline": e.still_offline,
        "channels_in_place": e.total or None,
        "reasons": [{"reason_zh": r, "channels": n} for r, n in e.reasons()],
    }


def csv_cell(value: object) -> object:
    """A CSV cell: text that a spreadsheet would take for a formula gets a leading ``'``."""
    if type(value) is str and value[:1] in _FORMULA_START:
        return "'" + value
    return "" if value is None else value


_FORMULA_START = frozenset("=+-@\t\r")


def bulletin_json(b: Bulletin) -> dict[str, Any]:
    doc = _document(b)
    doc["outages"] = [_outage(o, b.tz) for o in b.outages]
    return doc


def _document(b: Bulletin) -> dict[str, Any]:
    """The JSON document with an empty outage list (the one table that runs to 100,000s of
    rows); :func:`bulletin_json` fills it, :func:`write_json` streams it."""
    s = b.summary
    tz = b.tz
    summary = {
        "planned": s.planned,
        "installed": s.installed,
        "install_rate": _r(s.install_rate),
        "connected": s.connected,
        "cloud_rate": _r(s.cloud_rate),
        "online_rate": _r(s.tw.rate),
        "online_rate_snapshot": _r(s.snap.rate),
        "published": b.settings.online_rate,
        "previous_online_rate": _r(s.previous),
        "change_pp": _r(s.change_pp, 4),
        "online_seconds": s.tw.online / 1000.0,
        "monitored_seconds": s.tw.connected / 1000.0,
        "by_class": [_part(p) for p in s.classes],
        "by_project": [_part(p) for p in s.projects],
        "counties": [_figures(c) for c in b.counties],
        **_intact(s),
    }
    operators = []
    for op in b.operators:
        doc = _figures(op)
        doc["townships"] = [_figures(f) for f in b.operator_townships
                            if f.get("operator") == op.get("operator")]
        operators.append(doc)
    return {
        "site": b.site,
        "period": {"label": b.period.label, "start": _iso(b.period.start, tz),
                   "end": _iso(b.end, tz), "previous": b.previous_period.label,
                   "ended": b.ended, "coverage": _r(b.coverage),
                   "monitored_seconds_per_channel": round(b.monitored_per_channel, 3),
                   "previous_has_data": b.previous_monitored_ms > 0},
        "summary": summary,
        "townships": [_figures(f) for f in b.townships],
        "villages": [_figures(f) for f in b.villages],
        "operators": operators,
        "long_offline": [
            {**_channel(r.channel), "since": _iso(r.since, tz), "days": round(r.days, 4),
             "reason": r.reason, "reason_zh": reason_zh(r.reason), "exemption": r.exemption}
            for r in b.long_offline],
        **({"degraded": [
            {**_channel(d.channel), "seconds": d.seconds, "faults": list(d.faults),
             "quality": d.quality, "since": _iso(d.since, tz), "state": d.state}
            for d in b.degraded]} if b.intact else {}),
        "events": [_event(e, tz) for e in b.mass_events],
        "outages": [],
        "repaired": [_outage(o, tz) for o in b.repaired],
        "exemptions": [
            {"id": r.exemption.id, "channel_id": r.exemption.channel_id,
             "start": _iso(r.exemption.start, tz), "end": _iso(r.exemption.end, tz),
             "reason": r.exemption.reason, "seconds_in_period": r.seconds_in_period}
            for r in b.exemptions],
        **({"assessment": b.assessment} if b.assessment is not None else {}),
        **({"reconciliation": b.reconciliation} if b.reconciliation is not None else {}),
        **({"recording": b.recording} if b.recording is not None else {}),
        "data_quality": [
            {"id": f.channel_id, "name": f.name, "township": f.township, "field": f.field,
             "problem": f.problem} for f in b.data_quality],
        "method": {
            **b.method_settings(),
            "inventory_source": b.inventory_source,
            "previous_inventory_source": b.previous_inventory_source,
            "transitions_read": b.transitions_read,
            "definitions": {key: value for key, _, value in b.method()},
        },
    }


def write_json(b: Bulletin, path: str | Path) -> None:
    """``json.dumps(bulletin_json(b), ensure_ascii=False, indent=1)`` byte for byte, but the
    outages written one at a time: for 100,000 channels the whole document as one string (and
    the list of its pieces) took 330 MB, more than everything else of the report."""
    doc = _document(b)
    tz = b.tz
    with gc_paused(), Path(path).open("w", encoding="utf-8") as fh:
        write = fh.write
        sep = "{\n "
        for key, value in doc.items():
            write(sep + json.dumps(key, ensure_ascii=False) + ": ")
            sep = ",\n "
            if key == "outages" and b.outages:
                write("[")
                item_sep = "\n  "
                for o in b.outages:
                    write(item_sep + _flat_item(_outage(o, tz)))
                    item_sep = ",\n  "
                write("\n ]")
            else:
                write(json.dumps(value, ensure_ascii=False, indent=1).replace("\n", "\n "))
        write("\n}\n")


# A flat object (no nested list or object) two levels deep, as ``indent=1`` prints it, from
# the C encoder: the item separator carries the newline and the indent of the keys.
_FLAT = json.JSONEncoder(ensure_ascii=False, separators=(",\n   ", ": "))


def _flat_item(item: dict[str, Any]) -> str:
    if not item:
        return "{}"
    if any(isinstance(v, dict | list | tuple) for v in item.values()):
        return json.dumps(item, ensure_ascii=False, indent=1).replace("\n", "\n  ")
    return "{\n   " + _FLAT.encode(item)[1:-1] + "\n  }"


def write_csv(b: Bulletin, directory: str | Path) -> list[Path]:
    """One ``<table>.csv`` per table in ``directory`` (created); returns the files."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    with gc_paused():
        for table in all_tables(b):
            path = out / f"{table.key}.csv"
            with path.open("w", encoding="utf-8-sig", newline="") as fh:
                w = csv.writer(fh)
                w.writerow([csv_cell(h) for h in table.headers])
                for row in table.rows:
                    w.writerow([csv_cell(v) for v in row])
            files.append(path)
    return files
