"""The assessment (考核评价) as tables of the monthly bulletin: one per operator, one per
township, ranked (XLSX sheets, HTML sections, CSV files). Only when the period has tickets:
a county without the repair desk gets the bulletin it had."""

from __future__ import annotations

from typing import Any

from camwatch.reports.tables import Cell, Column, Table

_NOTE = ("工单自派单起计时，报备挂起时间不计；修复以 camwatch 核实恢复在线的时刻为准；"
         "按时修复率含本期超时未修复的工单；重复故障：同一点位 30 天内再次派单")


def _columns(what: str) -> tuple[Column, ...]:
    return (Column("排名", "int", 6), Column(what, "text", 16), Column("派单", "int", 7),
            Column("核实结案", "int", 9), Column("未结案", "int", 8),
            Column("响应中位数(小时)", "hours", 12), Column("响应P90(小时)", "hours", 12),
            Column("修复中位数(小时)", "hours", 12), Column("修复P90(小时)", "hours", 12),
            Column("按时响应率", "pct", 10), Column("按时修复率", "pct", 10),
            Column("重复故障", "int", 8))


def _hours(v: Any) -> Cell:
    return None if v is None else float(v) / 3600.0


def _rows(rows: list[dict[str, Any]]) -> list[list[Cell]]:
    return [[r["rank"], r["key"], r["opened"], r["closed"], r["still_open"],
             _hours(r["response_median_s"]), _hours(r["response_p90_s"]),
             _hours(r["repair_median_s"]), _hours(r["repair_p90_s"]),
             r["response_within"], r["repair_within"], r["repeats"]] for r in rows]


def assessment_tables(doc: dict[str, Any] | None) -> list[Table]:
    """The bulletin's assessment tables from :func:`camwatch.repairs.assess.assessment`."""
    if not doc:
        return []
    return [Table("assessment_operators", "运维考核（运营商）", _columns("运营商"),
                  _rows(doc["operators"]), _NOTE),
            Table("assessment_townships", "运维考核（乡镇）", _columns("乡镇"),
                  _rows(doc["townships"]), _NOTE)]
