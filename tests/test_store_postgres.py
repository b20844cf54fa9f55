"""The PostgreSQL store on a real server (tests/peers/postgres.py; the contract tests shared with
SQLite are in test_store.py): identity and migrations, the one-daemon lock, the DSN kept
secret, reconnection, paged reads, the one transaction of ``commit_outbox``, and an engine that
restarts on the same database without spurious transitions or re-fired alerts."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from camwatch.config import parse_config
from camwatch.engine import Engine
from camwatch.errors import ConfigError, StoreError
from camwatch.inventory import Channel, Inventory
from camwatch.model import Verdict
from camwatch.probes.result import ProbeResult, Reason
from camwatch.secrets import Secret
from camwatch.store import open_configured, store_lock
from camwatch.store import postgres as pg
from camwatch.store import sqlite as sq
from camwatch.store.base import ChannelState, Transition
from camwatch.store.postgres import PgStoreLock, PostgresStore

T0 = 1_800_000_000.0


def _password(dsn: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(dsn)["password"])


def test_schema_versions_and_columns_match_sqlite(pg_dsn: str, tmp_path: Path) -> None:
    """Schema version N is the same tables and columns in both backends (store migrate copies
    table by table). A table added to SQLite's MIGRATIONS fails here until PostgreSQL's list
    has its entry too."""
    assert pg.SCHEMA_VERSION == sq.SCHEMA_VERSION
    PostgresStore(Secret(pg_dsn)).close()
    lite = sqlite3.connect(tmp_path / "s.db")
    sq.SqliteStore(tmp_path / "s.db").close()
    tables = [r[0] for r in lite.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    with psycopg.connect(pg_dsn) as db:
        for table in tables:
            lite_cols = [r[1] for r in lite.execute(f"PRAGMA table_info({table})")]
            pg_cols = [r[0] for r in db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "AND table_schema = current_schema() ORDER BY ordinal_position", (table,))]
            assert pg_cols == lite_cols, table
    lite.close()


@pytest.mark.parametrize("theirs", [["invoices"], ["meta", "invoices"]])
def test_foreign_database_is_refused_untouched(pg_dsn: str, theirs: list[str]) -> None:
    """Another program's tables (one named like camwatch's, or none): nothing added."""
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        for table in theirs:
            db.execute(f"CREATE TABLE {table} (k TEXT)".encode())
    with pytest.raises(StoreError) as exc:
        PostgresStore(Secret(pg_dsn))
    msg = str(exc.value)
    assert "not a camwatch store" in msg and all(t in msg for t in theirs)
    assert _password(pg_dsn) not in msg
    with psycopg.connect(pg_dsn) as db:
        tables = {r[0] for r in db.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()")}
    assert tables == set(theirs)


def test_stores_opened_at_once_on_a_new_database_migrate_once(pg_dsn: str) -> None:
    """Four threads open the store on an empty database at the same moment: one creates the
    schema under the migration lock, the others wait for it and find it done."""
    gate = threading.Barrier(4)

    def open_one() -> PostgresStore:
        gate.wait(timeout=30)
        return PostgresStore(Secret(pg_dsn))

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_one(), range(4)))
    assert {s.schema_version for s in stores} == {pg.SCHEMA_VERSION}
    with psycopg.connect(pg_dsn) as db:
        assert db.execute("SELECT count(*) FROM camwatch_schema").fetchone() == (1,)
    for s in stores:
        s.close()


def test_wrong_password_names_the_server_never_the_password(pg_dsn: str) -> None:
    bad = pg_dsn.replace(_password(pg_dsn), "not-the-pw-3141")
    with pytest.raises(StoreError) as exc:
        PostgresStore(Secret(bad))
    msg = str(exc.value)
    assert "cannot connect" in msg and "postgresql://camwatch@127.0.0.1:" in msg
    assert "not-the-pw-3141" not in msg and _password(pg_dsn) not in msg
    garbled = "host=127.0.0.1 password=s3cr3t-xyz port=notaport"
    with pytest.raises(StoreError) as exc:
        PostgresStore(Secret(garbled))
    assert "s3cr3t-xyz" not in str(exc.value)


def test_without_the_driver_the_error_says_how_to_install_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from camwatch.cli import main

    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    monkeypatch.delitem(sys.modules, "camwatch.store.postgres")
    monkeypatch.delitem(sys.modules, "camwatch.store.migrate", raising=False)
    monkeypatch.setenv("CW_TEST_DSN", "postgresql://u:pw@127.0.0.1:1/x")
    cfg = parse_config({"inventory": {"path": "x.csv"},
                        "store": {"backend": "postgresql", "dsn_env": "CW_TEST_DSN"}},
                       base_dir=tmp_path)
    for attempt in (lambda: open_configured(cfg.store), lambda: store_lock(cfg.store)):
        with pytest.raises(StoreError, match=r"needs the psycopg 3 driver .*pip install "
                                             r"'camwatch\[postgresql\]'"):
            attempt()
    (tmp_path / "s.db").write_bytes(b"")
    assert main(["store", "migrate", "--from", str(tmp_path / "s.db"),
                 "--to-env", "CW_TEST_DSN"]) == 1
    assert "pip install 'camwatch[postgresql]'" in capsys.readouterr().err


def test_network_defaults_unless_the_dsn_sets_them(pg_dsn: str) -> None:
    """A dead server is noticed within about a minute (keepalives, TCP user timeout); a DSN
    that sets its own values keeps them."""
    store = PostgresStore(Secret(pg_dsn))
    params = psycopg.conninfo.conninfo_to_dict(store._db.info.dsn)
    assert (params["keepalives_idle"], params["tcp_user_timeout"]) == ("30", "60000")
    store.close()
    store = PostgresStore(Secret(pg_dsn + "&keepalives_idle=7"))
    assert psycopg.conninfo.conninfo_to_dict(store._db.info.dsn)["keepalives_idle"] == "7"
    store.close()


def test_config_takes_the_dsn_by_reference(pg_dsn: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    inv = {"path": "unused.csv"}
    with pytest.raises(ConfigError, match=r"\$\.store.*expects exactly one of dsn_env or "
                                          r"dsn_file, got neither"):
        parse_config({"inventory": inv, "store": {"backend": "postgresql"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="dsn_env is for backend postgresql"):
        parse_config({"inventory": inv, "store": {"dsn_env": "X"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"\$\.store\.dsn: unknown key") as exc:
        parse_config({"inventory": inv, "store": {"backend": "postgresql", "dsn": pg_dsn}},
                     base_dir=tmp_path)
    assert _password(pg_dsn) not in str(exc.value)  # an inline DSN is refused, not echoed
    cfg = parse_config({"inventory": inv, "store": {"backend": "postgresql",
                                                    "dsn_env": "CW_TEST_DSN"}},
                       base_dir=tmp_path)
    with pytest.raises(StoreError, match="environment variable CW_TEST_DSN is not set"):
        open_configured(cfg.store)
    assert cfg.unresolved_secrets() == [  # what check-config warns about
        "$.store: environment variable CW_TEST_DSN is not set"]
    monkeypatch.setenv("CW_TEST_DSN", pg_dsn)
    assert cfg.unresolved_secrets() == []
    assert _password(pg_dsn) not in repr(cfg)
    store = open_configured(cfg.store)
    store.set_meta("k", 1)
    store.close()
    (tmp_path / "dsn").write_text(pg_dsn + "\n")
    cfg = parse_config({"inventory": inv, "store": {"backend": "postgresql",
                                                    "dsn_file": "dsn"}}, base_dir=tmp_path)
    store = open_configured(cfg.store)
    assert store.get_meta("k") == 1
    store.close()


HOLDER = """
import sys
from camwatch.secrets import Secret
from camwatch.store.postgres import PgStoreLock
lock = PgStoreLock(Secret(sys.stdin.readline().strip()))
lock.acquire("listening on 127.0.0.1:9780")
print("held", flush=True)
sys.stdin.read()  # until killed
"""


def test_second_daemon_on_the_same_database_is_refused_until_the_first_dies(
        pg_dsn: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(pg_dsn + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "held\n"
        with pytest.raises(StoreError, match=rf"another camwatch is running on this store "
                                             rf"\(camwatch pid {proc.pid}, listening on "
                                             rf"127.0.0.1:9780\)") as exc:
            PgStoreLock(Secret(pg_dsn)).acquire("listening on 127.0.0.1:9781")
        assert _password(pg_dsn) not in str(exc.value)
    finally:
        proc.kill()  # kill -9: its session ends, and the lock with it
        proc.wait()
    second = PgStoreLock(Secret(pg_dsn))
    deadline = time.monotonic() + 30  # the server sees the socket close at once; poll
    while True:
        try:
            second.acquire("listening on 127.0.0.1:9781")
            break
        except StoreError:
            assert time.monotonic() < deadline, "the dead holder's lock was never released"
    second.release()
    again = PgStoreLock(Secret(pg_dsn))
    again.acquire("x")  # released: free again
    again.release()


def _kill_sessions(dsn: str, holder: str) -> None:
    """What a server restart does to the lock's session (the server stays up for the rest)."""
    with psycopg.connect(dsn, autocommit=True) as db:
        killed = db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name LIKE %s", (f"%{holder}",)).fetchall()
    assert killed == [(True,)]


def _holder(dsn: str) -> tuple[int, str] | None:
    """The backend pid and application_name of the session holding the store lock."""
    with psycopg.connect(dsn) as db:
        row = db.execute("SELECT a.pid, a.application_name FROM pg_locks l JOIN "
                         "pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                         "AND l.granted AND l.classid = %s AND l.objid = 0",
                         (pg.APPLICATION_ID,)).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def test_a_lock_lost_with_its_session_is_taken_again(pg_dsn: str) -> None:
    lock = PgStoreLock(Secret(pg_dsn), check_every=0.05)  # its own thread checks
    lock.acquire("listening on 127.0.0.1:9780")
    try:
        first = _holder(pg_dsn)
        assert first is not None
        _kill_sessions(pg_dsn, "listening on 127.0.0.1:9780")
        deadline = time.monotonic() + 30
        while (now := _holder(pg_dsn)) is None or now[0] == first[0]:
            assert time.monotonic() < deadline, "the lock was never taken again"
        assert now[1] == first[1] and lock.problem is None  # ours, on a new session
        with pytest.raises(StoreError, match="another camwatch is running"):
            PgStoreLock(Secret(pg_dsn)).acquire("listening on 127.0.0.1:9781")
    finally:
        lock.release()
    assert _holder(pg_dsn) is None


def test_a_lock_another_daemon_took_meanwhile_is_a_problem(pg_dsn: str) -> None:
    lock = PgStoreLock(Secret(pg_dsn), check_every=3600)  # checked by hand below
    lock.acquire("listening on 127.0.0.1:9780")
    other = PgStoreLock(Secret(pg_dsn), check_every=3600)
    try:
        _kill_sessions(pg_dsn, "listening on 127.0.0.1:9780")
        other.acquire("listening on 127.0.0.1:9781")  # the first's session is gone: free
        assert lock.problem is None
        lock.check()
        assert lock.problem is not None
        assert "lock was lost with its connection" in lock.problem
        assert f"camwatch pid {os.getpid()}, listening on 127.0.0.1:9781" in lock.problem
        assert _password(pg_dsn) not in lock.problem
        other.release()
        lock.check()
        assert lock.problem is None
        holder = _holder(pg_dsn)
        assert holder is not None
        assert holder[1] == f"camwatch pid {os.getpid()}, listening on 127.0.0.1:9780"
    finally:
        other.release()
        lock.release()


def test_store_lock_follows_the_backend(pg_dsn: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CW_TEST_DSN", pg_dsn)
    cfg = parse_config({"inventory": {"path": "x.csv"},
                        "store": {"backend": "postgresql", "dsn_env": "CW_TEST_DSN"}},
                       base_dir=tmp_path)
    lock = store_lock(cfg.store)
    lock.acquire("a")
    with pytest.raises(StoreError, match="another camwatch"):
        store_lock(cfg.store).acquire("b")
    lock.release()
    assert not list(tmp_path.iterdir())  # no lock file for PostgreSQL


def test_commit_outbox_is_one_transaction(pg_dsn: str) -> None:
    """A meta write that fails (a constraint on the real server) takes the outbox items of
    the same call with it."""
    store = PostgresStore(Secret(pg_dsn))
    store.commit_outbox([("hook", "fp0", {"n": 0})], T0, {"alerts": {"fp0": "firing"}})
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        db.execute("ALTER TABLE meta ADD CONSTRAINT no_boom CHECK (key <> 'boom')")
    with pytest.raises(psycopg.errors.CheckViolation):
        store.commit_outbox([("hook", "fp1", {"n": 1}), ("hook", "fp2", {"n": 2})], T0 + 1,
                            {"alerts": {"fp0": "firing", "fp1": "firing"}, "boom": 1})
    assert [i.fingerprint for i in store.due("hook", T0 + 2)] == ["fp0"]
    assert store.get_meta("alerts") == {"fp0": "firing"}
    store.close()


def test_a_broken_connection_is_reopened(pg_dsn: str) -> None:
    store = PostgresStore(Secret(pg_dsn))
    store.write_batch([ChannelState("a", "online")], [])
    with psycopg.connect(pg_dsn, autocommit=True) as db:  # a server restart, as the client sees it
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE application_name = 'camwatch' AND pid <> pg_backend_pid()")
    with pytest.raises(psycopg.OperationalError):
        store.write_batch([ChannelState("a", "offline", "timeout")], [])
    store.write_batch([ChannelState("a", "offline", "timeout")], [])  # the writer's retry
    assert store.load_states()["a"].state == "offline"
    store.close()


def test_reads_page_through_large_results_in_order(pg_dsn: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg, "PAGE", 3)
    store = PostgresStore(Secret(pg_dsn))
    trans = [Transition(f"c{i % 4}", float(i // 2), "online", "offline", "timeout", {"i": i})
             for i in range(11)]  # two per ts: a page boundary falls between equal ts
    store.write_batch([], trans)
    got = list(store.transitions())
    assert [t.detail["i"] for t in got] == list(range(11))
    assert [r[1] for r in store.transition_rows(1.0, 4.0)] == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    store.save_inventory_snapshot("2026-11", ({"id": f"c{i:02d}"} for i in reversed(range(8))))
    assert [r["id"] for r in store.iter_inventory_snapshot("2026-11")] == [
        f"c{i:02d}" for i in range(8)]
    store.close()


def test_full_flush_takes_the_copy_path_and_updates(pg_dsn: str) -> None:
    """Above COPY_ABOVE rows the states go through COPY and one upsert: every row written,
    then every row updated."""
    store = PostgresStore(Secret(pg_dsn))
    n = pg.COPY_ABOVE * 2 + 1
    store.write_batch([ChannelState(f"c{i}", "online", latency_ms=float(i)) for i in range(n)],
                      [])
    store.write_batch([ChannelState(f"c{i}", "offline", "refused", fails=i, info={"i": i})
                       for i in range(n)], [])
    states = store.load_states()
    assert len(states) == n
    assert all((s.state, s.fails, s.info, s.latency_ms) == ("offline", i, {"i": i}, None)
               for i, s in ((int(k[1:]), s) for k, s in states.items()))
    store.close()


def _engine(pg_dsn: str, tmp_path: Path, clock: list[float],
            lock_timeout: float = 30.0) -> tuple[Engine, list[Channel]]:
    chs = [Channel(id=f"c{i:03d}", name=f"点位{i}", klass=1, project="雪亮工程",
                   county="鹿邑县", township="城关镇", village=f"村{i % 5}", operator="移动",
                   installed=True, connected=True, host=f"h{i}", rtsp_url="rtsp://127.0.0.1:9/")
           for i in range(40)]
    os.environ["CW_TEST_ENGINE_DSN"] = pg_dsn
    cfg = parse_config({
        "inventory": {"path": "unused.csv"},
        "probing": {"onvif": False},
        "states": {"fail_threshold": 1},
        "targets": {"min_channels": 5},
        "store": {"backend": "postgresql", "dsn_env": "CW_TEST_ENGINE_DSN"},
        "alerts": {"rules": {"rate_below_target": {"for": "0s", "scopes": ["county"]},
                             "mass_outage": {"enabled": False}},
                   "default_receivers": ["hook"],
                   "receivers": {"hook": {"type": "webhook", "url_env": "NO_SUCH_HOOK"}}},
    }, base_dir=tmp_path)
    from camwatch.store.writer import StoreWriter

    eng = Engine(cfg, Inventory(source="t", channels=chs, rows_read=len(chs)),
                 open_configured(cfg.store),
                 StoreWriter(PostgresStore(Secret(pg_dsn), lock_timeout=lock_timeout)),
                 clock=lambda: clock[0])
    return eng, chs


def _judge(eng: Engine, chs: list[Channel], ok: bool, now: float) -> None:
    r = ProbeResult.success("describe") if ok else \
        ProbeResult.failure("describe", Reason.REFUSED)
    for c in chs:
        eng.book.judge(c.id, Verdict.of(r), now)


async def test_engine_restarts_from_committed_states_without_refiring(
        pg_dsn: str, tmp_path: Path) -> None:
    """The restart guarantee on PostgreSQL: a new engine (another process, another machine)
    on the same database starts from the committed states and the alert evaluator's state:
    no transition for a channel that did not change, no second notification."""
    clock = [T0]
    eng, chs = _engine(pg_dsn, tmp_path, clock)
    _judge(eng, chs, True, T0)
    assert await eng.evaluate() == []
    clock[0] = T0 + 60
    _judge(eng, chs[:10], False, T0 + 60)  # 30/40 = 75 % < 98 %
    fired = await eng.evaluate()
    assert [(a.name, a.status) for a in fired] == [("rate_below_target", "firing")]
    states, trans = eng.book.take_writes()
    await eng.writer.run(lambda s: s.write_batch(states, trans))
    committed = len(list(eng.store.transitions()))
    assert committed == 50  # 40 unknown -> online, 10 online -> offline
    eng.close()
    eng.store.close()
    eng.writer.store.close()

    clock[0] = T0 + 120
    eng2, _ = _engine(pg_dsn, tmp_path, clock)
    assert eng2.book.states["c000"].state == "offline"
    assert eng2.book.states["c039"].state == "online"
    _judge(eng2, chs[:10], False, T0 + 120)
    _judge(eng2, chs[10:], True, T0 + 120)
    assert await eng2.evaluate() == []  # still firing: not sent again
    states, trans = eng2.book.take_writes()
    assert trans == []
    assert eng2.store.outbox_depth("hook") == 1
    eng2.close()
    eng2.store.close()
    eng2.writer.store.close()


async def test_a_lock_held_by_another_session_delays_alerts_never_loses_them(
        pg_dsn: str, tmp_path: Path) -> None:
    """Another session (a maintenance job, a psql shell) holds a lock on the outbox past the
    writer's lock timeout: the evaluation fails and marks nothing; once the lock is gone the
    alert is written, once."""
    clock = [T0]
    eng, chs = _engine(pg_dsn, tmp_path, clock, lock_timeout=0.2)
    _judge(eng, chs, True, T0)
    assert await eng.evaluate() == []
    other = psycopg.connect(pg_dsn)
    other.execute("LOCK TABLE alert_outbox IN EXCLUSIVE MODE")  # held until rollback
    try:
        _judge(eng, chs[:10], False, T0 + 60)
        clock[0] = T0 + 60
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await eng.evaluate()
        assert any("lock timeout" in p for p in eng.problems())
        assert eng.evaluator.alerts is not None and eng.evaluator.alerts.active_count() == 0
    finally:
        other.rollback()
        other.close()
    clock[0] = T0 + 75
    fired = await eng.evaluate()
    assert [(a.name, a.status) for a in fired] == [("rate_below_target", "firing")]
    assert eng.store.outbox_depth() == 1
    clock[0] = T0 + 90
    assert await eng.evaluate() == []
    eng.close()
    eng.store.close()
    eng.writer.store.close()
