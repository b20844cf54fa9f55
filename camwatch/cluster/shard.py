"""The shard key: which shard of a city's inventory a channel belongs to.

Pure and stable: every instance computes the same split from the same inventory, today and
after an upgrade, so the key is a CRC-32 (:func:`zlib.crc32`, fixed by its standard) of the
UTF-8 county or county/township key, never Python's ``hash`` (salted per process). A township
is never split across shards: the mass-outage and township alerts need all of it, so
``shard_by: township`` keys on the county *and* the township (two townships of one name in
two counties are two keys) and ``shard_by: county`` keeps a whole county together.

A code (区县编码, 乡镇编码) is the key when the inventory has it, the name otherwise: codes
survive a renamed township, names are all a small inventory may have.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Iterable

from camwatch.cluster.config import ShardBy
from camwatch.inventory import Channel, Inventory

__all__ = ["ShardBy", "filter_inventory", "shard_key", "shard_of", "split"]


def shard_key(ch: Channel, by: ShardBy) -> str:
    """``county`` -> ``411628`` (the county's code, or its name); ``township`` ->
    ``411628/411628100`` (county key / township code or name)."""
    county = ch.county_code or ch.county
    if by == "county":
        return county
    return f"{county}/{ch.township_code or ch.township}"


def shard_of(ch: Channel, by: ShardBy, shards: int) -> int:
    """The shard, ``0 <= shard < shards``, of one channel."""
    if shards < 1:
        raise ValueError(f"expected at least 1 shard, got {shards}")
    return zlib.crc32(shard_key(ch, by).encode("utf-8")) % shards


def split(channels: Iterable[Channel], by: ShardBy, shards: int) -> dict[int, list[Channel]]:
    """The channels of each shard (shards without a channel are absent), in inventory order."""
    out: dict[int, list[Channel]] = {}
    for ch in channels:
        out.setdefault(shard_of(ch, by, shards), []).append(ch)
    return out


def filter_inventory(inventory: Inventory, by: ShardBy, shards: int,
                     owned: Collection[int]) -> Inventory:
    """The part of ``inventory`` an instance owning ``owned`` probes: its channels of those
    shards, the inventory's problems kept (they describe the file, which every instance
    reads whole)."""
    keys: dict[str, int] = {}  # one CRC per township, not per channel

    def mine(ch: Channel) -> bool:
        key = shard_key(ch, by)
        s = keys.get(key)
        if s is None:
            s = keys[key] = zlib.crc32(key.encode("utf-8")) % shards
        return s in owned

    return Inventory(inventory.source, [c for c in inventory.channels if mine(c)],
                     inventory.rows_read, inventory.rejected_rows, inventory.errors,
                     inventory.warnings, inventory.ignored_columns)
