"""``camwatch store migrate``: copy a SQLite store (a county's history) into PostgreSQL, then
check every row of every table, in order, against the source.

Both stores are locked for the copy (a daemon running on either is refused, naming it), the
source is brought to the current schema as the daemon would, and the target must be a new
database or an empty camwatch one: the copy is one transaction, so a failure leaves the target
as it was. Tables are taken from the SQLite file and must exist in PostgreSQL with the same
columns (schema version N is the same tables in both backends), so a table added to both
migration lists is copied without a change here. Identity sequences are moved past the copied
ids, so the daemon's next transition or outbox item follows the copied ones.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

import psycopg

from camwatch.errors import StoreError
from camwatch.secrets import Secret
from camwatch.store.lock import StoreLock
from camwatch.store.postgres import PgStoreLock, PostgresStore, connect, describe_dsn
from camwatch.store.sqlite import SqliteStore


def migrate(source: Path, dsn: Secret,
            progress: Callable[[str], object] = lambda _msg: None) -> dict[str, int]:
    """Copy ``source`` into the PostgreSQL store at ``dsn`` and check it; rows per table."""
    if not source.is_file():
        raise StoreError(f"{source}: no SQLite store here (expected the daemon's store.path)")
    where = describe_dsn(dsn)
    src_lock = StoreLock(source)
    src_lock.acquire("camwatch store migrate")
    try:
        SqliteStore(source).close()  # identity checked, schema brought up to date
        dst_lock = PgStoreLock(dsn)
        dst_lock.acquire(f"camwatch store migrate from {source}")
        try:
            PostgresStore(dsn).close()  # schema created or checked
            lite = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
            try:
                with connect(dsn, "camwatch store migrate") as db:
                    tables = _tables(lite, db, source, where)
                    _copy(lite, db, tables, where, progress)
                    return _check(lite, db, tables, source, where, progress)
            finally:
                lite.close()
        finally:
            dst_lock.release()
    finally:
        src_lock.release()


def _tables(lite: sqlite3.Connection, db: psycopg.Connection[Any], source: Path,
            where: str) -> dict[str, list[str]]:
    """table -> columns, checked to be the same in both and empty in the target."""
    names = [r[0] for r in lite.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    tables: dict[str, list[str]] = {}
    for name in names:
        columns = [r[1] for r in lite.execute(f'PRAGMA table_info("{name}")')]
        theirs = [r[0] for r in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND "
            "table_schema = current_schema() ORDER BY ordinal_position", (name,))]
        if theirs != columns:
            found = f"columns {', '.join(theirs)}" if theirs else "no such table"
            raise StoreError(
                f"{where}: table {name} of {source} has columns {', '.join(columns)}, the "
                f"PostgreSQL store {found}; this camwatch's PostgreSQL schema is behind its "
                f"SQLite one")
        rows = db.execute(f'SELECT count(*) FROM "{name}"'.encode()).fetchone()
        if rows and rows[0]:
            raise StoreError(
                f"{where}: the target already holds {rows[0]:,} rows in {name}; migrate into "
                f"a new database (nothing was copied)")
        tables[name] = columns
    return tables


def _copy(lite: sqlite3.Connection, db: psycopg.Connection[Any],
          tables: dict[str, list[str]], where: str, progress: Callable[[str], object]) -> None:
    with db.transaction(), db.cursor() as cur:
        for name, columns in tables.items():
            cols = ", ".join(f'"{c}"' for c in columns)
            n = 0
            with cur.copy(f'COPY "{name}" ({cols}) FROM STDIN'.encode()) as copy:
                for row in lite.execute(f'SELECT {cols} FROM "{name}"'):
                    copy.write_row(row)
                    n += 1
            progress(f"{name}: {n:,} rows copied")
            for (col,) in cur.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                    "AND table_schema = current_schema() AND is_identity = 'YES'",
                    (name,)).fetchall():
                cur.execute(f'SELECT setval(pg_get_serial_sequence(%s, %s), '
                            f'COALESCE(MAX("{col}"), 0) + 1, false) FROM "{name}"'.encode(),
                            (name, col))


def _ordered(columns: list[str], text: set[str], pg: bool) -> str:
    """ORDER BY every column, as SQLite orders them: byte order for text (PostgreSQL's "C"
    collation), NULL first."""
    if not pg:
        return ", ".join(f'"{c}"' for c in columns)
    return ", ".join(f'"{c}"{" COLLATE " + chr(34) + "C" + chr(34) if c in text else ""} '
                     f"NULLS FIRST" for c in columns)


def _check(lite: sqlite3.Connection, db: psycopg.Connection[Any],
           tables: dict[str, list[str]], source: Path, where: str,
           progress: Callable[[str], object]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, columns in tables.items():
        text = {r[0] for r in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND "
            "table_schema = current_schema() AND data_type = 'text'", (name,))}
        cols = ", ".join(f'"{c}"' for c in columns)
        mine = lite.execute(f'SELECT {cols} FROM "{name}" ORDER BY '
                            f'{_ordered(columns, text, False)}')
        theirs = _stream(db, f'SELECT {cols} FROM "{name}" ORDER BY '
                             f'{_ordered(columns, text, True)}')
        n = 0
        for a, b in zip_longest(mine, theirs):
            if a is None or b is None or tuple(a) != tuple(b):
                raise StoreError(
                    f"{where}: row {n + 1} of table {name} differs from {source} after the "
                    f"copy ({'missing' if b is None else 'extra' if a is None else 'changed'})"
                    f"; the target's transaction is committed: drop that database and retry")
            n += 1
        counts[name] = n
        progress(f"{name}: {n:,} rows checked")
    return counts


def _stream(db: psycopg.Connection[Any], sql: str) -> Iterator[tuple[Any, ...]]:
    """A server-side cursor: a table of millions of rows is never held at once."""
    with db.transaction(), db.cursor(name="camwatch_check") as cur:
        cur.itersize = 5000
        cur.execute(sql.encode())
        yield from cur
