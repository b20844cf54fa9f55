"""A daemon as a member of a cluster: it probes the channels of the shards it owns, and
follows the ownership as it changes.

The daemon reads the whole inventory (every instance reads the same file) and hands the
engine only its shards' part (:func:`~camwatch.cluster.shard.filter_inventory`). Every
``cluster.takeover / 3`` the ownership is checked (:meth:`ShardOwnership.tick`, in a worker
thread); when the owned shards changed, the engine gets the new part as it gets a reload
(:meth:`Engine.plan` in a worker thread, :meth:`Engine.apply_sliced` on the loop: no stall).
Channels of a shard taken over start from the states their previous owner committed
(:meth:`ChannelBook.seed`), so their next verdict continues that history: no spurious
transition, ``since`` kept; with ``quality.enabled`` their stored pictures go into the
quality book too. Channels of a shard lost keep their stored states
(:attr:`Engine.forget`): only a channel that left the inventory file loses its state.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from camwatch.cluster.shard import AlertShards, filter_inventory
from camwatch.config import Config
from camwatch.engine import no_full_collection
from camwatch.errors import StoreError, short_error
from camwatch.inventory import Inventory
from camwatch.malloc import release_free_memory
from camwatch.model import ChannelState
from camwatch.rules.alerts import shard_meta_key
from camwatch.secrets import Secret
from camwatch.store.base import QualityState

if TYPE_CHECKING:
    from camwatch.engine import Engine

__all__ = ["ClusterMember", "cluster_member"]

log = structlog.get_logger(__name__)

# stored pictures taken into the quality book per turn of the loop after a takeover (each
# row: a record, a reference array, a JPEG within the budget)
PICTURE_SLICE = 1_000


def cluster_member(cfg: Config, listen: str) -> ClusterMember | None:
    """The daemon's cluster side when ``cluster.enabled``, else None (psycopg is imported
    only then: the embedded default does not need it)."""
    if not cfg.cluster.enabled:
        return None
    from camwatch.store import require_postgres_driver

    require_postgres_driver()
    try:
        dsn = cfg.store.dsn()
    except LookupError as exc:
        raise StoreError(f"store: cannot read the PostgreSQL DSN: {exc}") from None
    return ClusterMember(cfg, dsn, listen)


@dataclass(frozen=True, slots=True)
class Cut:
    """The part of an inventory for some shards (:meth:`ClusterMember.part`)."""

    part: Inventory
    whole: Inventory
    owned: frozenset[int]
    ids: frozenset[str]  # every channel of the whole
    alerts: AlertShards  # which shard an alert's subject lies in, for the whole


class ClusterMember:
    """The cluster side of one daemon. Its :attr:`ownership` is the daemon's store lock
    (``acquire``, ``release``, ``problem``): in a cluster the shards are what one instance
    holds, not the store."""

    def __init__(self, cfg: Config, dsn: Secret, listen: str) -> None:
        from camwatch.cluster.ownership import ShardOwnership

        self.cfg = cfg.cluster
        self.ownership = ShardOwnership(dsn, cfg.cluster, listen)
        self.applied: frozenset[int] = frozenset()  # the shards the engine probes
        self._full_ids: frozenset[str] = frozenset()
        self.full: Inventory | None = None
        self.changes = 0  # ownership changes applied to the engine

    @property
    def instance(self) -> str:
        return self.ownership.instance

    # --- the inventory ------------------------------------------------------------------------

    def part(self, inventory: Inventory, owned: frozenset[int] | None = None) -> Cut:
        """The part of the whole inventory for ``owned`` (default: the shards owned now),
        without adopting it (a reload may still be refused). O(channels): call it off the
        loop."""
        owned = self.ownership.owned if owned is None else owned
        by, shards = self.cfg.shard_by, self.cfg.shards
        return Cut(filter_inventory(inventory, by, shards, owned), inventory, owned,
                   frozenset(c.id for c in inventory.channels),
                   AlertShards(inventory.channels, by, shards))

    def adopt(self, cut: Cut) -> None:
        """The engine is about to get ``cut.part``: keep the whole (for the month's snapshot
        and :meth:`forget`) and the shards it was cut for."""
        self.full, self.applied, self._full_ids = cut.whole, cut.owned, cut.ids

    def mine(self, inventory: Inventory) -> Cut:
        """:meth:`part` and :meth:`adopt` at once (the daemon's start)."""
        cut = self.part(inventory)
        self.adopt(cut)
        return cut

    # --- alerts ------------------------------------------------------------------------------

    def saved_alerts(self, engine: Engine, shards: Iterable[int]) -> dict[int, Any]:
        """The committed alert state of ``shards`` (a read on the engine's reads connection:
        call it off the loop, or at the start)."""
        if engine.evaluator.alerts is None:
            return {}
        out = {}
        for shard in sorted(shards):
            value = engine.store.get_meta(shard_meta_key(shard))
            if value is not None:
                out[shard] = value
        return out

    def start_alerts(self, engine: Engine, cut: Cut) -> None:
        """At the start, before any evaluation: the alert states of the shards owned."""
        engine.evaluator.use_shards(cut.alerts.scope(cut.owned),
                                    self.saved_alerts(engine, cut.owned))

    def forget(self, gone: list[str]) -> list[str]:
        """Of the channels that left the engine, those that left the inventory file: a
        channel of a shard given up keeps its state for its next owner."""
        return [cid for cid in gone if cid not in self._full_ids]

    # --- following the ownership --------------------------------------------------------------

    async def run(self, engine: Engine, lock: asyncio.Lock,
                  wait: Callable[[float], Awaitable[bool]]) -> None:
        """Tick every ``takeover / 3`` until ``wait`` says the daemon stops; apply each
        change of the owned shards to ``engine`` under the daemon's reload ``lock``."""
        while not await wait(self.ownership.interval):
            owned = await asyncio.to_thread(self.ownership.tick)
            if owned != self.applied:
                async with lock:
                    # as a reload: no full collection of the heap while the new part is
                    # built (it would hold the loop for tenths of a second at 100,000
                    # channels), the old part's memory given back afterwards
                    try:
                        with no_full_collection():
                            await self.reshard(engine)
                    except Exception as exc:  # a read of the claimed shards' states failed
                        log.error("shards not applied; tried again at the next check",
                                  instance=self.instance, error=short_error(exc))
                    await asyncio.to_thread(release_free_memory)

    async def reshard(self, engine: Engine) -> None:
        """Give ``engine`` the channels of the shards owned now, and the evaluator their
        alert states: under the evaluator's lock, so that no evaluation drafts between the
        swap and the alert states (it would fire again the claimed shards' active alerts,
        or end the lost shards' alerts as removed from the inventory)."""
        if self.full is None:
            return
        async with engine.evaluator.lock:
            await self._reshard(engine, self.full)

    async def _reshard(self, engine: Engine, whole: Inventory) -> None:
        before = self.applied
        t0 = time.monotonic()
        cut, seed, saved, pictures = await asyncio.to_thread(self._cut_and_seed, engine,
                                                             whole)
        engine.book.seed(seed)  # O(channels added), on the loop: the book is the loop's
        part = cut.part
        plan = await asyncio.to_thread(engine.plan, engine.cfg, part, True)
        self.adopt(cut)
        gone = await engine.apply_sliced(plan)
        # the added channels' pictures as their previous owner left them (verdict, run,
        # baselines, reference, thumbnail): not unknown until sampled again, and a
        # quality_degraded run goes on; in slices, between which probes go on
        for i in range(0, len(pictures), PICTURE_SLICE):
            engine.quality.load(dict(pictures[i:i + PICTURE_SLICE]))
            await asyncio.sleep(0)
        engine.evaluator.use_shards(cut.alerts.scope(cut.owned), saved)
        self.changes += 1
        log.info("shards changed", instance=self.instance, shards=sorted(self.applied),
                 claimed=sorted(self.applied - before), lost=sorted(before - self.applied),
                 channels=len(engine.channels), seeded=len(seed), removed=len(gone),
                 took_s=round(time.monotonic() - t0, 3))

    @staticmethod
    def _pictures(engine: Engine, added: list[str]) -> list[tuple[str, QualityState]]:
        """In a worker thread: the stored quality states of the channels a takeover adds
        (with ``quality.enabled``), degraded last as :meth:`QualityBook.load` keeps them."""
        if not engine.cfg.quality.enabled:
            return []
        paged = getattr(engine.store, "load_quality_of", None)  # PostgresStore's
        if paged is not None:
            stored: dict[str, QualityState] = paged(added)
        else:
            every = engine.store.load_quality()
            stored = {cid: every[cid] for cid in added if cid in every}
        return sorted(stored.items(), key=lambda kv: (kv[1].quality == "degraded", kv[1].ts))

    def _cut_and_seed(self, engine: Engine, whole: Inventory
                      ) -> tuple[Cut, dict[str, ChannelState], dict[int, Any],
                                 list[tuple[str, QualityState]]]:
        """In a worker thread: the new part, the committed states of the channels it adds,
        the committed alert states of the shards it claims and the added channels' stored
        pictures (read on the reads connection). Reading the engine's channels here is safe:
        swaps happen under the daemon's reload lock, which the caller holds."""
        cut = self.part(whole)
        saved = self.saved_alerts(engine, cut.owned - self.applied)
        held = engine.channels
        added = [c.id for c in cut.part.channels if c.connected and c.id not in held]
        if not added:
            return cut, {}, saved, []
        pictures = self._pictures(engine, added)
        paged = getattr(engine.store, "load_states_of", None)  # PostgresStore's
        if paged is not None:
            return cut, dict(paged(added)), saved, pictures
        stored = engine.store.load_states()
        return cut, {cid: stored[cid] for cid in added if cid in stored}, saved, pictures

    # --- what the daemon serves --------------------------------------------------------------

    def attach(self, engine: Engine) -> None:
        """Into the engine's health (``/healthz``) and metrics."""
        engine.health.watch("cluster", lambda: self.ownership.problem)
        engine.extra_metrics.append(self.metrics)

    def metrics(self, openmetrics: bool) -> str:
        """``camwatch_cluster_shards_owned`` (this instance), ``camwatch_cluster_shards``
        (configured) and ``camwatch_cluster_shard_owner{shard,instance}``: 1 for each shard
        this instance probes, 0 for every other shard (label sets pre-created, so that
        ``max by (shard)`` over the instances is 0 for a shard nobody owns: the
        ``CamwatchShardUnowned`` rule). ``openmetrics`` changes nothing: no counters here."""
        inst = self.instance.replace("\\", "\\\\").replace('"', '\\"')
        out = [
            "# HELP camwatch_cluster_shards_owned Shards this instance owns and probes.\n",
            "# TYPE camwatch_cluster_shards_owned gauge\n",
            f"camwatch_cluster_shards_owned {len(self.applied)}\n",
            "# HELP camwatch_cluster_shards Shards the inventory is split into "
            "(cluster.shards).\n",
            "# TYPE camwatch_cluster_shards gauge\n",
            f"camwatch_cluster_shards {self.cfg.shards}\n",
            "# HELP camwatch_cluster_shard_owner 1 when this instance owns the shard.\n",
            "# TYPE camwatch_cluster_shard_owner gauge\n",
        ]
        owned = self.applied
        out += [f'camwatch_cluster_shard_owner{{shard="{s}",instance="{inst}"}} '
                f"{1 if s in owned else 0}\n" for s in range(self.cfg.shards)]
        return "".join(out)

    def routes(self) -> list[tuple[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        async def cluster(request: web.Request) -> web.StreamResponse:
            """``GET /api/cluster``: :meth:`status` as JSON."""
            body = await asyncio.to_thread(self.status)
            return web.json_response(body, dumps=lambda o: json.dumps(o, ensure_ascii=False))

        return [("/api/cluster", cluster)]

    # --- what /api/cluster shows --------------------------------------------------------------

    def status(self, now: float | None = None) -> dict[str, Any]:
        """This instance's view, and the cluster's as PostgreSQL holds it (one short
        connection: call it off the loop)."""
        from camwatch.cluster.ownership import view
        from camwatch.store.postgres import connect

        now = time.time() if now is None else now
        own = self.ownership
        out: dict[str, Any] = {
            "instance": own.instance, "shard_by": self.cfg.shard_by, "shards": self.cfg.shards,
            "max_shards_per_instance": own.limit, "takeover_s": self.cfg.takeover,
            "owned": sorted(self.applied), "takeovers": own.takeovers,
            "sessions_lost": own.lost, "coordinator": own.coordinator,
            "problem": own.problem}
        try:
            with connect(own.dsn, "camwatch cluster view") as db:
                out["cluster"] = view(db, self.cfg.shards).as_json(now)
        except Exception as exc:  # the view is for people: say why it is missing
            out["cluster"] = None
            out["error"] = f"cannot read the cluster from PostgreSQL: {type(exc).__name__}"
        return out
