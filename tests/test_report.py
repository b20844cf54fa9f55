"""The monthly bulletin, checked figure by figure against a transition history with explicit
timestamps (Asia/Shanghai). Hand computation, November 2026 = 30 days = 720 h, October = 744 h:

channel  class 乡镇/村      运营商 connected   November                     online / monitored (h)
A        1     城关镇/东关  移动   yes         off 11-11..11-21 (timeout)   480 / 720
B        1     城关镇/东关  移动   11-16       unknown 00:00-08:00, then on 352 / 352
C        3     白马乡/李庄  联通   yes         off 11-03..11-13 (refused),  480 / 528
                                               exempt 11-03..11-10 incl.    (8 d exempt, 2 d off)
D        3     白马乡/李庄  电信   yes         off from 11-25 12:00         588 / 720
E        3     白马乡/李庄  电信   yes         unknown 11-20..11-23         648 / 648
F        -     白马乡/李庄  联通   installed only, no class, no coordinates
G        3     白马乡/李庄  电信   planned only, id of type 200 (a platform, not a camera)

planned 7, installed 6, connected 5: 安装率 6/7 = 85.71 %, 上云率 5/6 = 83.33 %.
time-weighted: 2548 / 2968 = 85.85 %; class 1 832/1072 = 77.61 %; class 3 1716/1896 = 90.51 %.
snapshot at 12-01 00:00: A B C E online, D offline: 4/5 = 80.00 %.
October: A online from 10-20 (288/288), C off 10-10..10-12 (696/744), D, E 744/744, B not yet
connected: 2472/2520 = 98.10 %; change -12.25 pp. 白马乡 Oct 2184/2232 -> change -7.34 pp;
城关镇 Oct 100 % -> change -22.39 pp.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import yaml

from camwatch.config import TargetsConfig
from camwatch.inventory import Channel
from camwatch.reports import inventory_rows
from camwatch.reports.cli import (
    add_exempt_arguments,
    add_report_arguments,
    cmd_exempt,
    cmd_report,
)
from camwatch.reports.compute import (
    Bulletin,
    Figures,
    OutageRow,
    ReportSettings,
    compute_bulletin,
)
from camwatch.reports.csvjson import bulletin_json, write_csv, write_json
from camwatch.reports.html import render_html, write_html
from camwatch.reports.period import Period, zone
from camwatch.reports.rows import channels_from_rows
from camwatch.reports.xlsx import HEADER_ROW, write_xlsx
from camwatch.rules.rates import format_rate
from camwatch.store import open_store
from camwatch.store.base import Transition
from camwatch.store.sqlite import SqliteStore
from tests.conftest import need_binary

TZ = zone("Asia/Shanghai")
H = 3600.0


def ts(y: int, m: int, d: int, h: int = 0) -> float:
    return dt.datetime(y, m, d, h, tzinfo=TZ).timestamp()


def gid(n: int, type_code: str = "132") -> str:
    return f"4116280000{type_code}0{n:06d}"


def chan(n: int, klass: int | None, township: str, village: str, operator: str, *,
         installed: bool = True, connected: bool = True,
         connected_date: dt.date | None = None, coords: bool = True,
         type_code: str = "132") -> Channel:
    return Channel(
        id=gid(n, type_code), name=f"点位{n}", klass=klass, project="雪亮工程",
        county="鹿邑县", county_code="411628", township=township, village=village,
        operator=operator, installed=installed, connected=connected,
        connected_date=connected_date, rtsp_url="rtsp://user:secret@127.0.0.1/x",
        longitude=115.5 if coords else None, latitude=33.9 if coords else None)


A, B, C, D, E, F, G = (gid(i) for i in range(1, 8))
G = gid(7, "200")

CHANNELS = [
    chan(1, 1, "城关镇", "东关", "移动"),
    chan(2, 1, "城关镇", "东关", "移动", connected_date=dt.date(2026, 11, 16)),
    chan(3, 3, "白马乡", "李庄", "联通"),
    chan(4, 3, "白马乡", "李庄", "电信"),
    chan(5, 3, "白马乡", "李庄", "电信"),
    chan(6, None, "白马乡", "李庄", "联通", connected=False, coords=False),
    chan(7, 3, "白马乡", "李庄", "电信", installed=False, connected=False, type_code="200"),
]

HISTORY = [
    Transition(C, ts(2026, 10, 1), "unknown", "online"),
    Transition(D, ts(2026, 10, 1), "unknown", "online"),
    Transition(E, ts(2026, 10, 1), "unknown", "online"),
    Transition(C, ts(2026, 10, 10), "online", "offline", "refused"),
    Transition(C, ts(2026, 10, 12), "offline", "online"),
    Transition(A, ts(2026, 10, 20), "unknown", "online"),
    Transition(C, ts(2026, 11, 3), "online", "offline", "refused"),
    Transition(A, ts(2026, 11, 11), "online", "offline", "timeout", {"code": 1}),
    Transition(C, ts(2026, 11, 13), "offline", "online"),
    Transition(B, ts(2026, 11, 16, 8), "unknown", "online"),
    Transition(E, ts(2026, 11, 20), "online", "unknown", "internal"),
    Transition(A, ts(2026, 11, 21), "offline", "online"),
    Transition(E, ts(2026, 11, 23), "unknown", "online"),
    Transition(D, ts(2026, 11, 25, 12), "online", "offline", "no_media"),
    # December: must not leak into November's figures
    Transition(D, ts(2026, 12, 2), "offline", "online"),
]

SETTINGS = ReportSettings(targets=TargetsConfig(min_channels=1))
NOW = ts(2027, 1, 5)


def make_store(path: Path | str = ":memory:") -> SqliteStore:
    store = SqliteStore(path)
    store.write_batch([], HISTORY)
    # 报备 of C, 11-03 to 11-10 included (ends 11-11 00:00)
    store.add_exemption(C, ts(2026, 11, 3), ts(2026, 11, 11), "道路施工", now=ts(2026, 11, 2))
    return store


@pytest.fixture(scope="module")
def bulletin() -> Bulletin:
    store = make_store()
    return compute_bulletin(store, CHANNELS, Period.month("2026-11", TZ), SETTINGS,
                            site="鹿邑县", inventory_source="test", now=NOW)


def one(rows: list[Figures], **scope: str) -> Figures:
    (row,) = [r for r in rows if all(r.get(k) == v for k, v in scope.items())]
    return row


def test_summary_figures(bulletin: Bulletin) -> None:
    s = bulletin.summary
    assert (s.planned, s.installed, s.connected) == (7, 6, 5)
    assert format_rate(s.install_rate) == "85.71%"
    assert format_rate(s.cloud_rate) == "83.33%"
    # Σ online / Σ monitored in hours: 2548 / 2968
    assert (s.tw.online, s.tw.connected) == (2548 * 3_600_000, 2968 * 3_600_000)
    assert format_rate(s.rate) == "85.85%"
    assert (s.snap.online, s.snap.offline, s.snap.unknown) == (4, 1, 0)
    assert format_rate(s.snap.rate) == "80.00%"
    assert format_rate(s.previous) == "98.10%"
    assert s.change_pp is not None and f"{s.change_pp:.2f}" == "-12.25"
    by_class = {p.klass: p for p in s.classes}
    assert format_rate(by_class[1].rate) == "77.61%" and by_class[1].target == 0.98
    assert format_rate(by_class[3].rate) == "90.51%" and by_class[3].target == 0.95
    assert by_class[1].meets_target is False and by_class[3].meets_target is False
    assert format_rate(by_class[1].snap.rate) == "100.00%"
    assert format_rate(by_class[3].snap.rate) == "66.67%"


def test_townships_villages_operators(bulletin: Bulletin) -> None:
    t = bulletin.townships
    assert [(f.rank, f.get("township")) for f in t] == [(1, "白马乡"), (2, "城关镇")]
    bm, cg = t
    assert format_rate(bm.rate) == "90.51%" and f"{bm.change_pp:.2f}" == "-7.34"
    assert format_rate(cg.rate) == "77.61%" and f"{cg.change_pp:.2f}" == "-22.39"
    assert (bm.planned, bm.installed, bm.connected) == (5, 4, 3)
    assert bm.target == pytest.approx(0.95) and cg.target == pytest.approx(0.98)
    assert bm.meets_target is False and [p.name for p in bm.failing] == ["三类"]
    (lz,) = [v for v in bulletin.villages if v.get("village") == "李庄"]
    assert format_rate(lz.rate) == "90.51%" and lz.rank == 1
    ops = {f.get("operator"): f for f in bulletin.operators}
    assert format_rate(ops["移动"].rate) == "77.61%"
    assert format_rate(ops["联通"].rate) == "90.91%"  # C only: 480/528
    assert format_rate(ops["电信"].rate) == "90.35%"  # D, E: 1236/1368
    unicom = one(bulletin.operator_townships, operator="联通", township="白马乡")
    assert (unicom.installed, unicom.connected) == (2, 1)
    # 联通 Oct: C 696/744 -> change (480/528 - 696/744) = -2.64 pp
    assert f"{unicom.change_pp:.2f}" == "-2.64"


def test_faults_exemptions_and_data_quality(bulletin: Bulletin) -> None:
    (lo,) = bulletin.long_offline
    assert lo.channel.id == D and lo.reason == "no_media" and lo.days == pytest.approx(5.5)
    assert lo.since == ts(2026, 11, 25, 12)
    outages = {(o.channel.id, o.seconds, o.reason) for o in bulletin.outages}
    assert outages == {(A, 240 * H, "timeout"), (C, 240 * H, "refused"),
                       (D, 132 * H, "no_media")}
    assert [o.channel.id for o in bulletin.repaired] == [C, A]  # by repair time
    (ex,) = bulletin.exemptions
    assert ex.exemption.reason == "道路施工" and ex.seconds_in_period == 192 * H
    found = {(f.channel_id, f.field) for f in bulletin.data_quality}
    assert found == {(F, "点位类型"), (F, "经纬度"), (G, "设备编码")}


def test_snapshot_setting_ranks_by_snapshot() -> None:
    settings = ReportSettings(online_rate="snapshot", targets=TargetsConfig(min_channels=1))
    b = compute_bulletin(make_store(), CHANNELS, Period.month("2026-11", TZ), settings,
                         now=NOW)
    # snapshot: 城关镇 2/2 = 100 %, 白马乡 2/3 = 66.67 %
    assert [(f.get("township"), format_rate(f.rate)) for f in b.townships] == [
        ("城关镇", "100.00%"), ("白马乡", "66.67%")]
    assert ("report.online_rate", "snapshot") in b.method_settings().items()


def test_min_channels_leaves_small_scopes_unjudged() -> None:
    b = compute_bulletin(make_store(), CHANNELS, Period.month("2026-11", TZ),
                         ReportSettings(), now=NOW)  # min_channels 10 > 3 channels
    assert all(f.meets_target is None for f in b.townships)
    assert b.summary.meets_target is False  # the site's classes are always judged


def test_period_in_progress_is_cut_at_now() -> None:
    # Report on November at 11-11 00:00 (10 days so far): A, D, E online 240 h each; C online
    # 11-01..11-03 (48 h), then offline but exempted up to 11-11; B not connected before 11-16.
    b = compute_bulletin(make_store(), CHANNELS, Period.month("2026-11", TZ), SETTINGS,
                         now=ts(2026, 11, 11))
    # online h: A 240 + C 48 + D 240 + E 240 = 768 = monitored
    assert (b.summary.tw.online, b.summary.tw.connected) == (768 * 3_600_000,
                                                             768 * 3_600_000)
    assert b.end == ts(2026, 11, 11)


def test_json_document_keys(bulletin: Bulletin) -> None:
    doc = json.loads(json.dumps(bulletin_json(bulletin), ensure_ascii=False))
    s = doc["summary"]
    for key in ("planned", "installed", "install_rate", "connected", "cloud_rate",
                "online_rate", "online_rate_snapshot", "by_class"):
        assert key in s
    assert (s["planned"], s["installed"], s["connected"]) == (7, 6, 5)
    assert s["online_rate"] == round(2548 / 2968, 6) and s["online_rate_snapshot"] == 0.8
    assert {(c["class"], c["target"], c["meets_target"]) for c in s["by_class"]} == {
        (1, 0.98, False), (3, 0.95, False)}
    for key in ("townships", "operators", "long_offline", "data_quality", "method"):
        assert key in doc
    assert doc["method"]["probing.level"] == "describe"
    assert doc["method"]["report.online_rate"] == "time_weighted"
    assert doc["method"]["targets"]["class"] == {"1": 0.98, "2": 0.95, "3": 0.95}
    assert doc["long_offline"][0]["since"] == "2026-11-25T12:00:00+08:00"
    assert "secret" not in json.dumps(doc) and "rtsp://" not in json.dumps(doc)


def test_xlsx_sheets_formats_and_chart(bulletin: Bulletin, tmp_path: Path) -> None:
    path = tmp_path / "r.xlsx"
    write_xlsx(bulletin, path)
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["汇总", "乡镇排名", "村排名", "运营商×乡镇", "离线超3天",
                             "批量离线", "离线通道汇总", "本期修复", "报备", "数据质量",
                             "统计方法"]
    ws = wb["乡镇排名"]
    headers = [c.value for c in ws[HEADER_ROW]]
    assert headers[:8] == ["排名", "区县", "乡镇", "应安装", "已安装", "安装率", "已联网上云",
                           "上云率"]
    assert ws.freeze_panes == f"A{HEADER_ROW + 1}"
    first = HEADER_ROW + 1
    rate = ws.cell(row=first, column=headers.index("在线率") + 1)
    assert rate.number_format == "0.00%" and rate.value == pytest.approx(1716 / 1896)
    assert ws.cell(row=first, column=headers.index("是否达标") + 1).value == "未达标"
    assert ws.column_dimensions["C"].width >= 10
    assert len(ws._charts) == 1
    summary = wb["汇总"]
    assert summary.cell(row=first, column=5).number_format == "0.00%"
    assert summary.cell(row=first, column=5).value == pytest.approx(6 / 7)
    method = {r[0]: r[1] for r in wb["统计方法"].iter_rows(min_row=first, values_only=True)}
    assert method["在线判定级别 probing.level"].startswith("describe")
    assert method["发布在线率 report.online_rate"].startswith("时间加权")


def test_xlsx_outages_summarised_per_channel(bulletin: Bulletin, tmp_path: Path) -> None:
    """The workbook has one row per channel with outages (count, total and longest hours, most
    recent reason), worst first; the CSV keeps one row per outage."""
    by_id = {c.id: c for c in CHANNELS}
    extra = [
        # E offline since before the log begins: counted, no duration
        OutageRow(by_id[E], None, ts(2026, 11, 2), None, "timeout"),
        # A: a second, shorter outage before its 240 h one
        OutageRow(by_id[A], ts(2026, 11, 5), ts(2026, 11, 5, 6), 6 * H, "refused"),
    ]
    b = replace(bulletin, outages=sorted(
        [*bulletin.outages, *extra],
        key=lambda r: (r.start is not None, r.start or 0.0, r.channel.id)))
    path = tmp_path / "r.xlsx"
    write_xlsx(b, path)
    ws = openpyxl.load_workbook(path)["离线通道汇总"]
    assert ws.freeze_panes == f"A{HEADER_ROW + 1}"
    rows = list(ws.iter_rows(values_only=True))
    assert rows[HEADER_ROW - 1] == ("设备编码", "点位名称", "乡镇", "村", "运营商", "点位类型",
                                    "离线次数", "累计时长(小时)", "最长一次(小时)", "最近原因")
    got = [(r[0], r[6], r[7], r[8], r[9]) for r in rows[HEADER_ROW:HEADER_ROW + 4]]
    assert got == [(A, 2, 246.0, 240.0, "超时"), (C, 1, 240.0, 240.0, "拒绝连接"),
                   (D, 1, 132.0, 132.0, "无视频流"), (E, 1, None, None, "超时")]
    assert len(rows) == HEADER_ROW + 4
    assert rows[2][0] is not None and "outages.csv" in rows[2][0]  # the note, in the title
    method = {r[0]: r[1] for r in openpyxl.load_workbook(path)["统计方法"].iter_rows(
        min_row=HEADER_ROW + 1, values_only=True)}
    assert "按通道汇总" in method["离线明细"] and "outages.csv" in method["离线明细"]
    # the machine formats keep every outage
    write_csv(b, tmp_path / "csv")
    text = (tmp_path / "csv" / "outages.csv").read_text(encoding="utf-8-sig")
    assert len(text.splitlines()) == 1 + 5
    assert len(bulletin_json(b)["outages"]) == 5


def test_json_file_streams_the_same_document(bulletin: Bulletin, tmp_path: Path) -> None:
    """write_json writes the outages one at a time; the file is still exactly the indented
    dump of bulletin_json, with outages or without."""
    for b in (bulletin, replace(bulletin, outages=[])):
        write_json(b, tmp_path / "r.json")
        expected = json.dumps(bulletin_json(b), ensure_ascii=False, indent=1) + "\n"
        assert (tmp_path / "r.json").read_text(encoding="utf-8") == expected


def test_csv_tables(bulletin: Bulletin, tmp_path: Path) -> None:
    files = {p.name for p in write_csv(bulletin, tmp_path / "csv")}
    assert {"summary.csv", "townships.csv", "long_offline.csv", "method.csv"} <= files
    text = (tmp_path / "csv" / "long_offline.csv").read_text(encoding="utf-8-sig")
    assert text.splitlines()[0].startswith("设备编码,点位名称")
    assert D in text and "无视频流" in text and "no_media" not in text


def test_html_escapes_and_has_no_external_assets(bulletin: Bulletin) -> None:
    store = make_store()
    store.add_exemption(A, ts(2026, 11, 1), ts(2026, 11, 2), "<script>x</script>", now=0.0)
    b = compute_bulletin(store, CHANNELS, Period.month("2026-11", TZ), SETTINGS, now=NOW)
    page = render_html(b)
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "@page" in page and "<svg" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "src=" not in page
    fixture_page = render_html(bulletin)
    assert "85.85%" in fixture_page and "95.00%" in fixture_page and "未达标" in fixture_page


@pytest.mark.peer
def test_html_prints_to_pdf_in_chromium(bulletin: Bulletin, tmp_path: Path) -> None:
    chromium = need_binary("chromium")
    page = tmp_path / "r.html"
    write_html(bulletin, page)
    pdf = tmp_path / "r.pdf"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--print-to-pdf={pdf}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and len(data) > 10_000
    assert b"/Type /Page" in data or b"/Type/Page" in data


def test_inventory_rows_have_no_addresses_and_round_trip() -> None:
    rows = inventory_rows(CHANNELS)
    text = json.dumps(rows, ensure_ascii=False)
    assert "rtsp" not in text and "secret" not in text and "user" not in text
    assert rows[1]["connected_date"] == "2026-11-16" and rows[0]["class"] == 1
    back = channels_from_rows(rows)
    assert [(c.id, c.klass, c.connected_date, c.village) for c in back] == [
        (c.id, c.klass, c.connected_date, c.village) for c in CHANNELS]


def test_store_exemptions_migration(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    n = store.add_exemption("x", 10.0, 20.0, "道路施工", now=1.0)
    store.add_exemption("x", 30.0, 40.0, "停电", now=1.0)
    store.add_exemption("y", 5.0, 50.0, "拆迁", now=1.0)
    assert [e.reason for e in store.exemptions(15.0, 35.0)] == ["道路施工", "停电", "拆迁"]
    assert [e.reason for e in store.exemptions(20.0, 30.0)] == ["拆迁"]  # half-open
    assert [e.id for e in store.exemptions(channel_ids=["x"])] == [n, n + 1]
    assert store.remove_exemptions("x", n) == 1
    assert store.remove_exemptions("y") == 1 and store.remove_exemptions("nope") == 0
    assert isinstance(store, SqliteStore) and store.schema_version >= 2  # 2: exemptions
    store.close()


# --- the commands -------------------------------------------------------------------------------


def write_config(tmp: Path, inventory: str = "inventory.csv", **report: Any) -> Path:
    doc: dict[str, Any] = {"inventory": {"path": inventory}, "store": {"path": "cw.db"},
                           "targets": {"min_channels": 1}}
    if report:
        doc["report"] = report
    path = tmp / "camwatch.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def seeded_config(tmp: Path) -> Path:
    """This county's config over a store holding its HISTORY and the inventory snapshots of
    October and November (what the daemon would have written)."""
    cfg = write_config(tmp)
    store = SqliteStore(tmp / "cw.db")
    store.write_batch([], HISTORY)
    store.save_inventory_snapshot("2026-10", inventory_rows(CHANNELS))
    store.save_inventory_snapshot("2026-11", inventory_rows(CHANNELS))
    store.close()
    return cfg


def parse(add: Any, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add(p)
    args = p.parse_args(argv)
    args.now = NOW  # the injected clock: November 2026 is over
    return args


def test_cmd_exempt_and_cmd_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = str(seeded_config(tmp_path))
    assert cmd_exempt(parse(add_exempt_arguments, [
        "-c", c, "add", "--channel", C, "--from", "2026-11-03", "--to", "2026-11-10",
        "--reason", "道路施工"])) == 0
    assert cmd_exempt(parse(add_exempt_arguments, [
        "-c", c, "add", "--channel", A, "--from", "2026-11-03", "--to", "2026-11-02",
        "--reason", "x"])) == 2
    assert cmd_exempt(parse(add_exempt_arguments, ["-c", c, "list", "--month", "2026-11"])) == 0
    listing = capsys.readouterr().out
    # --to is the last day included: the store's exclusive end (11-11 00:00) lists as 11-10
    assert "道路施工" in listing and "2026-11-03" in listing and "2026-11-10" in listing
    assert "2026-11-11" not in listing
    out = tmp_path / "r.json"
    assert cmd_report(parse(add_report_arguments,
                            ["-c", c, "--month", "2026-11", "-o", str(out)])) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert format_rate(doc["summary"]["online_rate"]) == "85.85%"
    assert doc["method"]["inventory_source"].startswith("2026-11 台账快照")
    assert cmd_report(parse(add_report_arguments, [
        "-c", c, "--month", "2026-11", "--format", "xlsx", "-o", str(tmp_path / "r.xlsx")])) == 0
    assert openpyxl.load_workbook(tmp_path / "r.xlsx").sheetnames[0] == "汇总"
    # without the exemption C's 8 days count offline: (2548) / (2968 + 192)
    assert cmd_exempt(parse(add_exempt_arguments, ["-c", c, "remove", C])) == 0
    assert cmd_exempt(parse(add_exempt_arguments, ["-c", c, "remove", C])) == 1
    assert cmd_report(parse(add_report_arguments,
                            ["-c", c, "--month", "2026-11", "-o", str(out)])) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert format_rate(doc["summary"]["online_rate"]) == format_rate(2548 / 3160) == "80.63%"
    assert cmd_report(parse(add_report_arguments,
                            ["-c", c, "--month", "2026-11", "--from", "2026-11-01"])) == 2


def test_report_from_a_range_of_days(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    store = make_store(tmp_path / "cw.db")
    store.save_inventory_snapshot("2026-11", inventory_rows(CHANNELS))
    store.close()
    out = tmp_path / "r.json"
    # 11-21..11-22: A online 48 h, B 48, C 48, D 48, E unknown (excluded): 192/192
    assert cmd_report(parse(add_report_arguments, [
        "-c", str(cfg), "--from", "2026-11-21", "--to", "2026-11-22", "-o", str(out)])) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["summary"]["online_seconds"] == 192 * H == doc["summary"]["monitored_seconds"]
    assert doc["period"]["previous"] == "2026-11-19 ~ 2026-11-20"


def test_generated_county_install_and_cloud_rates(tmp_path: Path) -> None:
    from camwatch.sim.inventory_gen import InventorySpec, plan_inventory, write_all

    plan = plan_inventory(InventorySpec(connected=9896, installed=10048, planned=10520))
    files = write_all(plan, tmp_path, "pw")
    open_store(tmp_path / "camwatch.db").close()  # the daemon's store, still empty
    out = tmp_path / "r.json"
    assert cmd_report(parse(add_report_arguments, [
        "-c", str(files.config), "--month", "2026-11", "-o", str(out)])) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    s = doc["summary"]
    assert (s["planned"], s["installed"], s["connected"]) == (10520, 10048, 9896)
    assert format_rate(s["install_rate"]) == "95.51%"
    assert format_rate(s["cloud_rate"]) == "98.49%"
    assert s["online_rate"] is None  # nothing probed yet: no rate, not 0 %
    assert doc["method"]["inventory_source"].startswith("当前台账")
    assert "rtsp://" not in out.read_text(encoding="utf-8")
