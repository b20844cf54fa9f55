"""The evaluator: rates, then alert rules, then outbox items, committed in one transaction.

Fed by the channel book: per-scope counts follow every change of a channel's state (a
listener, O(1) per verdict), so an evaluation costs O(cells × rows) for the rates and O(changed
+ offline channels) for the alert rules, whatever the fleet's size. Each evaluation:

1. computes the rate rows from the counts;
2. asks the book what changed since the last *committed* evaluation (transitions, channels);
3. runs the alert rules on a draft (:class:`~camwatch.rules.alerts.AlertEvaluator`);
4. writes the outbox items and the alert state through the store writer, in one transaction;
5. only then commits the draft and tells the book those changes are consumed.

A failed write (disk full, read-only store, a lock held too long) changes nothing in memory:
the next evaluation sees the same changes and fires the same alerts, with the same
``starts_at``. The writer counts the error and ``/healthz`` reports it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from camwatch.book import ChannelBook
from camwatch.config import Config
from camwatch.health import SelfHealth
from camwatch.inventory import Channel
from camwatch.model import Quality, state_index
from camwatch.pacing import paced
from camwatch.quality.rates import intact_rates
from camwatch.rules.alerts import (
    META_KEY,
    Alert,
    AlertEvaluator,
    AlertInputs,
    PictureRecord,
    QualityInputs,
    ShardScope,
    alert_inputs,
    set_platform,
)
from camwatch.rules.rates import RateIndex, RateRow, Targets
from camwatch.store.base import RateSnapshot
from camwatch.store.writer import StoreWriter

log = structlog.get_logger(__name__)


class QualityView(Protocol):
    """What the evaluator reads of :class:`camwatch.quality.book.QualityBook` (a protocol:
    the book's module pulls in PyAV's decoding)."""

    @property
    def records(self) -> Mapping[str, PictureRecord]: ...
    @property
    def degraded(self) -> set[str]: ...
    def quality_of(self, cid: str) -> Quality: ...

RATE_SNAPSHOT_EVERY_S = 300.0
INTACT_EVERY_S = 60.0  # the 完好率 rows of intact_rate_below_target, recounted at most this often
COUNT_SLICE = 5_000  # channels counted per turn of the loop when a new inventory is counted


@dataclass(frozen=True, slots=True)
class EvalInputs:
    """What the evaluator needs of an inventory, built off the event loop."""

    index: RateIndex
    alerts: AlertInputs


def plan_evaluation(cfg: Config, channels: Mapping[str, Channel],
                    pace: bool = False) -> EvalInputs:
    """The rate cells and alert inputs of ``channels`` (``pace``: in a worker thread, see
    :mod:`camwatch.pacing`)."""
    index = RateIndex(paced(channels.values(), on=pace))
    index.targets_of(Targets(cfg.targets))  # the rows' layout and targets: here, in the planning
    # thread, not on the loop at the first evaluation (~0.1 s at 100,000 channels)
    return EvalInputs(index, alert_inputs(channels, cfg.alerts.rules.mass_outage.levels))


class Evaluator:
    def __init__(self, cfg: Config, book: ChannelBook, writer: StoreWriter,
                 health: SelfHealth, *, saved_alerts: object = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.book = book
        self.writer = writer
        self.health = health
        self.clock = clock
        self.rates: list[RateRow] = []
        self.inputs: EvalInputs | None = None
        self._per_cell: list[list[int]] = []
        # each rate row's [online, offline, unknown], kept up to date with the cells: an
        # evaluation remakes only the rows whose counts moved since the one before
        self._per_row: list[list[int]] = []
        self._cell_rows: list[tuple[int, ...]] = []
        self._rows: list[RateRow] | None = None  # None: remake them all
        self._dirty_rows: set[int] = set()
        self._counting: tuple[set[str], dict[str, str]] | None = None
        self._cursor = book.cursor
        self._last_snapshot = 0.0
        self.on_enqueued: Callable[[], None] = lambda: None
        self.alerts: AlertEvaluator | None = None
        # the picture's quality (the engine's QualityBook, with quality.enabled): feeds the
        # rules quality_degraded and intact_rate_below_target
        self.quality: QualityView | None = None
        self._intact: tuple[float, EvalInputs, list[RateRow]] | None = None  # see _intact_rows
        # in a cluster: the owned shards, whose alert states are kept per shard
        self.scope: ShardScope | None = None
        # held by an evaluation from its draft to its commit, and by a cluster member while
        # it changes the owned shards (their alert states must not change under a draft)
        self.lock = asyncio.Lock()
        # GB/T 28181: platform id -> (name, the channels it lists), kept across swaps
        self._platforms: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.configure(cfg, saved_alerts)
        book.subscribe(self._moved)

    def configure(self, cfg: Config, saved_alerts: object = None) -> None:
        """A (re)loaded config. The alert state carries over a reload (it is the committed
        one), or comes from the store at start."""
        self.cfg = cfg
        self.targets = Targets(cfg.targets)
        self.intact_targets = Targets(cfg.targets.intact_targets())  # 完好率 (targets.intact)
        self._intact = None  # recounted against the new targets at the next evaluation
        self._rows = None  # and the rate rows remade, with the new targets
        if not cfg.alerts.enabled:
            self.alerts = None
            return
        state = saved_alerts if self.alerts is None else self.alerts.saved()
        self.alerts = AlertEvaluator(cfg.alerts, self.targets, cfg.targets.min_channels,
                                     state, timezone=cfg.report.timezone, scope=self.scope)

    def use_shards(self, scope: ShardScope, saved: Mapping[int, Any]) -> None:
        """A cluster member's owned shards (see :meth:`AlertEvaluator.use_shards`); the
        caller holds :attr:`lock` (or no evaluation can run yet)."""
        self.scope = scope
        if self.alerts is not None:
            self.alerts.use_shards(scope, saved)

    def swap(self, inputs: EvalInputs, per_cell: list[list[int]] | None = None) -> None:
        """Take a new inventory's inputs (after the book swapped to it), with its per-cell
        counts from :meth:`count_for` when the caller made them beforehand."""
        for pid, (name, cids) in self._platforms.items():
            set_platform(inputs.alerts, pid, name, cids)
        self.inputs = inputs
        self._per_cell = per_cell if per_cell is not None else \
            inputs.index.count(self.book.state_of)
        self._per_row = inputs.index.totals(self._per_cell)
        self._cell_rows = inputs.index.layout()[1]
        self._rows = None

    async def count_for(self, inputs: EvalInputs, slice_size: int = COUNT_SLICE) -> \
            list[list[int]]:
        """The per-cell counts a new inventory will start from, counted on the loop in slices
        between which probes go on (one count of 100,000 channels held the loop for 0.2-0.5 s
        at every reload). Counted from the channels' states now, *before* the book swaps: a
        channel the new inventory adds is unknown either way. A channel that changes after
        its slice was counted is corrected at the end from the state it left, which is the
        state the slice saw. :meth:`swap` must follow without an ``await`` in between."""
        index = inputs.index
        fixes: dict[str, str] = {}
        counted: set[str] = set()
        self._counting = (counted, fixes)
        try:
            per_cell = index.zero()
            state_of = self.book.state_of
            for part in index.slices(slice_size):
                for cid, n in part:  # as RateIndex.count does it, a slice at a time
                    per_cell[n][state_index(state_of(cid))] += 1
                    counted.add(cid)
                await asyncio.sleep(0)
        finally:
            self._counting = None
        for cid, before in fixes.items():
            after = self.book.state_of(cid)
            cell = index.cell_of(cid)
            if cell is not None and after != before:
                per_cell[cell][state_index(before)] -= 1
                per_cell[cell][state_index(after)] += 1
        return per_cell

    def set_platform(self, pid: str, name: str, cids: Iterable[str]) -> None:
        """The channels a lower platform (GB/T 28181) lists, for mass outages by platform;
        kept across inventory swaps."""
        members = tuple(cids)
        self._platforms[pid] = (name, members)
        if self.inputs is not None:
            set_platform(self.inputs.alerts, pid, name, members)

    def _moved(self, cid: str, before: str, main: bool) -> None:
        """Book listener: move the channel's count from its old state to its new one."""
        if self.inputs is None:
            return
        after = self.book.state_of(cid)
        if after == before:
            return
        if self._counting is not None:  # a new inventory is being counted: see count_for
            counted, fixes = self._counting
            if cid in counted and cid not in fixes:
                fixes[cid] = before
        n = self.inputs.index.cell_of(cid)
        if n is not None:
            b, a = state_index(before), state_index(after)
            counts = self._per_cell[n]
            counts[b] -= 1
            counts[a] += 1
            per_row, dirty = self._per_row, self._dirty_rows
            for pos in self._cell_rows[n]:
                t = per_row[pos]
                t[b] -= 1
                t[a] += 1
                dirty.add(pos)

    def _intact_rows(self, now: float) -> list[RateRow]:
        """The 完好率 rows for intact_rate_below_target (none when the rule is off): counted
        over every channel (~5 ms at 10,000 channels, 50 ms at 100,000), so at most once a
        minute: pictures are sampled hourly and the rule waits an hour anyway."""
        if self.quality is None or self.inputs is None or \
                not self.cfg.alerts.rules.intact_rate_below_target.enabled:
            return []
        if self._intact is None or now - self._intact[0] >= INTACT_EVERY_S \
                or self._intact[1] is not self.inputs:
            self._intact = (now, self.inputs, intact_rates(
                self.inputs.index, self.book.state_of, self.quality.quality_of,
                self.intact_targets))
        return self._intact[2]

    def _rate_rows(self) -> list[RateRow]:
        """The rate rows now: the previous evaluation's list (never changed in place: readers
        may hold it) with the rows whose counts moved remade; all of them after a swap or a
        new config."""
        assert self.inputs is not None
        index, per_row, targets = self.inputs.index, self._per_row, self.targets
        if self._rows is None:
            rows = [index.row(i, t, targets) for i, t in enumerate(per_row)]
        else:
            rows = list(self._rows)
            for pos in self._dirty_rows:
                rows[pos] = index.row(pos, per_row[pos], targets)
        self._dirty_rows = set()
        self._rows = rows
        return rows

    async def evaluate(self) -> list[Alert]:
        """One evaluation; raises when the store could not take its outcome (nothing is
        lost: the next one repeats it)."""
        async with self.lock:
            return await self._evaluate()

    async def _evaluate(self) -> list[Alert]:
        if self.inputs is None:
            return []
        now = self.clock()
        self.rates = self._rate_rows()
        problems = self.health.problems(now)
        if now - self._last_snapshot >= RATE_SNAPSHOT_EVERY_S:
            self._last_snapshot = now
            rows = [RateSnapshot(now, r.scope_dict(), r.klass, r.project, r.online,
                                 r.connected) for r in self.rates if len(r.scope) <= 2]
            self.writer.submit(lambda s: s.add_rate_snapshots(rows))  # best effort
        await asyncio.sleep(0)  # let the probes run between the rates and the rules
        transitions, changed, cursor = self.book.changes(self._cursor)
        events: list[Alert] = []
        if self.alerts is not None:
            candidates = self.book.offline | changed | self.alerts.channels_with_alerts()
            quality = None
            if self.quality is not None:
                quality = QualityInputs(self.quality.records, self.quality.degraded,
                                        self._intact_rows(now))
            outcome = self.alerts.evaluate(now, self.inputs.alerts, self.book.states,
                                           candidates, self.rates, transitions, problems,
                                           quality)
            meta: dict[str, Any] = {}
            if outcome.state is not None:
                # in a cluster, one key per shard: each shard's next owner starts from it
                meta = self.alerts.shard_state(outcome.state["alerts"]) \
                    if self.alerts.scope is not None else {META_KEY: outcome.state}
            if outcome.outbox or meta:
                items = outcome.outbox
                await self.writer.run(lambda s: s.commit_outbox(items, now, meta))
            outcome.commit()
            events = outcome.events
            if outcome.outbox:
                self.on_enqueued()
        self._cursor = cursor
        self.book.release(cursor)
        return events

