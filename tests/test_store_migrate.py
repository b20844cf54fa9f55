"""``camwatch store migrate``: a county's SQLite history copied into a real PostgreSQL, then
compared row by row, table by table, by the test itself (not only by the command's own check),
and the daemon's next writes following the copied ids."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from camwatch.cli import main
from camwatch.errors import StoreError
from camwatch.secrets import Secret
from camwatch.store import migrate as mig
from camwatch.store.base import ChannelState, RateSnapshot, Recording, Transition
from camwatch.store.lock import StoreLock
from camwatch.store.postgres import PostgresStore
from camwatch.store.sqlite import SqliteStore

T0 = 1_800_000_000.0
STATES = ("online", "offline", "unknown")
REASONS = (None, "timeout", "refused", "auth", "host_down", "flapping")


def county(path: Path, channels: int = 1500, transitions: int = 12_000) -> None:
    """A county's store as the daemon leaves it: states, a log with details, snapshots,
    an outbox with delivered, failed and pending items, exemptions, the alert state."""
    store = SqliteStore(path)
    ids = [f"41162800001321{n:06d}" for n in range(channels)]
    store.write_batch(
        [ChannelState(cid, STATES[i % 3], REASONS[i % 6] if i % 3 == 1 else None,
                      since=T0 + i / 7, last_probe=T0 + i * 0.1 if i % 5 else None,
                      last_ok=T0 + i if i % 4 else None, fails=i % 4, oks=i % 3,
                      latency_ms=(i % 97) * 1.37 if i % 3 == 0 else None,
                      clock_drift_s=-0.1 * (i % 9) if i % 11 == 0 else None,
                      flapping=i % 50 == 0, detail="DESCRIBE 401" if i % 13 == 0 else "",
                      info={"vendor": "海康威视" if i % 2 else "大华", "fw": f"V5.{i % 7}"})
         for i, cid in enumerate(ids)], [])
    batch: list[Transition] = []
    for k in range(transitions):
        cid = ids[(k * 7919) % channels]
        frm, to = STATES[k % 3], STATES[(k + 1) % 3]
        batch.append(Transition(cid, T0 + k // 3 + 0.1 + 0.2, frm, to,
                                REASONS[k % 6] if to == "offline" else None,
                                {"latency_ms": k % 300, "msg": "连接超时"} if k % 4 else {}))
        if len(batch) == 1000:
            store.write_batch([], batch)
            batch = []
    store.write_batch([], batch)
    store.add_rate_snapshots(
        [RateSnapshot(T0 + m * 60, {"county": "鹿邑县", "township": f"镇{t}"} if t else {},
                      klass, project, 90 + t, 100)
         for m in range(50) for t in range(4) for klass in (None, 1, 2, 3)
         for project in (None, "雪亮工程")])
    for month in ("2026-10", "2026-11"):
        store.save_inventory_snapshot(month, ({"id": cid, "name": f"点位{i}", "class": 1 + i % 3,
                                               "installed": i % 10 != 0, "lat": 33.86 + i / 1e5}
                                              for i, cid in enumerate(ids)))
    for i in range(30):
        item = store.enqueue("wecom" if i % 2 else "mqtt", f"fp{i}",
                             {"alert": "rate_below_target", "i": i, "text": "在线率低于目标"},
                             T0 + i)
        if i % 3 == 0:
            store.mark_delivered(item, T0 + i + 1)
        elif i % 3 == 1:
            store.mark_failed(item, "HTTP 502 Bad Gateway", T0 + i + 30)
    for i in range(20):
        store.add_exemption(ids[i], T0 + i * 86400, T0 + (i + 3) * 86400, "道路施工", T0)
    store.commit_outbox([], T0, {"alerts": {"fp1": {"starts_at": T0, "status": "firing"}},
                                 "last_sweep": T0 + 5.5, "float_edge": 1e-300})
    from camwatch.repairs.model import Ticket, TicketEvent

    for no in range(1, 4):  # repair tickets and their history
        t = Ticket(no=no, state="核实结案" if no == 1 else "已派单", channels=ids[no:no + 2],
                   opened=T0 + no, fault_since=T0, response_s=7200.0, repair_s=86400.0,
                   reason="timeout", name=f"点位{no}", closed=T0 + 9000.0 if no == 1 else None)
        store.commit_tickets([t], [TicketEvent(no, T0 + no, "opened", "", "待派单"),
                                   TicketEvent(no, T0 + no, "dispatched", "待派单", "已派单",
                                               note="联通维护群", data={"to": ["ops"]})],
                             [("ops", f"ticket-{no}", {"no": no})], T0 + no)
    from camwatch.store.base import QualityChange, QualityState

    # picture quality: states with pictures (bytes) and without, and the change log
    store.write_quality(
        [QualityState(cid, ("ok", "degraded", "unknown")[i % 3], T0 + i, T0, 1 + i % 5,
                      faults=(("black", 2.5 + i),) if i % 3 == 1 else (),
                      scores={"blur": 0.1 * i}, codec="H264" if i % 2 else None,
                      baselines={"day": (0.3, 4)} if i % 4 == 0 else {},
                      jpeg=bytes([i % 256]) * (50 + i) if i % 3 != 2 else None,
                      jpeg_ts=T0 + i if i % 3 != 2 else None,
                      reference=bytes(2304) if i % 3 == 0 else None,
                      fault_jpeg=b"\xff\xd8\x00" * i if i % 3 == 1 else None,
                      fault_ts=T0 + i if i % 3 == 1 else None)
         for i, cid in enumerate(ids[:40])],
        [QualityChange(cid, T0 + i, "unknown", "degraded" if i % 3 == 1 else "ok",
                       ("black", "frozen") if i % 3 == 1 else ())
         for i, cid in enumerate(ids[:40])])
    for month, n in (("2026-10", 3), ("2026-11", 5)):  # GB/T 28181 catalogs of two months
        store.save_gb_catalog(month, "34020000002000000200", T0 + n, {
            "name": "移动云平台", "partial": n == 3, "declared": n,
            "channels": {f"3412000000132000{i:04d}": f"摄像机{i}" for i in range(n)}})
    for day in ("2026-11-29", "2026-11-30"):  # RecordInfo answers (录像完整率)
        for i in range(3):
            store.save_gb_recording(Recording(f"3412000000132000{i:04d}",
                                              "34020000002000000200", day, 3600.0 * (20 + i),
                                              86400.0, i == 2, T0 + i))
    store.close()


def _rows(db: Any, table: str, columns: list[str], pg: bool) -> list[tuple[Any, ...]]:
    order = ", ".join(f'"{c}"' for c in columns)  # SQLite: byte order, NULL first
    if pg:  # the same order: text in the "C" collation (bytes), NULL first
        order = ", ".join(f'"{c}" NULLS FIRST' if c in NUMERIC else
                          f'"{c}" COLLATE "C" NULLS FIRST' for c in columns)
    cols = ", ".join(f'"{c}"' for c in columns)
    return [tuple(r) for r in db.execute(f'SELECT {cols} FROM "{table}" ORDER BY {order}')]


NUMERIC = {"id", "ts", "since", "last_probe", "last_ok", "fails", "oks", "latency_ms",
           "clock_drift_s", "flapping", "class", "online", "connected", "created", "attempts",
           "next_attempt", "delivered", "start", "end", "no", "opened", "final",
           "streak", "width", "height", "jpeg", "jpeg_ts", "scene_ref", "fault_jpeg",
           "fault_ts", "at", "recorded_s", "period_s", "partial"}


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return all(x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x)
                          and math.isnan(y)) for x, y in zip(a, b, strict=True))


def test_a_countys_history_is_copied_without_loss(tmp_path: Path, pg_dsn: str,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "camwatch.db"
    county(src)
    monkeypatch.setenv("CW_MIGRATE_DSN", pg_dsn)
    assert main(["store", "migrate", "--from", str(src), "--to-env", "CW_MIGRATE_DSN"]) == 0
    out, err = capsys.readouterr()
    password = str(psycopg.conninfo.conninfo_to_dict(pg_dsn)["password"])
    assert password not in out + err
    assert "copied and checked row by row" in out and "transitions: 12,000" in out

    # every table, every row, every column: compared here, independently of the command
    lite = sqlite3.connect(src)
    tables = [r[0] for r in lite.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    assert {"channel_state", "transitions", "rate_snapshots", "inventory_snapshots",
            "alert_outbox", "exemptions", "meta", "repair_tickets", "repair_events",
            "gb_catalogs", "gb_recordings"} \
        <= set(tables)
    with psycopg.connect(pg_dsn) as db:
        for table in tables:
            columns = [r[1] for r in lite.execute(f'PRAGMA table_info("{table}")')]
            mine, theirs = _rows(lite, table, columns, False), _rows(db, table, columns, True)
            assert len(mine) == len(theirs), table
            assert mine, f"{table}: the test's county has rows in every table"
            for n, (a, b) in enumerate(zip(mine, theirs, strict=True)):
                assert _same(a, b), f"{table} row {n}: {a} != {b}"
    lite.close()

    # read back through the store as the daemon and the bulletin do
    old, new = SqliteStore(src), PostgresStore(Secret(pg_dsn))
    assert new.load_states() == old.load_states()
    assert list(new.transitions()) == list(old.transitions())
    assert new.last_transition_before(T0 + 1000) == old.last_transition_before(T0 + 1000)
    assert new.rate_snapshots(0, 2 * T0) == old.rate_snapshots(0, 2 * T0)
    assert new.inventory_months() == old.inventory_months() == ["2026-10", "2026-11"]
    assert new.inventory_snapshot("2026-11") == old.inventory_snapshot("2026-11")
    assert new.exemptions() == old.exemptions()
    for receiver in ("wecom", "mqtt"):
        assert new.due(receiver, T0 + 100) == old.due(receiver, T0 + 100)
        assert new.outbox_depth(receiver) == old.outbox_depth(receiver)
    assert new.get_meta("alerts") == old.get_meta("alerts")
    assert new.get_meta("float_edge") == 1e-300

    # the daemon goes on where the county left off: new ids follow the copied ones
    last = max(t.id or 0 for t in old.transitions())
    new.write_batch([], [Transition("x", 2 * T0, "online", "offline", "timeout")])
    assert max(t.id or 0 for t in new.transitions()) == last + 1
    assert new.enqueue("mqtt", "fpN", {}, 2 * T0) == 30 + 3 + 1  # the alerts', the tickets'
    assert new.add_exemption("x", T0, T0 + 1, "r", T0) == 21
    assert [e.id for e in new.ticket_events(3)] == [5, 6] and new.last_ticket_no() == 3
    old.close()
    new.close()


def test_refused_into_a_database_that_holds_a_store(tmp_path: Path, pg_dsn: str) -> None:
    src = tmp_path / "camwatch.db"
    county(src, channels=20, transitions=50)
    store = PostgresStore(Secret(pg_dsn))
    store.set_meta("mine", 1)
    store.close()
    with pytest.raises(StoreError, match=r"already holds 1 rows in meta; migrate into a new "
                                         r"database \(nothing was copied\)"):
        mig.migrate(src, Secret(pg_dsn))
    with psycopg.connect(pg_dsn) as db:
        assert db.execute("SELECT count(*) FROM transitions").fetchone() == (0,)


def test_refused_while_a_daemon_runs_on_the_source(tmp_path: Path, pg_dsn: str) -> None:
    src = tmp_path / "camwatch.db"
    county(src, channels=20, transitions=50)
    lock = StoreLock(src)
    lock.acquire("listening on 127.0.0.1:9780")
    try:
        with pytest.raises(StoreError, match="another camwatch is running on this store"):
            mig.migrate(src, Secret(pg_dsn))
    finally:
        lock.release()


def test_a_table_postgresql_lacks_is_named(tmp_path: Path, pg_dsn: str) -> None:
    """What the lead meets when a SQLite migration has no PostgreSQL twin yet."""
    src = tmp_path / "camwatch.db"
    county(src, channels=20, transitions=50)
    db = sqlite3.connect(src)
    db.execute("CREATE TABLE later_feature (id INTEGER PRIMARY KEY, channel_id TEXT)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=r"table later_feature of .* no such table; this "
                                         r"camwatch's PostgreSQL schema is behind"):
        mig.migrate(src, Secret(pg_dsn))


def test_the_check_catches_a_row_lost_in_the_copy(tmp_path: Path, pg_dsn: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "camwatch.db"
    county(src, channels=20, transitions=50)
    real_copy = mig._copy

    def lossy(lite: Any, db: Any, *args: Any) -> None:
        real_copy(lite, db, *args)
        db.execute("DELETE FROM transitions WHERE id = 17")  # a fault after the copy

    monkeypatch.setattr(mig, "_copy", lossy)
    with pytest.raises(StoreError, match="row 17 of table transitions differs"):
        mig.migrate(src, Secret(pg_dsn))


def test_no_such_source_and_unset_dsn(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CW_NOT_SET", raising=False)
    assert main(["store", "migrate", "--from", str(tmp_path / "none.db"),
                 "--to-env", "CW_NOT_SET"]) == 1
    assert "environment variable CW_NOT_SET is not set" in capsys.readouterr().err
    (tmp_path / "dsn").write_text("postgresql://u:pw@127.0.0.1:1/x\n")
    assert main(["store", "migrate", "--from", str(tmp_path / "none.db"),
                 "--to-file", str(tmp_path / "dsn")]) == 1
    assert "none.db: no SQLite store here" in capsys.readouterr().err
