from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from camwatch.errors import StoreError
from camwatch.secrets import Secret
from camwatch.store import ChannelState, RateSnapshot, Store, Transition, open_store
from camwatch.store.sqlite import SCHEMA_VERSION

# The store's contract tests run against both backends: SQLite in tmp_path, and a real
# PostgreSQL (a new database per test on the tests' own cluster, tests/peers/postgres.py).
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def target(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the store lives: a file path for SQLite, a DSN for PostgreSQL."""
    if backend == "postgresql":
        return str(request.getfixturevalue("pg_dsn"))
    return str(tmp_path / "state" / "camwatch.db")


@pytest.fixture
def new_store(backend: str, target: str) -> Callable[[], Store]:
    """Opens the test's store (again: each call is a new connection to the same store)."""
    def make() -> Store:
        if backend == "postgresql":
            from camwatch.store.postgres import PostgresStore

            return PostgresStore(Secret(target))
        return open_store(target)
    return make


def test_roundtrip_and_private_file(backend: str, target: str,
                                    new_store: Callable[[], Store]) -> None:
    store = new_store()
    store.write_batch(
        [ChannelState("a", "offline", "refused", since=10.0, fails=3, info={"v": "海康"})],
        [Transition("a", 10.0, "online", "offline", "refused", {"detail": "x"})])
    store.close()
    if backend == "sqlite":
        path = Path(target)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    store = new_store()
    st = store.load_states()["a"]
    assert (st.state, st.reason, st.fails, st.info) == ("offline", "refused", 3, {"v": "海康"})
    (t,) = list(store.transitions())
    assert (t.channel_id, t.from_state, t.to_state, t.detail) == ("a", "online", "offline",
                                                                  {"detail": "x"})
    store.close()


def test_transitions_window_and_state_at_start(new_store: Callable[[], Store]) -> None:
    store = new_store()
    store.write_batch([], [Transition("a", 1.0, "unknown", "online"),
                           Transition("a", 5.0, "online", "offline", "timeout"),
                           Transition("b", 2.0, "unknown", "offline", "refused"),
                           Transition("a", 9.0, "offline", "online")])
    assert [t.ts for t in store.transitions(2.0, 9.0)] == [2.0, 5.0]
    assert [t.ts for t in store.transitions(channel_ids=["b"])] == [2.0]
    before = store.last_transition_before(6.0)
    assert before["a"].to_state == "offline" and before["b"].to_state == "offline"
    assert "a" not in store.last_transition_before(1.0)


def test_transitions_without_detail(new_store: Callable[[], Store]) -> None:
    """What bulk readers use: the same transitions, in the same order, without decoding
    ``detail``; as objects or as plain (channel_id, ts, from, to, reason) rows."""
    store = new_store()
    store.write_batch([], [Transition("a", 1.0, "unknown", "online"),
                           Transition("a", 5.0, "online", "offline", "timeout", {"x": 1}),
                           Transition("b", 5.0, "unknown", "offline", "refused"),
                           Transition("a", 9.0, "offline", "online")])
    full = list(store.transitions(2.0, 9.0))
    lean = list(store.transitions(2.0, 9.0, with_detail=False))
    assert [t.detail for t in full] == [{"x": 1}, {}]
    assert [t.detail for t in lean] == [{}, {}]
    assert [(t.channel_id, t.ts, t.reason, t.id) for t in lean] == [
        (t.channel_id, t.ts, t.reason, t.id) for t in full]
    (b,) = store.transitions(channel_ids=["b"], with_detail=False)
    assert (b.reason, b.detail) == ("refused", {})
    assert list(store.transition_rows(2.0, 9.0)) == [("a", 5.0, "online", "offline", "timeout"),
                                                     ("b", 5.0, "unknown", "offline", "refused")]
    assert [r[1] for r in store.transition_rows()] == [1.0, 5.0, 5.0, 9.0]
    before = store.last_transition_before(6.0, with_detail=False)
    assert before["a"].to_state == "offline" and before["a"].detail == {}
    assert store.last_transition_before(6.0)["a"].detail == {"x": 1}


def test_inventory_snapshot_streamed(new_store: Callable[[], Store]) -> None:
    store = new_store()
    store.save_inventory_snapshot("2026-11", [{"id": "b", "township": "城关镇"}, {"id": "a"}])
    rows = store.iter_inventory_snapshot("2026-11")
    assert next(rows) == {"id": "a"}
    assert list(rows) == [{"id": "b", "township": "城关镇"}]
    assert list(store.iter_inventory_snapshot("2026-10")) == []
    assert list(store.iter_inventory_snapshot("2026-11")) == store.inventory_snapshot("2026-11")


def test_gb_catalogs_latest_per_month_and_platform(new_store: Callable[[], Store]) -> None:
    store = new_store()
    a = {"name": "移动云", "partial": False, "declared": 2, "channels": {"c1": "东门", "c2": ""}}
    store.save_gb_catalog("2026-11", "p1", 10.0, a)
    store.save_gb_catalog("2026-11", "p2", 11.0, {**a, "channels": {}})
    store.save_gb_catalog("2026-11", "p1", 12.0, {**a, "partial": True})  # replaces p1's
    store.save_gb_catalog("2026-12", "p1", 13.0, a)
    store.close()
    store = new_store()  # what was committed, read by another connection
    got = store.gb_catalogs("2026-11")
    assert list(got) == ["p1", "p2"]
    assert got["p1"] == {**a, "partial": True, "at": 12.0}
    assert got["p2"]["channels"] == {} and store.gb_catalogs("2026-10") == {}
    assert store.gb_catalogs("2026-12")["p1"]["at"] == 13.0


def test_gb_recordings_one_per_channel_and_day(new_store: Callable[[], Store]) -> None:
    from camwatch.store.base import Recording

    store = new_store()
    a = Recording("c1", "p1", "2026-11-29", 3600.0, 86400.0, False, 10.0)
    store.save_gb_recording(a)
    store.save_gb_recording(Recording("c1", "p2", "2026-11-29", 7200.0, 86400.0, True, 20.0))
    store.save_gb_recording(Recording("c2", "p1", "2026-11-30", 86400.0, 86400.0, False, 30.0))
    store.save_gb_recording(Recording("c1", "p1", "2026-12-01", 0.0, 86400.0, False, 40.0))
    store.close()
    store = new_store()
    got = store.gb_recordings("2026-11-01", "2026-11-30")
    assert got == [Recording("c1", "p2", "2026-11-29", 7200.0, 86400.0, True, 20.0),
                   Recording("c2", "p1", "2026-11-30", 86400.0, 86400.0, False, 30.0)]
    assert store.gb_recordings("2026-12-01", "2026-12-31")[0].recorded_s == 0.0


def test_outbox_in_order_with_retries(new_store: Callable[[], Store]) -> None:
    store = new_store()
    ids = [store.enqueue("wecom", f"fp{i}", {"n": i}, now=100.0) for i in range(3)]
    store.enqueue("mqtt", "fpX", {"n": 9}, now=100.0)
    assert [i.payload["n"] for i in store.due("wecom", 100.0)] == [0, 1, 2]
    store.mark_failed(ids[0], "HTTP 502", next_attempt=130.0)
    # the head waits for its retry: nothing behind it overtakes it
    assert store.due("wecom", 110.0) == []
    (head, *_rest) = store.due("wecom", 130.0)
    assert head.id == ids[0] and head.attempts == 1 and head.last_error == "HTTP 502"
    store.mark_delivered(ids[0], 131.0)
    assert [i.payload["n"] for i in store.due("wecom", 131.0)] == [1, 2]
    assert store.outbox_depth("wecom") == 2 and store.outbox_depth() == 3


def test_tickets_events_and_their_outbox_items_in_one_commit(
        new_store: Callable[[], Store]) -> None:
    from camwatch.repairs.model import Ticket, TicketEvent

    store = new_store()
    t = Ticket(no=1, state="已派单", channels=["c1", "c2"], opened=100.0, fault_since=90.0,
               response_s=7200.0, repair_s=86400.0, reason="timeout", name="点位一",
               township="城关镇", operator="联通", klass=1)
    store.commit_tickets([t], [TicketEvent(1, 100.0, "opened", "", "待派单"),
                               TicketEvent(1, 100.0, "dispatched", "待派单", "已派单",
                                           note="联通维护群")],
                         [("ops", "ticket-1", {"no": 1})], now=100.0)
    t.state, t.acked, t.acked_by = "已响应", 160.0, "张三"
    store.commit_tickets([t], [TicketEvent(1, 160.0, "acknowledged", "已派单", "已响应",
                                           by="张三")], [], now=160.0)
    (back,) = store.tickets(open_only=True)
    assert (back.no, back.state, back.acked_by, back.channels) == (1, "已响应", "张三",
                                                                   ["c1", "c2"])
    assert store.ticket(1) == back and store.ticket(2) is None
    assert [(e.kind, e.to_state, e.by) for e in store.ticket_events(1)] == [
        ("opened", "待派单", "camwatch"), ("dispatched", "已派单", "camwatch"),
        ("acknowledged", "已响应", "张三")]
    assert [i.payload for i in store.due("ops", 200.0)] == [{"no": 1}]
    assert store.last_ticket_no() == 1
    t.state, t.closed = "核实结案", 500.0
    store.commit_tickets([t], [], [], now=500.0)
    assert store.tickets(open_only=True) == [] and store.tickets(since=400.0) == [t]
    assert store.tickets(since=600.0) == []


def test_snapshots_and_meta(new_store: Callable[[], Store]) -> None:
    store = new_store()
    store.save_inventory_snapshot("2026-11", [{"id": "b", "installed": True},
                                              {"id": "a", "installed": False}])
    store.save_inventory_snapshot("2026-11", [{"id": "a", "installed": True}])  # replaces
    store.save_inventory_snapshot("2026-10", [{"id": "a", "installed": False}])
    assert store.inventory_snapshot("2026-11") == [{"id": "a", "installed": True}]
    assert store.inventory_months() == ["2026-10", "2026-11"]
    store.add_rate_snapshots([RateSnapshot(5.0, {"county": "鹿邑县"}, 1, None, 48, 50)])
    (snap,) = store.rate_snapshots(0.0, 10.0)
    assert snap.scope == {"county": "鹿邑县"} and (snap.online, snap.connected) == (48, 50)
    store.set_meta("alerts", {"x": [1, 2]})
    assert store.get_meta("alerts") == {"x": [1, 2]} and store.get_meta("nope") is None


def test_newer_schema_refused(backend: str, target: str,
                              new_store: Callable[[], Store]) -> None:
    new_store().close()
    if backend == "postgresql":
        import psycopg

        with psycopg.connect(target, autocommit=True) as pg:
            pg.execute("UPDATE camwatch_schema SET version = version + 1")
    else:
        db = sqlite3.connect(target)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.close()
    with pytest.raises(StoreError, match="newer than this camwatch understands"):
        new_store()


WRITER = """
import sys
from camwatch.secrets import Secret
from camwatch.store import open_store, Transition, ChannelState
if sys.argv[1] == "postgresql":
    from camwatch.store.postgres import PostgresStore
    store = PostgresStore(Secret(sys.stdin.readline().strip()))  # the DSN: not in argv
else:
    store = open_store(sys.argv[2])
for n in range(100000):
    store.write_batch([ChannelState(f"c{n % 50}", "offline")],
                      [Transition(f"c{n % 50}", float(n), "online", "offline", "timeout")])
    print(n, flush=True)  # printed only after the commit returned
"""


def test_kill_9_loses_no_committed_transition(backend: str, target: str,
                                              new_store: Callable[[], Store]) -> None:
    where = target if backend == "sqlite" else "-"  # a DSN goes through stdin, not argv
    proc = subprocess.Popen([sys.executable, "-c", WRITER, backend, where],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdin.write(target + "\n")
    proc.stdin.close()
    acknowledged = -1
    deadline = time.monotonic() + 60
    while acknowledged < 200 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acknowledged = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert acknowledged >= 200, "writer did not get going"
    store = new_store()
    stored = {int(t.ts) for t in store.transitions()}
    assert set(range(acknowledged + 1)) <= stored


# --- which files are camwatch stores (PRAGMA application_id) -----------------------------------


def _foreign(path: Path, user_version: int = 0, application_id: int = 0,
             table: bool = True) -> bytes:
    """Another program's SQLite file, in the default rollback-journal mode; its bytes."""
    db = sqlite3.connect(path)
    if table:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        db.execute("INSERT INTO invoices VALUES (1, 9.5)")
    db.execute(f"PRAGMA user_version = {user_version}")
    db.execute(f"PRAGMA application_id = {application_id}")
    db.commit()
    db.close()
    return path.read_bytes()


def _pragma(path: Path, name: str) -> object:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        db.close()


def test_new_store_is_stamped_with_camwatch_application_id(tmp_path: Path) -> None:
    from camwatch.store.sqlite import APPLICATION_ID

    path = tmp_path / "s.db"
    open_store(path).close()
    assert _pragma(path, "application_id") == APPLICATION_ID == 0x43616D57
    assert _pragma(path, "user_version") == SCHEMA_VERSION
    open_store(path).close()  # and opened again as ours


@pytest.mark.parametrize(("user_version", "application_id", "table", "owner"), [
    (0, 0, True, "no application_id"),  # was: camwatch's tables silently added to it
    (1, 0, True, "no application_id"),  # was: half-migrated, then a crash
    (2, 0, True, "no application_id"),
    (0, 0x47504B47, False, "application_id 0x47504b47"),  # an empty GeoPackage
    (0, 0x47504B47, True, "application_id 0x47504b47"),
    (5, 0, False, "no application_id"),  # nothing in it, but someone set a version
])
def test_foreign_sqlite_file_is_refused_untouched(tmp_path: Path, user_version: int,
                                                  application_id: int, table: bool,
                                                  owner: str) -> None:
    path = tmp_path / "accounts.db"
    before = _foreign(path, user_version, application_id, table)
    with pytest.raises(StoreError) as exc:
        open_store(path)
    msg = str(exc.value)
    assert str(path) in msg and "not a camwatch store" in msg and owner in msg
    assert "0x43616d57" in msg
    if table:
        assert "invoices" in msg
    # nothing written: not switched to WAL, no table added, not a byte changed
    assert path.read_bytes() == before
    assert _pragma(path, "journal_mode") == "delete"
    assert not (tmp_path / "accounts.db-wal").exists()


def test_store_made_before_application_id_is_adopted(tmp_path: Path) -> None:
    """A store of an earlier camwatch (application_id 0, camwatch's tables) keeps its data."""
    path = tmp_path / "s.db"
    store = open_store(path)
    store.write_batch([ChannelState("a", "offline", "refused")],
                      [Transition("a", 10.0, "online", "offline", "refused")])
    store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id = 0")
    db.close()
    assert _pragma(path, "application_id") == 0
    store = open_store(path)
    assert store.load_states()["a"].reason == "refused"
    assert len(list(store.transitions())) == 1
    store.close()
    assert _pragma(path, "application_id") == 0x43616D57


def test_schema_1_store_made_before_application_id_is_migrated_and_stamped(
        tmp_path: Path) -> None:
    from camwatch.store.sqlite import MIGRATIONS, _split_sql

    path = tmp_path / "s.db"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in _split_sql(MIGRATIONS[0]):
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.close()
    store = open_store(path)
    assert store.exemptions() == []  # migration 2 ran
    store.close()
    assert _pragma(path, "user_version") == SCHEMA_VERSION
    assert _pragma(path, "application_id") == 0x43616D57


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"channel_id,state\n" * 100)
    with pytest.raises(StoreError, match="cannot open the store"):
        open_store(path)


def test_quality_state_and_changes_roundtrip(new_store: Callable[[], Store]) -> None:
    """Picture quality (issue #13): the last verdict per channel with its pictures, upserted
    (a row without a picture keeps the stored one), the change log read by period, the state
    at a period start, and the channel's quality state deleted with its channel state."""
    from camwatch.store.base import QualityChange, QualityState

    store = new_store()
    jpeg, ref, bad = b"\xff\xd8ok\x00", bytes(range(256)) * 9, b"\xff\xd8black"
    store.write_quality(
        [QualityState("a", "ok", 100.0, 100.0, 1, scores={"blur": 0.25},
                      baselines={"day": (0.25, 1)}, width=1920, height=1080, codec="H264",
                      latency_ms=812.5, jpeg=jpeg, jpeg_ts=100.0, reference=ref),
         QualityState("b", "degraded", 100.0, 100.0, 1, faults=(("black", 3.5),),
                      jpeg=bad, jpeg_ts=100.0, fault_jpeg=bad, fault_ts=100.0)],
        [QualityChange("a", 100.0, "unknown", "ok"),
         QualityChange("b", 100.0, "unknown", "degraded", ("black",))])
    # a later sample of b that could not be decoded: quality unknown, no new picture
    store.write_quality([QualityState("b", "unknown", 200.0, 200.0, 1, reason="decode",
                                      detail="corrupt IDR")],
                        [QualityChange("b", 200.0, "degraded", "unknown")])
    store.write_quality([], [QualityChange("b", 300.0, "unknown", "degraded",
                                           ("frozen", "black"))])
    store.close()

    store = new_store()
    got = store.load_quality()
    a, b = got["a"], got["b"]
    assert (a.quality, a.ts, a.since, a.streak, a.scores, a.baselines) == (
        "ok", 100.0, 100.0, 1, {"blur": 0.25}, {"day": (0.25, 1)})
    assert (a.width, a.height, a.codec, a.latency_ms) == (1920, 1080, "H264", 812.5)
    assert (a.jpeg, a.reference, a.fault_jpeg) == (jpeg, ref, None)
    assert (b.quality, b.reason, b.detail, b.faults) == ("unknown", "decode", "corrupt IDR",
                                                         ())
    assert (b.jpeg, b.jpeg_ts, b.fault_jpeg, b.fault_ts) == (bad, 100.0, bad, 100.0)
    light = store.load_quality(with_pictures=False)["b"]
    assert (light.jpeg, light.fault_jpeg, light.reference) == (None, None, None)
    assert store.fault_pictures(["a", "b", "nope"]) == {"b": (100.0, bad)}
    assert list(store.quality_changes(100.0, 300.0)) == [
        ("a", 100.0, "unknown", "ok", ""), ("b", 100.0, "unknown", "degraded", "black"),
        ("b", 200.0, "degraded", "unknown", "")]
    assert [r[1] for r in store.quality_changes(start=150.0)] == [200.0, 300.0]
    before = store.last_quality_before(300.0)
    assert {k: (c.ts, c.to_quality) for k, c in before.items()} == {
        "a": (100.0, "ok"), "b": (200.0, "unknown")}
    last = store.last_quality_before(301.0)["b"]
    assert (last.to_quality, last.faults) == ("degraded", ("frozen", "black"))
    store.delete_states(["b"])
    assert set(store.load_quality()) == {"a"}
    store.close()
