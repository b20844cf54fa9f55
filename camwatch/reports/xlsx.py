"""The bulletin as an Excel workbook: one sheet per table, Chinese headers, frozen header row,
column widths, rates as numbers formatted ``0.00%``, and a chart of township rates against
their reference target. Written in openpyxl's write-only mode, so 100,000-row annexes stream.

The outage sheet summarises per channel (count, total and longest down time, last reason):
openpyxl writes some 130,000 cells a second, and one row per outage was ~1.3 million cells
for 100,000 channels; the event list itself is in the CSV and JSON versions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from camwatch.reports.compute import Bulletin
from camwatch.reports.gcpause import gc_paused
from camwatch.reports.tables import Table, all_tables

FORMATS = {"pct": "0.00%", "pp": "+0.00;-0.00;0.00"}
ROUNDED = {"hours": 1, "days": 1}  # written as plain numbers rounded to these decimals


def _letter(i: int) -> str:
    from openpyxl.utils import get_column_letter

    return str(get_column_letter(i))


def _sheet(wb: Any, table: Table) -> Any:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment, Font, PatternFill

    ws = wb.create_sheet(title=table.title[:31])
    ws.freeze_panes = "A2"
    for i, col in enumerate(table.columns, start=1):
        ws.column_dimensions[_letter(i)].width = col.width + 2
    bold = Font(bold=True)
    fill = PatternFill("solid", fgColor="DDEBF7")
    header = []
    for h in table.headers:
        cell = WriteOnlyCell(ws, value=h)
        cell.font = bold
        cell.fill = fill
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        header.append(cell)
    ws.append(header)
    red = Font(color="C00000", bold=True)
    # Plain values where no style is needed: a styled cell object costs ten times more, and
    # annexes can have 100,000 rows. Only the columns that need a format or a colour are
    # looked at, row by row.
    formats = [(i, FORMATS[c.kind]) for i, c in enumerate(table.columns) if c.kind in FORMATS]
    rounded = [(i, ROUNDED[c.kind]) for i, c in enumerate(table.columns) if c.kind in ROUNDED]
    flagged = [i for i, c in enumerate(table.columns) if c.header == "是否达标"]
    append = ws.append
    for row in table.rows:
        if not (formats or rounded or flagged):
            append(row)
            continue
        out: list[Any] = list(row)
        for i, nd in rounded:
            v = out[i]
            if isinstance(v, float):
                out[i] = round(v, nd)
        for i, fmt in formats:
            value = out[i]
            if value is not None:
                cell = WriteOnlyCell(ws, value=value)
                cell.number_format = fmt
                out[i] = cell
        for i in flagged:
            if out[i] == "未达标":
                cell = WriteOnlyCell(ws, value=out[i])
                cell.font = red
                out[i] = cell
        append(out)
    if table.note:
        ws.append([])
        ws.append([f"注：{table.note}"])
    return ws


def _chart(ws: Any, table: Table) -> None:
    """Bars: each township's published rate; line: its reference target."""
    from openpyxl.chart import BarChart, LineChart, Reference

    n = len(table.rows)
    if n == 0:
        return
    headers = table.headers
    rate_col = headers.index("在线率") + 1
    target_col = headers.index("参考目标") + 1
    name_col = headers.index("乡镇") + 1
    bars = BarChart()
    bars.type = "col"
    bars.title = "乡镇在线率与目标"
    bars.y_axis.title = "在线率"
    bars.y_axis.number_format = "0%"
    bars.y_axis.scaling.max = 1.0
    bars.add_data(Reference(ws, min_col=rate_col, min_row=1, max_row=n + 1), titles_from_data=True)
    bars.set_categories(Reference(ws, min_col=name_col, min_row=2, max_row=n + 1))
    line = LineChart()
    line.add_data(Reference(ws, min_col=target_col, min_row=1, max_row=n + 1),
                  titles_from_data=True)
    bars += line
    bars.width = max(16.0, min(60.0, 1.2 * n))
    bars.height = 9.0
    ws.add_chart(bars, f"{_letter(len(headers) + 2)}2")


def write_xlsx(bulletin: Bulletin, path: str | Path) -> None:
    from openpyxl import Workbook

    with gc_paused():  # ~a million cells' worth of short-lived objects, no cycle among them
        wb = Workbook(write_only=True)
        # Outages summarised per channel: the event list (one row per outage) is in CSV and
        # JSON.
        for table in all_tables(bulletin, outage_events=False):
            ws = _sheet(wb, table)
            if table.key == "townships":
                _chart(ws, table)
        wb.save(str(path))
