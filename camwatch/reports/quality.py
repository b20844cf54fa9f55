"""The bulletin's data-quality annex (数据质量), in Chinese only: the people who fix the
inventory read it, not the people who wrote camwatch.

Two sources: channels the inventory loaded but which lack something (class, area,
coordinates) or whose id is not a video channel's GB/T 28181 code; and rows the inventory
loader rejected, whose :class:`~camwatch.errors.Problem` messages are English (they are
written for ``camwatch check-config``) and are put into Chinese here, keeping the file, the
row and the column.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from camwatch.errors import Problem
from camwatch.gbt28181 import PLATFORM_TYPES, VIDEO_CHANNEL_TYPES
from camwatch.inventory import FIELDS, Channel


@dataclass(frozen=True, slots=True)
class Finding:
    """A data-quality finding for the annex."""

    channel_id: str
    name: str
    township: str
    field: str
    problem: str


def id_problem(code: str) -> str | None:
    """What is wrong with a device code as a video channel's id, in Chinese; None if nothing.
    The same checks as :func:`camwatch.gbt28181.check_id`."""
    if len(code) != 20 or not code.isascii() or not code.isdigit():
        return f"设备编码应为 20 位数字的国标编码，实为 {len(code)} 个字符"
    type_code = code[10:13]
    if int(type_code) in PLATFORM_TYPES:
        return f"设备编码第 11-13 位类型码 {type_code} 为平台或目录节点，不是视频通道"
    if type_code not in VIDEO_CHANNEL_TYPES:
        return (f"设备编码第 11-13 位类型码 {type_code} 不是视频通道类型"
                f"（{'、'.join(sorted(VIDEO_CHANNEL_TYPES))}）")
    return None


# The inventory loader's messages (English, for check-config), first match wins: a pattern
# on the message and the Chinese text. ``{got}`` is the value the row had, when the message
# says (``got '...'``).
_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), zh) for p, zh in (
        (r"^missing id", "缺少设备编码"),
        (r"^duplicate id", "设备编码重复"),
        (r"GB/T 28181 code of 20 digits", "设备编码不是 20 位数字的国标编码"),
        (r"platform or catalogue node", "设备编码类型码为平台或目录节点，不是视频通道"),
        (r"not a video channel type", "设备编码类型码不是视频通道类型"),
        (r"point class", "点位类型取值不对，应为 1/2/3/4/9 或 一类/二类/三类/公安内部/其他"),
        (r"install status|cloud-connect status",
         "状态取值不对，应为 是/否、已安装/未安装、已上云/未上云"),
        (r"but not installed", "标为已上云却未安装"),
        (r"a date like", "日期格式不对，应为 2026-11-23"),
        (r"digit .*code", "区域编码位数不对"),
        (r"is not inside", "区域编码与上级区域编码不符"),
        (r"a number|a value between", "经纬度取值不对"),
        (r"a URL like", "地址格式不对"),
        (r"configured credentials", "凭据名称未在配置中定义"),
        (r"inventory.max_rows", "超过 inventory.max_rows 行数上限，其后各行未读取"),
        (r"empty rows", "连续空行过多，其后各行未读取"),
        (r"control character", "含控制字符"),
    ))
_GOT = re.compile(r"got (.+?)(?: \(\d+ characters\))?$")
_WHERE = re.compile(r"^(?:row|item) (\d+)(?:, column (.+))?$")
_FIELD_ZH = {name: headers[0] for name, headers in FIELDS.items()}


def rejected_zh(p: Problem) -> Finding:
    """A row the loader rejected, as a Chinese finding: field = the column, problem = why,
    with the file and row number."""
    m = _WHERE.match(p.path)
    row = m.group(1) if m else ""
    column = (m.group(2) or "") if m else ""
    column = _FIELD_ZH.get(column, column)
    why = "取值不符合要求"
    for pattern, zh in _MESSAGES:
        if pattern.search(p.message):
            why = zh
            break
    got = _GOT.search(p.message)
    if got:
        why += f"（实为 {got.group(1)}）"
    where = f"{p.where} 第 {row} 行" if row else p.where
    return Finding("", "", "", column or "整行", f"{where}：{why}，该行未导入")


def data_quality(channels: Iterable[Channel],
                 rejected: Iterable[Problem] = ()) -> list[Finding]:
    """Rows missing class, area or coordinates, ids failing the GB/T 28181 checks, and rows the
    inventory loader rejected (missing or duplicate id, ...)."""
    out = []
    for ch in channels:
        def add(fld: str, problem: str, c: Channel = ch) -> None:
            out.append(Finding(c.id, c.name, c.township, fld, problem))

        bad = id_problem(ch.id)
        if bad:
            add("设备编码", bad)
        if ch.klass is None:
            add("点位类型", "缺少点位类型")
        for fld, name, code in (("区县", ch.county, ch.county_code),
                                ("乡镇", ch.township, ch.township_code),
                                ("村", ch.village, ch.village_code)):
            if not (name or code):
                add(fld, f"缺少{fld}")
        if ch.longitude is None or ch.latitude is None:
            add("经纬度", "缺少经纬度")
    for p in rejected:
        out.append(rejected_zh(p))
    return out
