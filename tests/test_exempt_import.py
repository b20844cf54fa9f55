"""``camwatch exempt import FILE``: an operator's 报备 list (CSV in GBK or UTF-8, XLSX with date
cells) becomes exemptions, checked whole first: every bad row named with its row and column,
and then nothing written; unknown channel codes refused unless --force; a file imported again
adds nothing; --dry-run writes nothing. The imported exemptions then change the bulletin as
those added one by one do (test_report's November: C exempt 11-03..11-10)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import openpyxl
import pytest

from camwatch.reports.cli import add_exempt_arguments, add_report_arguments, cmd_exempt, cmd_report
from camwatch.rules.rates import format_rate
from camwatch.store.sqlite import SqliteStore
from tests.test_report import A, C, D, parse, seeded_config, ts


@pytest.fixture
def county(tmp_path: Path) -> Path:
    """test_report's county: its history and inventory snapshots in the store; the config."""
    return seeded_config(tmp_path)


def run(cfg: Path, *argv: str) -> int:
    return cmd_exempt(parse(add_exempt_arguments, ["-c", str(cfg), "import", *argv]))


def stored(cfg: Path) -> list[tuple[str, float, float, str]]:
    store = SqliteStore(cfg.parent / "cw.db")
    try:
        return [(x.channel_id, x.start, x.end, x.reason) for x in store.exemptions()]
    finally:
        store.close()


def test_a_gbk_csv_is_imported_once_and_changes_the_bulletin(
        county: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = county.parent / "报备.csv"
    f.write_text("序号,设备编码,点位名称,开始日期,结束日期,报备原因\n"
                 f"1,{C},李庄路口,2026-11-03,2026-11-10,道路施工\n"
                 f"2,{D},李庄村委,2026/11/20 08:00,2026/11/20 18:30,  线路  迁改 \n"
                 "\n", encoding="gb18030")
    assert run(county, str(f)) == 0
    out = capsys.readouterr().out
    assert f"{C} 2026-11-03 ~ 2026-11-10 道路施工" in out
    assert "imported 2 exemptions from" in out
    assert sorted(stored(county)) == [
        (C, ts(2026, 11, 3), ts(2026, 11, 11), "道路施工"),  # the last day included
        (D, ts(2026, 11, 20, 8), ts(2026, 11, 20, 18) + 1800, "线路 迁改")]
    assert run(county, str(f)) == 0  # again: nothing added
    assert "imported 0 exemptions" in capsys.readouterr().out and len(stored(county)) == 2
    # C's exemption is test_report's own (85.85 % = 2548 / 2968 with it); D was online on
    # 11-20, so its 10.5 exempt hours leave both sums: 2537.5 / 2957.5
    out_json = county.parent / "r.json"
    assert cmd_report(parse(add_report_arguments, ["-c", str(county), "--month", "2026-11",
                                                   "-o", str(out_json)])) == 0
    doc = json.loads(out_json.read_text(encoding="utf-8"))
    assert format_rate(doc["summary"]["online_rate"]) == format_rate(2537.5 / 2957.5)


def test_an_xlsx_with_date_cells(county: Path) -> None:
    f = county.parent / "list.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["channel", "from", "to", "reason"])
    ws.append([A, dt.date(2026, 11, 1), dt.datetime(2026, 11, 2), "停电"])  # midnight: a day
    ws.append([C, dt.datetime(2026, 11, 5, 9, 30), dt.datetime(2026, 11, 5, 17), "检修"])
    wb.save(f)
    assert run(county, str(f)) == 0
    assert sorted(stored(county)) == [
        (A, ts(2026, 11, 1), ts(2026, 11, 3), "停电"),
        (C, ts(2026, 11, 5, 9) + 1800, ts(2026, 11, 5, 17), "检修")]


def test_bad_rows_are_all_named_and_nothing_is_imported(
        county: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = county.parent / "bad.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["设备编码", "开始", "结束", "原因"])
    ws.append([C, "2026-11-03", "2026-11-10", "道路施工"])  # good, but not alone
    ws.append([41162800001320000004, "2026-11-03", "2026-11-10", "x"])  # a number
    ws.append([D, "11月3日", "2026-11-10", "x"])
    ws.append([D, "2026-11-10", "2026-11-03", "x"])
    ws.append([D, "2026-11-03", "2026-11-10", ""])
    wb.save(f)
    assert run(county, str(f)) == 1
    err = capsys.readouterr().err
    assert "bad.xlsx: row 3, column 设备编码: expected the code as text" in err
    assert "row 4, column 开始: expected a day like 2026-11-03" in err and "'11月3日'" in err
    assert "row 5, column 结束: expected the end after the start" in err
    assert "row 6, column 原因: expected why" in err
    assert "row 2" not in err and err.rstrip().endswith("nothing imported")
    assert stored(county) == []


def test_unknown_codes_missing_columns_dry_run_and_force(
        county: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = county.parent / "x.csv"
    typo = C + "3"  # a digit too many: closest to C alone
    f.write_text(f"设备编码,开始,结束,原因\n{C},2026-11-03,2026-11-04,施工\n"
                 f"{typo},2026-11-03,2026-11-04,施工\n", encoding="utf-8")
    assert run(county, str(f)) == 1
    err = capsys.readouterr().err
    assert f"x.csv: row 3: {typo}: not a channel of" in err and f"did you mean {C}?" in err
    assert "nothing imported" in err and stored(county) == []
    assert run(county, str(f), "--force", "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"would add: {typo} 2026-11-03 ~ 2026-11-04 施工" in out
    assert "would import 2 exemptions" in out and stored(county) == []
    assert run(county, str(f), "--force") == 0 and len(stored(county)) == 2
    g = county.parent / "y.csv"
    g.write_text(f"编码,开始,原因\n{C},2026-11-03,施工\n", encoding="utf-8")
    assert run(county, str(g)) == 1
    err = capsys.readouterr().err
    assert "y.csv: header: expected a column 结束 (结束时间" in err
    assert run(county, str(county.parent / "nope.csv")) == 1
    assert "nope.csv: file not found" in capsys.readouterr().err
