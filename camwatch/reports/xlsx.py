"""The bulletin as an Excel workbook: one sheet per table, written in openpyxl's write-only
mode, so 100,000-row annexes stream.

Every sheet has the same shape: a title block (rows 1-3: the bulletin's title with the site,
the period with its end and the generation time, the table's note), a blank row, the header
row (:data:`HEADER_ROW`), frozen, with an autofilter, then the rows; an empty table has one
row "本期无" in one style. Print setup: A4, fit to the page width, the header row repeated on
every page, landscape when the table is wide, the title and 第 x 页 共 y 页 in the header and
footer. Rates are numbers formatted ``0.00%``; the township sheet has a chart of rates
against their reference target. The workbook's title property is the bulletin's title.

Text is written as text, never as a formula: a 点位名称 of ``=HYPERLINK(...)`` stays a string
(cell type ``s``), and characters a workbook cannot hold (control characters) are dropped.

The outage sheet summarises per channel (count, total and longest down time, last reason):
openpyxl writes some 130,000 cells a second, and one row per outage was ~1.3 million cells
for 100,000 channels; the event list itself is in the CSV and JSON versions.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from camwatch.reports.compute import Bulletin
from camwatch.reports.gcpause import gc_paused
from camwatch.reports.tables import (
    Table,
    all_tables,
    bulletin_title,
    period_text,
    running_note,
)

FORMATS = {"pct": "0.00%", "pp": "+0.00;-0.00;0.00"}
ROUNDED = {"hours": 1, "days": 1}  # written as plain numbers rounded to these decimals
HEADER_ROW = 5  # rows 1-3: the title block; 4: blank
EMPTY = "本期无"
# Sheets wider than this (Σ column widths, characters) print in landscape.
PORTRAIT_WIDTH = 110


def _letter(i: int) -> str:
    from openpyxl.utils import get_column_letter

    return str(get_column_letter(i))


def safe_text(value: str) -> str:
    """``value`` without the characters a workbook cannot hold (C0 controls but tab, LF and
    CR): a name with a NUL must not stop the report (``IllegalCharacterError``)."""
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    return str(ILLEGAL_CHARACTERS_RE.sub("", value))


def _text_cell(ws: Any, value: str) -> Any:
    """A cell that holds ``value`` as a string, whatever it starts with."""
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(ws, value=safe_text(value))
    cell.data_type = "s"
    return cell


def _plain(ws: Any, row: list[Any]) -> list[Any]:
    """The row with every string that openpyxl would take for a formula (``=...``) or refuse
    (control characters) made a string cell. Looked at per cell: cheap, as most strings are
    printable and start with no ``=``."""
    for i, v in enumerate(row):
        if type(v) is str and (v[:1] == "=" or not v.isprintable()):
            row[i] = _text_cell(ws, v)
    return row


def _title_block(ws: Any, b: Bulletin, table: Table) -> None:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    title = WriteOnlyCell(ws, value=safe_text(f"{bulletin_title(b)} · {table.title}"))
    title.font = Font(bold=True, size=14)
    title.data_type = "s"
    running = running_note(b)
    period = f"{period_text(b)}{'，' + running if running else ''} · 生成 " \
             f"{dt.datetime.fromtimestamp(b.generated, b.tz):%Y-%m-%d %H:%M}"
    note = WriteOnlyCell(ws, value=safe_text(f"注：{table.note}" if table.note else ""))
    note.font = Font(color="595959")
    note.data_type = "s"
    ws.append([title])
    ws.append([_text_cell(ws, period)])
    ws.append([note])
    ws.append([])


def _print_setup(ws: Any, b: Bulletin, table: Table, last_row: int) -> None:
    """What is written after the rows (filter, print setup, header and footer)."""
    ncols = max(1, len(table.columns))
    last_col = _letter(ncols)
    ws.auto_filter.ref = f"A{HEADER_ROW}:{last_col}{max(last_row, HEADER_ROW)}"
    ws.print_title_rows = f"{HEADER_ROW}:{HEADER_ROW}"
    wide = sum(c.width for c in table.columns) > PORTRAIT_WIDTH
    ws.page_setup.orientation = "landscape" if wide else "portrait"
    ws.page_setup.paperSize = "9"  # A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0  # as many pages tall as needed
    ws.page_margins.left = ws.page_margins.right = 0.5
    ws.page_margins.top = ws.page_margins.bottom = 0.6
    # Header and footer codes (&P page, &N pages) are the spreadsheet's own; "&" in the
    # title would start one, so it is doubled.
    ws.HeaderFooter.oddHeader.left.text = safe_text(bulletin_title(b)).replace("&", "&&")
    ws.HeaderFooter.oddHeader.left.size = 8
    ws.HeaderFooter.oddFooter.center.text = "第 &P 页 共 &N 页"
    ws.HeaderFooter.oddFooter.center.size = 8


def _sheet(wb: Any, b: Bulletin, table: Table) -> Any:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.worksheet.properties import PageSetupProperties

    ws = wb.create_sheet(title=table.title[:31])
    # Written with the sheet's first row, so set first: fit to the page width when printed.
    ws.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
    ws.freeze_panes = f"A{HEADER_ROW + 1}"
    for i, col in enumerate(table.columns, start=1):
        ws.column_dimensions[_letter(i)].width = col.width + 2
    _title_block(ws, b, table)
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
    flagged = [i for i, c in enumerate(table.columns) if c.header.endswith("是否达标")]
    append = ws.append
    for row in table.rows:
        out: list[Any] = _plain(ws, list(row))
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
    if not table.rows:
        cell = WriteOnlyCell(ws, value=EMPTY)
        cell.font = Font(italic=True, color="808080")
        append([cell])
    _print_setup(ws, b, table, HEADER_ROW + max(1, len(table.rows)))
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
    first, last = HEADER_ROW + 1, HEADER_ROW + n
    bars = BarChart()
    bars.type = "col"
    bars.title = "乡镇在线率与目标"
    bars.y_axis.title = "在线率"
    bars.y_axis.number_format = "0%"
    bars.y_axis.scaling.max = 1.0
    bars.add_data(Reference(ws, min_col=rate_col, min_row=HEADER_ROW, max_row=last),
                  titles_from_data=True)
    bars.set_categories(Reference(ws, min_col=name_col, min_row=first, max_row=last))
    line = LineChart()
    line.add_data(Reference(ws, min_col=target_col, min_row=HEADER_ROW, max_row=last),
                  titles_from_data=True)
    bars += line
    bars.width = max(16.0, min(60.0, 1.2 * n))
    bars.height = 9.0
    ws.add_chart(bars, f"{_letter(len(headers) + 2)}{HEADER_ROW + 1}")


def write_xlsx(bulletin: Bulletin, path: str | Path) -> None:
    from openpyxl import Workbook

    with gc_paused():  # ~a million cells' worth of short-lived objects, no cycle among them
        wb = Workbook(write_only=True)
        title = safe_text(bulletin_title(bulletin))
        wb.properties.title = title
        wb.properties.subject = safe_text(period_text(bulletin))
        wb.properties.creator = "camwatch"
        wb.properties.created = dt.datetime.fromtimestamp(bulletin.generated, dt.UTC).replace(
            tzinfo=None)
        # Outages summarised per channel: the event list (one row per outage) is in CSV and
        # JSON.
        for table in all_tables(bulletin, outage_events=False):
            ws = _sheet(wb, bulletin, table)
            if table.key == "townships":
                _chart(ws, table)
        wb.save(str(path))
