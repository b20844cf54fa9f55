"""Exemptions (报备) read from a table: ``camwatch exempt import FILE``.

Operators hand in their 报备 lists as spreadsheets: one row per channel and period, with the
channel's code, the first and last day (or times) and the reason. The file is read as the
inventory is (:func:`camwatch.inventory.read_table`: CSV in UTF-8 or GB18030, XLSX, by its
suffix) and checked whole before anything is written: every bad row is named with its row
number, column and what was expected, and then nothing is imported. Headers may be Chinese or
English (:data:`COLUMNS`); other columns are ignored.

Times follow ``camwatch exempt add``: a day (``2026-11-03``, or a date cell) starts at its
midnight and, as the end, includes that day; a time (``2026-11-03 08:00``, a date-and-time
cell) is that moment, in ``report.timezone``. A date-and-time cell at midnight counts as a day
(Excel shows a date cell so).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from camwatch.config import display_path
from camwatch.errors import InputError, InventoryError, Problem
from camwatch.reports.period import day_start

__all__ = ["COLUMNS", "ImportedExemption", "moment", "new_only", "read_exemptions"]

# field -> the headers that name it (compared without spaces, case-insensitively)
COLUMNS: Mapping[str, tuple[str, ...]] = {
    "channel": ("设备编码", "通道编码", "国标编码", "编码", "channel", "channel_id", "id"),
    "start": ("开始", "开始时间", "开始日期", "起始时间", "from", "start"),
    "end": ("结束", "结束时间", "结束日期", "截止时间", "截止日期", "to", "end"),
    "reason": ("原因", "报备原因", "事由", "reason"),
}
MAX_ROWS = 100_000


@dataclass(frozen=True, slots=True)
class ImportedExemption:
    row: int  # the row number in the file
    channel_id: str
    start: float
    end: float  # exclusive, as the store keeps it
    reason: str


class _Bad(ValueError):
    pass


def _key(header: object) -> str:
    return "".join(str(header or "").split()).lower()


def _columns(header: list[object], where: str) -> dict[str, int]:
    keys = [_key(h) for h in header]
    out: dict[str, int] = {}
    missing = []
    for fld, names in COLUMNS.items():
        wanted = {_key(n) for n in names}
        found = [i for i, k in enumerate(keys) if k in wanted]
        if not found:
            missing.append(f"{names[0]} ({', '.join(names[1:])})")
        else:
            out[fld] = found[0]
    if missing:
        raise InputError([Problem(where, "header", "expected a column " + "; a column ".join(
            missing) + f"; got {', '.join(str(h) for h in header if h is not None) or 'none'}")])
    return out


def moment(value: object, tz: dt.tzinfo, end: bool) -> float:
    """A cell (or ``exempt add``'s ``--from`` / ``--to``) as a start or an exclusive end: a
    day starts at its midnight and, as an end, includes that day; a time is that moment.
    Raises ``ValueError`` naming what was expected."""
    if isinstance(value, dt.datetime):
        if (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0):
            value = value.date()
        else:
            moment = value if value.tzinfo is not None else value.replace(tzinfo=tz)
            return moment.timestamp()
    if isinstance(value, dt.date):
        return day_start(value + dt.timedelta(days=1) if end else value, tz)
    text = str(value or "").strip()
    if not text:
        raise _Bad("expected a day like 2026-11-03 or a time like 2026-11-03 08:00, got "
                   "nothing")
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text.replace("/", "-"))
            return day_start(day + dt.timedelta(days=1) if end else day, tz)
        moment = dt.datetime.fromisoformat(text.replace("/", "-").replace(" ", "T"))
    except ValueError:
        raise _Bad(f"expected a day like 2026-11-03 or a time like 2026-11-03 08:00, got "
                   f"{text[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.timestamp()


def _channel(value: object) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        # Excel keeps 15 significant digits of a number: a 20-digit code has lost its tail
        raise _Bad(f"expected the code as text, got the number {value!r} (a 20-digit code "
                   f"stored as a number loses its last digits: format the column as text)")
    text = str(value or "").strip()
    if not text:
        raise _Bad("expected a channel code (设备编码), got nothing")
    if len(text) > 64 or any(c.isspace() or ord(c) < 32 for c in text):
        raise _Bad(f"expected a channel code without spaces, got {text[:40]!r}")
    return text


def read_exemptions(path: Path, tz: dt.tzinfo, sheet: str | None = None
                    ) -> list[ImportedExemption]:
    """Every exemption of ``path``; raises :class:`InputError` naming every bad row (and
    then returns nothing: a file is imported whole or not at all)."""
    from camwatch.inventory import read_table

    where = display_path(path)
    if not path.exists():
        raise InputError([Problem(where, "", "file not found")])
    try:
        header, rows = read_table(path, "auto", "auto", sheet, MAX_ROWS)
    except InventoryError as exc:
        raise InputError(exc.problems) from None
    except UnicodeDecodeError as exc:
        raise InputError([Problem(where, "", f"cannot decode: {exc.reason}")]) from None
    except OSError as exc:
        raise InputError([Problem(where, "", f"cannot read: {exc.strerror or exc}")]) from None
    col = _columns(header, where)
    names = {fld: str(header[i]) for fld, i in col.items()}
    out: list[ImportedExemption] = []
    problems: list[Problem] = []
    try:
        for rowno, values in rows:
            if all(v is None or str(v).strip() == "" for v in values):
                continue
            if len(out) + len(problems) >= MAX_ROWS:
                problems.append(Problem(where, f"row {rowno}", f"more than {MAX_ROWS} rows"))
                break
            cell = {fld: values[i] if i < len(values) else None for fld, i in col.items()}
            got: dict[str, object] = {}
            for fld, parse in (("channel", _channel), ("start", lambda v: moment(v, tz, False)),
                               ("end", lambda v: moment(v, tz, True)),
                               ("reason", _reason)):
                try:
                    got[fld] = parse(cell[fld])
                except _Bad as exc:
                    problems.append(Problem(where, f"row {rowno}, column {names[fld]}",
                                            str(exc)))
            if len(got) < 4:
                continue
            start, end = float(got["start"]), float(got["end"])  # type: ignore[arg-type]
            if end <= start:
                problems.append(Problem(where, f"row {rowno}, column {names['end']}",
                                        "expected the end after the start"))
                continue
            out.append(ImportedExemption(rowno, str(got["channel"]), start, end,
                                         str(got["reason"])))
    except InventoryError as exc:  # a CSV line that cannot be read, mid-file
        problems.extend(exc.problems)
    if problems:
        raise InputError(problems)
    if not out:
        raise InputError([Problem(where, "", "no exemption in the file")])
    return out


def _reason(value: object) -> str:
    text = " ".join(str(value or "").split())
    if not text:
        raise _Bad("expected why (e.g. 道路施工), got nothing")
    if len(text) > 200:
        raise _Bad(f"expected at most 200 characters, got {len(text)}")
    return text


def new_only(rows: Iterable[ImportedExemption],
             recorded: Iterable[tuple[str, float, float, str]]
             ) -> tuple[list[ImportedExemption], int]:
    """The rows not recorded yet (the same channel, start, end and reason, in the store or
    earlier in the file), and how many were: importing a file again adds nothing."""
    seen = set(recorded)
    fresh = []
    dup = 0
    for r in rows:
        key = (r.channel_id, r.start, r.end, r.reason)
        if key in seen:
            dup += 1
            continue
        seen.add(key)
        fresh.append(r)
    return fresh, dup
