"""The bulletin's 录像完整率 (from GB/T 28181 RecordInfo answers kept in the store, a row per
channel and day): Σ recorded ÷ Σ day overall and by township, and the channels short of
100 %, in XLSX, HTML and JSON.

Figures by hand, on tests/test_report.py's channels: A (城关镇) 24 h of 11-01 and 12 h of
11-02; C (白马乡) 6 h of 11-15 (a partial answer); D (白马乡) all of 11-30. Not counted: A's
10-31 and 12-01, and a channel not in the ledger. So 66 h of 96 h = 68.75 %; 城关镇 36/48 =
75 %, 白马乡 30/48 = 62.5 % (listed first, the lower); short of 100 %: C 25 %, then A 75 %."""

from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import pytest

from camwatch.reports.compute import Bulletin, compute_bulletin
from camwatch.reports.csvjson import bulletin_json
from camwatch.reports.html import render_html
from camwatch.reports.period import Period
from camwatch.reports.xlsx import HEADER_ROW, write_xlsx
from camwatch.store.base import Recording
from tests.test_report import CHANNELS, NOW, SETTINGS, TZ, A, C, D, gid, make_store

H = 3600.0
P = "41162800002000000002"


def bulletin() -> Bulletin:
    store = make_store()
    for cid, day, hours, partial in ((A, "2026-11-01", 24, False), (A, "2026-11-02", 12, False),
                                     (C, "2026-11-15", 6, True), (D, "2026-11-30", 24, False),
                                     (A, "2026-10-31", 0, False), (A, "2026-12-01", 0, False),
                                     (gid(50), "2026-11-10", 0, False)):
        store.save_gb_recording(Recording(cid, P, day, hours * H, 24 * H, partial, 0.0))
    return compute_bulletin(store, CHANNELS, Period.month("2026-11", TZ), SETTINGS,
                            site="鹿邑县", inventory_source="test", now=NOW)


def test_figures_by_hand() -> None:
    doc = bulletin().recording
    assert doc is not None
    assert (doc["channels"], doc["recorded_s"], doc["period_s"]) == (3, 66 * H, 96 * H)
    assert doc["rate"] == pytest.approx(66 / 96) and doc["partial_days"] == 1
    assert [(t["township"], t["channels"], t["rate"]) for t in doc["townships"]] == [
        ("白马乡", 2, pytest.approx(30 / 48)), ("城关镇", 1, pytest.approx(36 / 48))]
    assert [(r["channel"], r["days"], r["rate"]) for r in doc["short"]] == [
        (C, 1, pytest.approx(0.25)), (A, 2, pytest.approx(0.75))]


def test_xlsx_html_json(tmp_path: Path) -> None:
    b = bulletin()
    write_xlsx(b, tmp_path / "r.xlsx")
    wb = openpyxl.load_workbook(tmp_path / "r.xlsx")
    ws = wb["录像完整率"]
    rows = [r for r in ws.iter_rows(min_row=HEADER_ROW + 1, values_only=True) if any(r)]
    assert rows[0][0] == "全部" and rows[0][2:] == (3, 66.0, 96.0, pytest.approx(66 / 96))
    assert ws.cell(row=HEADER_ROW + 1, column=6).number_format == "0.00%"
    short = [r for r in wb["录像缺失点位"].iter_rows(min_row=HEADER_ROW + 1, values_only=True)
             if any(r)]
    assert [r[0] for r in short] == [C, A] and short[0][-1] == 1  # C's partial day
    page = render_html(b)
    assert "录像完整率" in page and "68.75%" in page and "62.50%" in page
    assert json.loads(json.dumps(bulletin_json(b)))["recording"]["channels"] == 3


def test_no_answers_no_section() -> None:
    b = compute_bulletin(make_store(), CHANNELS, Period.month("2026-11", TZ), SETTINGS, now=NOW)
    assert b.recording is None and "录像完整率" not in render_html(b)
