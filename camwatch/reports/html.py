"""The bulletin as one self-contained HTML page: no external asset, A4 print CSS, the township
chart as inline SVG. Every value is escaped with :func:`html.escape`.

Long annexes are cut in the page (``max_rows``) with a note pointing to the CSV/JSON, so the
printout stays readable; the machine formats always hold every row (the XLSX summarises the
outages per channel).
"""

from __future__ import annotations

import html
from pathlib import Path

from camwatch.reports.compute import Bulletin, Figures
from camwatch.reports.gcpause import gc_paused
from camwatch.reports.period import local_text
from camwatch.reports.tables import Cell, Table, all_tables, verdict
from camwatch.rules.rates import format_rate

CSS = """
@page { size: A4; margin: 12mm 10mm; }
* { box-sizing: border-box; }
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", "SimSun",
       sans-serif; font-size: 9pt; color: #111; margin: 0; }
h1 { font-size: 16pt; text-align: center; margin: 0 0 2mm; }
h2 { font-size: 12pt; margin: 6mm 0 2mm; border-bottom: 1px solid #888; }
p.sub { text-align: center; margin: 0 0 4mm; color: #444; }
table { border-collapse: collapse; width: 100%; margin-bottom: 2mm; }
th, td { border: 1px solid #999; padding: 1px 3px; vertical-align: top; }
th { background: #ddebf7; font-weight: bold; }
thead { display: table-header-group; }
tr { page-break-inside: avoid; }
td.n { text-align: right; white-space: nowrap; }
td.bad, span.bad { color: #c00000; font-weight: bold; }
td.ok { color: #1a7f37; }
.cards { display: flex; flex-wrap: wrap; gap: 2mm; margin-bottom: 2mm; }
.card { border: 1px solid #999; padding: 2mm 3mm; min-width: 28mm; }
.card b { display: block; font-size: 13pt; }
p.note { color: #444; margin: 0 0 2mm; }
svg { display: block; margin: 2mm 0; }
section { page-break-inside: auto; }
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _cell(kind: str, value: Cell) -> str:
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
    cls = ' class="bad"' if value == "未达标" else ' class="ok"' if value == "达标" else ""
    return f"<td{cls}>{_e(value)}</td>"


def _table(table: Table, max_rows: int) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in table.headers)
    kinds = [c.kind for c in table.columns]
    body = []
    for row in table.rows[:max_rows]:
        body.append("<tr>" + "".join(_cell(k, v) for k, v in zip(kinds, row, strict=True))
                    + "</tr>")
    parts = [f'<section id="{_e(table.key)}"><h2>{_e(table.title)}</h2>']
    if table.note:
        parts.append(f'<p class="note">注：{_e(table.note)}</p>')
    if not table.rows:
        parts.append('<p class="note">无。</p></section>')
        return "".join(parts)
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    if len(table.rows) > max_rows:
        parts.append(f'<p class="note">共 {len(table.rows)} 行，此处列出前 {max_rows} 行；'
                     f"完整内容见 CSV 或 JSON 版本。</p>")
    parts.append("</section>")
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
    label_w, bar_w, row_h, top = 130, 500, 16, 20
    height = top + row_h * len(rows) + 24

    def x(rate: float) -> float:
        return label_w + bar_w * (rate - lo) / (1.0 - lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 60}" '
           f'height="{height}" viewBox="0 0 {label_w + bar_w + 60} {height}" role="img" '
           f'aria-label="乡镇在线率与目标" font-size="10">']
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
        out.append(f'<text x="{label_w - 4}" y="{y + 11}" text-anchor="end">{_e(name)}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 2}" width="{max(0.0, x(rate) - label_w):.1f}" '
                   f'height="{row_h - 4}" fill="{colour}"/>')
        out.append(f'<text x="{x(rate) + 3:.1f}" y="{y + 11}">{_e(format_rate(rate))}</text>')
        if f.target is not None:
            out.append(f'<line x1="{x(f.target):.1f}" y1="{y}" x2="{x(f.target):.1f}" '
                       f'y2="{y + row_h}" stroke="#000" stroke-width="2"/>')
    out.append(f'<text x="{label_w}" y="12">条形：在线率；黑线：参考目标（红色为未达标）</text>')
    out.append("</svg>")
    return "".join(out)


def render_html(bulletin: Bulletin, max_rows: int = 2000) -> str:
    b = bulletin
    s = b.summary
    title = f"{b.site} 视频监控联网在线情况通报（{b.period.label}）"
    cards = [
        ("应安装", str(s.planned)), ("已安装", str(s.installed)),
        ("安装率", format_rate(s.install_rate)), ("已联网上云", str(s.connected)),
        ("上云率", format_rate(s.cloud_rate)), ("在线率(时间加权)", format_rate(s.tw.rate)),
        ("在线率(期末快照)", format_rate(s.snap.rate)),
    ]
    class_lines = []
    for p in s.classes + s.projects:
        if p.target is None:
            continue
        mark = verdict(p.meets_target)
        cls = "bad" if p.meets_target is False else ""
        class_lines.append(f'<li>{_e(p.name)}：在线率 {_e(format_rate(p.rate))}，目标 '
                           f'{_e(format_rate(p.target))}，<span class="{cls}">{_e(mark)}</span>'
                           f"</li>")
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">统计周期 {_e(b.period.label)} · 生成 '
        f"{_e(local_text(b.generated, b.tz))}</p>",
        '<div class="cards">' + "".join(f'<div class="card">{_e(k)}<b>{_e(v)}</b></div>'
                                        for k, v in cards) + "</div>",
        f"<ul>{''.join(class_lines)}</ul>" if class_lines else "",
    ]
    for table in all_tables(b):
        body.append(_table(table, max_rows))
        if table.key == "townships":
            body.append(township_svg(b.townships))
    return ("<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def write_html(bulletin: Bulletin, path: str | Path, max_rows: int = 2000) -> None:
    with gc_paused():
        page = render_html(bulletin, max_rows)
    Path(path).write_text(page, encoding="utf-8")
