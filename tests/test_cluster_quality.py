"""A shard taken over keeps its pictures (issue #14 with #13): one engine of a cluster, in
process, on a real PostgreSQL (the ``pg_dsn`` fixture), owns one township's shard; the other
township's pictures are committed to the store by their owner meanwhile (as
:meth:`QualityBook.take_writes` hands them to the writer); the takeover
(:meth:`ClusterMember.reshard`, the path the daemon takes) gives the engine those channels
with their verdicts, runs, scene references and thumbnails, not ``unknown`` until sampled
again. (The processes, kill -9 and all, are tests/test_cluster_e2e.py's.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from camwatch.cluster.member import ClusterMember
from camwatch.cluster.shard import shard_of
from camwatch.config import load_config
from camwatch.engine import Engine
from camwatch.inventory import load_inventory
from camwatch.model import Quality
from camwatch.quality.book import QualityBook
from camwatch.quality.checks import Fault
from camwatch.quality.sample import QualityVerdict
from camwatch.secrets import Secret
from camwatch.store.postgres import PostgresStore
from tests.fleet_thread import Row, write_site

SHARDS = 4
T0 = 1_800_000_000.0


def _townships() -> tuple[str, str]:
    """Two townships in two shards (found, not assumed)."""
    from camwatch.inventory import Channel

    names = [f"镇{i}" for i in range(12)]
    first = shard_of(Channel(id="x", township=names[0], county="鹿邑县"), "township", SHARDS)
    return names[0], next(n for n in names if shard_of(
        Channel(id="x", township=n, county="鹿邑县"), "township", SHARDS) != first)


async def test_a_shard_taken_over_keeps_its_pictures(tmp_path: Path, pg_dsn: str) -> None:
    mine, theirs = _townships()
    rows = [Row(f"rtsp://127.0.0.1:9/ch{i}", township=mine if i < 2 else theirs)
            for i in range(4)]
    (tmp_path / "dsn").write_text(pg_dsn + "\n", encoding="utf-8")
    cfg_path = write_site(tmp_path, rows,
                          "probing: {interval: 1h, onvif: false}\n"
                          "quality: {enabled: true, interval: 1d}\n"
                          f"store: {{backend: postgresql, dsn_file: {tmp_path / 'dsn'}}}\n"
                          f"cluster: {{enabled: true, shard_by: township, shards: {SHARDS}, "
                          "instance: b}\n")
    cfg = load_config(cfg_path)
    whole = load_inventory(cfg.inventory, known_credentials=cfg.credentials)
    ids = [c.id for c in whole.channels if c.connected]
    theirs_ids = [c.id for c in whole.channels if c.connected and c.township == theirs]
    assert len(theirs_ids) == 2
    shard_mine = shard_of(whole.channels[0], "township", SHARDS)
    shard_theirs = shard_of(next(c for c in whole.channels if c.township == theirs),
                            "township", SHARDS)

    member = ClusterMember(cfg, Secret(pg_dsn), "127.0.0.1:0")
    member.ownership.owned = frozenset({shard_mine})  # as ShardOwnership.start() would say
    cut = member.mine(whole)
    engine = Engine(cfg, cut.part, PostgresStore(Secret(pg_dsn)), forget=member.forget)
    try:
        assert set(engine.channels) == {ids[0], ids[1]}
        # the other instance samples its township's pictures and commits them
        other = QualityBook()
        other.swap(theirs_ids)
        bad, good = theirs_ids
        for k in range(3):
            other.record(QualityVerdict(bad, Quality.DEGRADED, T0 + k * 3600,
                                        faults=(Fault("too_dark", 12.0),),
                                        scores={"too_dark": 12.0}, jpeg=b"\xff\xd8bad"))
        other.record(QualityVerdict(good, Quality.OK, T0, jpeg=b"\xff\xd8good",
                                    thumb=np.full((36, 64), 90.0, np.float32)))
        engine.store.write_quality(*other.take_writes())
        assert engine.quality.get(bad) is None  # not this instance's: nothing of it here

        member.ownership.owned = frozenset({shard_mine, shard_theirs})  # the takeover
        await member.reshard(engine)
        assert set(engine.channels) == set(ids)
        b, g = engine.quality.get(bad), engine.quality.get(good)
        assert b is not None and g is not None
        assert (b.quality, b.since, b.streak, b.ts) == (Quality.DEGRADED, T0, 3, T0 + 7200)
        assert [f.check for f in b.faults] == ["too_dark"] and bad in engine.quality.degraded
        assert engine.quality.jpeg(bad) == b"\xff\xd8bad"
        assert g.quality is Quality.OK and engine.quality.jpeg(good) == b"\xff\xd8good"
        ref = engine.quality.reference(good)
        assert ref is not None and float(ref[0, 0]) == 90.0

        # and given back: the pictures leave with the channels
        member.ownership.owned = frozenset({shard_mine})
        await member.reshard(engine)
        assert engine.quality.get(bad) is None and engine.quality.jpeg(good) is None
    finally:
        engine.close()
        engine.store.close()
