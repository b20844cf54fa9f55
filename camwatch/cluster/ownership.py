"""Which instance owns which shard: PostgreSQL's session-level advisory locks, nothing of
camwatch's own.

Each instance holds one connection of its own (:class:`ShardOwnership`) on which it takes
``pg_try_advisory_lock(APPLICATION_ID, 1 + shard)`` for shards nobody holds, up to
``cluster.max_shards_per_instance``. PostgreSQL keeps a session's advisory locks until it
unlocks them or the session ends, a ``kill -9`` of the instance or a cut connection included
(the server notices the dead client through TCP keepalives, :data:`NETWORK_DEFAULTS`): so the
lock table *is* the ownership table, and a crashed instance's shards are free as soon as its
session is gone. Every instance tries the free shards every ``cluster.takeover / 3``, so a
freed shard has a new owner within the takeover time.

Heartbeats go to the table ``cluster_instances`` (one row per running instance: its shards,
pid, address, last heartbeat, takeovers), for ``/api/cluster`` and ``camwatch status
--cluster``; a claim of a shard that another instance's row still lists is a takeover, logged
and kept in ``cluster_takeovers``. These tables are the cluster's, not the store's schema:
created here if missing, never copied by ``store migrate`` (heartbeats are live, not
history). The lock keys (``APPLICATION_ID``, n) are shared with the store: n = 0 the
one-daemon lock (taken *shared* by the instances of a cluster, so that a camwatch outside it,
which takes it exclusively, and the cluster keep each other out), -1 migrations, 1 + shard a
shard.

Not a fence: the instance that lost its session learns it at its next check (the same period
as the others' claims), so a shard may be probed by two instances for up to
``takeover / 3`` after a connection loss that did not kill the instance. Probing twice is
harmless; the writes of both are the same channels' states (docs/scale-out.md).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog

from camwatch.cluster.config import ClusterConfig
from camwatch.errors import StoreError, short_error
from camwatch.secrets import Secret
from camwatch.store.postgres import (
    APPLICATION_ID,
    LOCK_STORE,
    PostgresStore,
    connect,
    describe_dsn,
)

__all__ = ["SHARD_LOCK_BASE", "ClusterView", "ShardOwnership", "default_instance", "view"]

log = structlog.get_logger(__name__)

SHARD_LOCK_BASE = 1  # shard s is the advisory lock (APPLICATION_ID, SHARD_LOCK_BASE + s)
# one instance at a time does what is the city's, not a shard's (the month's inventory
# snapshot of the whole file): whoever holds (APPLICATION_ID, LOCK_COORDINATOR)
LOCK_COORDINATOR = -2
KEEP_TAKEOVERS = 200  # rows of cluster_takeovers kept (the newest)
# a dead instance's row (its session gone) is shown this long, then deleted: with the
# default names (host:pid) every restart is a new instance
KEEP_DEAD_S = 3600.0

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cluster_instances (
        instance TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        listen TEXT NOT NULL,
        backend_pid INTEGER NOT NULL,
        shards INTEGER[] NOT NULL,
        started DOUBLE PRECISION NOT NULL,
        heartbeat DOUBLE PRECISION NOT NULL,
        takeovers INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS cluster_takeovers (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        shard INTEGER NOT NULL,
        from_instance TEXT NOT NULL,
        to_instance TEXT NOT NULL)""",
)


def default_instance() -> str:
    """``host:pid``: unique on a machine, readable in ``pg_stat_activity``."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}"


def _order(instance: str, shards: int) -> list[int]:
    """The order in which an instance tries the shards: all of them, starting at a place of
    its own (CRC-32 of its name), so instances started together with a
    ``max_shards_per_instance`` spread over the shards instead of all trying shard 0 first."""
    start = zlib.crc32(instance.encode("utf-8")) % shards
    return [(start + i) % shards for i in range(shards)]


class ShardOwnership:
    """The shards this instance owns, on a connection of its own. :meth:`start` claims the
    first, :meth:`tick` (every ``takeover / 3``, from a worker thread: it does I/O) checks the
    session, claims free shards and beats the heart; :meth:`release` gives everything back.
    Each returns the owned shards; the caller probes exactly those."""

    def __init__(self, dsn: Secret, cfg: ClusterConfig, listen: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.dsn = dsn
        self.where = describe_dsn(dsn)
        self.cfg = cfg
        self.instance = cfg.instance or default_instance()
        self.listen = listen
        self.clock = clock
        self.started = clock()
        self.owned: frozenset[int] = frozenset()
        self.takeovers = 0
        self.claims = 0
        self.coordinator = False
        self.lost = 0  # sessions lost (with every shard they held)
        self.problem: str | None = None  # for /healthz: why this instance may own nothing
        self._db: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()  # tick() from a thread, release() from the loop's end

    @property
    def limit(self) -> int:
        n = self.cfg.max_shards_per_instance
        return self.cfg.shards if n is None else min(n, self.cfg.shards)

    @property
    def interval(self) -> float:
        """How often :meth:`tick` runs: a third of the takeover time."""
        return self.cfg.takeover / 3.0

    def start(self) -> frozenset[int]:
        """Connect, refuse a second instance of the same name, claim. A
        :class:`StoreError` when PostgreSQL cannot be reached or the name is taken."""
        # the store's schema first (made or checked, as the daemon's store does): the
        # cluster's tables then join a camwatch schema instead of making an empty database
        # look like another program's to the store
        PostgresStore(self.dsn).close()
        with self._lock:
            self._db = self._connect()
            try:
                self._refuse_duplicate(self._db)
            except BaseException:
                self._close()
                raise
            return self._claim_and_beat()

    def acquire(self, holder: str) -> None:
        """As the daemon's store lock (:class:`camwatch.store.Lock`): :meth:`start`, the
        holder (``listening on ADDRESS``) shown to the others."""
        self.listen = holder.removeprefix("listening on ")
        self.start()

    def tick(self) -> frozenset[int]:
        """Check the session (a lost one lost every shard with it), claim free shards up to the
        limit, write the heartbeat. Never raises: a failure is :attr:`problem` and no shard."""
        with self._lock:
            db = self._db
            if db is not None and not db.broken and not db.closed:
                try:
                    db.execute("SELECT 1")
                except psycopg.Error:
                    pass
                else:
                    return self._claim_and_beat()
            if self.owned:
                log.error("cluster session lost: its shards are no longer ours",
                          shards=sorted(self.owned), instance=self.instance)
                self.lost += 1
            self.owned = frozenset()
            self.coordinator = False
            self._close()
            try:
                self._db = self._connect()
            except StoreError as exc:
                self.problem = f"cluster: cannot reach PostgreSQL to own shards: {exc}"
                return self.owned
            return self._claim_and_beat()

    def release(self) -> None:
        """Give every shard back at once (a shutdown): unlock, drop the heartbeat row, close.
        Another instance claims them at its next tick."""
        with self._lock:
            db = self._db
            if db is not None and not db.broken and not db.closed:
                try:
                    db.execute("DELETE FROM cluster_instances WHERE instance = %s",
                               (self.instance,))
                    db.execute("SELECT pg_advisory_unlock_all()")
                except psycopg.Error as exc:
                    log.warning("cluster release failed; the session's end frees the shards",
                                error=short_error(exc))
            if self.owned:
                log.info("shards released", shards=sorted(self.owned), instance=self.instance)
            self.owned = frozenset()
            self.coordinator = False
            self._close()

    # --- inside ------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        db = connect(self.dsn, f"camwatch cluster {self.instance}")
        try:
            for sql in SCHEMA:
                db.execute(sql)
            # the store's one-daemon lock, shared: instances of a cluster hold it together,
            # and a camwatch outside the cluster (which takes it exclusively) is refused
            # while any of them runs, and keeps them out while it runs
            row = db.execute("SELECT pg_try_advisory_lock_shared(%s, %s)",
                             (APPLICATION_ID, LOCK_STORE)).fetchone()
            if row is None or not row[0]:
                raise StoreError(
                    f"{self.where}: a camwatch outside the cluster (cluster.enabled false) "
                    f"runs on this store; stop it, or give the cluster its own database")
        except psycopg.Error as exc:
            db.close()
            raise StoreError(f"{self.where}: cannot set up the cluster tables: "
                             f"{short_error(exc)}") from None
        except BaseException:
            db.close()
            raise
        return db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()  # the session's end frees its locks
            self._db = None

    def _refuse_duplicate(self, db: psycopg.Connection[Any]) -> None:
        """Two instances of one name would each take the other's row for its own."""
        row = db.execute(
            "SELECT c.pid, c.listen FROM cluster_instances c JOIN pg_stat_activity a "
            "ON a.pid = c.backend_pid AND a.application_name = %s WHERE c.instance = %s",
            (f"camwatch cluster {self.instance}"[:63], self.instance)).fetchone()
        if row is not None:
            raise StoreError(
                f"{self.where}: another camwatch runs as cluster instance {self.instance!r} "
                f"(pid {row[0]}, listening on {row[1]}); give each its own cluster.instance")

    def _claim_and_beat(self) -> frozenset[int]:
        db = self._db
        assert db is not None
        try:
            owned = set(self.owned)
            if not self.coordinator:
                row = db.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                 (APPLICATION_ID, LOCK_COORDINATOR)).fetchone()
                self.coordinator = bool(row and row[0])
            others = self._listed_elsewhere(db)
            for shard in _order(self.instance, self.cfg.shards):
                if len(owned) >= self.limit:
                    break
                if shard in owned:
                    continue
                row = db.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                 (APPLICATION_ID, SHARD_LOCK_BASE + shard)).fetchone()
                if row is None or not row[0]:
                    continue
                owned.add(shard)
                self.claims += 1
                previous = others.get(shard)
                if previous is not None:
                    self.takeovers += 1
                    log.warning("shard taken over", shard=shard, instance=self.instance,
                                previous=previous)
                    db.execute("INSERT INTO cluster_takeovers (ts, shard, from_instance, "
                               "to_instance) VALUES (%s, %s, %s, %s)",
                               (self.clock(), shard, previous, self.instance))
                    db.execute("DELETE FROM cluster_takeovers WHERE id <= (SELECT max(id) "
                               "FROM cluster_takeovers) - %s", (KEEP_TAKEOVERS,))
                else:
                    log.info("shard claimed", shard=shard, instance=self.instance)
            self.owned = frozenset(owned)
            db.execute(
                "INSERT INTO cluster_instances (instance, pid, listen, backend_pid, shards, "
                "started, heartbeat, takeovers) VALUES (%s, %s, %s, pg_backend_pid(), %s, %s, "
                "%s, %s) ON CONFLICT (instance) DO UPDATE SET pid = EXCLUDED.pid, listen = "
                "EXCLUDED.listen, backend_pid = EXCLUDED.backend_pid, shards = "
                "EXCLUDED.shards, heartbeat = EXCLUDED.heartbeat, takeovers = "
                "EXCLUDED.takeovers, started = EXCLUDED.started",
                (self.instance, os.getpid(), self.listen, sorted(self.owned), self.started,
                 self.clock(), self.takeovers))
            db.execute(
                "DELETE FROM cluster_instances c WHERE c.heartbeat < %s AND NOT EXISTS "
                "(SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.backend_pid)",
                (self.clock() - KEEP_DEAD_S,))
        except psycopg.Error as exc:
            # what was claimed is still held if the session lives; the next tick finds out
            self.problem = f"cluster: claiming shards failed: {short_error(exc)}"
            return self.owned
        self.problem = None
        return self.owned

    def _listed_elsewhere(self, db: psycopg.Connection[Any]) -> dict[int, str]:
        """Shard -> the other instance whose last heartbeat listed it (a claim of it is a
        takeover; a shard nobody listed is a first claim)."""
        out: dict[int, str] = {}
        for instance, shards in db.execute(
                "SELECT instance, shards FROM cluster_instances WHERE instance <> %s "
                "ORDER BY heartbeat", (self.instance,)).fetchall():
            for s in shards:
                out[int(s)] = str(instance)
        return out


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What ``/api/cluster`` shows: who owns each shard now (from the lock table), every
    instance's last heartbeat, and the recent takeovers."""

    shards: int
    owners: dict[int, str]  # shard -> instance holding its lock now
    instances: list[dict[str, Any]]
    takeovers: list[dict[str, Any]]
    # the instance holding the coordinator lock: it delivers the outbox and writes the
    # month's inventory snapshot (None: nobody, for a moment after it died)
    coordinator: str | None = None

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "shards": self.shards,
            "owned": len(self.owners),
            "unowned": [s for s in range(self.shards) if s not in self.owners],
            "owners": {str(s): i for s, i in sorted(self.owners.items())},
            "instances": [{**i, "heartbeat_age_s": round(now - i["heartbeat"], 1)}
                          for i in self.instances],
            "takeovers": self.takeovers,
            "coordinator": self.coordinator,
        }


def view(db: psycopg.Connection[Any], shards: int) -> ClusterView:
    """The cluster as PostgreSQL sees it now. Owners come from ``pg_locks`` joined with
    ``pg_stat_activity`` (the session's ``application_name`` names the instance), not from
    heartbeats: a lock is held or not, a heartbeat may be stale."""
    prefix = "camwatch cluster "
    owners: dict[int, str] = {}
    for objid, app in db.execute(
            "SELECT l.objid, a.application_name FROM pg_locks l JOIN pg_stat_activity a "
            "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s "
            "AND l.objsubid = 2 AND l.objid >= %s AND l.objid < %s AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())",
            (APPLICATION_ID, SHARD_LOCK_BASE, SHARD_LOCK_BASE + shards)).fetchall():
        owners[int(objid) - SHARD_LOCK_BASE] = str(app).removeprefix(prefix)
    row = db.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objsubid = 2 "
        "AND l.objid = %s AND l.database = (SELECT oid FROM pg_database WHERE datname = "
        "current_database())", (APPLICATION_ID, LOCK_COORDINATOR & 0xFFFFFFFF)).fetchone()
    coordinator = str(row[0]).removeprefix(prefix) if row is not None else None
    instances = [
        {"instance": r[0], "pid": r[1], "listen": r[2], "shards": list(r[3]),
         "started": r[4], "heartbeat": r[5], "takeovers": r[6], "alive": bool(r[7])}
        for r in db.execute(
            "SELECT c.instance, c.pid, c.listen, c.shards, c.started, c.heartbeat, "
            "c.takeovers, a.pid IS NOT NULL FROM cluster_instances c LEFT JOIN "
            "pg_stat_activity a ON a.pid = c.backend_pid ORDER BY c.instance").fetchall()]
    takeovers = [
        {"ts": r[0], "shard": r[1], "from": r[2], "to": r[3]}
        for r in db.execute("SELECT ts, shard, from_instance, to_instance FROM "
                            "cluster_takeovers ORDER BY id DESC LIMIT 50").fetchall()]
    return ClusterView(shards, owners, instances, takeovers, coordinator)
