"""The bulletin's reconciliation (台账核对): the month's ledger against each GB/T 28181
platform's latest catalog of that month, kept in the store, with the measured cloud-connect
rate beside the declared one; in XLSX (two sheets), HTML/PDF (a section) and JSON/CSV.

Figures by hand, from tests/test_report.py's seven channels: 1-6 installed, 1-5 已上云 (6 is
未上云, 7 not installed). November's catalogs list 1, 2 (under another name), 6 and an id the
ledger lacks (platform P1), and 4 (P2): so installed 6, declared 5 (83.33 %), measured 1, 2,
4, 6 = 4 (66.67 %); 3 and 5 are 已上云 in no catalog; one catalog channel not in the ledger;
one name differs; 6 is listed while the ledger says 未上云. October's and December's catalogs
(which list 3 and 5) must not count for November."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from camwatch.reports.compute import Bulletin, compute_bulletin
from camwatch.reports.csvjson import bulletin_json, write_csv
from camwatch.reports.html import render_html
from camwatch.reports.period import Period
from camwatch.reports.xlsx import HEADER_ROW, write_xlsx
from tests.test_report import CHANNELS, NOW, SETTINGS, TZ, A, B, C, D, E, gid, make_store, ts

F = gid(6)  # installed, 未上云
X = gid(99)  # in a catalog, not in the ledger
P1, P2 = "41162800002000000002", "41162800002000000003"


def catalog(name: str, channels: dict[str, str], partial: bool = False) -> dict[str, Any]:
    return {"name": name, "partial": partial, "declared": len(channels), "channels": channels}


def bulletin(partial: bool = False) -> Bulletin:
    store = make_store()
    everything = {c.id: c.name for c in CHANNELS}
    store.save_gb_catalog("2026-10", P2, ts(2026, 10, 30), catalog("电信云", everything))
    store.save_gb_catalog("2026-11", P1, ts(2026, 11, 30, 20), catalog(
        "移动云平台", {A: "点位1", B: "东门", F: "点位6", X: "新装点位"}))
    store.save_gb_catalog("2026-11", P2, ts(2026, 11, 30, 21), catalog(
        "电信云", {D: "点位4"}, partial))
    store.save_gb_catalog("2026-12", P2, ts(2026, 12, 2), catalog("电信云", everything))
    return compute_bulletin(store, CHANNELS, Period.month("2026-11", TZ), SETTINGS,
                            site="鹿邑县", inventory_source="test", now=NOW)


def rows(ws: Any) -> list[tuple[Any, ...]]:
    return [r for r in ws.iter_rows(min_row=HEADER_ROW + 1, values_only=True) if any(r)]


def test_figures_by_hand() -> None:
    doc = bulletin().reconciliation
    assert doc is not None
    assert (doc["installed"], doc["declared_connected"], doc["measured_connected"]) == (6, 5, 4)
    assert doc["declared_rate"] == pytest.approx(5 / 6, abs=1e-6)
    assert doc["measured_rate"] == pytest.approx(4 / 6, abs=1e-6)
    assert [r["channel"] for r in doc["missing"]] == [C, E]
    assert doc["not_in_ledger"] == [{"channel": X, "name": "新装点位", "platform": P1}]
    assert doc["names_differ"] == [{"channel": B, "ledger": "点位2", "catalog": "东门"}]
    assert [r["channel"] for r in doc["not_connected_in_ledger"]] == [F]
    assert doc["complete"] is True
    assert [(p["id"], p["name"], p["channels"]) for p in doc["platforms"]] == [
        (P1, "移动云平台", 4), (P2, "电信云", 1)]


def test_xlsx_sheets(tmp_path: Path) -> None:
    path = tmp_path / "r.xlsx"
    write_xlsx(bulletin(), path)
    wb = openpyxl.load_workbook(path)
    names = wb.sheetnames
    assert names.index("上云率核对") + 1 == names.index("台账核对") < names.index("数据质量")
    ws = wb["上云率核对"]
    assert [c.value for c in ws[HEADER_ROW]] == ["口径", "上云通道", "已安装", "上云率", "说明"]
    (declared, measured) = rows(ws)
    assert declared[:4] == ("台账", 5, 6, pytest.approx(5 / 6, abs=1e-6))
    assert measured[:4] == ("实测", 4, 6, pytest.approx(4 / 6, abs=1e-6))
    assert ws.cell(row=HEADER_ROW + 1, column=4).number_format == "0.00%"
    detail = rows(wb["台账核对"])
    assert [(r[0], r[1]) for r in detail] == [
        ("台账已上云、不在任何平台目录", C), ("台账已上云、不在任何平台目录", E),
        ("平台目录中有、台账中没有", X), ("点位名称不一致", B),
        ("在平台目录中、台账未上云或未安装", F)]
    assert detail[3][2:4] == ("点位2", "东门") and detail[2][3:] == ("新装点位", P1)


def test_html_section_json_and_csv(tmp_path: Path) -> None:
    b = bulletin(partial=True)
    page = render_html(b)
    assert "台账核对（上云率）" in page and "83.33%" in page and "66.67%" in page
    assert "有平台目录不完整" in page and "电信云（41162800002000000003）目录 1 路" in page
    doc = json.loads(json.dumps(bulletin_json(b), ensure_ascii=False))
    assert doc["reconciliation"]["complete"] is False
    assert doc["reconciliation"]["missing_count"] == 2
    files = {p.name for p in write_csv(b, tmp_path / "csv")}
    assert {"cloud_rate.csv", "reconciliation.csv"} <= files


def test_no_catalogs_no_sheet(tmp_path: Path) -> None:
    """A county without GB/T 28181 platforms gets the bulletin it had."""
    b = compute_bulletin(make_store(), CHANNELS, Period.month("2026-11", TZ), SETTINGS, now=NOW)
    assert b.reconciliation is None and "台账核对" not in render_html(b)
    write_xlsx(b, tmp_path / "r.xlsx")
    assert "台账核对" not in openpyxl.load_workbook(tmp_path / "r.xlsx").sheetnames


@pytest.mark.peer
def test_pdf_has_the_section(tmp_path: Path) -> None:
    """Printed through a real Chromium, the section reads as text in the PDF."""
    import subprocess

    from camwatch.reports.pdf import html_to_pdf
    from tests.conftest import need_binary

    chromium = need_binary("chromium")
    pdftotext = need_binary("pdftotext")
    html_to_pdf(render_html(bulletin()), tmp_path / "r.pdf", chromium=chromium)
    text = subprocess.run([pdftotext, "-layout", str(tmp_path / "r.pdf"), "-"],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    assert "台账核对（上云率）" in text and "83.33%" in text and "66.67%" in text
    assert "点位名称不一致" in text and X in text


def test_a_citys_counties_read_as_one(tmp_path: Path) -> None:
    """report --scope city: a platform cascading to two counties lists, for the city, the
    union of what it listed to each (partial if either was), with the later name; the
    RecordInfo answers of both counties are read together."""
    from camwatch.reports.city import CityStores, _Part
    from camwatch.store.base import Recording
    from camwatch.store.sqlite import SqliteStore

    a, b = SqliteStore(tmp_path / "a.db"), SqliteStore(tmp_path / "b.db")
    a.save_gb_catalog("2026-11", P1, 10.0, catalog("移动云", {A: "点位1"}))
    b.save_gb_catalog("2026-11", P1, 20.0, catalog("移动云平台", {B: "点位2"}, partial=True))
    b.save_gb_catalog("2026-11", P2, 5.0, catalog("电信云", {D: "点位4"}))
    for store, cid in ((a, A), (b, B)):
        store.save_gb_recording(Recording(cid, P1, "2026-11-03", 3600.0, 86400.0, False, 1.0))
    city = CityStores([_Part("a", a), _Part("b", b)], "city.yaml")
    try:
        got = city.gb_catalogs("2026-11")
        assert got[P1] == {"name": "移动云平台", "partial": True, "declared": 1,
                           "channels": {A: "点位1", B: "点位2"}, "at": 20.0}
        assert got[P2]["channels"] == {D: "点位4"}
        assert a.gb_catalogs("2026-11")[P1]["channels"] == {A: "点位1"}  # not changed
        assert {r.channel_id for r in city.gb_recordings("2026-11-01", "2026-11-30")} == {A, B}
    finally:
        city.close()
