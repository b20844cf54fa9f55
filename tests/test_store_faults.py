"""Store faults injected into a real SQLite file: an evaluation whose commit fails loses no
alert and marks nothing sent; once the store works, every alert that fired is in the outbox
once, with its first ``starts_at``. And one daemon per store."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from camwatch.config import parse_config
from camwatch.engine import Engine
from camwatch.errors import StoreError
from camwatch.inventory import Channel, Inventory
from camwatch.model import Verdict
from camwatch.probes.result import ProbeResult, Reason
from camwatch.store.lock import StoreLock
from camwatch.store.sqlite import SqliteStore

T0 = 1_800_000_000.0


def _engine(tmp_path: Path, clock: list[float]) -> tuple[Engine, list[Channel]]:
    chs = [Channel(id=f"c{i:03d}", name=f"点位{i}", klass=1, project="雪亮工程",
                   county="鹿邑县", township="城关镇", village=f"村{i % 5}", operator="移动",
                   installed=True, connected=True, host=f"h{i}", rtsp_url="rtsp://127.0.0.1:9/")
           for i in range(40)]
    cfg = parse_config({
        "inventory": {"path": "unused.csv"},
        "probing": {"onvif": False},
        "states": {"fail_threshold": 1},
        "targets": {"min_channels": 5},
        "store": {"path": "state.db"},
        "alerts": {"rules": {"rate_below_target": {"for": "0s", "scopes": ["county"]},
                             "mass_outage": {"enabled": False}},
                   "default_receivers": ["hook"],
                   "receivers": {"hook": {"type": "webhook", "url_env": "NO_SUCH_HOOK"}}},
    }, base_dir=tmp_path)
    store = SqliteStore(cfg.store.path)
    eng = Engine(cfg, Inventory(source="t", channels=chs, rows_read=len(chs)), store,
                 clock=lambda: clock[0])
    return eng, chs


def _judge_all(eng: Engine, chs: list[Channel], ok: bool, now: float) -> None:
    r = ProbeResult.success("describe") if ok else \
        ProbeResult.failure("describe", Reason.REFUSED)
    for c in chs:
        eng.book.judge(c.id, Verdict.of(r), now)


class Flaky:
    """While ``full``, the store's connection fails every write statement with SQLite's
    full-disk error, from inside the real transaction (which is rolled back)."""

    def __init__(self, store: SqliteStore) -> None:
        self.full = True
        self.db = store._db
        store._db = self  # type: ignore[assignment]

    def execute(self, sql: str, *args: Any) -> Any:
        if self.full and sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


@pytest.mark.parametrize("failures", [1, 3])
async def test_alert_that_fires_while_writes_fail_is_sent_once_they_work(
        tmp_path: Path, failures: int) -> None:
    clock = [T0]
    eng, chs = _engine(tmp_path, clock)
    _judge_all(eng, chs, True, T0)
    assert await eng.evaluate() == []
    _judge_all(eng, chs[:10], False, T0 + 60)  # 30/40 = 75 % < 98 %
    clock[0] = T0 + 60
    disk = Flaky(eng.store)
    for i in range(failures):
        clock[0] = T0 + 60 + i
        with pytest.raises(sqlite3.OperationalError):
            await eng.evaluate()
        assert eng.store.outbox_depth() == 0
        assert eng.evaluator.alerts is not None and eng.evaluator.alerts.active_count() == 0
        assert eng.writer.problem is not None and "disk is full" in eng.writer.problem
        assert any("store writes failing" in p for p in eng.problems())
    disk.full = False
    clock[0] = T0 + 75
    fired = await eng.evaluate()  # the store works again
    assert [(a.name, a.status) for a in fired] == [("rate_below_target", "firing")]
    item = eng.store.due("hook", T0 + 75)[0]
    assert item.payload["starts_at"] == fired[0].starts_at
    assert eng.store.outbox_depth() == 1 and eng.writer.problem is None
    assert eng.writer.errors >= failures  # (a best-effort rate snapshot may fail too)
    clock[0] = T0 + 90
    assert await eng.evaluate() == []  # not twice
    eng.close()


async def test_transitions_survive_a_failed_state_write(tmp_path: Path) -> None:
    clock = [T0]
    eng, chs = _engine(tmp_path, clock)
    _judge_all(eng, chs, True, T0)
    states, trans = eng.book.take_writes()
    disk = Flaky(eng.store)
    with pytest.raises(sqlite3.OperationalError):
        await eng.writer.run(lambda s: s.write_batch(states, trans))
    eng.book.restore_writes(states, trans)
    disk.full = False
    states, trans = eng.book.take_writes()
    await eng.writer.run(lambda s: s.write_batch(states, trans))
    assert len(list(eng.store.transitions())) == len(chs)
    eng.close()


def test_second_daemon_on_the_same_store_is_refused(tmp_path: Path) -> None:
    first = StoreLock(tmp_path / "state.db")
    first.acquire("listening on 127.0.0.1:9780")
    with pytest.raises(StoreError, match=r"another camwatch is running on this store "
                                         r"\(pid \d+, listening on 127.0.0.1:9780\)"):
        StoreLock(tmp_path / "state.db").acquire("listening on 127.0.0.1:9781")
    first.release()
    again = StoreLock(tmp_path / "state.db")
    again.acquire("x")  # released: free again
    again.release()


def test_a_townships_outage_is_one_warning_line(tmp_path: Path) -> None:
    """Issue 17: during a mass outage the terminal shows one line for the township; the JSON
    log still has every channel, at INFO."""
    from structlog.testing import capture_logs

    clock = [T0]
    eng, chs = _engine(tmp_path, clock)
    _judge_all(eng, chs, True, T0)
    eng.book.take_log()
    _judge_all(eng, chs[:12], False, T0 + 60)  # 12 channels of 城关镇 at once
    with capture_logs() as logs:
        eng._log_transitions(eng.book.take_log())
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["event"], e["count"], e["township"]) for e in warnings] == [
        ("channels offline", 12, "城关镇")]
    assert warnings[0]["reasons"] == {"refused": 12}
    assert sum(1 for e in logs if e["event"] == "channel offline"
               and e["log_level"] == "info") == 12
    _judge_all(eng, chs[12:14], False, T0 + 61)  # two: a line each, as before
    with capture_logs() as logs:
        eng._log_transitions(eng.book.take_log())
    assert [(e["event"], e["log_level"]) for e in logs] == [("channel offline", "warning")] * 2
    eng.close()


async def test_a_lock_held_by_another_process_delays_alerts_never_loses_them(
        tmp_path: Path) -> None:
    """Another connection (a backup tool, an sqlite3 shell: a process of its own as far as
    SQLite's locks go) holds the store's write lock past the busy timeout: the evaluation
    fails, nothing is marked; once the lock is gone the alert is written, once."""
    clock = [T0]
    eng, chs = _engine(tmp_path, clock)
    _judge_all(eng, chs, True, T0)
    assert await eng.evaluate() == []
    eng.store._db.execute("PRAGMA busy_timeout = 200")  # the writer's connection: 0.2 s
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        _judge_all(eng, chs[:10], False, T0 + 60)
        clock[0] = T0 + 60
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await eng.evaluate()
        assert any("database is locked" in p for p in eng.problems())
    finally:
        other.execute("ROLLBACK")
        other.close()
    clock[0] = T0 + 75
    fired = await eng.evaluate()
    assert [(a.name, a.status) for a in fired] == [("rate_below_target", "firing")]
    assert eng.store.outbox_depth() == 1
    clock[0] = T0 + 90
    assert await eng.evaluate() == []
    eng.close()
