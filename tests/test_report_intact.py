"""The bulletin's 完好率 (intact rate, issue #13), figure by figure, on test_report's channels and
online history (November 2026 = 720 h, Asia/Shanghai) with a picture-quality log added:

channel  class  online in November (test_report)       picture quality log
A        1      off 11-11..11-21                         ok from 10-25; too_dark 11-05..11-08;
                                                         occluded from 11-28 (still at the end)
B        1      connected 11-16, unknown until 08:00     first sample ok 11-16 10:00
C        3      off 11-03..11-13, exempt 11-03..11-11     ok from 10-01
D        3      off from 11-25 12:00                     ok from 10-01; frozen from 11-20
E        3      unknown 11-20..11-23                     first sample ok 11-10

intact / judged hours (intact = online with an ok picture; judged = intact + offline + online
with a degraded picture; online but not sampled, unknown and exempt time left out):
A  480 online - 72 - 72 degraded = 336 / 720
B  352 online - 2 not sampled    = 350 / 350
C  480 / 480 + 48 offline (192 exempt left out) = 480 / 528
D  456 ok, 132 frozen while online, 132 offline = 456 / 720
E  216 not sampled, 72 unknown   = 432 / 432
完好率 = 2054 / 2750 = 74.69 % (在线率 85.85 %); class 1 686/1070 = 64.11 %, class 3
1368/1680 = 81.43 %. Snapshot at 12-01 00:00: B, C, E intact, A degraded, D offline: 3/5 =
60.00 %; class 1 1/2 = 50.00 %, class 3 2/3 = 66.67 %. 白马乡 = class 3, 城关镇 = class 1.
Degraded cameras: A 144 h (too_dark, occluded; degraded since 11-28, online), D 132 h
(frozen since 11-20, offline at the end).
"""

from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import pytest

from camwatch.config import TargetsConfig
from camwatch.reports.compute import Bulletin, ReportSettings, compute_bulletin
from camwatch.reports.csvjson import bulletin_json, write_csv
from camwatch.reports.html import render_html
from camwatch.reports.intact import (
    DEGRADED,
    INTACT,
    NOT_JUDGED,
    OFFLINE,
    intact_slot,
    scan_intact,
)
from camwatch.reports.period import Period
from camwatch.reports.tables import summary_table, township_table
from camwatch.reports.xlsx import HEADER_ROW, write_xlsx
from camwatch.rules.rates import format_rate
from camwatch.store.base import QualityChange, QualityState
from camwatch.store.sqlite import SqliteStore
from tests.test_report import CHANNELS, NOW, SETTINGS, TZ, A, B, C, D, E, make_store, ts

H = 3_600_000  # an hour in the rows' milliseconds
JPEG_A = b"\xff\xd8\xff\xe0A-occluded"

QUALITY_LOG = [
    QualityChange(C, ts(2026, 10, 1), "unknown", "ok"),
    QualityChange(D, ts(2026, 10, 1), "unknown", "ok"),
    QualityChange(A, ts(2026, 10, 25), "unknown", "ok"),
    QualityChange(A, ts(2026, 11, 5), "ok", "degraded", ("too_dark",)),
    QualityChange(A, ts(2026, 11, 8), "degraded", "ok"),
    QualityChange(E, ts(2026, 11, 10), "unknown", "ok"),
    QualityChange(B, ts(2026, 11, 16, 10), "unknown", "ok"),
    QualityChange(D, ts(2026, 11, 20), "ok", "degraded", ("frozen",)),
    QualityChange(A, ts(2026, 11, 28), "ok", "degraded", ("occluded",)),
    # December: must not leak into November's figures
    QualityChange(D, ts(2026, 12, 2), "degraded", "ok"),
    # a channel the inventory does not have
    QualityChange("41162800001320999999", ts(2026, 11, 2), "unknown", "degraded", ("blur",)),
]


def quality_store(path: Path | str = ":memory:") -> SqliteStore:
    store = make_store(path)
    store.write_quality(
        [QualityState(A, "degraded", ts(2026, 11, 30, 10), ts(2026, 11, 28), 3,
                      faults=(("occluded", 0.71),), jpeg=JPEG_A, jpeg_ts=ts(2026, 11, 30, 10),
                      fault_jpeg=JPEG_A, fault_ts=ts(2026, 11, 30, 10))],
        QUALITY_LOG)
    return store


def bulletin_of(settings: ReportSettings = SETTINGS) -> Bulletin:
    return compute_bulletin(quality_store(), CHANNELS, Period.month("2026-11", TZ), settings,
                            site="鹿邑县", inventory_source="test", now=NOW)


@pytest.fixture(scope="module")
def bulletin() -> Bulletin:
    return bulletin_of()


def test_intact_slot_table() -> None:
    """The live definition (camwatch.quality.rates.intact_state) over time."""
    from camwatch.model import Quality
    from camwatch.quality.rates import intact_state

    table = [
        ("online", "ok", INTACT, "online"),
        ("online", "degraded", DEGRADED, "offline"),
        ("online", "unknown", NOT_JUDGED, "unknown"),
        ("offline", "ok", OFFLINE, "offline"),
        ("offline", "degraded", OFFLINE, "offline"),
        ("offline", "unknown", OFFLINE, "offline"),
        ("unknown", "ok", NOT_JUDGED, "unknown"),
        ("unknown", "degraded", NOT_JUDGED, "unknown"),
    ]
    for state, quality, slot, live in table:
        assert intact_slot(state, quality) == slot, (state, quality)
        assert intact_state(state, Quality(quality)) == live, (state, quality)


def test_scan_boundaries() -> None:
    """A quality change before the counting window, one inside an exemption, and a channel
    counted from its connect time."""
    t0 = 1000.0
    tl = scan_intact(
        [("a", t0 + 50, "online", "offline", "timeout")],
        [("a", t0 + 10, "ok", "degraded", "blur"), ("a", t0 + 20, "degraded", "ok", ""),
         ("b", t0 - 5, "unknown", "ok", ""), ("b", t0 + 30, "ok", "degraded", "noise,blur")],
        t0, t0 + 100, {"a": t0, "b": t0 + 40}, {"a": "online", "b": "online"}, {},
        {"a": [(t0 + 15, t0 + 25)]})
    # a: 0-10 online unsampled, 10-15 degraded, 15-25 exempt, 25-50 ok, 50-100 offline
    assert tl.ms["a"] == [25_000, 50_000, 5_000, 10_000, 10_000]
    # b: counted from t0+40, degraded since t0+30 (the change before its window counts)
    assert tl.ms["b"] == [0, 0, 60_000, 0, 0]
    assert tl.faults_seen == {"a": ["blur"], "b": ["noise", "blur"]}
    assert tl.quality["b"].since == t0 + 30 and tl.states["a"] == "offline"


def test_summary_intact_figures(bulletin: Bulletin) -> None:
    s = bulletin.summary
    assert bulletin.intact
    assert s.itw is not None and s.isnap is not None
    assert (s.itw.online, s.itw.connected) == (2054 * H, 2750 * H)
    assert format_rate(s.intact_rate) == "74.69%" and format_rate(s.rate) == "85.85%"
    assert (s.isnap.online, s.isnap.connected) == (3, 5)
    assert format_rate(s.isnap.rate) == "60.00%"
    by_class = {p.klass: p for p in s.classes}
    one, three = by_class[1], by_class[3]
    assert one.itw is not None and three.itw is not None
    assert (one.itw.online, one.itw.connected) == (686 * H, 1070 * H)
    assert (three.itw.online, three.itw.connected) == (1368 * H, 1680 * H)
    assert format_rate(one.intact_rate) == "64.11%" and format_rate(three.intact_rate) == "81.43%"
    assert one.isnap is not None and three.isnap is not None
    assert format_rate(one.isnap.rate) == "50.00%" and format_rate(three.isnap.rate) == "66.67%"
    # default intact targets: the online ones (98 / 95 %)
    assert (one.intact_target, three.intact_target) == (0.98, 0.95)
    assert one.intact_meets_target is False and three.intact_meets_target is False
    towns = {f.get("township"): f for f in bulletin.townships}
    assert format_rate(towns["白马乡"].intact_rate) == "81.43%"
    assert format_rate(towns["城关镇"].intact_rate) == "64.11%"


def test_intact_targets_are_their_own() -> None:
    """targets.intact: class 3 held to 80 % passes at 81.43 %, class 1 at 64 % passes at
    64.11 %; the online verdicts keep the online targets."""
    targets = TargetsConfig.model_validate({"min_channels": 1, "intact": {
        "class": {1: "64%", 3: "80%"}}})
    b = bulletin_of(ReportSettings(targets=targets))
    by_class = {p.klass: p for p in b.summary.classes}
    assert (by_class[1].intact_target, by_class[3].intact_target) == (0.64, 0.80)
    assert by_class[1].intact_meets_target is True and by_class[3].intact_meets_target is True
    assert by_class[3].meets_target is False and by_class[3].target == 0.95
    assert b.summary.intact_meets_target is True
    assert b.method_settings()["targets"]["intact"]["class"] == {"1": 0.64, "3": 0.8}


def test_snapshot_setting_publishes_the_snapshot_intact_rate() -> None:
    b = bulletin_of(ReportSettings(online_rate="snapshot", targets=TargetsConfig(min_channels=1)))
    assert format_rate(b.summary.intact_rate) == "60.00%"
    assert summary_table(b).headers[9] == "完好率(期末快照)"


def test_degraded_cameras(bulletin: Bulletin) -> None:
    got = [(d.channel.id, d.seconds / 3600, d.faults, d.quality, d.since, d.state)
           for d in bulletin.degraded]
    assert got == [(A, 144.0, ("too_dark", "occluded"), "degraded", ts(2026, 11, 28), "online"),
                   (D, 132.0, ("frozen",), "degraded", ts(2026, 11, 20), "offline")]
    assert bulletin.pictures == {A: (ts(2026, 11, 30, 10), JPEG_A)}


def test_without_quality_verdicts_the_bulletin_is_unchanged() -> None:
    b = compute_bulletin(make_store(), CHANNELS, Period.month("2026-11", TZ), SETTINGS, now=NOW)
    assert not b.intact and b.summary.itw is None and b.degraded == []
    assert "完好率" not in " ".join(summary_table(b).headers + township_table(b).headers)
    assert "完好率" not in render_html(b) and "intact_rate" not in json.dumps(bulletin_json(b))


def test_tables_show_intact_beside_online(bulletin: Bulletin) -> None:
    t = summary_table(bulletin)
    assert t.headers[7:10] == ["在线率(时间加权)", "在线率(期末快照)", "完好率(时间加权)"]
    assert t.headers[-2:] == ["完好率目标", "完好率是否达标"]
    rows = {(r[0], r[1]): r for r in t.rows}
    assert rows[("鹿邑县", "全部")][9] == pytest.approx(2054 / 2750)
    assert rows[("鹿邑县", "一类")][9] == pytest.approx(686 / 1070)
    assert rows[("鹿邑县", "一类")][-2:] == [0.98, "未达标"]
    assert rows[("鹿邑县", "全部")][-2:] == [None, ""]
    assert t.headers[10] == "完好率环比(百分点)"
    assert rows[("鹿邑县", "全部")][10] == pytest.approx(-22.4105, abs=1e-4)
    assert rows[("鹿邑县", "一类")][10] is None  # as the online rate's: scopes only
    tw = township_table(bulletin)
    assert tw.headers[-3:] == ["完好率", "完好率环比(百分点)", "完好率是否达标"]
    assert [(r[2], r[-3], r[-2], r[-1]) for r in tw.rows] == [
        ("白马乡", pytest.approx(1368 / 1680), pytest.approx(-15.3456, abs=1e-4), "未达标"),
        ("城关镇", pytest.approx(686 / 1070), pytest.approx(-35.8879, abs=1e-4), "未达标")]


def test_the_intact_rates_change_from_the_previous_month(bulletin: Bulletin) -> None:
    """October by hand (744 h; judged from each channel's first picture): C ok from 10-01,
    off 10-10..10-12: 696 / 744; D ok from 10-01, online: 744 / 744; A online from 10-20,
    first picture 10-25: 168 / 168; E first sampled 11-10 and B connected 11-16: not judged.
    1608 / 1656 = 97.10 %, so 74.69 - 97.10 = -22.41 pp; 白马乡 (C, D) 1440 / 1488 = 96.77 %
    -> -15.35 pp; 城关镇 (A) 168 / 168 -> -35.89 pp."""
    s = bulletin.summary
    assert s.previous_intact == pytest.approx(1608 / 1656)
    assert s.intact_change_pp == pytest.approx((2054 / 2750 - 1608 / 1656) * 100)
    bm, cg = bulletin.townships
    assert bm.previous_intact == pytest.approx(1440 / 1488)
    assert cg.previous_intact == pytest.approx(1.0)
    doc = bulletin_json(bulletin)
    assert doc["summary"]["previous_intact_rate"] == round(1608 / 1656, 6)
    assert doc["summary"]["intact_change_pp"] == round((2054 / 2750 - 1608 / 1656) * 100, 4)
    assert "intact_change_pp" not in doc["summary"]["by_class"][0]


def test_html_has_intact_cards_and_degraded_pictures(bulletin: Bulletin) -> None:
    import base64

    page = render_html(bulletin)
    assert "完好率(时间加权)<b>74.69%</b>" in page and "60.00%" in page
    assert "分类型完好率：一类 64.11%（目标 98.00%" in page
    assert "画面异常（完好率）" in page and "画面过暗、遮挡" in page
    assert f'src="data:image/jpeg;base64,{base64.b64encode(JPEG_A).decode()}"' in page
    assert "采样 2026-11-30 10:00" in page
    assert "https://" not in page and "src=\"http" not in page  # self-contained


def test_xlsx_sheet_and_json(bulletin: Bulletin, tmp_path: Path) -> None:
    path = tmp_path / "r.xlsx"
    write_xlsx(bulletin, path)
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames[:6] == ["汇总", "乡镇排名", "村排名", "运营商×乡镇", "离线超3天",
                                 "画面异常"]
    rows = list(wb["画面异常"].iter_rows(min_row=HEADER_ROW, values_only=True))
    assert rows[0] == ("设备编码", "点位名称", "乡镇", "村", "运营商", "点位类型", "异常项",
                       "异常时长(小时)", "期末画面", "异常起始", "期末状态")
    assert rows[1:] == [
        (A, "点位1", "城关镇", "东关", "移动", "一类", "画面过暗、遮挡", 144.0, "异常",
         "2026-11-28 00:00", "在线"),
        (D, "点位4", "白马乡", "李庄", "电信", "三类", "画面冻结", 132.0, "异常",
         "2026-11-20 00:00", "离线")]
    summary = wb["汇总"]
    headers = [c.value for c in summary[HEADER_ROW]]
    at = headers.index("完好率(时间加权)")
    cell = summary.cell(row=HEADER_ROW + 1, column=at + 1)
    assert cell.number_format == "0.00%" and cell.value == pytest.approx(2054 / 2750)
    verdict = summary.cell(row=HEADER_ROW + 2, column=headers.index("完好率是否达标") + 1)
    assert verdict.value == "未达标" and verdict.font.color.rgb.endswith("C00000")
    method = {r[0]: r[1] for r in wb["统计方法"].iter_rows(min_row=HEADER_ROW + 1,
                                                          values_only=True)}
    assert "在线且画面正常" in method["完好率"]
    assert "同在线率目标" in method["完好率目标 targets.intact"]

    doc = json.loads(json.dumps(bulletin_json(bulletin), ensure_ascii=False))
    s = doc["summary"]
    assert s["intact_rate"] == round(2054 / 2750, 6) and s["intact_rate_snapshot"] == 0.6
    assert s["intact_seconds"] == 2054 * 3600.0
    c1 = next(c for c in s["by_class"] if c["class"] == 1)
    assert (c1["intact_target"], c1["intact_meets_target"]) == (0.98, False)
    assert [(d["id"], d["seconds"], d["faults"]) for d in doc["degraded"]] == [
        (A, 144 * 3600.0, ["too_dark", "occluded"]), (D, 132 * 3600.0, ["frozen"])]
    files = {p.name for p in write_csv(bulletin, tmp_path / "csv")}
    assert "degraded.csv" in files


def test_report_command_reads_the_store(tmp_path: Path) -> None:
    """`camwatch report` on a store the daemon left, quality log included."""
    from camwatch.reports import inventory_rows
    from camwatch.reports.cli import add_report_arguments, cmd_report
    from tests.test_report import parse, write_config

    cfg = write_config(tmp_path)
    store = quality_store(tmp_path / "cw.db")
    for month in ("2026-10", "2026-11"):
        store.save_inventory_snapshot(month, inventory_rows(CHANNELS))
    store.close()
    out = tmp_path / "r.json"
    assert cmd_report(parse(add_report_arguments,
                            ["-c", str(cfg), "--month", "2026-11", "-o", str(out)])) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert format_rate(doc["summary"]["intact_rate"]) == "74.69%"
    assert format_rate(doc["summary"]["online_rate"]) == "85.85%"


@pytest.mark.peer
def test_pdf_shows_intact_and_the_degraded_picture(tmp_path: Path) -> None:
    """The printed bulletin (a real Chromium): the 完好率 column and cards, and the degraded
    camera's picture embedded as an image."""
    import numpy as np

    from camwatch.quality.decode import jpeg
    from camwatch.reports import inventory_rows
    from camwatch.reports.cli import add_report_arguments, cmd_report
    from tests.conftest import need_binary
    from tests.test_bulletin import _pdf_pages
    from tests.test_report import parse, write_config

    need_binary("chromium")
    picture = np.zeros((180, 320, 3), np.uint8)
    picture[40:140, 60:260] = (200, 200, 40)
    cfg = write_config(tmp_path)
    store = quality_store(tmp_path / "cw.db")
    store.write_quality([QualityState(A, "degraded", ts(2026, 11, 30, 10), ts(2026, 11, 28), 3,
                                      fault_jpeg=jpeg(picture, 8),
                                      fault_ts=ts(2026, 11, 30, 10))], [])
    for month in ("2026-10", "2026-11"):
        store.save_inventory_snapshot(month, inventory_rows(CHANNELS))
    store.close()
    out = tmp_path / "通报.pdf"
    assert cmd_report(parse(add_report_arguments,
                            ["-c", str(cfg), "--month", "2026-11", "-o", str(out)])) == 0
    data = out.read_bytes()
    assert data[:5] == b"%PDF-"
    assert b"/Subtype /Image" in data or b"/Subtype/Image" in data
    text = "\n".join(_pdf_pages(out))
    assert "74.69%" in text and "85.85%" in text and "画面异常（完好率）" in text
    assert "采样 2026-11-30 10:00" in text and "画面冻结" in text
