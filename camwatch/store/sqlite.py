"""SQLite backend of the store: one file, WAL, versioned schema.

Durability: ``synchronous=FULL`` with WAL, so a committed batch survives ``kill -9`` and power
loss; the engine commits at most about once a second, which keeps the fsync cost small.
The file (and its -wal/-shm siblings, which SQLite creates with the same mode) is 0600: it
names every camera of the network.

One connection per instance. The daemon opens two: one for its writer thread
(:mod:`camwatch.store.writer`) and one for reads; statements on one connection are serialised
by its lock, so a read from a worker thread and one from the event loop never interleave.

Identity: a camwatch store carries ``PRAGMA application_id`` = :data:`APPLICATION_ID`
(0x43616D57, "CamW"). A file is checked before anything is written to it, WAL mode included:
a new empty file is taken and stamped; a store made by camwatch before the id existed
(application_id 0, tables ``channel_state``, ``transitions`` and ``meta``, a known
``user_version``) is adopted and stamped; any other file that holds something (another
program's database, another application id) is refused untouched with a :class:`StoreError`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from camwatch.errors import StoreError
from camwatch.pacing import paced
from camwatch.store.base import (
    ChannelState,
    Exemption,
    OutboxItem,
    QualityChange,
    QualityChangeRow,
    QualityState,
    RateSnapshot,
    Recording,
    Ticket,
    TicketEvent,
    Transition,
    TransitionRow,
)
from camwatch.store.rows import (
    CATALOG_COLUMNS,
    EVENT_COLUMNS,
    OUTBOX_COLUMNS,
    QUALITY_CHANGE_COLUMNS,
    QUALITY_COLUMNS,
    QUALITY_UPDATE,
    RECORDING_COLUMNS,
    STATE_COLUMNS,
    catalog_of,
    catalog_row,
    event_of,
    event_row,
    meta_rows,
    outbox_item,
    outbox_rows,
    quality_change_of,
    quality_change_row,
    quality_of,
    quality_row,
    recording_of,
    recording_row,
    snapshot_of,
    snapshot_row,
    state_of,
    state_row,
    ticket_row,
    to_json,
    transition_of,
    transition_row,
)

# Each entry moves the schema one version up; never edit a released entry, add a new one.
MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    CREATE TABLE channel_state (
        channel_id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        reason TEXT,
        since REAL,
        last_probe REAL,
        last_ok REAL,
        fails INTEGER NOT NULL DEFAULT 0,
        oks INTEGER NOT NULL DEFAULT 0,
        latency_ms REAL,
        clock_drift_s REAL,
        flapping INTEGER NOT NULL DEFAULT 0,
        detail TEXT NOT NULL DEFAULT '',
        info TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE transitions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel_id TEXT NOT NULL,
        ts REAL NOT NULL,
        from_state TEXT NOT NULL,
        to_state TEXT NOT NULL,
        reason TEXT,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX transitions_ts ON transitions (ts);
    CREATE INDEX transitions_channel_ts ON transitions (channel_id, ts);
    CREATE TABLE rate_snapshots (
        ts REAL NOT NULL,
        scope TEXT NOT NULL,
        class INTEGER,
        project TEXT,
        online INTEGER NOT NULL,
        connected INTEGER NOT NULL
    );
    CREATE INDEX rate_snapshots_ts ON rate_snapshots (ts);
    CREATE TABLE inventory_snapshots (
        month TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (month, channel_id)
    );
    CREATE TABLE alert_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        receiver TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created REAL NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL,
        delivered REAL,
        last_error TEXT
    );
    CREATE INDEX alert_outbox_pending ON alert_outbox (receiver, delivered, next_attempt, id);
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: exemptions (报备): a channel left out of the rates for [start, end)
    """
    CREATE TABLE exemptions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel_id TEXT NOT NULL,
        start REAL NOT NULL,
        end REAL NOT NULL,
        reason TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE INDEX exemptions_channel ON exemptions (channel_id, start);
    CREATE INDEX exemptions_end ON exemptions (end);
    """,
    # 3: repair tickets (维修工单): the ticket as JSON with columns to query by, and its events
    """
    CREATE TABLE repair_tickets (
        no INTEGER PRIMARY KEY,
        state TEXT NOT NULL,
        opened REAL NOT NULL,
        final REAL,
        data TEXT NOT NULL
    );
    CREATE INDEX repair_tickets_open ON repair_tickets (final, opened);
    CREATE TABLE repair_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        no INTEGER NOT NULL,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        from_state TEXT NOT NULL,
        to_state TEXT NOT NULL,
        by TEXT NOT NULL,
        note TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX repair_events_no ON repair_events (no, id);
    """,
    # 4: picture quality (camwatch.quality): each channel's last verdict with its pictures
    # (one row a channel, so a restart keeps quality state), and the log of quality changes
    # (the bulletin's 完好率)
    """
    CREATE TABLE quality_state (
        channel_id TEXT PRIMARY KEY,
        quality TEXT NOT NULL,
        ts REAL NOT NULL,
        since REAL NOT NULL,
        streak INTEGER NOT NULL,
        faults TEXT NOT NULL DEFAULT '[]',
        scores TEXT NOT NULL DEFAULT '{}',
        reason TEXT,
        detail TEXT NOT NULL DEFAULT '',
        width INTEGER,
        height INTEGER,
        codec TEXT,
        latency_ms REAL,
        baselines TEXT NOT NULL DEFAULT '{}',
        jpeg BLOB,
        jpeg_ts REAL,
        scene_ref BLOB,
        fault_jpeg BLOB,
        fault_ts REAL
    );
    CREATE TABLE quality_transitions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel_id TEXT NOT NULL,
        ts REAL NOT NULL,
        from_quality TEXT NOT NULL,
        to_quality TEXT NOT NULL,
        faults TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX quality_transitions_ts ON quality_transitions (ts, id);
    CREATE INDEX quality_transitions_channel_ts ON quality_transitions (channel_id, ts);
    """,
    # 5: GB/T 28181 catalogs (camwatch.gb28181): each lower platform's latest catalog of a
    # month (its channels' ids and names as JSON), for the bulletin's ledger reconciliation
    """
    CREATE TABLE gb_catalogs (
        month TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        at REAL NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (month, platform_id)
    );
    """,
    # 6: GB/T 28181 RecordInfo (录像完整率): a channel's recorded seconds of a local day, as
    # the platform listing it answered last
    """
    CREATE TABLE gb_recordings (
        day TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        recorded_s REAL NOT NULL,
        period_s REAL NOT NULL,
        partial INTEGER NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (day, channel_id)
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
# "CamW": what ``PRAGMA application_id`` holds in a camwatch store (``file`` shows it too).
APPLICATION_ID = 0x43616D57
# The tables that tell a store made before APPLICATION_ID existed (all schema versions have them).
_LEGACY_TABLES = frozenset({"channel_state", "transitions", "meta"})


def _create_private(path: Path) -> None:
    """Create the file 0600 (and its directory 0700) before SQLite opens it."""
    if path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    os.close(fd)


class SqliteStore:
    def __init__(self, path: str | Path, busy_timeout: float = 30.0) -> None:
        """``busy_timeout``: how long a statement waits for a lock another connection (or
        process) holds before it fails with "database is locked"."""
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if str(path) != ":memory:":
                _create_private(self.path)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                       timeout=busy_timeout)
            self._check_identity()  # reads only: a refused file is left exactly as it was
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{path}: cannot open the store: {exc}") from None

    # --- schema ------------------------------------------------------------------------------

    def _check_identity(self) -> None:
        """Refuse a file that is not (and was never) a camwatch store, before writing to it.
        Closes the connection when refusing."""
        db = self._db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        if app_id == APPLICATION_ID:
            return
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = sorted(r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"))
        objects = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id == 0 and objects == 0 and version == 0:
            return  # a new, empty database: ours from now on
        if app_id == 0 and _LEGACY_TABLES.issubset(tables) and 1 <= version <= SCHEMA_VERSION:
            return  # made by camwatch before application_id was set: adopted and stamped
        owner = f"application_id {app_id & 0xFFFFFFFF:#010x}" if app_id else "no application_id"
        shown = ", ".join(tables[:8]) + (", ..." if len(tables) > 8 else "")
        db.close()
        raise StoreError(
            f"{self.path}: not a camwatch store ({owner}, user_version {version}, "
            f"tables: {shown or 'none'}); a camwatch store has application_id "
            f"{APPLICATION_ID:#010x}. Refusing to touch it: point store.path at a new file or "
            f"at camwatch's own store")

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this camwatch "
                f"understands ({SCHEMA_VERSION}); upgrade camwatch or restore a backup")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._tx():
                for statement in _split_sql(MIGRATIONS[target - 1]):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target}")
        if self._db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            with self._tx():
                self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _tx(self) -> _Tx:
        return _Tx(self._db, self._lock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- states and transitions ----------------------------------------------------------------

    def load_states(self) -> dict[str, ChannelState]:
        rows = self._db.execute(f"SELECT {STATE_COLUMNS} FROM channel_state").fetchall()
        return {r[0]: state_of(r) for r in rows}

    def write_batch(self, states: Iterable[ChannelState],
                    transitions: Iterable[Transition]) -> None:
        # paced: a full flush is 100,000 rows of Python in this thread (camwatch.pacing)
        state_rows = list(paced(state_row(s) for s in states))
        trans_rows = [transition_row(t) for t in transitions]
        if not state_rows and not trans_rows:
            return
        with self._tx():
            if state_rows:
                self._db.executemany(
                    "INSERT INTO channel_state VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(channel_id) DO UPDATE SET state=excluded.state, "
                    "reason=excluded.reason, since=excluded.since, "
                    "last_probe=excluded.last_probe, last_ok=excluded.last_ok, "
                    "fails=excluded.fails, oks=excluded.oks, latency_ms=excluded.latency_ms, "
                    "clock_drift_s=excluded.clock_drift_s, flapping=excluded.flapping, "
                    "detail=excluded.detail, info=excluded.info", state_rows)
            if trans_rows:
                self._db.executemany(
                    "INSERT INTO transitions (channel_id, ts, from_state, to_state, reason, "
                    "detail) VALUES (?,?,?,?,?,?)", trans_rows)

    def delete_states(self, channel_ids: Iterable[str]) -> None:
        ids = [(c,) for c in channel_ids]
        with self._tx():
            self._db.executemany("DELETE FROM channel_state WHERE channel_id = ?", ids)
            self._db.executemany("DELETE FROM quality_state WHERE channel_id = ?", ids)

    def transitions(self, start: float | None = None, end: float | None = None,
                    channel_ids: Iterable[str] | None = None,
                    with_detail: bool = True) -> Iterator[Transition]:
        """Transitions with ``start <= ts < end`` in time order. ``with_detail=False`` leaves
        ``detail`` empty instead of decoding its JSON (about a third of the read cost)."""
        columns = f"id, channel_id, ts, from_state, to_state, reason, " \
                  f"{'detail' if with_detail else 'NULL'}"
        wanted = set(channel_ids) if channel_ids is not None else None
        for r in self._transitions_between(columns, start, end):
            if wanted is not None and r[1] not in wanted:
                continue
            yield transition_of(r, with_detail)

    def transition_rows(self, start: float | None = None,
                        end: float | None = None) -> Iterator[TransitionRow]:
        """Like :meth:`transitions` without the detail, as plain tuples (``TransitionRow``)
        straight from the cursor: for reading a month of the log in one pass."""
        return iter(self._transitions_between("channel_id, ts, from_state, to_state, reason",
                                              start, end))

    def _transitions_between(self, columns: str, start: float | None, end: float | None,
                             table: str = "transitions") -> sqlite3.Cursor:
        """Rows of a log ``table`` (transitions, quality_transitions) with ``start <= ts <
        end``, ordered by (ts, id)."""
        sql = f"SELECT {columns} FROM {table} WHERE 1=1"
        args: list[Any] = []
        if start is not None:
            sql += " AND ts >= ?"
            args.append(start)
        if end is not None:
            sql += " AND ts < ?"
            args.append(end)
        return self._db.execute(sql + " ORDER BY ts, id", args)

    def last_transition_before(self, ts: float,
                               with_detail: bool = True) -> dict[str, Transition]:
        """Each channel's last transition strictly before ``ts``: its state when a period
        starts. ``with_detail=False``: ``detail`` left empty, not decoded."""
        rows = self._db.execute(
            f"SELECT t.id, t.channel_id, t.ts, t.from_state, t.to_state, t.reason, "
            f"{'t.detail' if with_detail else 'NULL'} "
            "FROM transitions t JOIN (SELECT channel_id, MAX(id) AS id FROM transitions "
            "WHERE ts < ? GROUP BY channel_id) last ON t.id = last.id", (ts,))
        return {r[1]: transition_of(r, with_detail) for r in rows}

    # --- picture quality -----------------------------------------------------------------------

    def write_quality(self, states: Iterable[QualityState],
                      changes: Iterable[QualityChange]) -> None:
        rows = [quality_row(q) for q in states]
        logged = [quality_change_row(c) for c in changes]
        if not rows and not logged:
            return
        marks = ",".join("?" * len(QUALITY_COLUMNS.split(", ")))
        with self._tx():
            if rows:
                self._db.executemany(
                    f"INSERT INTO quality_state ({QUALITY_COLUMNS}) VALUES ({marks}) "
                    f"ON CONFLICT(channel_id) DO UPDATE SET {QUALITY_UPDATE}", rows)
            if logged:
                self._db.executemany(
                    f"INSERT INTO quality_transitions ({QUALITY_CHANGE_COLUMNS}) "
                    "VALUES (?,?,?,?,?)", logged)

    def load_quality(self, with_pictures: bool = True) -> dict[str, QualityState]:
        """Every channel's stored quality state; ``with_pictures=False`` leaves the JPEGs and
        the scene reference out (NULL), for readers that need the verdicts only."""
        columns = QUALITY_COLUMNS if with_pictures else QUALITY_COLUMNS.replace(
            "jpeg, jpeg_ts, scene_ref, fault_jpeg", "NULL, jpeg_ts, NULL, NULL")
        with self._lock:
            rows = self._db.execute(f"SELECT {columns} FROM quality_state").fetchall()
        return {r[0]: quality_of(r) for r in rows}

    def quality_changes(self, start: float | None = None,
                        end: float | None = None) -> Iterator[QualityChangeRow]:
        """Quality changes with ``start <= ts < end`` in time order, as plain tuples."""
        return iter(self._transitions_between(QUALITY_CHANGE_COLUMNS, start, end,
                                              "quality_transitions"))

    def last_quality_before(self, ts: float) -> dict[str, QualityChange]:
        """Each channel's last quality change strictly before ``ts``: its picture quality
        when a period starts."""
        rows = self._db.execute(
            "SELECT q.id, q.channel_id, q.ts, q.from_quality, q.to_quality, q.faults "
            "FROM quality_transitions q JOIN (SELECT channel_id, MAX(id) AS id FROM "
            "quality_transitions WHERE ts < ? GROUP BY channel_id) last ON q.id = last.id",
            (ts,))
        return {r[1]: quality_change_of(r) for r in rows}

    def fault_pictures(self, channel_ids: Iterable[str]) -> dict[str, tuple[float, bytes]]:
        """The last degraded picture of each of these channels that has one: (when, JPEG)."""
        out: dict[str, tuple[float, bytes]] = {}
        with self._lock:
            for cid in channel_ids:
                row = self._db.execute(
                    "SELECT fault_ts, fault_jpeg FROM quality_state WHERE channel_id = ? AND "
                    "fault_jpeg IS NOT NULL", (cid,)).fetchone()
                if row is not None:
                    out[cid] = (float(row[0]), bytes(row[1]))
        return out

    # --- rate snapshots ----------------------------------------------------------------------

    def add_rate_snapshots(self, rows: Iterable[RateSnapshot]) -> None:
        data = [snapshot_row(r) for r in rows]
        with self._tx():
            self._db.executemany("INSERT INTO rate_snapshots VALUES (?,?,?,?,?,?)", data)

    def rate_snapshots(self, start: float, end: float) -> list[RateSnapshot]:
        rows = self._db.execute(
            "SELECT ts, scope, class, project, online, connected FROM rate_snapshots "
            "WHERE ts >= ? AND ts < ? ORDER BY ts", (start, end))
        return [snapshot_of(r) for r in rows]

    # --- inventory snapshots -----------------------------------------------------------------

    def save_inventory_snapshot(self, month: str, rows: Iterable[dict[str, Any]]) -> None:
        data = ((month, r["id"], json.dumps(r, ensure_ascii=False, default=str))
                for r in paced(rows))  # 100,000 rows of Python in this thread: camwatch.pacing
        with self._tx():  # streamed: executemany takes the rows as they are made
            self._db.execute("DELETE FROM inventory_snapshots WHERE month = ?", (month,))
            self._db.executemany("INSERT INTO inventory_snapshots VALUES (?,?,?)", data)

    def inventory_snapshot(self, month: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT data FROM inventory_snapshots WHERE month = ? ORDER BY channel_id", (month,))
        return [json.loads(r[0]) for r in rows]

    def iter_inventory_snapshot(self, month: str) -> Iterator[dict[str, Any]]:
        """:meth:`inventory_snapshot` one row at a time: 100,000 decoded rows held at once
        take about 230 MB, a stream of them almost nothing."""
        for r in self._db.execute(
                "SELECT data FROM inventory_snapshots WHERE month = ? ORDER BY channel_id",
                (month,)):
            yield json.loads(r[0])

    def inventory_months(self) -> list[str]:
        return [r[0] for r in self._db.execute(
            "SELECT DISTINCT month FROM inventory_snapshots ORDER BY month")]

    # --- GB/T 28181 catalogs -------------------------------------------------------------------

    def save_gb_catalog(self, month: str, platform_id: str, at: float,
                        data: Mapping[str, Any]) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO gb_catalogs VALUES (?,?,?,?) ON CONFLICT(month, platform_id) "
                "DO UPDATE SET at = excluded.at, data = excluded.data",
                catalog_row(month, platform_id, at, data))

    def save_gb_recording(self, r: Recording) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO gb_recordings VALUES (?,?,?,?,?,?,?) ON CONFLICT(day, channel_id) "
                "DO UPDATE SET platform_id = excluded.platform_id, recorded_s = "
                "excluded.recorded_s, period_s = excluded.period_s, partial = excluded.partial, "
                "at = excluded.at", recording_row(r))

    def gb_recordings(self, first_day: str, last_day: str) -> list[Recording]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {RECORDING_COLUMNS} FROM gb_recordings WHERE day >= ? AND day <= ? "
                "ORDER BY day, channel_id", (first_day, last_day)).fetchall()
        return [recording_of(r) for r in rows]

    def gb_catalogs(self, month: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {CATALOG_COLUMNS} FROM gb_catalogs WHERE month = ? "
                "ORDER BY platform_id", (month,)).fetchall()
        return dict(catalog_of(r) for r in rows)

    # --- exemptions (报备) -----------------------------------------------------------------------

    def add_exemption(self, channel_id: str, start: float, end: float, reason: str,
                      now: float) -> int:
        if not end > start:
            raise StoreError(f"exemption of {channel_id}: expected end after start, got "
                             f"start {start} and end {end}")
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO exemptions (channel_id, start, end, reason, created) "
                "VALUES (?,?,?,?,?)", (channel_id, start, end, reason, now))
            return int(cur.lastrowid or 0)

    def exemptions(self, start: float | None = None, end: float | None = None,
                   channel_ids: Iterable[str] | None = None) -> list[Exemption]:
        """Exemptions overlapping ``[start, end)`` (all of them without bounds), by channel
        and start."""
        sql = "SELECT id, channel_id, start, end, reason, created FROM exemptions WHERE 1=1"
        args: list[Any] = []
        if start is not None:
            sql += " AND end > ?"
            args.append(start)
        if end is not None:
            sql += " AND start < ?"
            args.append(end)
        sql += " ORDER BY channel_id, start, id"
        wanted = set(channel_ids) if channel_ids is not None else None
        return [Exemption(r[1], r[2], r[3], r[4], r[5], id=r[0])
                for r in self._db.execute(sql, args)
                if wanted is None or r[1] in wanted]

    def remove_exemptions(self, channel_id: str, exemption_id: int | None = None) -> int:
        """Delete the channel's exemptions (only ``exemption_id`` when given); returns how
        many were deleted."""
        with self._tx():
            if exemption_id is None:
                cur = self._db.execute("DELETE FROM exemptions WHERE channel_id = ?",
                                       (channel_id,))
            else:
                cur = self._db.execute("DELETE FROM exemptions WHERE channel_id = ? AND id = ?",
                                       (channel_id, exemption_id))
            return int(cur.rowcount)

    # --- alert outbox --------------------------------------------------------------------------

    def enqueue(self, receiver: str, fingerprint: str, payload: dict[str, Any],
                now: float) -> int:
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO alert_outbox (receiver, fingerprint, created, payload, "
                "next_attempt) VALUES (?,?,?,?,?)",
                outbox_rows([(receiver, fingerprint, payload)], now)[0])
            return int(cur.lastrowid or 0)

    def commit_outbox(self, items: Iterable[tuple[str, str, dict[str, Any]]], now: float,
                      meta: Mapping[str, Any]) -> None:
        """Enqueue ``(receiver, fingerprint, payload)`` items and set ``meta`` keys in one
        transaction: the alert evaluator's state never says "sent" for an item that is not
        in the outbox, nor the other way round."""
        rows, metas = outbox_rows(items, now), meta_rows(meta)
        with self._tx():
            if rows:
                self._db.executemany(
                    "INSERT INTO alert_outbox (receiver, fingerprint, created, payload, "
                    "next_attempt) VALUES (?,?,?,?,?)", rows)
            if metas:
                self._db.executemany(
                    "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                    "value = excluded.value", metas)

    def due(self, receiver: str, now: float, limit: int = 100) -> list[OutboxItem]:
        """Undelivered items of ``receiver`` in creation order, stopping at the first one not
        yet due: delivery stays in order even while one item waits for its retry."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {OUTBOX_COLUMNS} FROM alert_outbox WHERE receiver = ? AND "
                "delivered IS NULL ORDER BY id LIMIT ?", (receiver, limit)).fetchall()
        out = []
        for r in rows:
            if r[6] > now:
                break
            out.append(outbox_item(r))
        return out

    def mark_delivered(self, item_id: int, now: float) -> None:
        with self._tx():
            self._db.execute("UPDATE alert_outbox SET delivered = ?, attempts = attempts + 1 "
                             "WHERE id = ?", (now, item_id))

    def mark_failed(self, item_id: int, error: str, next_attempt: float) -> None:
        with self._tx():
            self._db.execute("UPDATE alert_outbox SET attempts = attempts + 1, last_error = ?, "
                             "next_attempt = ? WHERE id = ?", (error[:500], next_attempt,
                                                                item_id))

    def outbox_depth(self, receiver: str | None = None) -> int:
        with self._lock:
            if receiver is None:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM alert_outbox WHERE delivered IS NULL").fetchone()
            else:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM alert_outbox WHERE delivered IS NULL AND "
                    "receiver = ?", (receiver,)).fetchone()
        return int(row[0])

    # --- meta ----------------------------------------------------------------------------------

    def get_meta(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        with self._tx():
            self._db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                             "value = excluded.value",
                             (key, to_json(value)))

    # --- repair tickets (camwatch.repairs) ------------------------------------------------------

    def commit_tickets(self, tickets: Iterable[Ticket], events: Iterable[TicketEvent],
                       items: Iterable[tuple[str, str, dict[str, Any]]], now: float) -> None:
        """Tickets (upserted), their events and their outbox items in one transaction: a
        ticket never says 已派单 without its message in the outbox, nor the other way round."""
        rows = [ticket_row(t) for t in tickets]
        evs = [event_row(e) for e in events]
        out = outbox_rows(items, now)
        if not rows and not evs and not out:
            return
        with self._tx():
            self._db.executemany(
                "INSERT INTO repair_tickets VALUES (?,?,?,?,?) ON CONFLICT(no) DO UPDATE SET "
                "state=excluded.state, final=excluded.final, data=excluded.data", rows)
            self._db.executemany(
                "INSERT INTO repair_events (no, ts, kind, from_state, to_state, by, note, data) "
                "VALUES (?,?,?,?,?,?,?,?)", evs)
            self._db.executemany(
                "INSERT INTO alert_outbox (receiver, fingerprint, created, payload, "
                "next_attempt) VALUES (?,?,?,?,?)", out)

    def tickets(self, *, open_only: bool = False, since: float | None = None,
                until: float | None = None) -> list[Ticket]:
        sql = "SELECT data FROM repair_tickets WHERE 1=1"
        args: list[Any] = []
        if open_only:
            sql += " AND final IS NULL"
        if since is not None:
            sql += " AND (final IS NULL OR final >= ?)"
            args.append(since)
        if until is not None:
            sql += " AND opened < ?"
            args.append(until)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY no", args).fetchall()
        return [Ticket.from_dict(json.loads(r[0])) for r in rows]

    def ticket(self, no: int) -> Ticket | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM repair_tickets WHERE no = ?",
                                   (no,)).fetchone()
        return Ticket.from_dict(json.loads(row[0])) if row else None

    def ticket_events(self, no: int) -> list[TicketEvent]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {EVENT_COLUMNS} FROM repair_events WHERE no = ? ORDER BY id",
                (no,)).fetchall()
        return [event_of(r) for r in rows]

    def last_ticket_no(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(no) FROM repair_tickets").fetchone()
        return int(row[0] or 0)


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception; serialised by a lock
    so the writer thread and a CLI caller in the same process never interleave."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self._db.execute("COMMIT")
            else:
                self._db.execute("ROLLBACK")
        finally:
            self._lock.release()


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
