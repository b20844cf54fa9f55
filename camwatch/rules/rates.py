"""Online rates: the one definition camwatch uses everywhere.

rate = Σ online / Σ connected over a scope, never an average of ratios; channels in
``unknown`` (not yet probed, or the prober could not judge) are left out of both sums;
channels not connected (未联网上云) are never counted. The Prometheus recording rules
(``deploy/prometheus``) and the monthly report use the same definition on the same counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import add

from camwatch.config import TargetsConfig
from camwatch.inventory import Channel
from camwatch.model import CLASS_NAMES, SCOPES, state_index

# What each scope is split by: nothing, point class, project.
BREAKDOWNS: tuple[str | None, ...] = (None, "class", "project")


def online_rate(online: int, connected: int) -> float | None:
    """The definition. ``None`` when nothing is connected (a rate of 0/0 is not 0 %)."""
    return online / connected if connected else None


def format_rate(rate: float | None) -> str:
    """Two decimals, as a percentage: ``96.80%``; ``-`` when undefined."""
    return "-" if rate is None else f"{rate * 100:.2f}%"


@dataclass(frozen=True, slots=True)
class RateRow:
    scope: tuple[tuple[str, str], ...]  # (("county", "鹿邑县"), ("township", "城关镇"))
    klass: int | None
    project: str | None
    online: int
    connected: int
    offline: int
    unknown: int
    target: float | None

    @property
    def rate(self) -> float | None:
        return online_rate(self.online, self.connected)

    @property
    def meets_target(self) -> bool | None:
        rate = self.rate
        if rate is None or self.target is None:
            return None
        # Compare at the precision rates are published with (two decimals of a percent), so
        # 97.995 % shown as "98.00%" is not flagged as below a 98 % target.
        return round(rate * 100, 2) >= round(self.target * 100, 2)

    def scope_dict(self) -> dict[str, str]:
        return dict(self.scope)

    def label(self) -> str:
        """Human name: "鹿邑县 城关镇 一类" ."""
        parts = [v for _, v in self.scope] or ["全域"]
        if self.klass is not None:
            parts.append(CLASS_NAMES.get(self.klass, str(self.klass)))
        if self.project is not None:
            parts.append(self.project)
        return " ".join(parts)

    def as_json(self) -> dict[str, object]:
        rate = self.rate
        return {
            "scope": self.scope_dict(),
            "class": self.klass,
            "project": self.project,
            "online": self.online,
            "connected": self.connected,
            "offline": self.offline,
            "unknown": self.unknown,
            "rate": None if rate is None else round(rate, 6),
            "target": self.target,
            "meets_target": self.meets_target,
        }


class Targets:
    """Target lookup: the most specific matching override, else the class or project default."""

    def __init__(self, cfg: TargetsConfig) -> None:
        self.cfg = cfg
        # More specific overrides first: count the fields they match on.
        self._overrides = sorted(
            cfg.overrides,
            key=lambda o: -sum(x is not None for x in (o.county, o.township, o.class_,
                                                         o.project)))

    def target_for(self, scope: dict[str, str], klass: int | None,
                   project: str | None) -> float | None:
        if klass is None and project is None:
            return None  # a scope's total mixes classes with different targets
        for o in self._overrides:
            if o.class_ != klass or o.project != project:
                continue
            if o.county is not None and scope.get("county") != o.county:
                continue
            if o.township is not None and scope.get("township") != o.township:
                continue
            return o.target
        if klass is not None:
            return self.cfg.by_class.get(klass)
        return self.cfg.by_project.get(project or "")


Key = tuple[tuple[tuple[str, str], ...], int | None, str | None]  # (scope, class, project)

#: What decides every row a channel counts in: (county, township, village, operator, class,
#: project). Channels with the same cell count in the same rows.
Cell = tuple[str, str, str, str, int | None, str]
_CELL_DIMS = {"county": 0, "township": 1, "village": 2, "operator": 3}


def cell_of(ch: Channel) -> Cell:
    return (ch.county, ch.township, ch.village, ch.operator, ch.klass, ch.project)


def cell_keys(cell: Cell, scopes: Sequence[tuple[str, ...]] = SCOPES,
              breakdowns: Sequence[str | None] = BREAKDOWNS) -> tuple[Key, ...]:
    """Every (scope, class, project) row a cell's channels count in. A channel without a
    value for one of a scope's dimensions (no township, say) is in no scope of that kind."""
    out: list[Key] = []
    klass, project = cell[4], cell[5]
    places = cell[:4]
    for dims in scopes:
        scope = tuple((d, places[_CELL_DIMS[d]] or "") for d in dims)
        if not all(v for _, v in scope):
            continue
        for b in breakdowns:
            if b == "class":
                if klass is not None:
                    out.append((scope, klass, None))
            elif b == "project":
                if project:
                    out.append((scope, None, project))
            else:
                out.append((scope, None, None))
    return tuple(out)


def _keys(ch: Channel, scopes: Sequence[tuple[str, ...]],
          breakdowns: Sequence[str | None]) -> tuple[Key, ...]:
    """Every (scope, class, project) row a channel counts in."""
    return cell_keys(cell_of(ch), scopes, breakdowns)


def roll_up(cells: Mapping[Cell, Sequence[int]], scopes: Sequence[tuple[str, ...]] = SCOPES,
            breakdowns: Sequence[str | None] = BREAKDOWNS) -> dict[Key, list[int]]:
    """The roll-up: counters summed per cell (any fixed-length vector of integers: online /
    offline / unknown channels, milliseconds, planned / installed ...) added into every
    (scope, class, project) row the cell counts in. Sums only, so every rate built on the
    result is Σ numerators / Σ denominators."""
    out: dict[Key, list[int]] = {}
    get = out.get
    for cell, values in cells.items():
        for key in cell_keys(cell, scopes, breakdowns):
            acc = get(key)
            out[key] = list(values) if acc is None else list(map(add, acc, values))
    return out


class RateIndex:
    """Which rows each connected channel counts in, worked out once per inventory.

    Channels with the same county, township, village, operator, class and project count in
    the same rows: they form a *cell*. An evaluation then costs one counter step per channel
    plus one per cell and row, instead of ~20 dictionary updates per channel (at 100,000
    channels: about 0.1 s instead of 2 s, every evaluation)."""

    def __init__(self, channels: Iterable[Channel], scopes: Sequence[tuple[str, ...]] = SCOPES,
                 breakdowns: Sequence[str | None] = BREAKDOWNS) -> None:
        cells: dict[Cell, int] = {}
        self._layout_cache: tuple[list[Key], list[tuple[int, ...]]] | None = None
        self._targets_cache: tuple[TargetsConfig, list[float | None]] | None = None
        self._cell_keys: list[tuple[Key, ...]] = []
        self._cell_of: dict[str, int] = {}
        for ch in channels:
            if not ch.connected:
                continue
            sig = cell_of(ch)
            n = cells.get(sig)
            if n is None:
                n = cells[sig] = len(self._cell_keys)
                self._cell_keys.append(cell_keys(sig, scopes, breakdowns))
            self._cell_of[ch.id] = n

    def cell_of(self, cid: str) -> int | None:
        """The cell channel ``cid`` counts in (None: not a connected channel)."""
        return self._cell_of.get(cid)

    def count(self, state_of: Callable[[str], str]) -> list[list[int]]:
        """Per cell: [online, offline, unknown]."""
        per_cell = self.zero()
        for cid, n in self._cell_of.items():
            per_cell[n][state_index(state_of(cid))] += 1
        return per_cell

    def zero(self) -> list[list[int]]:
        return [[0, 0, 0] for _ in self._cell_keys]

    def slices(self, size: int) -> Iterator[list[tuple[str, int]]]:
        """The (channel, cell) pairs in slices of ``size``, for a count spread over turns of
        the event loop (see :meth:`camwatch.evaluator.Evaluator.count_for`)."""
        items = list(self._cell_of.items())
        for i in range(0, len(items), size):
            yield items[i:i + size]

    def compute(self, state_of: Callable[[str], str], targets: Targets) -> list[RateRow]:
        return self.rows(self.count(state_of), targets)

    def layout(self) -> tuple[list[Key], list[tuple[int, ...]]]:
        """Every row's key, in the order rows are listed, and each cell's rows by position:
        made once per inventory (on first use), so an evaluation adds counts into lists and
        sorts nothing."""
        if self._layout_cache is None:
            keys = sorted({k for ks in self._cell_keys for k in ks},
                          key=lambda k: (len(k[0]), k[0], k[1] is None, k[1] or 0, k[2] or ""))
            pos = {k: i for i, k in enumerate(keys)}
            self._layout_cache = (keys, [tuple(pos[k] for k in ks) for ks in self._cell_keys])
        return self._layout_cache

    def rows(self, per_cell: Sequence[Sequence[int]], targets: Targets) -> list[RateRow]:
        """The rate rows from per-cell counts, O(cells × rows). (The daemon's evaluator keeps
        the rows' totals up to date as channels change and remakes only the rows that did:
        :meth:`totals`, :meth:`row`.)"""
        return [self.row(i, t, targets) for i, t in enumerate(self.totals(per_cell))]

    def totals(self, per_cell: Sequence[Sequence[int]]) -> list[list[int]]:
        """Each row's [online, offline, unknown], in :meth:`layout` order, summed from the
        cells' counts."""
        keys, cell_rows = self.layout()
        tot = [[0, 0, 0] for _ in keys]
        for positions, (on, off, unk) in zip(cell_rows, per_cell, strict=True):
            for i in positions:
                t = tot[i]
                t[0] += on
                t[1] += off
                t[2] += unk
        return tot

    def row(self, position: int, counts: Sequence[int], targets: Targets) -> RateRow:
        """The rate row at ``position`` of :meth:`layout`, from its [online, offline,
        unknown]."""
        scope, klass, project = self.layout()[0][position]
        on, off, unk = counts
        return RateRow(scope, klass, project, on, on + off, off, unk,
                       self.targets_of(targets)[position])

    def targets_of(self, targets: Targets) -> list[float | None]:
        """Each row's target, in :meth:`layout` order: looked up once per inventory and
        targets (a reload plans it in its worker thread), not at every evaluation."""
        if self._targets_cache is None or self._targets_cache[0] is not targets.cfg:
            keys = self.layout()[0]
            self._targets_cache = (targets.cfg, [targets.target_for(dict(scope), klass, project)
                                             for scope, klass, project in keys])
        return self._targets_cache[1]


def compute_rates(channels: Iterable[Channel], state_of: Callable[[str], str],
                  targets: Targets, scopes: Sequence[tuple[str, ...]] = SCOPES,
                  breakdowns: Sequence[str | None] = BREAKDOWNS) -> list[RateRow]:
    """Count online / connected for every scope × breakdown. ``state_of(channel_id)`` gives
    ``online``, ``offline`` or ``unknown``. Only connected channels are looked at. (The
    daemon keeps a :class:`RateIndex` instead of rebuilding one every evaluation.)"""
    return RateIndex(channels, scopes, breakdowns).compute(state_of, targets)
