"""The bulletin and 报备 on a PostgreSQL store: ``camwatch exempt`` writes to it, and the
bulletin read from it is the one read from the SQLite store it was migrated from, figure for
figure (the hand-computed November of test_report.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from camwatch.reports import inventory_rows
from camwatch.reports.cli import add_exempt_arguments, add_report_arguments, cmd_exempt, cmd_report
from camwatch.rules.rates import format_rate
from camwatch.secrets import Secret
from camwatch.store.migrate import migrate
from camwatch.store.postgres import PostgresStore
from camwatch.store.sqlite import SqliteStore
from tests.test_report import CHANNELS, HISTORY, C, parse


def _config(tmp: Path, name: str, store: dict[str, str]) -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump({"inventory": {"path": "inventory.csv"}, "store": store,
                                    "targets": {"min_channels": 1}}, allow_unicode=True),
                    encoding="utf-8")
    return str(path)


def test_bulletin_from_postgresql_equals_the_sqlite_one(
        tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    lite = SqliteStore(tmp_path / "cw.db")
    lite.write_batch([], HISTORY)
    lite.save_inventory_snapshot("2026-10", inventory_rows(CHANNELS))
    lite.save_inventory_snapshot("2026-11", inventory_rows(CHANNELS))
    lite.close()
    on_lite = _config(tmp_path, "lite.yaml", {"path": "cw.db"})
    monkeypatch.setenv("CW_REPORT_DSN", pg_dsn)
    on_pg = _config(tmp_path, "pg.yaml", {"backend": "postgresql", "dsn_env": "CW_REPORT_DSN"})
    migrate(tmp_path / "cw.db", Secret(pg_dsn))
    for c in (on_lite, on_pg):
        assert cmd_exempt(parse(add_exempt_arguments, [
            "-c", c, "add", "--channel", C, "--from", "2026-11-03", "--to", "2026-11-10",
            "--reason", "道路施工"])) == 0
    store = PostgresStore(Secret(pg_dsn))
    assert [e.reason for e in store.exemptions()] == ["道路施工"]  # written to PostgreSQL
    store.close()
    docs = []
    for c, out in ((on_lite, tmp_path / "lite.json"), (on_pg, tmp_path / "pg.json")):
        assert cmd_report(parse(add_report_arguments,
                                ["-c", c, "--month", "2026-11", "-o", str(out)])) == 0
        docs.append(json.loads(out.read_text(encoding="utf-8")))
    assert format_rate(docs[1]["summary"]["online_rate"]) == "85.85%"
    assert docs[1] == docs[0]
