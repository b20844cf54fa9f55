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
from collections.abc import Collection, Iterable, Mapping

from camwatch.cluster.config import ShardBy
from camwatch.inventory import Channel, Inventory
from camwatch.rules.alerts import ShardScope

__all__ = ["AlertShards", "ShardBy", "filter_inventory", "shard_key", "shard_of", "split"]


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


class AlertShards:
    """Which shard an alert's subject lies in, from its labels (names, as alerts carry
    them), for the whole inventory: a ``channel`` label -> that channel's shard; a ``host``
    label -> the shard of the host's channels; else the ``county`` (``shard_by: county``) or
    ``county`` and ``township`` labels -> that place's shard. None when the subject spans
    shards or is not inside one: the site, an operator across counties, a county split by
    township, a host whose channels lie in two shards, the prober itself. Those scopes are
    alerted on by Prometheus over every instance (deploy/prometheus/rules), not by one
    instance that sees part of them. Built in O(channels), once per inventory, off the
    loop."""

    def __init__(self, channels: Iterable[Channel], by: ShardBy, shards: int) -> None:
        self.by = by
        self.channel: dict[str, int] = {}
        places: dict[tuple[str, ...], set[int]] = {}
        hosts: dict[str, set[int]] = {}
        keys: dict[str, int] = {}  # one CRC per township
        for ch in channels:
            key = shard_key(ch, by)
            s = keys.get(key)
            if s is None:
                s = keys[key] = zlib.crc32(key.encode("utf-8")) % shards
            self.channel[ch.id] = s
            place = (ch.county,) if by == "county" else (ch.county, ch.township)
            places.setdefault(place, set()).add(s)
            if ch.host:
                hosts.setdefault(ch.host, set()).add(s)
        # two places of one name with two codes may lie in two shards: neither is inside one
        self.place = {k: next(iter(v)) for k, v in places.items() if len(v) == 1}
        self.host = {k: next(iter(v)) for k, v in hosts.items() if len(v) == 1}

    def of(self, labels: Mapping[str, str]) -> int | None:
        cid = labels.get("channel")
        if cid is not None:
            return self.channel.get(cid)
        host = labels.get("host")
        if host is not None:
            return self.host.get(host)
        county = labels.get("county")
        if county is None:
            return None
        if self.by == "county":
            return self.place.get((county,))
        township = labels.get("township")
        return None if township is None else self.place.get((county, township))

    def scope(self, owned: Collection[int]) -> ShardScope:
        return ShardScope(frozenset(owned), self.of)
