"""The inventory (台账, 一机一档): one row per video channel, from CSV, XLSX or YAML.

Column headers may be Chinese or English (see ``FIELDS``) or mapped in the config
(``inventory.columns``). Every row is validated; every problem names the file, the row and the
column. Nothing is dropped silently: rejected rows are counted and listed, data-quality findings
(missing class, area, coordinates; odd ids) are kept as warnings for the report's annex.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import functools
import hashlib
import operator
import pickle
import re
import sys
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from camwatch.config import InventoryConfig, display_path, load_yaml
from camwatch.errors import ConfigError, InventoryError, Problem
from camwatch.gbt28181 import check_id
from camwatch.model import CLASS_NAMES
from camwatch.secrets import Secret, split_userinfo

# Canonical field -> accepted headers (first is what we write). Matching ignores case, spaces
# and a trailing "(...)" note that real spreadsheets add ("点位类型(1/2/3)").
# When a sheet has two columns that match one field, the alias listed first wins (a 国标编码
# beside a local 点位编号 serial is the id).
FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("设备编码", "国标编码", "设备国标编码", "通道编码", "通道国标编码", "国标编号", "国标ID",
           "监控点编码", "点位编码", "监控点编号", "点位编号", "设备编号", "id", "device_id",
           "gb_id"),
    "name": ("点位名称", "设备名称", "名称", "监控点名称", "摄像机名称", "摄像头名称", "通道名称",
             "name"),
    "class": ("点位类型", "点位分类", "点位类别", "类别", "class", "point_type"),
    "project": ("项目", "建设项目", "所属项目", "project"),
    "county": ("区县", "县区", "所属区县", "county"),
    "county_code": ("区县编码", "县区编码", "county_code"),
    "township": ("乡镇", "乡镇街道", "所属乡镇", "township"),
    "township_code": ("乡镇编码", "乡镇街道编码", "township_code"),
    "village": ("村", "村社区", "行政村", "村(社区)", "village"),
    "village_code": ("村编码", "村社区编码", "行政村编码", "village_code"),
    "operator": ("运营商", "建设运营商", "operator"),
    "installed": ("安装状态", "是否安装", "installed"),
    "installed_date": ("安装日期", "安装时间", "installed_date"),
    "connected": ("上云状态", "联网状态", "是否上云", "是否联网", "connected"),
    "connected_date": ("上云日期", "联网日期", "上云时间", "connected_date"),
    "rtsp_url": ("RTSP地址", "取流地址", "RTSP流地址", "视频流地址", "rtsp_url", "rtsp"),
    "onvif_url": ("ONVIF地址", "onvif_url", "onvif"),
    "host": ("所属主机", "所属设备", "主机", "host"),
    "credentials": ("凭据", "credentials"),
    "longitude": ("经度", "longitude", "lon", "lng"),
    "latitude": ("纬度", "latitude", "lat"),
}

_CLASS_VALUES: dict[str, int] = {
    **{str(k): k for k in CLASS_NAMES},
    **{v: k for k, v in CLASS_NAMES.items()},
    **{v + "点位": k for k, v in CLASS_NAMES.items()},
    "一类点": 1, "二类点": 2, "三类点": 3, "i": 1, "ii": 2, "iii": 3,
    "class1": 1, "class2": 2, "class3": 3,
}

PROJECTS = ("雪亮工程", "数字乡村", "天网", "智慧小区", "其他")
_PROJECT_VALUES = {
    "雪亮": "雪亮工程", "雪亮工程": "雪亮工程", "xueliang": "雪亮工程",
    "数字乡村": "数字乡村", "digital_village": "数字乡村",
    "天网": "天网", "天网工程": "天网", "skynet": "天网",
    "智慧小区": "智慧小区", "智慧社区": "智慧小区", "smart_community": "智慧小区",
    "其他": "其他", "other": "其他",
}
OPERATORS = ("移动", "联通", "电信", "其他")
_OPERATOR_VALUES = {
    "移动": "移动", "中国移动": "移动", "mobile": "移动", "cmcc": "移动", "china mobile": "移动",
    "联通": "联通", "中国联通": "联通", "unicom": "联通", "china unicom": "联通",
    "电信": "电信", "中国电信": "电信", "telecom": "电信", "china telecom": "电信",
    "其他": "其他", "other": "其他",
}
_TRUE = {"是", "已安装", "已上云", "已联网", "已接入", "yes", "y", "true", "1", "installed",
         "connected"}
_FALSE = {"否", "未安装", "未上云", "未联网", "未接入", "规划", "应安装", "no", "n", "false", "0",
          "planned", ""}

# Control characters: C0 and DEL are removed from every text field (with a warning: openpyxl
# refuses them when the report is written, and they have no business in a name or an address);
# tab, CR and LF (an Alt+Enter line break in an Excel cell) become one space.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+")
_BREAKS = re.compile(r"[ \t\r\n]*[\t\r\n][ \t\r\n]*")
#: Any character ``str.isspace()`` holds for (the same Unicode table in CPython's ``re``; a
#: test checks every code point), 5x faster than a generator over the URL's characters.
_SPACE = re.compile(r"\s")
# OOXML's escape of a character XML cannot carry (_x0001_), which Excel writes and openpyxl
# does not decode; _x005F_ escapes the underscore itself.
_OOXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
# 4.11628E+19: a code Excel turned into a number, then wrote in scientific notation (always
# one digit, "E+": a local code such as 12E34 is not mistaken for one).
_SCIENTIFIC = re.compile(r"\d(?:\.\d+)?[eE]\+\d{1,3}")
EXCEL_SCIENTIFIC_HINT = "Excel 将编码存成了科学计数法：请把该列设为文本后重新导出"

# XLSX guards: a zip bomb or a sheet claiming a million empty rows is refused before parsing.
MAX_XLSX_UNCOMPRESSED = 512 * 1024 * 1024
MAX_XLSX_RATIO = 200


@dataclass(frozen=True, slots=True)
class Channel:
    """One video channel of the inventory. ``klass`` is 点位类型 (``class`` is a keyword)."""

    id: str
    name: str = ""
    klass: int | None = None
    project: str = ""
    county: str = ""
    county_code: str = ""
    township: str = ""
    township_code: str = ""
    village: str = ""
    village_code: str = ""
    operator: str = ""
    installed: bool = False
    installed_date: date | None = None
    connected: bool = False
    connected_date: date | None = None
    rtsp_url: str = ""  # without user:pass@ (moved to url_username / url_password)
    onvif_url: str = ""
    host: str = ""
    credentials: str = ""
    longitude: float | None = None
    latitude: float | None = None
    # the file's row it was read from; not part of what the channel is (a reload that only
    # moves rows keeps the running objects)
    row: int = field(default=0, compare=False)
    url_username: str | None = field(default=None, repr=False)
    url_password: Secret | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class Inventory:
    source: str
    channels: list[Channel]
    rows_read: int
    rejected_rows: int = 0
    errors: list[Problem] = field(default_factory=list)  # why rows were rejected
    warnings: list[Problem] = field(default_factory=list)  # data-quality annex
    ignored_columns: list[str] = field(default_factory=list)

    def by_id(self) -> dict[str, Channel]:
        return {c.id: c for c in self.channels}

    def summary(self) -> dict[str, Any]:
        chans = self.channels
        planned = len(chans)
        installed = sum(1 for c in chans if c.installed)
        connected = sum(1 for c in chans if c.connected)
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "channels": planned,
            "rejected": self.rejected_rows,
            "warnings": len(self.warnings),
            "planned": planned,
            "installed": installed,
            "connected": connected,
            "install_rate": installed / planned if planned else None,
            "cloud_rate": connected / installed if installed else None,
            "by_class": {
                CLASS_NAMES[k] if k else "未填": n
                for k, n in sorted(Counter(c.klass or 0 for c in chans).items(),
                                   key=lambda kv: kv[0] or 99)
            },
            "by_project": dict(sorted(Counter(c.project or "未填" for c in chans).items())),
            "by_county": dict(sorted(Counter(c.county or "未填" for c in chans).items())),
            "ignored_columns": self.ignored_columns,
        }


# --- reading rows -------------------------------------------------------------------------------


def _norm_header(h: object) -> str:
    text = "" if h is None else str(h)
    text = _CONTROL.sub("", text.replace("\ufeff", "")).strip()
    for opener in ("(", "（"):
        if opener in text and not text.startswith(opener):
            text = text[: text.index(opener)]
    return "".join(text.split()).lower()


def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return "xlsx"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    return "csv"


def _csv_encoding(path: Path, encoding: str) -> str:
    """The configured encoding, or for ``auto``: UTF-8 (with or without BOM) when the whole
    file decodes as UTF-8, else GB18030 (a superset of GBK: what Chinese Excel saves as
    "CSV"). Checked chunk by chunk so a large file is never held in memory twice."""
    if encoding != "auto":
        return encoding
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "gb18030"
    return "utf-8-sig"


def _read_csv(path: Path, encoding: str) -> tuple[list[object], Iterator[tuple[int, list[object]]]]:
    enc = _csv_encoding(path, encoding)
    f = path.open(encoding=enc, newline="")
    reader = csv.reader(f)
    try:
        header: list[object] = [str(h).removeprefix("\ufeff") for h in next(reader, [])]
    except (UnicodeDecodeError, csv.Error):
        f.close()
        raise

    def rows() -> Iterator[tuple[int, list[object]]]:
        i = 1
        try:
            for i, row in enumerate(reader, start=2):
                yield i, list(row)
        except UnicodeDecodeError as exc:
            # the decoder reads ahead, so all we know is that the bad byte comes after row i
            raise InventoryError([Problem(display_path(path), f"after row {i}",
                                          f"cannot decode as {enc}: {exc.reason}; set "
                                          f"inventory.encoding")]) from None
        except csv.Error as exc:
            raise InventoryError([Problem(display_path(path), f"row {i + 1}",
                                          f"not a valid CSV line: {exc}")]) from None
        finally:
            f.close()

    return header, rows()


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(info.file_size for info in zf.infolist())
            packed = sum(info.compress_size for info in zf.infolist()) or 1
    except zipfile.BadZipFile:
        raise InventoryError([Problem(str(path), "", "expected an XLSX file (a zip archive), "
                                                     "got something else")]) from None
    if total > MAX_XLSX_UNCOMPRESSED or (total / packed > MAX_XLSX_RATIO and total > 50_000_000):
        raise InventoryError([Problem(
            str(path), "",
            f"refusing to open: unpacks to {total / 1e6:.0f} MB from {packed / 1e6:.1f} MB "
            f"(limit {MAX_XLSX_UNCOMPRESSED / 1e6:.0f} MB, ratio {MAX_XLSX_RATIO}); a zip bomb?")])


def _read_xlsx(path: Path, sheet: str | None, max_rows: int
               ) -> tuple[list[object], Iterator[tuple[int, list[object]]]]:
    import openpyxl

    _check_zip(path)
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    if sheet is not None and sheet not in wb.sheetnames:
        raise InventoryError([Problem(str(path), f"sheet {sheet!r}",
                                      f"no such sheet; found {', '.join(wb.sheetnames)}")])
    ws = wb[sheet] if sheet else wb.worksheets[0]
    if ws.max_row is not None and ws.max_row > max_rows + 1:
        wb.close()
        raise InventoryError([Problem(
            str(path), f"sheet {ws.title!r}",
            f"declares {ws.max_row} rows, more than inventory.max_rows ({max_rows}); "
            f"delete the empty rows below the table or raise the limit")])
    it = ws.iter_rows(values_only=True)
    header = _ooxml_unescape(next(it, ()))

    def rows() -> Iterator[tuple[int, list[object]]]:
        try:
            for i, row in enumerate(it, start=2):
                yield i, _ooxml_unescape(row)
        finally:
            wb.close()

    return header, rows()


def read_table(path: Path, fmt: str = "auto", encoding: str = "auto", sheet: str | None = None,
               max_rows: int = 1_000_000
               ) -> tuple[list[object], Iterator[tuple[int, list[object]]]]:
    """A table file as the inventory reads it (also the exemptions' import): its header and
    its rows, each with its number in the file. ``fmt``: ``csv`` (UTF-8 or, for ``encoding``
    ``auto``, GB18030 when it is not UTF-8), ``xlsx`` (its first sheet, or ``sheet``;
    refused when it unpacks too large or declares more than ``max_rows``), ``yaml``, or
    ``auto`` by the file's suffix. Raises :class:`InventoryError`, or ``OSError`` /
    ``UnicodeDecodeError`` for the caller to word."""
    fmt = _detect_format(path, fmt)
    if fmt == "xlsx":
        return _read_xlsx(path, sheet, max_rows)
    if fmt == "yaml":
        return _read_yaml(path)
    return _read_csv(path, encoding)


def _ooxml_unescape(row: Iterable[object]) -> list[object]:
    """Decode ``_xHHHH_`` in text cells as Excel does when it shows them: that is how a
    control character typed or pasted into a cell reaches the file."""
    return [_OOXML_ESCAPE.sub(lambda m: chr(int(m[1], 16)), v)
            if isinstance(v, str) and "_x" in v else v for v in row]


def _read_yaml(path: Path) -> tuple[list[object], Iterator[tuple[int, list[object]]]]:
    try:
        doc = load_yaml(path)
    except ConfigError as exc:
        raise InventoryError(exc.problems) from None
    items = doc.get("channels") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise InventoryError([Problem(str(path), "$", "expected a list of channels "
                                                      "(or a mapping with 'channels:')")])
    keys: list[object] = []
    for item in items:
        if isinstance(item, dict):
            keys.extend(k for k in item if k not in keys)

    def rows() -> Iterator[tuple[int, list[object]]]:
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                yield i, [None] * len(keys)  # reported as missing id
                continue
            yield i, [item.get(k) for k in keys]

    return keys, rows()


# --- parsing values -----------------------------------------------------------------------------


class _Bad(ValueError):
    pass


def _text(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))  # Excel turns 411628 into 411628.0
    return str(v).strip()


def _class(v: str) -> int | None:
    if not v:
        return None
    key = v.lower().replace(" ", "")
    if key in _CLASS_VALUES:
        return _CLASS_VALUES[key]
    raise _Bad(f"expected a point class 1, 2, 3, 4 or 9 (一类/二类/三类/公安内部/其他), got {v!r}")


def _bool(v: str, what: str) -> bool:
    key = v.lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise _Bad(f"expected {what} (是/否, 已安装/未安装, 已上云/未上云, yes/no), got {v!r}")


def _date(v: object) -> date | None:
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    text = str(v).strip()
    for sep in ("-", "/", "."):
        text = text.replace(sep, "-")
    try:
        if len(text) == 8 and text.isdigit():
            return date(int(text[:4]), int(text[4:6]), int(text[6:]))
        y, m, d = text.split(" ")[0].split("-")
        return date(int(y), int(m), int(d))
    except (ValueError, TypeError):
        raise _Bad(f"expected a date like 2026-11-23, got {str(v)!r}") from None


@functools.lru_cache(maxsize=8192)
def _one_day(d: date) -> date:
    """One object per day: 100,000 rows repeat a few hundred install and cloud-connect dates
    (6 MB of date objects at 100,000 channels, one per cell)."""
    return d


def _coord(v: str, lo: float, hi: float) -> float | None:
    if not v:
        return None
    try:
        f = float(v)
    except ValueError:
        raise _Bad(f"expected a number, got {v!r}") from None
    if not lo <= f <= hi:
        raise _Bad(f"expected a value between {lo:g} and {hi:g}, got {v}")
    return f


def _code(v: str, digits: int, what: str) -> str:
    if v and (len(v) != digits or not v.isdigit()):
        hint = f"; {EXCEL_SCIENTIFIC_HINT}" if _SCIENTIFIC.fullmatch(v) else ""
        raise _Bad(f"expected a {digits}-digit {what} code, got {v!r}{hint}")
    return v


def _split_url(v: str) -> tuple[str, str]:
    """A URL's scheme (lower case) and host name. Cached for URLs without userinfo (a
    device's ONVIF address repeats over its channels' rows); one with a password is never
    kept in the cache."""
    return _split(v) if "@" in v else _split_cached(v)


def _split(v: str) -> tuple[str, str]:
    parts = urlsplit(v)
    return parts.scheme.lower(), parts.hostname or ""


_split_cached = functools.lru_cache(maxsize=4096)(_split)


def _url(v: str, schemes: tuple[str, ...]) -> str:
    """``v`` when it is a URL of one of ``schemes`` with a host (the host: :func:`_host_of`)."""
    if not v:
        return ""
    scheme, host = _split_url(v)
    spaced = _SPACE.search(v) is not None  # urlsplit drops a line break, the probe would not
    if spaced or scheme not in schemes or not host:
        shown = split_userinfo(v)[0]  # the URL without its password, to show
        what = ("a URL without spaces or line breaks" if spaced
                else f"a URL like {schemes[0]}://host/path")
        raise _Bad(f"expected {what}, got {shown!r}")
    return v


def _host_of(url: str) -> str:
    return _split_url(url)[1] if url else ""


# --- the loader ---------------------------------------------------------------------------------


def _guess(header: str, fields: Iterable[str]) -> str | None:
    """The accepted header of one of ``fields`` closest to ``header``, if any is close."""
    aliases = {_norm_header(a): a for f in fields for a in FIELDS[f]}
    hit = difflib.get_close_matches(_norm_header(header), list(aliases), n=1, cutoff=0.6)
    return aliases[hit[0]] if hit else None


def _column_map(header: list[object], cfg: InventoryConfig, where: str
                ) -> tuple[dict[str, int], dict[str, str], list[str], list[Problem]]:
    """Map canonical field -> column index. Returns also field -> header shown in messages,
    the ignored headers, and a "did you mean" note for each ignored header close to the
    accepted name of a field that no column fills."""
    normalized = [_norm_header(h) for h in header]
    index: dict[str, int] = {}
    shown: dict[str, str] = {}
    problems: list[Problem] = []
    for name, explicit in cfg.columns.items():
        if name not in FIELDS:
            problems.append(Problem(where, f"inventory.columns.{name}",
                                    f"unknown field; expected one of {', '.join(FIELDS)}"))
            continue
        key = _norm_header(explicit)
        if key not in normalized:
            problems.append(Problem(where, "header", f"column {explicit!r} (mapped to {name}) "
                                                     f"not found"))
            continue
        index[name] = normalized.index(key)
    for name, aliases in FIELDS.items():
        if name in index:
            continue
        for alias in aliases:
            key = _norm_header(alias)
            if key in normalized:
                index[name] = normalized.index(key)
                break
    if "id" not in index:
        names = [str(h) for h in header if h not in (None, "")]
        found = ", ".join(names) or "nothing"
        hints = [f"{guess!r} for {h!r}" for h in names if (guess := _guess(h, ["id"]))]
        hint = f" (did you mean {'; '.join(hints)}?)" if hints else ""
        problems.append(Problem(where, "header", f"no id column; expected one of "
                                                 f"{', '.join(FIELDS['id'])}; found: {found}"
                                                 f"{hint}; or name it in inventory.columns.id"))
    if problems:
        raise InventoryError(problems)
    for name, i in index.items():
        shown[name] = str(header[i]).strip() if header[i] is not None else name
    used = set(index.values())
    ignored = [str(h) for i, h in enumerate(header) if i not in used and h not in (None, "")]
    unfilled = [f for f in FIELDS if f not in index]
    notes = [Problem(where, f"header, column {h}",
                     f"未识别的列名，已忽略；是否应为 {guess!r}？(unrecognised column, ignored: "
                     f"did you mean {guess!r}? or name it in inventory.columns)")
             for h in ignored if (guess := _guess(h, unfilled))]
    return index, shown, ignored, notes


def load_inventory(cfg: InventoryConfig, known_credentials: Iterable[str] = ()) -> Inventory:
    """Load and validate the inventory. Raises :class:`InventoryError` listing every bad row
    when ``on_error`` is ``reject`` (the default); with ``skip`` bad rows are left out and
    listed in ``Inventory.errors``."""
    path = Path(cfg.path)
    where = display_path(path)
    if not path.exists():
        raise InventoryError([Problem(where, "", "file not found")])
    fmt = _detect_format(path, cfg.format)
    try:
        header, rows = read_table(path, fmt, cfg.encoding, cfg.sheet, cfg.max_rows)
    except UnicodeDecodeError as exc:
        raise InventoryError([Problem(where, "", f"cannot decode as {cfg.encoding}: {exc.reason}"
                                                 f"; set inventory.encoding")]) from None
    except OSError as exc:
        raise InventoryError([Problem(where, "", f"cannot read: {exc.strerror or exc}")]) from None
    col, shown, ignored, notes = _column_map(header, cfg, where)
    creds = set(known_credentials)
    row_label = "item" if fmt == "yaml" else "row"

    channels: list[Channel] = []
    errors: list[Problem] = []
    warnings: list[Problem] = notes
    has_coordinates = "longitude" in col or "latitude" in col
    if not has_coordinates:  # said once here, not once per row
        warnings.append(Problem(where, "header", "没有经纬度列 (经度/纬度)，所有点位都缺少坐标 "
                                                 "(no coordinate columns)"))
    seen: dict[str, int] = {}
    rows_read = 0
    rejected = 0
    blank_run = 0
    for rowno, values in rows:
        try:  # a CSV row is all text: one join answers "blank?" and "control characters?"
            joined: str | None = "".join(values)  # type: ignore[arg-type]
        except TypeError:  # a sheet's numbers, dates and empty cells
            joined = None
        if (not joined.strip()) if joined is not None else \
                all(v is None or _text(v) == "" for v in values):
            blank_run += 1
            if blank_run > 10_000:  # a sheet of a million empty rows: stop reading, say so
                errors.append(Problem(where, f"{row_label} {rowno}",
                                      "more than 10,000 empty rows in a row; stopped reading"))
                break
            continue
        blank_run = 0
        rows_read += 1
        if rows_read > cfg.max_rows:
            errors.append(Problem(where, f"{row_label} {rowno}",
                                  f"more than inventory.max_rows ({cfg.max_rows}) rows"))
            break
        row_errs: list[Problem] = []
        row_warns: list[Problem] = []

        def err(fld: str, msg: str, _rowno: int = rowno, _errs: list[Problem] = row_errs) -> None:
            _errs.append(Problem(where, f"{row_label} {_rowno}, column {shown.get(fld, fld)}",
                                 msg))

        def warn(fld: str, msg: str, _rowno: int = rowno, _w: list[Problem] = row_warns) -> None:
            _w.append(Problem(where, f"{row_label} {_rowno}, column {shown.get(fld, fld)}",
                                    msg))

        if joined is None or _UNSAFE.search(joined):
            _clean_controls(values, col, warn)
        ch = _parse_row(_texts(values, col, joined is not None), _rawer(values, col), err, warn,
                        cfg, creds, rowno, has_coordinates)
        if ch is not None and not row_errs:
            if ch.id in seen:
                err("id", f"duplicate id {ch.id!r} (first at {row_label} {seen[ch.id]})")
            else:
                seen[ch.id] = rowno
        if row_errs or ch is None:
            errors.extend(row_errs)
            rejected += 1
            continue
        warnings.extend(row_warns)
        channels.append(ch)

    inv = Inventory(source=where, channels=channels, rows_read=rows_read,
                    rejected_rows=rejected, errors=errors,
                    warnings=warnings, ignored_columns=ignored)
    if errors and cfg.on_error == "reject":
        raise InventoryError(errors)
    return inv


def _clean_controls(values: list[object], col: Mapping[str, int], warn: Any) -> None:
    """Remove control characters from the row's text fields in place, warning for each field
    that had some (line breaks become a space, silently)."""
    n = len(values)
    for fld, i in col.items():
        v = values[i] if i < n else None
        if not isinstance(v, str) or not _UNSAFE.search(v):
            continue
        removed = "".join(_CONTROL.findall(v))
        values[i] = _BREAKS.sub(" ", _CONTROL.sub("", v))
        if removed:
            codes = ", ".join(f"\\x{ord(c):02x}" for c in sorted(set(removed)))
            warn(fld, f"删除了 {len(removed)} 个控制字符 ({codes}) "
                      f"(control characters removed)")


_NO_TEXT = dict.fromkeys(FIELDS, "")


def _texts(values: list[object], col: Mapping[str, int], plain: bool) -> dict[str, str]:
    """Every field's text in the row ("" for a column the file lacks); ``plain``: the row's
    values are all text (a CSV row), which only need stripping."""
    t = _NO_TEXT.copy()
    n = len(values)
    for fld, i in col.items():
        if i < n:
            v = values[i]
            t[fld] = v.strip() if plain else _text(v)  # type: ignore[attr-defined]
    return t


def _rawer(values: list[object], col: Mapping[str, int]) -> Callable[[str], object]:
    """A field's cell as the file holds it (a sheet's number or date), None if absent."""
    n = len(values)

    def raw(name: str) -> object:
        i = col.get(name)
        return values[i] if i is not None and i < n else None

    return raw


def _parse_row(t: Mapping[str, str], raw: Callable[[str], object], err: Any, warn: Any,
               cfg: InventoryConfig, creds: set[str], rowno: int,
               has_coordinates: bool = True) -> Channel | None:
    cid = t["id"]
    if not cid:
        err("id", "missing id")
        return None
    raw_id = raw("id")
    if isinstance(raw_id, float) and abs(raw_id) >= 1e15:
        # Excel keeps 15 significant digits of a number: a 20-digit code has lost its tail
        err("id", f"the sheet holds this code as a number ({raw_id:.15g}), so its last "
                  f"digits are lost; {EXCEL_SCIENTIFIC_HINT}")
    elif _SCIENTIFIC.fullmatch(cid):
        err("id", f"expected a code, got {cid!r}; {EXCEL_SCIENTIFIC_HINT}")
    elif cfg.id_format == "gbt28181":
        bad, odd = check_id(cid)
        if bad:
            err("id", bad)
        elif odd:
            warn("id", odd)

    def parse(fld: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except _Bad as exc:
            err(fld, str(exc))
            return None

    klass = parse("class", _class, t["class"])
    if klass is None and not t["class"]:
        warn("class", "class (点位类型) is missing")
    project_raw = t["project"]
    project = _PROJECT_VALUES.get(project_raw.lower(), project_raw) if project_raw else ""
    operator_raw = t["operator"]
    operator = _OPERATOR_VALUES.get(operator_raw.lower(), operator_raw) if operator_raw else ""
    installed_date = parse("installed_date", _date, raw("installed_date"))
    connected_date = parse("connected_date", _date, raw("connected_date"))
    inst_text, conn_text = t["installed"], t["connected"]
    installed = parse("installed", _bool, inst_text, "an install status")
    connected = parse("connected", _bool, conn_text, "a cloud-connect status")
    # A date without a status means the event happened: sheets often fill only the date.
    if not inst_text and installed_date is not None:
        installed = True
    if not conn_text and connected_date is not None:
        connected = True
    if connected and installed is False:
        err("connected", "connected (上云) but not installed (未安装): fix one of the two")
    county_code = parse("county_code", _code, t["county_code"], 6, "county (GB/T 2260)")
    township_code = parse("township_code", _code, t["township_code"], 9, "township")
    village_code = parse("village_code", _code, t["village_code"], 12, "village")
    if county_code and township_code and not township_code.startswith(county_code):
        err("township_code", f"township code {township_code} is not inside county {county_code}")
    if township_code and village_code and not village_code.startswith(township_code):
        err("village_code", f"village code {village_code} is not inside township {township_code}")
    county, township, village = t["county"], t["township"], t["village"]
    if not (county or county_code):
        warn("county", "county (区县) is missing")
    if not (township or township_code):
        warn("township", "township (乡镇) is missing")
    rtsp_raw = parse("rtsp_url", _url, t["rtsp_url"], ("rtsp", "rtsps"))
    onvif = parse("onvif_url", _url, t["onvif_url"], ("http", "https"))
    rtsp, user, password = split_userinfo(rtsp_raw) if rtsp_raw else ("", None, None)
    lon = parse("longitude", _coord, t["longitude"], -180.0, 180.0)
    lat = parse("latitude", _coord, t["latitude"], -90.0, 90.0)
    if (has_coordinates and lon is None and lat is None and not t["longitude"]
            and not t["latitude"]):
        warn("longitude", "coordinates (经度/纬度) are missing")
    cred = t["credentials"] or cfg.default_credentials
    if t["credentials"] and creds and cred not in creds:
        err("credentials", f"expected one of the configured credentials "
                           f"({', '.join(sorted(creds))}), got {cred!r}")
    if connected and cfg.address_required and not (t["rtsp_url"] or t["onvif_url"]):
        err("rtsp_url", "a connected channel needs an RTSP or ONVIF address to be probed")
    host = t["host"] or _host_of(rtsp_raw or onvif or "")
    # a county's 100,000 rows repeat a few hundred area names, and each device's ONVIF address
    # once per channel (an NVR's 32-64): one string each (~11 MB at 100,000 channels)
    i = sys.intern
    return Channel(
        id=cid, name=t["name"], klass=klass, project=i(project),
        county=i(county), county_code=i(county_code or ""), township=i(township),
        township_code=i(township_code or ""), village=i(village),
        village_code=i(village_code or ""), operator=i(operator), installed=bool(installed),
        installed_date=installed_date and _one_day(installed_date), connected=bool(connected),
        connected_date=connected_date and _one_day(connected_date),
        rtsp_url=rtsp, onvif_url=i(onvif or ""), host=i(host), credentials=i(cred), longitude=lon,
        latitude=lat, row=rowno, url_username=user, url_password=password,
    )


# --- reloads: only what changed crosses between processes ----------------------------------------

DIGEST_SIZE = 8  # bytes of BLAKE2b per channel: a wrong "unchanged" would need a collision
# every field but the row, the URL's password included (Channel's == leaves that one out)
_digested = operator.attrgetter(*(f.name for f in fields(Channel) if f.name != "row"))


@dataclass(frozen=True, slots=True)
class Digests:
    """Each channel's digest, in inventory order: the ids joined by newlines (an id holds no
    control character, :func:`_clean_controls`) and the digests end to end. Two objects, not
    100,000 pairs, so that they cross a process boundary and sit in the daemon for almost
    nothing (about 3 MB at 100,000 channels)."""

    ids: str
    digests: bytes

    @classmethod
    def of(cls, channels: Iterable[Channel]) -> Digests:
        ids: list[str] = []
        parts: list[bytes] = []
        for c in channels:
            ids.append(c.id)
            parts.append(hashlib.blake2b(pickle.dumps(_digested(c), protocol=5),
                                         digest_size=DIGEST_SIZE).digest())
        return cls("\n".join(ids), b"".join(parts))

    def id_list(self) -> list[str]:
        return self.ids.split("\n") if self.ids else []

    def by_id(self) -> dict[str, bytes]:
        d = self.digests
        return {cid: d[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE]
                for i, cid in enumerate(self.id_list())}


def only_changed(inv: Inventory, known: Digests | None) -> Digests:
    """In the process that parsed ``inv``: leave in ``inv.channels`` only the channels whose
    digest differs from ``known``'s (all of them when ``known`` is None), and return every
    channel's digest. :func:`with_unchanged` puts the others back on the other side."""
    mine = Digests.of(inv.channels)
    if known is not None:
        old = known.by_id()
        d = mine.digests
        inv.channels = [c for i, c in enumerate(inv.channels)
                        if old.get(c.id) != d[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE]]
    return mine


def with_unchanged(inv: Inventory, digests: Digests, running: Iterable[Channel]) -> None:
    """The other half of :func:`only_changed`, in the daemon: every channel of the new
    inventory in its order, the unchanged ones being the running objects themselves (one copy
    of an unchanged inventory, never two). ``running``: the channels the digests sent to
    :func:`only_changed` were made of."""
    ids = digests.id_list()
    if len(inv.channels) == len(ids):
        return  # everything was sent
    changed = {c.id: c for c in inv.channels}
    old = {c.id: c for c in running}
    inv.channels = [changed.get(cid) or old[cid] for cid in ids]
