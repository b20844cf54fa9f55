"""``/metrics``: Prometheus exposition built from the engine's in-memory state.

No I/O on the event loop at scrape time, and little work: per-channel series are the bulk
(100,000 channels → ~300,000 lines, ~35 MB). Going through prometheus-client objects costs about
a second at that size and holds the GIL (stalling every probe), so each channel's lines are kept
here *pre-rendered* as bytes and re-rendered only when that channel changes: the engine calls
:meth:`MetricsRenderer.channel_changed` after every verdict and every ONVIF result (a few
microseconds). The aggregate gauges are counters moved by the same hook. A scrape then only
collects the cached bytes (10-25 ms on the loop at 100,000 channels), which the HTTP handler
joins (40-70 ms) and gzips (60-120 ms; 34 MB → 1.8 MB) in a worker thread, as both release
the GIL, then writes in 1 MiB chunks. The two timestamp families (last probe, state since)
change at every verdict and are the same short line for every channel: they are not cached
but formatted in that worker thread from the book's states (1.5-2 µs a line here), which keeps
~30 MB of per-channel bytes out of the daemon at 100,000 channels. The renderer this replaced
spent ~270 ms per scrape on the loop at the same size (figures from ``bench/bench_metrics.py``
on a loaded 2-core machine). A config or inventory reload swaps the book's channels; the next
scrape rebuilds the caches once (O(n), ~0.6-1.2 s at 100,000 channels) in a worker thread
(:meth:`MetricsRenderer.ready`) and re-renders the channels judged meanwhile.

prometheus-client still renders the process/Python collectors of the default registry and
chooses the format from the ``Accept`` header (OpenMetrics 1.0 or text 0.0.4; the per-channel
lines are the same in both, only counter headers and the ``# EOF`` trailer differ).

Exposition produced (gauges unless noted):

- ``camwatch_channel_up{channel,name,village,class,project,county,township,operator}`` 1/0;
  absent while the channel is ``unknown`` (name: 点位名称, what the offline list shows).
- ``camwatch_channel_last_probe_timestamp_seconds{channel}``
- ``camwatch_channel_state_since_timestamp_seconds{channel}``: when the current state began.
- ``camwatch_channel_offline_reason{channel,reason}`` 1, only while offline (timeout, auth,
  host_down, flapping, ...; follows the latest failure).
- ``camwatch_channel_clock_drift_seconds{channel}`` (only when measured)
- ``camwatch_channel_info{channel,vendor,model,firmware}`` 1 (only when known)
- ``camwatch_channels{class,project,county,township}``: connected channels with a verdict
  (online + offline): the denominator of the online rate.
- ``camwatch_channels_online{class,project,county,township}``: the numerator.
- ``camwatch_channels_unknown{class,project,county,township}``: left out of both.
- ``camwatch_online_rate_target{class,project}``: configured targets (fractions); one of the
  two labels is empty. ``camwatch_online_rate_min_channels``: smaller scopes are not alerted on.
- ``camwatch_probes_total{kind,reason}`` counter (reason ``ok`` for successes; every reason
  pre-created for each kind seen).
- ``camwatch_probe_phase_seconds{phase}`` histogram (connect, describe, ... of every probe).
- ``camwatch_channel_transitions_total{to}`` counter.
- ``camwatch_probe_interval_seconds``, ``camwatch_sweep_duration_seconds`` (time the last
  round of as many verdicts as channels took), ``camwatch_sweep_lag_seconds`` (median delay of
  a probe behind its due time), ``camwatch_loop_lag_seconds``, ``camwatch_probes_in_flight``,
  ``camwatch_prober_healthy``, ``camwatch_alert_outbox_depth`` (-1 until first counted),
  ``camwatch_store_write_errors_total``, ``camwatch_config_reloads_total{result}``,
  ``camwatch_event_loop_lag_seconds`` histogram (a sample every 0.25 s: what a stall of the
  daemon's loop looks like), ``camwatch_loop_lag_max_seconds`` (the largest since start),
  ``camwatch_build_info{version}``.
- ``camwatch_gb_*`` when the GB/T 28181 upper platform is enabled: ``camwatch_gb_platform_up
  {platform}``, ``camwatch_gb_keepalive_age_seconds{platform}``, catalog sizes and counters
  (:meth:`camwatch.gb28181.service.GbService.metrics_text`).
- with ``repairs.enabled``: ``camwatch_repair_tickets_open{state}``,
  ``camwatch_repair_tickets_overdue{operator,county,township}``,
  ``camwatch_repair_tickets_opened_total``, ``camwatch_repair_assessment_*{operator,...}``
  (:mod:`camwatch.repairs.metrics`).
- with ``quality.enabled``, the 完好率's numerator and denominator by the same label sets:
  ``camwatch_channels_intact{class,project,county,township}`` (online with an ok picture) and
  ``camwatch_channels_intact_judged{...}`` (those, offline ones and online ones with a
  degraded picture; docs/quality.md), and ``camwatch_intact_rate_target{class,project}``
  (``targets.intact``). Counted at scrape time over the sampled channels: O(channels), a
  dictionary look-up each (~10 ms at 100,000).
- the picture's quality (:meth:`camwatch.quality.book.QualityBook.exposition`):
  ``camwatch_channel_quality_ok{channel}``, ``camwatch_channel_quality_score{channel,check}``
  (faults only), ``camwatch_channels_quality{quality}``, ``camwatch_quality_samples_total``;
  ``camwatch_quality_requested_samples_total`` (samples taken on request) and
  ``camwatch_quality_lag_seconds`` (how late the cadence's samples start).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from camwatch import __version__
from camwatch.model import state_index
from camwatch.pacing import paced
from camwatch.probes.result import Reason

if TYPE_CHECKING:
    from camwatch.engine import Engine
    from camwatch.inventory import Channel
    from camwatch.model import ChannelState

OUTBOX_REFRESH_S = 5.0  # the outbox depth is counted in a thread at most this often
OUTBOX_WAIT_S = 1.0  # a scrape waits at most this long for a fresh count, else serves the last



def _esc(value: object) -> str:
    s = str(value)
    if "\\" in s or '"' in s or "\n" in s:
        return s.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return s


def _labels(**kw: object) -> str:
    return ",".join(f'{k}="{_esc("" if v is None else v)}"' for k, v in kw.items())


def channel_labels(ch: Channel, tails: dict[tuple[object, ...], str] | None = None) -> str:
    """``channel_up``'s label text; ``tails`` memoises the part shared by many channels."""
    key = (ch.klass, ch.project, ch.county, ch.township, ch.operator)
    tail = tails.get(key) if tails is not None else None
    if tail is None:
        tail = _labels(**{"class": ch.klass or ""}, project=ch.project, county=ch.county,
                       township=ch.township, operator=ch.operator)
        if tails is not None:
            tails[key] = tail
    return f'channel="{_esc(ch.id)}",name="{_esc(ch.name)}",village="{_esc(ch.village)}",{tail}'


def _head(name: str, kind: str, text: str, openmetrics: bool) -> str:
    # OpenMetrics names a counter family without its ``_total`` sample suffix
    family = name.removesuffix("_total") if openmetrics and kind == "counter" else name
    return f"# HELP {family} {text}\n# TYPE {family} {kind}\n"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


AggKey = tuple[str, str, str, str]  # class, project, county, township
# a piece of the exposition, or what formats it: slices of a few hundred KB, one at a time
Part = bytes | Callable[[], Iterator[bytes]]


def join_parts(parts: Iterable[Part]) -> bytes:
    """The exposition from :meth:`MetricsRenderer.snapshot`'s parts, formatting the lazy
    ones in one go (the HTTP handler formats them a slice per turn of the loop instead:
    :func:`camwatch.http.join_sliced`)."""
    return b"".join(chunk for p in parts for chunk in ((p,) if isinstance(p, bytes) else p()))


def _idl(cid: str) -> bytes:
    return f'channel="{_esc(cid)}"'.encode()


CHUNK_LINES = 1_000  # lines formatted per slice (1-2 ms), then encoded as one piece


def _encoded(lines: Iterable[str]) -> Iterator[bytes]:
    """Lines of text as byte strings of ``CHUNK_LINES`` lines each, made as they are asked
    for: never 100,000 small objects alive at once, and never more than a slice's work in
    one step of whoever consumes them."""
    it = iter(lines)
    while batch := list(itertools.islice(it, CHUNK_LINES)):
        yield "".join(batch).encode()


def _timestamps(family: bytes, channels: Iterable[str],
                state: Callable[[str], ChannelState | None]) -> Iterator[bytes]:
    """One timestamp family's lines (``_LAST`` or ``_SINCE``) from the channels' states as
    they are when each slice is made: a scrape taken while verdicts land may mix a few
    older and newer values, as any scrape of a running process does."""
    field = "last_probe" if family is _LAST else "since"
    name = family.decode()

    def lines() -> Iterator[str]:
        for cid in channels:
            st = state(cid)
            ts = None if st is None else getattr(st, field)
            if ts is not None:
                yield f'{name}channel="{_esc(cid)}"}} {ts:.3f}\n'

    return _encoded(lines())


def _up_lines(channels: Mapping[str, Channel], counted: Mapping[str, int],
              tails: dict[tuple[object, ...], str]) -> Iterator[bytes]:
    """``channel_up``'s lines, formatted at scrape time from the channels and the state index
    each is counted under (0 online, 1 offline, 2 unknown: no line). Kept ready per channel
    they held 26 MB at 100,000 channels, repeating the inventory's own strings; formatting
    them costs ~1-2 µs a channel."""
    return _encoded(
        f"camwatch_channel_up{{{channel_labels(ch, tails)}}} {1 if idx == 0 else 0}\n"
        for cid, ch in channels.items() if (idx := counted.get(cid, 2)) != 2)


# the per-channel caches, swapped as a whole after a rebuild
_CACHES = ("_channels", "_tails", "_reason", "_drift", "_info", "_key", "_counted",
           "_agg", "_agg_labels")

_UP = b"camwatch_channel_up{"
_LAST = b"camwatch_channel_last_probe_timestamp_seconds{"
_SINCE = b"camwatch_channel_state_since_timestamp_seconds{"
_REASON = b"camwatch_channel_offline_reason{"
_DRIFT = b"camwatch_channel_clock_drift_seconds{"
_INFO = b"camwatch_channel_info{"

_CHANNEL_FAMILIES: tuple[tuple[str, str], ...] = (
    ("camwatch_channel_up", "1 if the channel is online, 0 if offline; absent while unknown."),
    ("camwatch_channel_last_probe_timestamp_seconds", "When the channel was last judged."),
    ("camwatch_channel_state_since_timestamp_seconds", "When the channel's state began."),
    ("camwatch_channel_offline_reason", "1 while the channel is offline, labelled with why."),
    ("camwatch_channel_clock_drift_seconds", "Camera clock minus camwatch's clock (ONVIF)."),
    ("camwatch_channel_info", "Device information reported over ONVIF (vendor, model, "
                              "firmware)."),
)
_AGG_FAMILIES: tuple[tuple[str, str], ...] = (
    ("camwatch_channels", "Connected channels with a verdict (online + offline): the online "
                          "rate's denominator."),
    ("camwatch_channels_online", "Connected channels online now: the online rate's numerator."),
    ("camwatch_channels_unknown", "Connected channels not judged (never probed, or prober "
                                  "unhealthy): left out of the online rate."),
)


class MetricsRenderer:
    """Keeps the exposition of one :class:`~camwatch.scheduler.Engine` ready to serve.

    Subscribes :meth:`channel_changed` to the engine's channel book, which keeps the aggregate
    counts and the few per-channel lines worth keeping up to date there; the per-channel
    families every channel has (up, two timestamps) are formatted at scrape time, a slice at
    a time (:meth:`snapshot`, :func:`camwatch.http.join_sliced`)."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self._clock = clock
        self._generation = -1  # the book's inventory generation the caches were built for
        # the channels the caches were built for, the label text many of them share, and
        # the lines kept per channel for the families few channels have
        self._channels: Mapping[str, Channel] = {}
        self._tails: dict[tuple[object, ...], str] = {}
        self._reason: dict[str, bytes] = {}
        self._drift: dict[str, bytes] = {}
        self._info: dict[str, bytes] = {}
        # aggregates: the state index each channel is counted under, counts per label set
        self._key: dict[str, AggKey] = {}
        self._counted: dict[str, int] = {}
        self._agg: dict[AggKey, list[int]] = {}
        self._agg_labels: dict[AggKey, str] = {}
        # sweep duration: verdicts since the current round began
        self._round_verdicts = 0
        self._round_start: float | None = None
        self.sweep_duration_s = 0.0
        # outbox depth, counted in a worker thread
        self.outbox_depth = -1
        self._outbox_at = float("-inf")
        self._outbox_task: asyncio.Future[int] | None = None
        self._rebuilding: asyncio.Future[None] | None = None
        self._replay: set[str] | None = None  # channels judged while a rebuild runs
        self.rebuild()  # at start-up, rather than in the first scrape
        engine.book.subscribe(self.channel_changed)

    # --- maintained by the engine's hook ----------------------------------------------------

    def channel_changed(self, cid: str, before: str = "", verdict: bool = True) -> None:
        """The book changed channel ``cid``'s state (``verdict``: a main-lane verdict, as
        opposed to ONVIF device information). Re-renders that channel's lines only."""
        if self._generation != self.engine.book.generation:
            if self._replay is not None:  # a rebuild is running in a thread: redo it after
                self._replay.add(cid)
            return  # the next render rebuilds everything
        st = self.engine.book.state(cid)
        if st is None or cid not in self._key:
            return
        self._render_channel(cid, st)
        if verdict:
            self._count_verdict()

    def _count_verdict(self) -> None:
        now = self._clock()
        if self._round_start is None:
            self._round_start = now
        self._round_verdicts += 1
        if self._round_verdicts >= len(self._key):
            self.sweep_duration_s = now - self._round_start
            self._round_start = now
            self._round_verdicts = 0

    def _render_channel(self, cid: str, st: ChannelState) -> None:
        idx = state_index(st.state)
        old = self._counted.get(cid)
        if old != idx:
            key = self._key[cid]
            counts = self._agg[key]
            if old is not None:
                counts[old] -= 1
            counts[idx] += 1
            self._counted[cid] = idx
        if idx == 1:  # the reason follows the latest failure, without a transition
            reason = _esc(st.reason or "").encode()
            self._reason[cid] = b'%s%s,reason="%s"} 1\n' % (_REASON, _idl(cid), reason)
        elif old == 1:
            self._reason.pop(cid, None)
        if st.clock_drift_s is not None:
            self._drift[cid] = b"%s%s} %.3f\n" % (_DRIFT, _idl(cid), st.clock_drift_s)
        dev = st.info.get("device") if st.info else None
        if dev:
            idl = _idl(cid)
            extra = _labels(vendor=dev.get("manufacturer"), model=dev.get("model"),
                            firmware=dev.get("firmware")).encode()
            self._info[cid] = b"%s%s,%s} 1\n" % (_INFO, idl, extra)

    def rebuild(self) -> None:
        """Rebuild every cache from the engine, on the calling thread (at start-up; a scrape
        that finds the caches stale awaits :meth:`ready` first, which rebuilds off the loop)."""
        book = self.engine.book
        self._generation = book.generation
        self._fill(book.channels, book.state)
        self._round_verdicts, self._round_start = 0, None

    def _fill(self, channels: Mapping[str, Channel],
              state: Callable[[str], ChannelState | None], pace: bool = False) -> None:
        """Build every cache for ``channels``: the aggregates' counts and the few lines kept
        ready (offline reasons, clock drift, device information). ``channel_up``'s lines are
        formatted at scrape time, so a reload of 100,000 channels makes none of them.
        ``pace``: in a worker thread, leave the loop its pace (:mod:`camwatch.pacing`)."""
        for d in (self._reason, self._drift, self._info):
            d.clear()
        self._channels = channels
        self._tails = {}
        keys: dict[AggKey, AggKey] = {}
        self._key = {}
        for cid in paced(channels, on=pace):
            ch = channels[cid]
            k: AggKey = (str(ch.klass or ""), ch.project, ch.county, ch.township)
            self._key[cid] = keys.setdefault(k, k)  # one tuple per label set
        self._agg = {k: [0, 0, 0] for k in sorted(keys)}
        self._agg_labels = {k: _labels(**{"class": k[0]}, project=k[1], county=k[2],
                                       township=k[3]) for k in self._agg}
        self._counted = {}
        for cid in paced(channels, on=pace):
            st = state(cid)
            if st is None:
                self._counted[cid] = 2
                self._agg[self._key[cid]][2] += 1
                continue
            self._render_channel(cid, st)

    async def ready(self) -> None:
        """After an inventory swap, rebuild the caches in a worker thread (about a second of
        work at 100,000 channels, which on the loop would stall every probe), then adopt them
        and re-render the channels judged meanwhile. A no-op while the caches are current."""
        book = self.engine.book
        while self._generation != book.generation:
            if self._rebuilding is not None:
                await asyncio.shield(self._rebuilding)
                continue
            gen = book.generation
            shadow = MetricsRenderer.__new__(MetricsRenderer)
            for name in _CACHES:
                setattr(shadow, name, {})
            self._replay = set()
            self._rebuilding = asyncio.ensure_future(
                asyncio.to_thread(shadow._fill, book.channels, book.state, True))
            try:
                await asyncio.shield(self._rebuilding)
            finally:
                self._rebuilding = None
                replay, self._replay = self._replay, None
            if book.generation != gen:
                continue  # swapped again meanwhile: build for the newest
            for name in _CACHES:
                setattr(self, name, getattr(shadow, name))
            self._generation = gen
            self._round_verdicts, self._round_start = 0, None
            for cid in replay or ():
                st = book.state(cid)
                if st is not None and cid in self._key:
                    self._render_channel(cid, st)

    # --- the outbox depth (the only figure that lives in the store) --------------------------

    async def refresh_outbox(self) -> None:
        """Count undelivered notifications in a worker thread, at most every few seconds; wait
        for the count at most ``OUTBOX_WAIT_S`` (a slow disk never stalls a scrape)."""
        now = self._clock()
        if self._outbox_task is None and now - self._outbox_at >= OUTBOX_REFRESH_S:
            self._outbox_at = now
            self._outbox_task = asyncio.ensure_future(
                asyncio.to_thread(self.engine.store.outbox_depth))
        task = self._outbox_task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), OUTBOX_WAIT_S)
        except TimeoutError:
            return  # served with the last count; the task finishes later
        except Exception:  # a broken store shows as -1
            self.outbox_depth = -1
        else:
            self.outbox_depth = task.result()
        self._outbox_task = None

    # --- the scrape -------------------------------------------------------------------------

    def snapshot(self, accept: str | None = None) -> tuple[list[Part], str]:
        """The exposition as a list of parts to be joined in order (see :func:`join_parts`):
        byte strings, and for the families every channel has (up, the two timestamps) a
        function that formats them, slice by slice, from the channels and the book's states.
        In the format the ``Accept`` header asks for, with its content type. Cheap: a few
        milliseconds on the loop (the few per-channel lines kept, the aggregates), plus a
        rebuild after a reload; the formatting is left to whoever joins."""
        encoder, content_type = choose_encoder(accept or "")
        openmetrics = content_type.startswith("application/openmetrics-text")
        eng = self.engine
        if self._generation != eng.book.generation:
            self.rebuild()
        # the channels of this generation: a reload swaps the mapping, never mutates it
        channels, state = self._channels, eng.book.state
        parts: list[Part] = []
        families: tuple[dict[str, bytes] | bytes, ...] = (
            _UP, _LAST, _SINCE, self._reason, self._drift, self._info)
        for (name, text), lines in zip(_CHANNEL_FAMILIES, families, strict=True):
            parts.append(_head(name, "gauge", text, openmetrics).encode())
            if lines is _UP:
                parts.append(functools.partial(_up_lines, channels, self._counted, self._tails))
            elif isinstance(lines, bytes):
                parts.append(functools.partial(_timestamps, lines, channels, state))
            else:
                parts.extend(lines.values())
        parts.append(eng.quality.exposition(channels, openmetrics))  # docs/quality.md
        parts.append(self._render_small(openmetrics).encode())
        parts.append(encoder(REGISTRY))
        return parts, content_type

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """:meth:`snapshot`, joined on the calling thread in one go (the HTTP handler formats
        a slice per turn of the loop instead)."""
        parts, content_type = self.snapshot(accept)
        return join_parts(parts), content_type

    def _render_intact(self, add: Callable[[str], None], openmetrics: bool) -> None:
        """The 完好率's gauges: for every label set, channels intact (online, last picture ok)
        and judged (offline, or online with an ok or degraded picture): the same counting as
        :func:`camwatch.quality.rates.intact_state`."""
        eng = self.engine
        intact = {key: [0, 0] for key in self._agg}  # intact, online with a verdict
        counted, keys = self._counted, self._key
        for cid, rec in eng.quality.records.items():
            key = keys.get(cid)
            if key is None or counted.get(cid) != 0 or rec.quality == "unknown":
                continue  # only online channels with a verdict here; offline ones below
            row = intact[key]
            row[1] += 1
            if rec.quality == "ok":
                row[0] += 1
        add(_head("camwatch_channels_intact", "gauge", "Connected channels online with a usable "
                  "picture (last quality sample ok): the intact rate's numerator.", openmetrics))
        for key, (n, _) in intact.items():
            add(f"camwatch_channels_intact{{{self._agg_labels[key]}}} {n}\n")
        add(_head("camwatch_channels_intact_judged", "gauge", "Connected channels offline, or "
                  "online with a quality verdict: the intact rate's denominator.", openmetrics))
        for key, (_, judged) in intact.items():
            add(f"camwatch_channels_intact_judged{{{self._agg_labels[key]}}} "
                f"{judged + self._agg[key][1]}\n")
        t = eng.cfg.targets.intact_targets()
        add(_head("camwatch_intact_rate_target", "gauge",
                  "Intact-rate (完好率) target (fraction) by point class or project.",
                  openmetrics))
        for klass, target in sorted(t.by_class.items()):
            add(f'camwatch_intact_rate_target{{class="{klass}",project=""}} {_num(target)}\n')
        for project, target in sorted(t.by_project.items()):
            add(f'camwatch_intact_rate_target{{class="",project="{_esc(project)}"}} '
                f"{_num(target)}\n")

    def _render_small(self, openmetrics: bool) -> str:
        eng = self.engine
        out: list[str] = []
        add = out.append
        for i, (name, text) in enumerate(_AGG_FAMILIES):
            add(_head(name, "gauge", text, openmetrics))
            for key, counts in self._agg.items():
                n = counts[0] + counts[1] if i == 0 else counts[0] if i == 1 else counts[2]
                add(f"{name}{{{self._agg_labels[key]}}} {n}\n")

        if eng.cfg.quality.enabled:
            self._render_intact(add, openmetrics)
            name = "camwatch_quality_requested_samples_total"
            add(_head(name, "counter",
                      "Pictures sampled on request, beside the cadence (a repair claim being "
                      "verified, POST /api/channels/{id}/sample).", openmetrics))
            add(f"{name} {eng.sampler.requested_total}\n")
            add(_head("camwatch_quality_lag_seconds", "gauge",
                      "How late the last picture sample of the cadence started (0 while the "
                      "quality lane keeps up; see quality.max_concurrency).", openmetrics))
            add(f"camwatch_quality_lag_seconds {_num(round(eng.sampler.lag_s, 3))}\n")
        add(_head("camwatch_online_rate_target", "gauge",
                  "Online-rate target (fraction) by point class or project.", openmetrics))
        for klass, target in sorted(eng.cfg.targets.by_class.items()):
            add(f'camwatch_online_rate_target{{class="{klass}",project=""}} {_num(target)}\n')
        for project, target in sorted(eng.cfg.targets.by_project.items()):
            add(f'camwatch_online_rate_target{{class="",project="{_esc(project)}"}} '
                f"{_num(target)}\n")

        stats = eng.scheduler.stats
        add(_head("camwatch_probes_total", "counter", "Probes run, by kind and outcome "
                  "(reason ok for successes).", openmetrics))
        kinds = sorted({kind for kind, _ in stats.probes})
        for kind in kinds:
            for reason in ("ok", *(r.value for r in Reason)):
                add(f'camwatch_probes_total{{kind="{_esc(kind)}",reason="{reason}"}} '
                    f"{stats.probes.get((kind, reason), 0)}\n")
        add(_head("camwatch_probe_phase_seconds", "histogram",
                  "Duration of probe phases (connect, describe, ...).", openmetrics))
        for phase, h in sorted(stats.phase_seconds.items()):
            ph = _esc(phase)
            for le, n in h.cumulative():
                add(f'camwatch_probe_phase_seconds_bucket{{phase="{ph}",le="{le}"}} {n}\n')
            add(f'camwatch_probe_phase_seconds_sum{{phase="{ph}"}} {h.sum!r}\n')
            add(f'camwatch_probe_phase_seconds_count{{phase="{ph}"}} {h.count}\n')
        lags = eng.health.loop_lags
        add(_head("camwatch_event_loop_lag_seconds", "histogram",
                  "Event-loop lag, sampled every 0.25 s.", openmetrics))
        for le, n in lags.cumulative():
            add(f'camwatch_event_loop_lag_seconds_bucket{{le="{le}"}} {n}\n')
        add(f"camwatch_event_loop_lag_seconds_sum {lags.sum!r}\n")
        add(f"camwatch_event_loop_lag_seconds_count {lags.count}\n")
        add(_head("camwatch_channel_transitions_total", "counter",
                  "Channel state transitions, by new state.", openmetrics))
        for to in ("online", "offline", "unknown"):
            add(f'camwatch_channel_transitions_total{{to="{to}"}} '
                f"{eng.book.transitions_total.get(to, 0)}\n")
        add(_head("camwatch_config_reloads_total", "counter",
                  "Config/inventory reloads by result.", openmetrics))
        for result in ("ok", "failed"):
            add(f'camwatch_config_reloads_total{{result="{result}"}} '
                f"{eng.reloads.get(result, 0)}\n")
        singles: Iterable[tuple[str, str, float, str]] = (
            ("camwatch_online_rate_min_channels", "gauge", eng.cfg.targets.min_channels,
             "Scopes with fewer judged channels are not alerted on."),
            ("camwatch_probe_interval_seconds", "gauge", eng.cfg.probing.interval,
             "Configured interval between two probes of a channel."),
            ("camwatch_sweep_duration_seconds", "gauge", self.sweep_duration_s,
             "Time the last round of as many verdicts as channels took (about the interval "
             "when keeping up)."),
            ("camwatch_sweep_lag_seconds", "gauge", eng.health.sweep_lag(),
             "Median delay between a probe's due time and its start."),
            ("camwatch_loop_lag_seconds", "gauge", eng.health.loop_lag_s, "Event-loop lag."),
            ("camwatch_loop_lag_max_seconds", "gauge", eng.health.max_loop_lag_s,
             "Largest event-loop lag since camwatch started."),
            ("camwatch_probes_in_flight", "gauge", stats.in_flight, "Probes running now."),
            ("camwatch_prober_healthy", "gauge", 0 if eng.health.verdict_problems() else 1,
             "1 when the prober trusts its own results."),
            ("camwatch_alert_outbox_depth", "gauge", self.outbox_depth,
             "Notifications not yet delivered (-1: not counted yet, or the store failed)."),
            ("camwatch_store_write_errors_total", "counter", eng.writer.errors,
             "Failed store writes (retried)."),
        )
        for name, kind, value, text in singles:
            add(f"{_head(name, kind, text, openmetrics)}{name} {_num(value)}\n")
        if eng.gb is not None:  # GB/T 28181 platforms (camwatch.gb28181.service)
            add(eng.gb.metrics_text(lambda n, k, t: _head(n, k, t, openmetrics)))
        if eng.cfg.repairs.enabled:  # repair tickets (camwatch/repairs/metrics.py)
            from camwatch.repairs.metrics import exposition as repairs_exposition
            add(repairs_exposition(eng.repairs, eng.clock(), openmetrics, _head, _esc))
        for extra in eng.extra_metrics:
            add(extra(openmetrics))
        add(_head("camwatch_build_info", "gauge", "camwatch's version.", openmetrics))
        add(f'camwatch_build_info{{version="{_esc(__version__)}"}} 1\n')
        return "".join(out)
