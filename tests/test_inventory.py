from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest

from camwatch.cli import main
from camwatch.config import InventoryConfig
from camwatch.errors import InventoryError
from camwatch.inventory import Inventory, load_inventory

HEADER_CN = ["设备编码", "点位名称", "点位类型", "项目", "区县", "区县编码", "乡镇", "乡镇编码",
             "村", "村编码", "运营商", "安装状态", "安装日期", "上云状态", "上云日期", "RTSP地址",
             "经度", "纬度"]


def row(n: int, installed: bool = True, connected: bool = True, klass: object = 1,
        url: str | None = None) -> list[object]:
    return [f"411628000013210{n:05d}", f"点位{n}", klass, "雪亮工程", "鹿邑县", "411628",
            "城关镇", "411628100", "东关村", "411628100001", "移动",
            "已安装" if installed else "未安装", "2025-03-01" if installed else "",
            "已上云" if connected else "未上云", "2025-03-10" if connected else "",
            url or f"rtsp://127.0.1.{n % 250}:554/ch{n}", 115.4, 33.8]


def write_csv(path: Path, header: list[str], rows: list[list[object]],
              encoding: str = "utf-8-sig", newline: str = "\n") -> Path:
    lines = [",".join(header)] + [",".join("" if v is None else str(v) for v in r) for r in rows]
    path.write_bytes(newline.join(lines).encode(encoding) + newline.encode())
    return path


def test_xlsx_with_chinese_headers_seed_rates(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The seed check of shared/domain.md: 10,520 planned, 10,048 installed, 9,896 connected."""
    path = tmp_path / "台账.xlsx"
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("点位")
    ws.append(HEADER_CN)
    for n in range(10_520):
        ws.append(row(n, installed=n < 10_048, connected=n < 9_896, klass=1 + n % 3))
    wb.save(path)
    inv = load_inventory(InventoryConfig(path=path))
    s = inv.summary()
    assert (s["planned"], s["installed"], s["connected"]) == (10_520, 10_048, 9_896)
    assert f"{s['install_rate'] * 100:.2f}" == "95.51"
    assert f"{s['cloud_rate'] * 100:.2f}" == "98.49"
    (tmp_path / "c.yaml").write_text(f"inventory: {{path: {path.name}}}\n", encoding="utf-8")
    assert main(["check-config", "-c", str(tmp_path / "c.yaml")]) == 0
    out = capsys.readouterr().out
    assert "安装率 95.51%" in out and "上云率 98.49%" in out
    assert "10520 rows read, 10520 channels accepted, 0 rejected" in out


def test_english_headers_yaml_and_value_synonyms(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text("""
channels:
  - {id: "41162800001321000001", name: gate, class: 一类, project: xueliang, county: 鹿邑县,
     township: 城关镇, operator: China Mobile, installed: yes, connected: yes,
     rtsp_url: "rtsp://127.0.0.2/ch1"}
  - {id: "41162800001321000002", class: III, project: 智慧社区, county: 鹿邑县, township: 城关镇,
     installed_date: 2025-01-02, onvif_url: "http://127.0.0.3/onvif/device_service",
     connected_date: "2025/02/03"}
""", encoding="utf-8")
    inv = load_inventory(InventoryConfig(path=path))
    a, b = inv.channels
    assert (a.klass, a.project, a.operator, a.installed, a.connected) == (1, "雪亮工程", "移动",
                                                                          True, True)
    # a date without a status means it happened
    assert (b.klass, b.project, b.installed, b.connected) == (3, "智慧小区", True, True)
    assert str(b.connected_date) == "2025-02-03"
    assert b.host == "127.0.0.3"


def test_configured_column_mapping(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "inv.csv", ["资产编号", "类别", "上云状态", "安装状态", "取流"],
                     [["41162800001321000001", "2", "是", "是", "rtsp://127.0.0.9/a"]])
    with pytest.raises(InventoryError, match="no id column"):
        load_inventory(InventoryConfig(path=path))
    inv = load_inventory(InventoryConfig(path=path, columns={"id": "资产编号",
                                                             "rtsp_url": "取流"}))
    assert inv.channels[0].id == "41162800001321000001"
    assert inv.channels[0].klass == 2 and inv.channels[0].rtsp_url == "rtsp://127.0.0.9/a"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_csv_encodings_and_line_endings(tmp_path: Path, encoding: str, newline: str) -> None:
    path = write_csv(tmp_path / "inv.csv", HEADER_CN, [row(1), row(2)], encoding, newline)
    inv = load_inventory(InventoryConfig(path=path))
    assert [c.name for c in inv.channels] == ["点位1", "点位2"]
    assert inv.channels[0].township == "城关镇"


def test_mixed_line_endings(tmp_path: Path) -> None:
    body = (",".join(HEADER_CN) + "\r\n" + ",".join(map(str, row(1))) + "\n"
            + ",".join(map(str, row(2))) + "\r\n")
    path = tmp_path / "inv.csv"
    path.write_bytes(body.encode("gbk"))
    assert len(load_inventory(InventoryConfig(path=path)).channels) == 2


def test_inline_url_password_is_split_off_and_never_shown(tmp_path: Path) -> None:
    url = "rtsp://admin:Canary-Pw-77@127.0.0.5:554/ch1"
    path = write_csv(tmp_path / "inv.csv", HEADER_CN, [row(1, url=url)])
    ch = load_inventory(InventoryConfig(path=path)).channels[0]
    assert ch.rtsp_url == "rtsp://127.0.0.5:554/ch1"
    assert ch.url_username == "admin"
    assert ch.url_password is not None and ch.url_password.reveal() == "Canary-Pw-77"
    assert "Canary-Pw-77" not in repr(ch)


def test_bad_url_with_password_not_echoed(tmp_path: Path) -> None:
    url = "http://admin:Canary-Pw-78@127.0.0.5/ch1"
    path = write_csv(tmp_path / "inv.csv", HEADER_CN, [row(1, url=url)])
    with pytest.raises(InventoryError) as exc:
        load_inventory(InventoryConfig(path=path))
    assert "Canary-Pw-78" not in str(exc.value)
    assert "rtsp://host/path" in str(exc.value)


def test_skip_mode_keeps_good_rows_and_lists_bad(tmp_path: Path) -> None:
    rows = [row(1), row(2, klass=7), row(3, installed=False, connected=True), row(4)]
    path = write_csv(tmp_path / "inv.csv", HEADER_CN, rows)
    with pytest.raises(InventoryError) as exc:
        load_inventory(InventoryConfig(path=path))
    assert len(exc.value.problems) == 2
    inv = load_inventory(InventoryConfig(path=path, on_error="skip"))
    assert [c.name for c in inv.channels] == ["点位1", "点位4"]
    assert inv.rejected_rows == 2
    assert inv.summary()["rejected"] == 2
    assert {p.path for p in inv.errors} == {"row 3, column 点位类型", "row 4, column 上云状态"}


def test_data_quality_warnings(tmp_path: Path) -> None:
    r = row(1)
    r[2] = ""  # class
    r[6] = r[7] = ""  # township
    r[16] = r[17] = ""  # coordinates
    odd = row(2)
    odd[0] = "41162800001341000002"  # type 134: an alarm device, not a video channel
    path = write_csv(tmp_path / "inv.csv", HEADER_CN, [r, odd])
    inv = load_inventory(InventoryConfig(path=path))
    msgs = sorted(f"{p.path}: {p.message}" for p in inv.warnings)
    assert msgs == [
        "row 2, column 乡镇: township (乡镇) is missing",
        "row 2, column 点位类型: class (点位类型) is missing",
        "row 2, column 经度: coordinates (经度/纬度) are missing",
        "row 3, column 设备编码: type code 134 is not a video channel type "
        "(111, 112, 118, 131, 132)",
    ]
    assert inv.channels[0].klass is None


def test_id_format_any_accepts_local_codes(tmp_path: Path) -> None:
    r = row(1)
    r[0] = "LY-0001"
    path = write_csv(tmp_path / "inv.csv", HEADER_CN, [r])
    with pytest.raises(InventoryError, match="20 digits"):
        load_inventory(InventoryConfig(path=path))
    assert load_inventory(InventoryConfig(path=path, id_format="any")).channels[0].id == "LY-0001"


def test_xlsx_zip_bomb_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zipfile

    import camwatch.inventory

    # The real limit is 512 MB; a 60 MB bomb against a 50 MB limit tests the same code faster.
    monkeypatch.setattr(camwatch.inventory, "MAX_XLSX_UNCOMPRESSED", 50 * 1024 * 1024)
    path = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("xl/worksheets/sheet1.xml", b"\0" * (60 * 1024 * 1024))
    assert path.stat().st_size < 1024 * 1024
    with pytest.raises(InventoryError, match="zip bomb"):
        load_inventory(InventoryConfig(path=path))


def test_not_an_xlsx(tmp_path: Path) -> None:
    path = tmp_path / "x.xlsx"
    path.write_bytes(b"id,name\n1,2\n")
    with pytest.raises(InventoryError, match="expected an XLSX file"):
        load_inventory(InventoryConfig(path=path))


def test_xlsx_declaring_a_million_rows_is_refused_quickly(tmp_path: Path) -> None:
    """Sheets formatted down to row 1,048,576 are common; openpyxl trusts the dimension."""
    import re
    import zipfile

    plain = tmp_path / "plain.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(HEADER_CN)
    ws.append(row(1))
    wb.save(plain)
    bomb = tmp_path / "million.xlsx"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = re.sub(rb'<dimension ref="[^"]*"/>', b'<dimension ref="A1:R1048576"/>',
                              data)
            dst.writestr(item, data)
    with pytest.raises(InventoryError, match=r"declares 1048576 rows, more than "
                                             r"inventory\.max_rows"):
        load_inventory(InventoryConfig(path=bomb, max_rows=100_000))
    assert len(load_inventory(InventoryConfig(path=plain)).channels) == 1


def test_endless_empty_rows_stop_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "inv.csv"
    body = ",".join(HEADER_CN) + "\n" + ",".join(map(str, row(1))) + "\n" + ",\n" * 20_000
    path.write_text(body + ",".join(map(str, row(2))) + "\n", encoding="utf-8")
    with pytest.raises(InventoryError, match="more than 10,000 empty rows in a row"):
        load_inventory(InventoryConfig(path=path))


def test_wrong_configured_encoding_says_where(tmp_path: Path) -> None:
    good = "".join(f"4116280000132100{n:04d},abc\n" for n in range(3000)).encode()
    path = tmp_path / "inv.csv"
    path.write_bytes(b"id,name\n" + good + "41162800001321009999,城关\n".encode("gbk"))
    with pytest.raises(InventoryError, match=r"after row \d+: cannot decode as utf-8"):
        load_inventory(InventoryConfig(path=path, encoding="utf-8"))
    assert len(load_inventory(InventoryConfig(path=path)).channels) == 3001  # auto: GB18030


# --- control characters, Excel's habits, header variants ---------------------------------------

CONTROL_NAME = "点位\x00一\x01号\x7f"  # NUL, SOH and DEL: openpyxl refuses to write them


def _xlsx(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("点位")
    ws.append(header)
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


def _control_warnings(inv: Inventory) -> list[str]:
    return [f"{Path(p.where).name}: {p.path}: {p.message}" for p in inv.warnings
            if "控制字符" in p.message]


def test_control_characters_in_csv_are_removed_with_a_located_warning(tmp_path: Path) -> None:
    r = row(1)
    r[1] = CONTROL_NAME
    r[6] = "城关\x1b镇"  # township: an ESC pasted from a terminal
    r[4] = "鹿邑\r\n县"  # a line break inside a cell: becomes one space, no warning
    path = tmp_path / "inv.csv"
    path.write_bytes((",".join(HEADER_CN) + "\n" + ",".join(f'"{v}"' for v in r) + "\n")
                     .encode("utf-8"))
    inv = load_inventory(InventoryConfig(path=path))
    ch = inv.channels[0]
    assert (ch.name, ch.township, ch.county) == ("点位一号", "城关镇", "鹿邑 县")
    assert _control_warnings(inv) == [
        r"inv.csv: row 2, column 点位名称: 删除了 3 个控制字符 (\x00, \x01, \x7f) "
        "(control characters removed)",
        r"inv.csv: row 2, column 乡镇: 删除了 1 个控制字符 (\x1b) (control characters removed)",
    ]


def test_control_characters_in_xlsx_are_removed(tmp_path: Path) -> None:
    """Excel writes a control character as _x0001_ (openpyxl leaves it encoded on reading)."""
    r = row(1)
    r[1] = "点位_x0000_一_x0001_号_x007F_"
    r[8] = "东关_x005F_村"  # an escaped underscore is not a control character
    inv = load_inventory(InventoryConfig(path=_xlsx(tmp_path / "inv.xlsx", HEADER_CN, [r])))
    assert inv.channels[0].name == "点位一号"
    assert inv.channels[0].village == "东关_村"
    assert _control_warnings(inv) == [
        r"inv.xlsx: row 2, column 点位名称: 删除了 3 个控制字符 (\x00, \x01, \x7f) "
        "(control characters removed)"]


def test_control_characters_in_yaml_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text('- {id: "41162800001321000001", name: "点位\\0一\\x01号\\x7f", class: 1,\n'
                    '   township: "城关镇", county: 鹿邑县, rtsp_url: "rtsp://127.0.0.2/ch1",\n'
                    '   connected: yes, installed: yes, longitude: 115.4, latitude: 33.8}\n',
                    encoding="utf-8")
    inv = load_inventory(InventoryConfig(path=path))
    assert inv.channels[0].name == "点位一号"
    assert _control_warnings(inv) == [
        r"inv.yaml: item 0, column name: 删除了 3 个控制字符 (\x00, \x01, \x7f) "
        "(control characters removed)"]


def test_report_xlsx_written_from_an_inventory_with_control_characters(
        tmp_path: Path) -> None:
    """What used to end in openpyxl's IllegalCharacterError."""
    from camwatch.reports.cli import add_report_arguments, cmd_report
    from camwatch.store import open_store
    from tests.test_report import parse, write_config

    r = row(1)
    r[1] = CONTROL_NAME
    r[2] = ""  # no class: the channel is listed, with its name, in the data-quality sheet
    path = tmp_path / "inventory.csv"
    path.write_bytes((",".join(HEADER_CN) + "\n" + ",".join(map(str, r)) + "\n").encode())
    cfg = write_config(tmp_path)
    open_store(tmp_path / "cw.db").close()
    out = tmp_path / "r.xlsx"
    assert cmd_report(parse(add_report_arguments, [
        "-c", str(cfg), "--month", "2026-11", "--format", "xlsx", "-o", str(out)])) == 0
    cells = [c.value for ws in openpyxl.load_workbook(out) for r_ in ws.iter_rows()
             for c in r_]
    assert "点位一号" in cells


def test_url_with_a_line_break_is_refused(tmp_path: Path) -> None:
    r = row(1, url="rtsp://127.0.0.5/ch1\nOPTIONS")
    path = tmp_path / "inv.csv"
    path.write_bytes((",".join(HEADER_CN) + "\n" + ",".join(f'"{v}"' for v in r) + "\n")
                     .encode("utf-8"))
    with pytest.raises(InventoryError, match="without spaces or line breaks"):
        load_inventory(InventoryConfig(path=path))


def test_url_space_check_is_str_isspace() -> None:
    """The URL check's regex finds exactly the characters ``str.isspace()`` holds for."""
    from camwatch.inventory import _SPACE, _url

    assert [i for i in range(0x110000)
            if (_SPACE.search(chr(i)) is not None) != chr(i).isspace()] == []
    with pytest.raises(ValueError, match="without spaces"):
        _url("rtsp://127.0.0.5/a\u3000b", ("rtsp",))  # an ideographic space


def test_xlsx_id_stored_as_a_number_is_refused_with_the_excel_hint(tmp_path: Path) -> None:
    good, bad = row(1), row(2)
    bad[0] = 41162800001321000002.0  # what Excel keeps of a 20-digit code typed as a number
    inv_path = _xlsx(tmp_path / "inv.xlsx", HEADER_CN, [good, bad])
    inv = load_inventory(InventoryConfig(path=inv_path, on_error="skip"))
    assert [c.id for c in inv.channels] == [good[0]]
    (problem,) = inv.errors
    assert problem.path == "row 3, column 设备编码"
    assert problem.message.endswith("Excel 将编码存成了科学计数法：请把该列设为文本后重新导出")
    assert "(4.1162800001321e+19)" in problem.message


@pytest.mark.parametrize(("id_header", "name_header"), [
    ("国标编码", "监控点名称"), ("点位编号", "摄像机名称"), ("监控点编号", "设备名称"),
    ("国标ID", "通道名称")])
def test_common_header_variants_are_recognised(tmp_path: Path, id_header: str,
                                               name_header: str) -> None:
    header = [id_header, name_header, *HEADER_CN[2:]]
    inv = load_inventory(InventoryConfig(path=write_csv(tmp_path / "inv.csv", header,
                                                        [row(1)])))
    assert (inv.channels[0].id, inv.channels[0].name) == (row(1)[0], "点位1")
    assert inv.ignored_columns == []


def test_gb_code_wins_over_a_local_serial_number(tmp_path: Path) -> None:
    header = ["点位编号", "国标编码", *HEADER_CN[1:]]
    rows = [["LY-0001", *row(1)]]
    inv = load_inventory(InventoryConfig(path=write_csv(tmp_path / "inv.csv", header, rows)))
    assert inv.channels[0].id == row(1)[0]


def test_unrecognised_header_close_to_a_known_one_says_did_you_mean(tmp_path: Path) -> None:
    header = list(HEADER_CN)
    header[1] = "监控点名"  # 点位名称 / 监控点名称 misspelt
    header[15] = "取流地"
    inv = load_inventory(InventoryConfig(path=write_csv(tmp_path / "inv.csv", header,
                                                        [row(1, connected=False)])))
    notes = {p.path: p.message for p in inv.warnings if p.path.startswith("header")}
    assert notes == {
        "header, column 监控点名": "未识别的列名，已忽略；是否应为 '监控点名称'？(unrecognised "
                                    "column, ignored: did you mean '监控点名称'? or name it in "
                                    "inventory.columns)",
        "header, column 取流地": "未识别的列名，已忽略；是否应为 '取流地址'？(unrecognised "
                                  "column, ignored: did you mean '取流地址'? or name it in "
                                  "inventory.columns)",
    }
    assert inv.ignored_columns == ["监控点名", "取流地"]


def test_no_coordinate_columns_gives_one_warning_not_one_per_row(tmp_path: Path) -> None:
    header = HEADER_CN[:-2]
    path = write_csv(tmp_path / "inv.csv", header, [row(n)[:-2] for n in range(50)])
    inv = load_inventory(InventoryConfig(path=path))
    assert [f"{p.path}: {p.message}" for p in inv.warnings] == [
        "header: 没有经纬度列 (经度/纬度)，所有点位都缺少坐标 (no coordinate columns)"]


def test_yaml_inventory_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    import time

    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    lines.append('channels: [{id: "41162800001321000001", name: *i}]')
    path = tmp_path / "inv.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert path.stat().st_size < 700
    t0 = time.perf_counter()
    with pytest.raises(InventoryError) as exc:
        load_inventory(InventoryConfig(path=path))
    assert time.perf_counter() - t0 < 5
    msg = str(exc.value)
    assert msg.startswith(f"{path}: line ") and "more than 1,000,000 nodes" in msg


def test_values_many_rows_repeat_are_held_once(tmp_path: Path) -> None:
    """A device's ONVIF address, the area names and the dates repeat over its channels' rows:
    each is one object however many rows carry it (what 100,000 channels weigh in memory),
    and equal to what the row says."""
    header = [*HEADER_CN, "ONVIF地址"]
    rows = [[*row(n), "http://127.0.1.1:8080/onvif/device_service"] for n in range(1, 41)]
    inv = load_inventory(InventoryConfig(path=write_csv(tmp_path / "inv.csv", header, rows)))
    assert len(inv.channels) == 40
    for attr in ("onvif_url", "township", "village", "installed_date", "connected_date"):
        values = [getattr(c, attr) for c in inv.channels]
        assert len({id(v) for v in values}) == 1, attr
    c = inv.channels[0]
    assert c.onvif_url == "http://127.0.1.1:8080/onvif/device_service"
    assert (str(c.installed_date), str(c.connected_date)) == ("2025-03-01", "2025-03-10")
    assert len({id(c.rtsp_url) for c in inv.channels}) == 40  # each channel's own
