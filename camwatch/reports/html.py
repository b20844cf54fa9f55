"""The bulletin as one self-contained HTML page, laid out to be printed (and turned into a
PDF by :mod:`camwatch.reports.pdf`): no external asset, every value escaped with
:func:`html.escape`, the township chart as inline SVG.

Print layout (CSS paged media, as Chromium prints it):

* A4 with margins; a table too wide for a portrait page goes to a landscape page (the named
  page ``wide``); every page has the title at its head and ``第 x 页 共 y 页`` at its foot.
* Cells never wrap but for free text (names, reasons, notes): a percentage, a number, a
  three-character county or a verdict stays on one line.
* The body is what an official reads (summary, operators, townships, events, the worst
  channels); long lists go to annexes (附件), each on a new page: the villages (the
  ``report.max_villages`` worst), every outage event, the data-quality findings and the
  method. A list cut in the body says where the rest is.

The machine formats (XLSX, CSV, JSON) always hold every row.
"""

from __future__ import annotations

import base64
import html
from dataclasses import replace
from pathlib import Path

from camwatch.reports.compute import Bulletin, Figures
from camwatch.reports.events import by_impact
from camwatch.reports.gcpause import gc_paused
from camwatch.reports.period import local_text
from camwatch.reports.tables import (
    Cell,
    Column,
    Table,
    assessment_tables,
    bulletin_title,
    coverage_text,
    data_quality_table,
    degraded_table,
    event_table,
    exemption_table,
    long_offline_table,
    method_table,
    period_text,
    previous_note,
    reconciliation_tables,
    recording_tables,
    repaired_table,
    running_note,
    summary_table,
    township_table,
    verdict,
    worst_villages,
)
from camwatch.rules.rates import format_rate

# Rows of a list shown in the body before the rest goes to an annex.
BODY_ROWS = 15

CSS = """
@page {
  size: A4 portrait; margin: 16mm 12mm 14mm 16mm;
  @top-left { content: TITLE; font-size: 8pt; color: #555; }
  @top-right { content: PERIOD; font-size: 8pt; color: #555; }
  @bottom-center { content: "第 " counter(page) " 页 共 " counter(pages) " 页";
                   font-size: 8pt; color: #333; }
}
@page wide { size: A4 landscape; margin: 14mm 12mm 12mm 16mm; }
* { box-sizing: border-box; }
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
       "Microsoft YaHei", "SimSun", sans-serif; font-size: 9pt; color: #111; margin: 0; }
h1 { font-size: 15pt; text-align: center; margin: 0 0 1.5mm; }
h2 { font-size: 11pt; margin: 4mm 0 1.5mm; border-bottom: 1px solid #888;
     break-after: avoid; }
p.sub { text-align: center; margin: 0 0 2mm; color: #333; }
p.running { border: 1.5px solid #c00000; color: #c00000; font-weight: bold;
            padding: 1mm 2mm; margin: 0 0 2mm; text-align: center; }
ul.notes { margin: 0 0 2mm; padding-left: 5mm; }
table { border-collapse: collapse; margin-bottom: 1.5mm; font-size: 8pt; }
th, td { border: 1px solid #999; padding: 0.4mm 1.2mm; vertical-align: top; }
th { background: #ddebf7; font-weight: bold; text-align: center; vertical-align: middle;
     white-space: nowrap; }
td { white-space: nowrap; }
td.w { white-space: normal; min-width: 18mm; }
thead { display: table-header-group; }
tr { break-inside: avoid; }
td.n { text-align: right; }
td.pic { white-space: normal; font-size: 7pt; color: #444; }
td.pic img { display: block; width: 40mm; height: auto; border: 1px solid #999; }
td.bad, span.bad { color: #c00000; font-weight: bold; }
td.ok { color: #1a7f37; }
.cards { display: flex; flex-wrap: wrap; gap: 1.5mm; margin-bottom: 2mm; }
.card { border: 1px solid #999; padding: 1mm 2mm; min-width: 22mm; font-size: 8pt; }
.card b { display: block; font-size: 12pt; }
p.note { color: #444; margin: 0 0 1.5mm; font-size: 8pt; }
svg { display: block; margin: 1mm 0; }
section { break-inside: auto; }
section.wide { page: wide; }
section.annex { break-before: page; }
"""


def _css_string(text: str) -> str:
    """``text`` as a CSS string literal: every character but letters, digits and spaces as a
    CSS escape, so a site name can close neither the string nor the style element."""
    out = []
    for ch in text:
        out.append(ch if ch.isalnum() or ch == " " else f"\\{ord(ch):06x}")
    return '"' + "".join(out) + '"'


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _cell(kind: str, value: Cell, wrap: bool = False) -> str:
    if value is None or value == "":
        return '<td class="n">-</td>' if kind != "text" else "<td></td>"
    if kind == "pct" and isinstance(value, int | float):
        return f'<td class="n">{_e(format_rate(float(value)))}</td>'
    if kind == "pp" and isinstance(value, int | float):
        return f'<td class="n">{value:+.2f}</td>'
    if kind in ("hours", "days") and isinstance(value, int | float):
        return f'<td class="n">{value:.1f}</td>'
    if kind == "int":
        return f'<td class="n">{_e(value)}</td>'
    cls = "bad" if value == "未达标" else "ok" if value == "达标" else "w" if wrap else ""
    return f'<td class="{cls}">{_e(value)}</td>' if cls else f"<td>{_e(value)}</td>"


# Character widths above which a table goes to a landscape page.
PORTRAIT_CHARS = 125


def _th(header: str) -> str:
    """A header on at most two lines, broken where a reader expects it: before a bracket
    (``在线率<br>(时间加权)``), before ``在线率``, after a slash, else in the middle of a
    long name. Headers never wrap anywhere else (``th`` is ``nowrap``)."""
    if len(header) <= 4:
        return _e(header)
    for sep, after in (("(", False), ("/", True), ("在线率", False), ("上云", False),
                       ("是否达标", False)):
        i = header.find(sep)
        if i > 0:
            cut = i + len(sep) if after else i
            return f"{_e(header[:cut])}<br>{_e(header[cut:])}"
    if header.isascii():
        return _e(header)
    half = (len(header) + 1) // 2
    return f"{_e(header[:half])}<br>{_e(header[half:])}"


def _wide(table: Table) -> bool:
    return sum(c.width for c in table.columns) > PORTRAIT_CHARS


def _table(table: Table, heading: str, *, annex: bool = False, max_rows: int = 2000,
           rest: str = "", empty: str = "本期无。", extra: str = "",
           wide: bool | None = None, more: tuple[str, list[str]] | None = None) -> str:
    """A section: heading, note, the table (at most ``max_rows`` rows; ``rest`` says where
    the others are), then ``extra``. ``wide``: on a landscape page (default: when the
    table needs it). ``more``: one more column, its header and each row's cell as HTML."""
    landscape = _wide(table) if wide is None else wide
    classes = [c for c, on in (("wide", landscape), ("annex", annex)) if on]
    attr = f' class="{" ".join(classes)}"' if classes else ""
    parts = [f'<section id="{_e(table.key)}"{attr}><h2>{_e(heading)}</h2>']
    if table.note:
        parts.append(f'<p class="note">注：{_e(table.note)}</p>')
    if not table.rows:
        parts.append(f'<p class="note">{_e(empty)}</p>{extra}</section>')
        return "".join(parts)
    head = "".join(f"<th>{_th(h)}</th>" for h in table.headers)
    if more is not None:
        head += f"<th>{_e(more[0])}</th>"
    cols = [(c.kind, c.wrap) for c in table.columns]
    body = []
    for i, row in enumerate(table.rows[:max_rows]):
        body.append("<tr>" + "".join(_cell(k, v, w) for (k, w), v in zip(cols, row, strict=True))
                    + (more[1][i] if more is not None else "") + "</tr>")
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    if len(table.rows) > max_rows:
        parts.append(f'<p class="note">共 {len(table.rows)} 行，此处列出前 {max_rows} 行；'
                     f"{_e(rest or '完整内容见 XLSX、CSV 或 JSON 版本。')}</p>")
    parts.append(f"{extra}</section>")
    return "".join(parts)


def township_svg(townships: list[Figures]) -> str:
    """Horizontal bars of each township's published rate, a tick at its reference target;
    bars below target in red. The axis starts at the lowest ten percent that shows every
    bar and target."""
    rows = [f for f in townships if f.rate is not None]
    if not rows:
        return ""
    values = [f.rate or 0.0 for f in rows] + [f.target for f in rows if f.target is not None]
    lo = max(0.0, min(int(min(values) * 10) / 10.0, 0.9))
    label_w, bar_w, row_h, top = 110, 500, 12, 18
    height = top + row_h * len(rows) + 24

    def x(rate: float) -> float:
        return label_w + bar_w * (rate - lo) / (1.0 - lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 60}" '
           f'height="{height}" viewBox="0 0 {label_w + bar_w + 60} {height}" role="img" '
           f'aria-label="乡镇在线率与目标" font-size="9">']
    steps = round((1.0 - lo) * 20)
    for i in range(steps + 1):
        r = lo + i * 0.05
        out.append(f'<line x1="{x(r):.1f}" y1="{top - 4}" x2="{x(r):.1f}" '
                   f'y2="{height - 20}" stroke="#ddd"/>')
        out.append(f'<text x="{x(r):.1f}" y="{height - 6}" text-anchor="middle">'
                   f"{r * 100:.0f}%</text>")
    for i, f in enumerate(rows):
        y = top + i * row_h
        rate = f.rate or 0.0
        colour = "#c00000" if f.meets_target is False else "#4472c4"
        name = f"{f.rank}. {f.get('township')}"
        base = y + row_h - 2
        out.append(f'<text x="{label_w - 4}" y="{base}" text-anchor="end">{_e(name)}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 2}" width="{max(0.0, x(rate) - label_w):.1f}" '
                   f'height="{row_h - 4}" fill="{colour}"/>')
        out.append(f'<text x="{x(rate) + 3:.1f}" y="{base}">{_e(format_rate(rate))}</text>')
        if f.target is not None:
            out.append(f'<line x1="{x(f.target):.1f}" y1="{y}" x2="{x(f.target):.1f}" '
                       f'y2="{y + row_h}" stroke="#000" stroke-width="2"/>')
    out.append("</svg>")
    return "".join(out)


def operator_matrix(b: Bulletin) -> Table:
    """Operators side by side: one row per township (in rank order), for each operator its
    connected channels and published rate; the first row is each operator's total."""
    ops = sorted(b.operators, key=lambda f: f.get("operator"))
    names = [f.get("operator") for f in ops]
    cols = [Column("乡镇", "text", 10)]
    for name in names:
        cols += [Column(f"{name}通道", "int", 6), Column(f"{name}在线率", "pct", 9)]
    cells = {(f.get("township"), f.get("operator")): f for f in b.operator_townships}
    rows: list[list[Cell]] = [["合计", *[v for f in ops for v in (f.connected, f.rate)]]]
    for t in b.townships:
        row: list[Cell] = [t.get("township")]
        for name in names:
            f = cells.get((t.get("township"), name))
            row += [f.connected, f.rate] if f is not None else [None, None]
        rows.append(row)
    return Table("operators", "运营商", tuple(cols), rows,
                 "已联网上云通道数与在线率；乡镇按在线率排名；各运营商分乡镇的完整指标见 XLSX")


def _degraded(b: Bulletin, table: Table, heading: str, max_rows: int, rest: str) -> str:
    """The degraded cameras (画面异常) with the last degraded picture of each (a JPEG in a
    ``data:`` URI: the page stays self-contained), the ``max_rows`` longest first."""
    cells = []
    for d in b.degraded[:max_rows]:
        pic = b.pictures.get(d.channel.id)
        if pic is None:
            cells.append('<td class="pic">无</td>')
            continue
        data = base64.b64encode(pic[1]).decode("ascii")
        cells.append(f'<td class="pic"><img src="data:image/jpeg;base64,{data}" '
                     f'alt="{_e(d.channel.id)}">采样 {_e(local_text(pic[0], b.tz))}</td>')
    return _table(table, heading, max_rows=max_rows, rest=rest, wide=True,
                  empty="本期无画面异常的通道。", more=("画面", cells))


def _header(b: Bulletin) -> list[str]:
    s = b.summary
    cards = [
        ("应安装", str(s.planned)), ("已安装", str(s.installed)),
        ("安装率", format_rate(s.install_rate)), ("已联网上云", str(s.connected)),
        ("上云率", format_rate(s.cloud_rate)), ("在线率(时间加权)", format_rate(s.tw.rate)),
        ("在线率(期末快照)", format_rate(s.snap.rate)),
    ]
    if b.intact and s.itw is not None and s.isnap is not None:
        cards += [("完好率(时间加权)", format_rate(s.itw.rate)),
                  ("完好率(期末快照)", format_rate(s.isnap.rate))]
    verdicts = []
    for p in s.classes + s.projects:
        if p.target is None or p.rate is None:
            continue
        cls = ' class="bad"' if p.meets_target is False else ""
        verdicts.append(f"{_e(p.name)} {_e(format_rate(p.rate))}（目标 "
                        f"{_e(format_rate(p.target))}，<span{cls}>"
                        f"{_e(verdict(p.meets_target) or '不判定')}</span>）")
    notes = [coverage_text(b), previous_note(b),
             f"台账：{b.inventory_source}" if b.inventory_source else ""]
    running = running_note(b)
    out = [f"<h1>{_e(bulletin_title(b))}</h1>",
           f'<p class="sub">{_e(period_text(b))} · 生成 {_e(local_text(b.generated, b.tz))}'
           "</p>"]
    if running:
        out.append(f'<p class="running">{_e(running)}</p>')
    out.append('<div class="cards">' + "".join(
        f'<div class="card">{_e(k)}<b>{_e(v)}</b></div>' for k, v in cards) + "</div>")
    items = [f"<li>{_e(n)}</li>" for n in notes if n]
    if verdicts:
        items.insert(0, "<li>分类型在线率：" + "；".join(verdicts) + "</li>")
    intact = []
    for p in s.classes + s.projects if b.intact else ():
        if p.intact_target is None or p.intact_rate is None:
            continue
        cls = ' class="bad"' if p.intact_meets_target is False else ""
        intact.append(f"{_e(p.name)} {_e(format_rate(p.intact_rate))}（目标 "
                      f"{_e(format_rate(p.intact_target))}，<span{cls}>"
                      f"{_e(verdict(p.intact_meets_target) or '不判定')}</span>）")
    if intact:
        items.insert(1 if verdicts else 0, "<li>分类型完好率：" + "；".join(intact) + "</li>")
    out.append(f'<ul class="notes">{"".join(items)}</ul>')
    return out


def render_html(bulletin: Bulletin, max_rows: int = 2000,
                max_villages: int | None = None) -> str:
    """The printable bulletin. ``max_rows`` caps each annex; ``max_villages`` (default
    ``report.max_villages``) the village annex, worst first (0: every village)."""
    b = bulletin
    n_villages = b.settings.max_villages if max_villages is None else max_villages
    single_county = len(b.counties) <= 1
    drop = ("区县",) if single_county else ()
    townships = township_table(b).without(*drop)
    events = event_table(b, b.events[:max_rows])  # all of them: ~130,000 for 100,000 channels
    if len(b.events) > max_rows:
        events = replace(events, note=f"{events.note}；共 {len(b.events)} 起，此处列出前 "
                                      f"{max_rows} 起")
    worst = event_table(b, by_impact(b.events)[:BODY_ROWS])
    long_offline = long_offline_table(b)
    repaired = repaired_table(b)
    exemptions = exemption_table(b)
    villages = worst_villages(b, n_villages).without(*drop)
    annexes: list[tuple[str, Table, str]] = []  # (heading, table, what is in the body)

    def annex(title: str, table: Table) -> str:
        n = len(annexes) + 1
        name = f"附件{'一二三四五六七八九十'[n - 1] if n <= 10 else n}"
        annexes.append((f"{name} {title}", table, name))
        return name

    v_title = (f"村排名（在线率最低的 {len(villages.rows)} 个村）" if n_villages
               and len(b.villages) > n_villages else "村排名")
    v_name = annex(v_title, villages)
    body = _header(b)
    # Page 1 (portrait): the header, the summary and the townships at a glance; then the
    # landscape pages: every other section of the body, so no orientation change breaks a
    # page between them.
    # with the 完好率's columns the summary needs a landscape page
    body.append(_table(summary_table(b), "一、汇总", wide=None if b.intact else False))
    chart = township_svg(b.townships)
    if chart:
        body.append('<section id="chart"><h2>乡镇在线率一览</h2>'
                    '<p class="note">条形：在线率；黑线：参考目标；红色：未达标。排名与各项指标'
                    f"见第二部分，各村见{_e(v_name)}。</p>{chart}</section>")
    body.append(_table(townships, "二、乡镇排名", empty="本期无乡镇数据。", wide=True))
    body.append(_table(operator_matrix(b), "三、运营商", wide=True))
    e_rest = ""
    if len(b.events) > BODY_ROWS:
        e_name = annex("离线事件清单（按时间）", events)
        e_rest = (f"本期共 {len(b.events)} 起离线事件，此处列出影响最大的 {BODY_ROWS} 起"
                  f"（批量离线在前，其余按损失的通道·小时）；全部见{e_name}。")
    body.append(_table(worst, "四、离线事件", empty="本期无离线事件。", wide=True,
                       extra=f'<p class="note">{_e(e_rest)}</p>' if e_rest else ""))
    for heading, table in ((f"五、离线超 {b.settings.long_offline_days} 天", long_offline),
                           ("六、本期修复", repaired), ("七、报备", exemptions)):
        rest = ""
        if len(table.rows) > BODY_ROWS:
            rest = f"全部见{annex(heading[2:] + '清单', table)}。"
        body.append(_table(table, heading, max_rows=BODY_ROWS, rest=rest, wide=True))
    numerals = iter(("八", "九", "十", "十一", "十二", "十三"))
    # the tables first: zip stops at their end without taking a numeral
    for table, n in zip(assessment_tables(b.assessment), numerals, strict=False):
        body.append(_table(table, f"{n}、{table.title}", wide=True))
    if b.intact:
        degraded = degraded_table(b)
        heading = f"{next(numerals)}、画面异常（完好率）"
        rest = ""
        if len(degraded.rows) > BODY_ROWS:
            rest = f"全部见{annex('画面异常清单', degraded)}（无缩略图）。"
        body.append(_degraded(b, degraded, heading, BODY_ROWS, rest))
    reconciliation = reconciliation_tables(b)
    if reconciliation:  # 台账核对: the two cloud-connect rates in the body, the rows after
        rates, detail = reconciliation
        n = next(numerals)
        rest = ""
        if len(detail.rows) > BODY_ROWS:
            rest = f"全部见{annex('台账核对清单', detail)}。"
        body.append(_table(rates, f"{n}、台账核对（上云率）", wide=True))
        body.append(_table(detail, f"{n}（续）、台账核对", max_rows=BODY_ROWS, rest=rest,
                           wide=True, empty="台账与平台目录一致。"))
    recording = recording_tables(b)
    if recording:  # 录像完整率: by township in the body, the channels short of 100 % after
        towns, short = recording
        n = next(numerals)
        rest = ""
        if len(short.rows) > BODY_ROWS:
            rest = f"全部见{annex('录像缺失点位清单', short)}。"
        body.append(_table(towns, f"{n}、录像完整率", max_rows=BODY_ROWS * 4, wide=True))
        body.append(_table(short, f"{n}（续）、录像缺失点位", max_rows=BODY_ROWS, rest=rest,
                           wide=True, empty="本期各点位录像完整。"))
    annex("数据质量", data_quality_table(b))
    annex("统计方法与设置", method_table(b))
    for heading, table, _ in annexes:
        body.append(_table(table, heading, annex=True, max_rows=max_rows,
                           empty="本期无。" if table.key != "data_quality" else "未发现问题。"))
    title = bulletin_title(b)
    css = CSS.replace("TITLE", _css_string(title)).replace(
        "PERIOD", _css_string(f"截至 {local_text(b.end, b.tz)}"))
    return ("<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{css}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def write_html(bulletin: Bulletin, path: str | Path, max_rows: int = 2000) -> None:
    with gc_paused():
        page = render_html(bulletin, max_rows)
    Path(path).write_text(page, encoding="utf-8")
