"""Each channel's quality state (ok / degraded / unknown), beside the channel book's online
state and never mixed into it.

The decision (issue #13): a degraded picture is a camera that is *online* (it answered and sent
a decodable picture) but not *intact*; a picture that could not be sampled is quality
``unknown``, never a reason for ``offline``: the online state stays the main probe lane's
alone. So 在线率 is unchanged by this module and 完好率 = online ∧ quality ok over connected.

Pure and synchronous like :class:`~camwatch.book.ChannelBook`: verdicts in
(:meth:`QualityBook.record`), read by the metrics and the HTTP API. Memory, bounded:

- per sampled channel a small record (scores, faults) and its pre-rendered metric lines;
- the reference thumbnail of ``scene_changed``: the first fault-free sample's 64×36 grey
  thumbnail, as uint8 (2.3 KB a channel);
- the last thumbnail JPEGs (320 px wide, ~10 KB), within ``thumbnail_budget`` bytes in all:
  past it the oldest of a fault-free channel goes first, then the oldest of any.

Persisted through the store (tables ``quality_state`` and ``quality_transitions``): each
verdict leaves the channel's state to write (:meth:`QualityBook.take_writes`, flushed with the
channel states about once a second by the engine) and, when the quality changed (or, while
degraded, the faults did), a :class:`~camwatch.store.base.QualityChange` for the log the
bulletin's 完好率 reads. A restart takes the stored states back (:meth:`QualityBook.load`): the
quality, its run (``since``, ``streak``: what ``quality_degraded`` and the repair desk count),
the blur baselines, the scene reference and the thumbnails (within ``thumbnail_budget``), so
nothing is re-alerted and nothing is learnt again.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

from camwatch.model import Quality
from camwatch.quality.names import Check
from camwatch.store.base import QualityChange, QualityState

if TYPE_CHECKING:  # numpy and PyAV (~35 MB) are imported only once pictures are sampled
    import numpy as np
    import numpy.typing as npt

    from camwatch.quality.checks import Fault, Grey
    from camwatch.quality.sample import QualityVerdict

    U8 = npt.NDArray[np.uint8]

__all__ = ["QualityBook", "QualityRecord"]

_T = TypeVar("_T")
# faults after which a picture's blur score says nothing of the lens: not a baseline sample
_NO_BASELINE = frozenset({Check.SIGNAL_LOST, Check.TOO_DARK, Check.TOO_BRIGHT, Check.NOISE,
                          Check.BLUR, Check.OCCLUDED})


@dataclass(slots=True)
class QualityRecord:
    quality: Quality
    ts: float
    faults: tuple[Fault, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    detail: str = ""
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    latency_ms: float = 0.0
    # the run of samples of this quality (a different quality starts a new one): when its
    # first sample was taken and how many it has; the repair desk opens and verifies
    # quality tickets by them (docs/repairs.md)
    since: float = 0.0
    streak: int = 1

    def json(self) -> dict[str, object]:
        return {"quality": self.quality.value, "ts": self.ts,
                "faults": [{"check": f.check, "score": f.score} for f in self.faults],
                "reason": self.reason, "detail": self.detail or None, "width": self.width,
                "height": self.height, "codec": self.codec,
                "latency_ms": round(self.latency_ms, 1)}


def _first(a: _T | None, b: _T | None) -> _T | None:
    return a if a is not None else b


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class QualityBook:
    def __init__(self, thumbnail_budget: int = 64 * 1024 * 1024) -> None:
        self.thumbnail_budget = thumbnail_budget
        self._records: dict[str, QualityRecord] = {}
        self._refs: dict[str, U8] = {}
        # blur baselines by (channel, "day" | "night"): (moving average, samples)
        self._blur: dict[tuple[str, str], tuple[float, int]] = {}
        # the kept JPEGs, oldest first, fault-free channels apart from degraded ones
        self._jpeg_ok: OrderedDict[str, bytes] = OrderedDict()
        self._jpeg_bad: OrderedDict[str, bytes] = OrderedDict()
        self._jpeg_bytes = 0
        self._lines: dict[str, bytes] = {}  # pre-rendered metric lines per channel
        self.samples_total: Counter[str] = Counter()  # by quality
        self._channels: Collection[str] | None = None  # the inventory's (not copied)
        # channels whose last sample was degraded: what the repair desk looks at, O(faults)
        self.degraded: set[str] = set()
        # what the store has not been given yet (take_writes): the latest state per channel
        # and the changes in order
        self._pending: dict[str, QualityState] = {}
        self._changes: list[QualityChange] = []

    # --- read API ---------------------------------------------------------------------------

    def get(self, cid: str) -> QualityRecord | None:
        return self._records.get(cid)

    def quality_of(self, cid: str) -> Quality:
        r = self._records.get(cid)
        return r.quality if r is not None else Quality.UNKNOWN

    def jpeg(self, cid: str) -> bytes | None:
        return self._jpeg_bad.get(cid) or self._jpeg_ok.get(cid)

    def reference(self, cid: str) -> Grey | None:
        ref = self._refs.get(cid)
        import numpy as np

        return ref.astype(np.float32) if ref is not None else None

    def json(self, cid: str) -> dict[str, object]:
        """The channel's quality in the API (``/api/channels``): ``{"quality": "unknown"}``
        until sampled; with a snapshot URL when a thumbnail is kept."""
        r = self._records.get(cid)
        out: dict[str, object] = r.json() if r is not None else {"quality": "unknown"}
        if self.jpeg(cid) is not None:
            out["snapshot"] = f"/api/channels/{cid}/snapshot.jpg"
        return out

    def blur_baseline(self, cid: str, period: str) -> float | None:
        from camwatch.quality.checks import baseline_value

        return baseline_value(self._blur.get((cid, period)))

    def counts(self, channels: Iterable[str]) -> Counter[str]:
        return Counter(self.quality_of(cid).value for cid in channels)

    @property
    def records(self) -> Mapping[str, QualityRecord]:
        return self._records

    @property
    def jpeg_bytes(self) -> int:
        return self._jpeg_bytes

    # --- verdicts ---------------------------------------------------------------------------

    def swap(self, channels: Collection[str]) -> None:
        """A new inventory: forget the channels that left. O(sampled channels), nothing when
        sampling is off: a reload's swap is O(changes) and this must not undo that."""
        keep = channels
        self._channels = keep
        for cid in [c for c in self._records if c not in keep]:
            del self._records[cid]
            self._lines.pop(cid, None)
            self._refs.pop(cid, None)
            self._drop_jpeg(cid)
            self.degraded.discard(cid)
            self._pending.pop(cid, None)  # its stored state is deleted with its channel's
        for key in [k for k in self._blur if k[0] not in keep]:
            del self._blur[key]

    def record(self, v: QualityVerdict, period: str | None = None) -> None:
        """Take a sample's verdict; ``period`` (day / night) feeds the channel's blur
        baseline with a sharp picture's score."""
        import numpy as np  # a verdict came from a sampler, which has it loaded

        from camwatch.quality.checks import update_baseline
        if self._channels is not None and v.channel_id not in self._channels:
            return  # removed by a reload while it was sampled
        cid = v.channel_id
        self.samples_total[v.quality.value] += 1
        prev = self._records.get(cid)
        rec = QualityRecord(v.quality, v.ts, v.faults, dict(v.scores), v.reason, v.detail,
                            v.width, v.height, v.codec, v.latency_ms, since=v.ts)
        if prev is not None and prev.quality is v.quality:
            rec.since, rec.streak = prev.since, prev.streak + 1
        self._records[cid] = rec
        if v.quality is Quality.DEGRADED:
            self.degraded.add(cid)
        else:
            self.degraded.discard(cid)
        new_ref = None
        if v.quality is Quality.OK and v.thumb is not None and cid not in self._refs:
            new_ref = self._refs[cid] = np.clip(np.rint(v.thumb), 0, 255).astype(np.uint8)
        if v.jpeg is not None:
            self._keep_jpeg(cid, v.jpeg, v.quality is Quality.DEGRADED)
        score = v.scores.get(Check.BLUR)
        if period is not None and score is not None and v.quality is not Quality.UNKNOWN \
                and not {f.check for f in v.faults} & _NO_BASELINE:
            self._blur[(cid, period)] = update_baseline(self._blur.get((cid, period)), score)
        self._render(cid)
        before = prev.quality if prev is not None else Quality.UNKNOWN
        checks = tuple(f.check for f in v.faults)
        if before is not v.quality or (
                prev is not None and checks != tuple(f.check for f in prev.faults)):
            self._changes.append(QualityChange(cid, v.ts, before.value, v.quality.value,
                                               checks))
        self._stage(cid, rec, v.jpeg, None if new_ref is None else new_ref.tobytes())

    # --- persistence ------------------------------------------------------------------------

    def _stage(self, cid: str, rec: QualityRecord, jpeg: bytes | None,
               ref: bytes | None) -> None:
        """The channel's state to write; a picture not yet written stays with the next one."""
        old = self._pending.get(cid)
        degraded = rec.quality is Quality.DEGRADED
        jpeg_ts = rec.ts if jpeg is not None else None
        fault, fault_ts = (jpeg, jpeg_ts) if degraded and jpeg is not None else (None, None)
        if old is not None:
            if jpeg is None:
                jpeg, jpeg_ts = old.jpeg, old.jpeg_ts
            if fault is None:
                fault, fault_ts = old.fault_jpeg, old.fault_ts
            if ref is None:
                ref = old.reference
        self._pending[cid] = QualityState(
            cid, rec.quality.value, rec.ts, rec.since, rec.streak,
            tuple((f.check, f.score) for f in rec.faults), dict(rec.scores), rec.reason,
            rec.detail, rec.width, rec.height, rec.codec, rec.latency_ms,
            {p: b for p in ("day", "night") if (b := self._blur.get((cid, p))) is not None},
            jpeg, jpeg_ts, ref,
            fault, fault_ts)

    def take_writes(self) -> tuple[list[QualityState], list[QualityChange]]:
        """What to write since the last call: the channels' states and the changes."""
        states, changes = list(self._pending.values()), self._changes
        self._pending, self._changes = {}, []
        return states, changes

    def restore_writes(self, states: list[QualityState], changes: list[QualityChange]) -> None:
        """Put back a batch the store refused; a channel sampled since keeps its newer state
        (its pictures, if it has none of its own, from the refused one)."""
        for q in states:
            newer = self._pending.get(q.channel_id)
            if newer is None:
                self._pending[q.channel_id] = q
            else:
                self._pending[q.channel_id] = replace(
                    newer, jpeg=_first(newer.jpeg, q.jpeg), jpeg_ts=_first(newer.jpeg_ts,
                                                                           q.jpeg_ts),
                    fault_jpeg=_first(newer.fault_jpeg, q.fault_jpeg),
                    fault_ts=_first(newer.fault_ts, q.fault_ts),
                    reference=_first(newer.reference, q.reference))
        self._changes[:0] = changes

    def load(self, stored: Mapping[str, QualityState]) -> None:
        """Take back what the store kept (at start, before any sample): the records, the
        runs, the baselines, the scene references and the thumbnails, within the budget
        (the degraded channels' first). Reads as many rows as channels were sampled; at
        10,000 channels about 100 MB of JPEGs pass through, of which the budget is kept."""
        import numpy as np

        from camwatch.quality.checks import THUMB_H, THUMB_W, Fault

        order = sorted(stored.values(), key=lambda q: (q.quality == Quality.DEGRADED, q.ts))
        for q in order:
            if self._channels is not None and q.channel_id not in self._channels:
                continue
            cid = q.channel_id
            quality = Quality(q.quality)
            self._records[cid] = QualityRecord(
                quality, q.ts, tuple(Fault(c, s) for c, s in q.faults), dict(q.scores),
                q.reason, q.detail, q.width, q.height, q.codec, q.latency_ms or 0.0,
                since=q.since, streak=q.streak)
            if quality is Quality.DEGRADED:
                self.degraded.add(cid)
            if q.reference is not None and len(q.reference) == THUMB_W * THUMB_H:
                self._refs[cid] = np.frombuffer(q.reference, dtype=np.uint8).reshape(
                    THUMB_H, THUMB_W).copy()
            for period, base in q.baselines.items():
                self._blur[(cid, period)] = base
            if q.jpeg is not None:  # the degraded last: they are evicted last
                self._keep_jpeg(cid, q.jpeg, quality is Quality.DEGRADED)
            self._render(cid)

    def forget_reference(self, cid: str) -> None:
        """Take the next fault-free picture as the scene reference (a camera moved on
        purpose)."""
        self._refs.pop(cid, None)
        rec = self._records.get(cid)
        if rec is not None:  # an empty reference in the store: none (NULL would keep it)
            self._stage(cid, rec, None, b"")

    def _drop_jpeg(self, cid: str) -> None:
        for d in (self._jpeg_ok, self._jpeg_bad):
            old = d.pop(cid, None)
            if old is not None:
                self._jpeg_bytes -= len(old)

    def _keep_jpeg(self, cid: str, data: bytes, degraded: bool) -> None:
        self._drop_jpeg(cid)
        if len(data) > self.thumbnail_budget:
            return
        (self._jpeg_bad if degraded else self._jpeg_ok)[cid] = data
        self._jpeg_bytes += len(data)
        while self._jpeg_bytes > self.thumbnail_budget:
            victims = self._jpeg_ok if self._jpeg_ok else self._jpeg_bad
            _, old = victims.popitem(last=False)
            self._jpeg_bytes -= len(old)

    # --- metrics ----------------------------------------------------------------------------

    def _render(self, cid: str) -> None:
        r = self._records[cid]
        ch = f'channel="{_esc(cid)}"'
        if r.quality is Quality.UNKNOWN:
            self._lines[cid] = b""
            return
        lines = [f"camwatch_channel_quality_ok{{{ch}}} {1 if r.quality is Quality.OK else 0}\n"]
        for f in r.faults:
            lines.append(f'camwatch_channel_quality_score{{{ch},check="{f.check}"}} '
                         f"{f.score!r}\n")
        self._lines[cid] = "".join(lines).encode()

    def exposition(self, channels: Collection[str], openmetrics: bool = False) -> bytes:
        """The quality metrics (text format; the same lines in OpenMetrics):

        - ``camwatch_channel_quality_ok{channel}`` 1/0, absent while unknown;
        - ``camwatch_channel_quality_score{channel,check}``: the score of each check at fault
          of a degraded channel (only the faults: a healthy fleet exports none of these);
        - ``camwatch_channels_quality{quality}``: channels by quality state;
        - ``camwatch_quality_samples_total{quality}`` counter.

        O(sampled channels), on the loop (the book changes there): nothing when sampling is
        off, a few ms per 10,000 sampled channels.
        """
        ok_lines = [b"# HELP camwatch_channel_quality_ok 1 when the last picture sampled had no "
                    b"fault, 0 when degraded; absent while unknown.\n"
                    b"# TYPE camwatch_channel_quality_ok gauge\n"]
        score_lines = [b"# HELP camwatch_channel_quality_score Score of each check at fault "
                       b"of a degraded channel (docs/quality.md).\n"
                       b"# TYPE camwatch_channel_quality_score gauge\n"]
        counts: Counter[str] = Counter()
        for cid, block in self._lines.items():
            if cid not in channels:
                continue
            counts[self._records[cid].quality.value] += 1
            if not block:
                continue
            first, _, rest = block.partition(b"\n")
            ok_lines.append(first + b"\n")
            if rest:
                score_lines.append(rest)
        counts[Quality.UNKNOWN.value] = len(channels) - counts[Quality.OK.value] \
            - counts[Quality.DEGRADED.value]
        tail = ["# HELP camwatch_channels_quality Connected channels by picture quality "
                "state.\n# TYPE camwatch_channels_quality gauge\n"]
        tail += [f'camwatch_channels_quality{{quality="{q.value}"}} {counts.get(q.value, 0)}\n'
                 for q in Quality]
        family = "camwatch_quality_samples" if openmetrics else "camwatch_quality_samples_total"
        tail.append(f"# HELP {family} Pictures sampled, by outcome.\n"
                    f"# TYPE {family} counter\n")
        tail += [f'camwatch_quality_samples_total{{quality="{q.value}"}} '
                 f"{self.samples_total.get(q.value, 0)}\n" for q in Quality]
        return b"".join(ok_lines) + b"".join(score_lines) + "".join(tail).encode()

