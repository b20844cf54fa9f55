"""A reload parses the inventory in a process of its own and sends back only the channels that
changed (issue 15: reload memory and the loop's stall while 100,000 unpickled channels were
copied in): which channels count as changed, and that the running objects stand in for the
others, in the new file's order."""

from __future__ import annotations

from pathlib import Path

from camwatch.config import InventoryConfig
from camwatch.inventory import Digests, Inventory, load_inventory, only_changed, with_unchanged
from tests.test_inventory import HEADER_CN, row, write_csv


def _load(path: Path) -> Inventory:
    return load_inventory(InventoryConfig(path=path))


def test_only_the_changed_channels_cross_and_the_rest_are_the_running_objects(
        tmp_path: Path) -> None:
    rows = [row(n) for n in range(1, 7)]
    running = _load(write_csv(tmp_path / "a.csv", HEADER_CN, rows)).channels
    known = Digests.of(running)

    rows[1][1] = "点位2（改名）"  # a name
    rows[2][15] = "rtsp://admin:new-secret@127.0.1.3:554/ch3"  # only the URL's password...
    rows[3][15] = "rtsp://admin:new-secret@127.0.1.3:554/ch3"
    del rows[4]  # a channel gone
    rows.insert(0, row(40))  # and one new, first: every other row moves down one
    path = write_csv(tmp_path / "b.csv", HEADER_CN, rows)

    # a password only: Channel's == does not see it, the digest must
    before = _load(write_csv(tmp_path / "c.csv", HEADER_CN,
                             [row(3, url="rtsp://admin:old@127.0.1.3:554/ch3")])).channels
    after = _load(write_csv(tmp_path / "d.csv", HEADER_CN,
                            [row(3, url="rtsp://admin:new@127.0.1.3:554/ch3")])).channels
    assert before == after
    assert Digests.of(before).digests != Digests.of(after).digests

    sent = _load(path)
    digests = only_changed(sent, known)
    changed = {c.id for c in sent.channels}
    ids = [r[0] for r in rows]
    assert changed == {ids[0], ids[2], ids[3], ids[4]}  # new, renamed, two new URLs
    assert sent.rows_read == len(rows)  # the rest of the inventory is whole

    with_unchanged(sent, digests, running)
    assert [c.id for c in sent.channels] == ids  # the new file's order
    old = {c.id: c for c in running}
    fresh = {c.id: c for c in _load(path).channels}
    for c in sent.channels:
        assert c == fresh[c.id]
        assert (c is old.get(c.id)) == (c.id not in changed)  # the running object itself
    assert sent.channels[3].url_password is not None
    assert sent.channels[3].url_password.reveal() == "new-secret"


def test_nothing_known_sends_everything_and_an_empty_inventory_round_trips(
        tmp_path: Path) -> None:
    inv = _load(write_csv(tmp_path / "a.csv", HEADER_CN, [row(1), row(2)]))
    every = list(inv.channels)
    digests = only_changed(inv, None)
    assert inv.channels == every
    with_unchanged(inv, digests, [])
    assert inv.channels == every
    unchanged = only_changed(inv, digests)
    assert unchanged.digests == digests.digests and inv.channels == []
    with_unchanged(inv, digests, every)
    assert all(a is b for a, b in zip(inv.channels, every, strict=True))
    empty = Digests.of([])
    assert empty.id_list() == [] and empty.by_id() == {}


async def test_a_daemon_reload_keeps_unchanged_channel_objects(tmp_path: Path) -> None:
    """The whole path: the file changes in one row, the daemon's reload (its parse in a
    spawned process) applies that row and keeps every other channel object it had."""
    from camwatch.daemon import Daemon
    from tests.fleet_thread import Row, write_site

    rows = [Row(f"rtsp://127.0.0.1:9/ch{i}") for i in range(5)]
    cfg = write_site(tmp_path, rows, "store: {path: state.db}\n")
    d = Daemon(str(cfg), listen="127.0.0.1:0")
    try:
        before = dict(d.engine.channels)
        inv = tmp_path / "inv.csv"
        inv.write_text(inv.read_text("utf-8").replace("点位3,", "点位3（新）,"), "utf-8")
        assert await d.reload() is True
        after = d.engine.channels
        assert set(after) == set(before)
        renamed = [cid for cid, c in after.items() if c.name == "点位3（新）"]
        assert len(renamed) == 1
        for cid, c in after.items():
            assert (c is before[cid]) == (cid not in renamed)
        # and a second reload of the same file sends nothing new, keeping those objects too
        kept = dict(after)
        assert await d.reload() is True
        assert all(d.engine.channels[cid] is c for cid, c in kept.items())
    finally:
        d.close()
