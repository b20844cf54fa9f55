"""Shard ownership through PostgreSQL's session-level advisory locks (camwatch/cluster/
ownership.py), on a real PostgreSQL the tests start (the ``pg_dsn`` fixture): claims up to the
limit, each shard owned once, heartbeats, a release on shutdown, and a dead instance's shards
taken over by the next tick of another, recorded as a takeover."""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg
import pytest

from camwatch.cluster.config import ClusterConfig
from camwatch.cluster.ownership import ShardOwnership, _order, view
from camwatch.errors import StoreError
from camwatch.secrets import Secret
from camwatch.store.postgres import PgStoreLock


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def kill_session(dsn: str, name: str) -> int:
    """Terminate instance ``name``'s session, as PostgreSQL does when its process dies, and
    wait until the backend has exited: pg_terminate_backend only signals it, and its advisory
    locks go with the exit (a tick just after the signal could still find them held)."""
    app = f"camwatch cluster {name}"
    with psycopg.connect(dsn, autocommit=True) as db:
        killed = db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = %s", (app,)).fetchall()
        deadline = time.monotonic() + 30
        while db.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                         (app,)).fetchone() != (0,):
            assert time.monotonic() < deadline, f"{app}'s backend did not exit"
            time.sleep(0.01)  # polling PostgreSQL, with the deadline above
    return sum(1 for (ok,) in killed if ok)


def owner(dsn: str, name: str, clock: Clock | None = None, **cluster: Any) -> ShardOwnership:
    cfg = ClusterConfig(enabled=True, instance=name, **{"shards": 6, **cluster})
    return ShardOwnership(Secret(dsn), cfg, listen=f"127.0.0.1:{len(name)}",
                          clock=clock or Clock())


def cluster_view(dsn: str, shards: int = 6) -> Any:
    with psycopg.connect(dsn, autocommit=True) as db:
        return view(db, shards)


def test_order_visits_every_shard_once_from_a_place_of_its_own() -> None:
    assert sorted(_order("a", 7)) == list(range(7))
    assert len({_order(name, 16)[0] for name in ("cw-1", "cw-2", "cw-3", "cw-4")}) > 1


def test_claims_up_to_the_limit_each_shard_once(pg_dsn: str) -> None:
    a, b, c = (owner(pg_dsn, n, max_shards_per_instance=2) for n in ("a", "b", "c"))
    try:
        owned = [o.start() for o in (a, b, c)]
        assert [len(s) for s in owned] == [2, 2, 2]
        assert set().union(*owned) == set(range(6))  # each shard owned exactly once
        v = cluster_view(pg_dsn)
        assert v.owners == {s: o.instance for o in (a, b, c) for s in o.owned}
        assert [(i["instance"], sorted(i["shards"]), i["alive"]) for i in v.instances] == \
            [(o.instance, sorted(o.owned), True) for o in (a, b, c)]
        assert v.takeovers == []
        assert v.as_json(1_000_010.0)["unowned"] == []
    finally:
        for o in (a, b, c):
            o.release()


def test_without_a_limit_the_first_takes_all_and_the_second_waits(pg_dsn: str) -> None:
    a, b = owner(pg_dsn, "a"), owner(pg_dsn, "b")
    try:
        assert a.start() == frozenset(range(6))
        assert b.start() == frozenset()
        assert b.tick() == frozenset()  # nothing free: a standby
    finally:
        a.release()
    try:
        assert b.tick() == frozenset(range(6))  # a's shutdown released them
        assert b.takeovers == 0  # released, not taken over: a's row went with it
        assert [i["instance"] for i in cluster_view(pg_dsn).instances] == ["b"]
    finally:
        b.release()
    assert cluster_view(pg_dsn).owners == {}


def test_a_dead_instances_shards_are_taken_over_at_the_next_tick(pg_dsn: str) -> None:
    clock = Clock()
    a = owner(pg_dsn, "a", clock, max_shards_per_instance=3)
    b = owner(pg_dsn, "b", clock, max_shards_per_instance=6)
    try:
        a_shards = a.start()
        b_shards = b.start()
        assert len(a_shards) == 3 and b_shards == frozenset(range(6)) - a_shards
        # a's process dies (kill -9): PostgreSQL ends its session, and its locks with it
        assert kill_session(pg_dsn, "a") == 1
        clock.now += 10
        assert b.tick() == frozenset(range(6))
        assert b.takeovers == 3
        v = cluster_view(pg_dsn)
        assert v.owners == dict.fromkeys(range(6), "b")
        assert sorted((t["shard"], t["from"], t["to"]) for t in v.takeovers) == \
            [(s, "a", "b") for s in sorted(a_shards)]
        rows = {i["instance"]: i for i in v.instances}
        assert rows["a"]["alive"] is False and rows["b"]["alive"] is True
        assert rows["b"]["heartbeat"] == clock.now and rows["b"]["takeovers"] == 3
        # a notices at its own next tick that its session is gone: it owns nothing now
        assert a.tick() == frozenset()
        assert a.lost == 1
    finally:
        a.release()
        b.release()


def test_a_dead_instances_row_is_kept_an_hour_then_deleted(pg_dsn: str) -> None:
    clock = Clock()
    a, b = owner(pg_dsn, "a", clock), owner(pg_dsn, "b", clock)
    try:
        a.start()
        b.start()
        kill_session(pg_dsn, "a")
        clock.now += 3599
        b.tick()
        assert [i["instance"] for i in cluster_view(pg_dsn).instances] == ["a", "b"]
        clock.now += 2
        b.tick()
        assert [i["instance"] for i in cluster_view(pg_dsn).instances] == ["b"]
    finally:
        a.release()
        b.release()


def test_the_lost_session_is_noticed_and_shards_claimed_again(pg_dsn: str) -> None:
    a = owner(pg_dsn, "a")
    try:
        assert a.start() == frozenset(range(6))
        kill_session(pg_dsn, "a")  # a server restart, as seen
        assert a.tick() == frozenset(range(6))  # new session, nobody else: all again
        assert a.lost == 1 and a.problem is None
    finally:
        a.release()


def test_a_second_instance_of_the_same_name_is_refused(pg_dsn: str) -> None:
    a = owner(pg_dsn, "same")
    try:
        a.start()
        with pytest.raises(StoreError, match=r"another camwatch runs as cluster instance "
                                             r"'same' .*give each its own cluster\.instance"):
            owner(pg_dsn, "same").start()
    finally:
        a.release()


def test_a_daemon_outside_the_cluster_and_the_cluster_keep_each_other_out(pg_dsn: str) -> None:
    a = owner(pg_dsn, "a")
    try:
        a.start()
        alone = PgStoreLock(Secret(pg_dsn))
        with pytest.raises(StoreError, match=re.escape(
                "another camwatch is running on this store (camwatch cluster a)")):
            alone.acquire("listening on 127.0.0.1:9780")
        b = owner(pg_dsn, "b")
        assert b.start() == frozenset()  # a second member is welcome (nothing left to own)
        b.release()
    finally:
        a.release()
    alone.acquire("listening on 127.0.0.1:9780")
    try:
        with pytest.raises(StoreError, match=re.escape(
                "a camwatch outside the cluster (cluster.enabled false) runs on this store")):
            owner(pg_dsn, "c").start()
    finally:
        alone.release()


def test_unreachable_server_is_a_problem_not_an_exception(pg_dsn: str) -> None:
    dsn = pg_dsn.replace(pg_dsn.split("@")[1].split("/")[0], "127.0.0.1:1")
    a = owner(dsn, "a")
    with pytest.raises(StoreError, match="cannot connect"):
        a.start()
    assert a.tick() == frozenset()
    assert a.problem is not None and "cannot reach PostgreSQL" in a.problem
    password = str(psycopg.conninfo.conninfo_to_dict(pg_dsn)["password"])
    assert password not in a.problem
