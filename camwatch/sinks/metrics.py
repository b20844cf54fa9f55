"""``/metrics``: Prometheus text exposition built from the engine's in-memory state.

No I/O at scrape time. Per-channel series are the bulk (100,000 channels → ~300,000 lines);
going through prometheus-client objects costs about a second at that size and holds the GIL
(stalling every probe), so per-channel lines are rendered here from a cache of each channel's
label text, built once per inventory. prometheus-client still renders the process/Python
collectors of the default registry, appended at the end.

Exposition produced (all gauges unless noted):

- ``camwatch_channel_up{channel,class,project,county,township,operator}`` 1/0; absent while
  the channel is ``unknown``.
- ``camwatch_channel_last_probe_timestamp_seconds{channel}``
- ``camwatch_channel_clock_drift_seconds{channel}`` (only when measured)
- ``camwatch_channel_info{channel,vendor,model,firmware}`` 1 (only when known)
- ``camwatch_channels{class,project,county,township}``: connected channels with a verdict
  (online + offline): the denominator of the online rate.
- ``camwatch_channels_online{class,project,county,township}``: the numerator.
- ``camwatch_channels_unknown{class,project,county,township}``: left out of both.
- ``camwatch_online_rate_target{class}`` / ``{project}``: configured targets (fractions).
- ``camwatch_probes_total{kind,reason}`` counter (reason ``ok`` for successes).
- ``camwatch_probe_phase_seconds{phase}`` histogram of recent probe phases.
- ``camwatch_channel_transitions_total{to}`` counter.
- ``camwatch_sweep_lag_seconds``, ``camwatch_loop_lag_seconds``, ``camwatch_probes_in_flight``,
  ``camwatch_prober_healthy``, ``camwatch_alert_outbox_depth``,
  ``camwatch_store_write_errors_total``, ``camwatch_config_reloads_total{result}``.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, generate_latest

if TYPE_CHECKING:
    from camwatch.inventory import Channel
    from camwatch.scheduler import Engine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PHASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _esc(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kw: object) -> str:
    return ",".join(f'{k}="{_esc("" if v is None else v)}"' for k, v in kw.items())


def channel_labels(ch: Channel) -> str:
    return _labels(channel=ch.id, **{"class": ch.klass or ""}, project=ch.project,
                   county=ch.county, township=ch.township, operator=ch.operator)


class MetricsRenderer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._label_cache: dict[str, str] = {}
        self._id_cache: dict[str, str] = {}
        self._cache_key: object = None

    def _refresh_labels(self) -> None:
        channels = self.engine.channels
        if self._cache_key is channels:
            return
        self._label_cache = {cid: channel_labels(ch) for cid, ch in channels.items()}
        self._id_cache = {cid: _labels(channel=cid) for cid in channels}
        self._cache_key = channels

    def render(self) -> bytes:
        eng = self.engine
        self._refresh_labels()
        out: list[str] = []
        add = out.append
        states = eng.states

        add("# HELP camwatch_channel_up 1 if the channel is online, 0 if offline; absent "
            "while unknown.\n# TYPE camwatch_channel_up gauge\n")
        lines = [f"camwatch_channel_up{{{self._label_cache[cid]}}} "
                 f"{1 if st.state == 'online' else 0}\n"
                 for cid, st in states.items()
                 if st.state != "unknown" and cid in self._label_cache]
        out.extend(lines)
        add("# HELP camwatch_channel_last_probe_timestamp_seconds When the channel was last "
            "probed.\n# TYPE camwatch_channel_last_probe_timestamp_seconds gauge\n")
        out.extend(f"camwatch_channel_last_probe_timestamp_seconds{{{self._id_cache[cid]}}} "
                   f"{st.last_probe:.3f}\n"
                   for cid, st in states.items()
                   if st.last_probe is not None and cid in self._id_cache)
        add("# HELP camwatch_channel_clock_drift_seconds Camera clock minus camwatch's clock "
            "(ONVIF).\n# TYPE camwatch_channel_clock_drift_seconds gauge\n")
        out.extend(f"camwatch_channel_clock_drift_seconds{{{self._id_cache[cid]}}} "
                   f"{st.clock_drift_s:.3f}\n"
                   for cid, st in states.items()
                   if st.clock_drift_s is not None and cid in self._id_cache)
        add("# HELP camwatch_channel_info Device information reported over ONVIF.\n"
            "# TYPE camwatch_channel_info gauge\n")
        for cid, cst in states.items():
            dev = cst.info.get("device") if cst.info else None
            if dev and cid in self._id_cache:
                add(f"camwatch_channel_info{{{self._id_cache[cid]},"
                    f"{_labels(vendor=dev.get('manufacturer'), model=dev.get('model'), firmware=dev.get('firmware'))}"  # noqa: E501
                    f"}} 1\n")

        judged: Counter[tuple[object, ...]] = Counter()
        online: Counter[tuple[object, ...]] = Counter()
        unknown: Counter[tuple[object, ...]] = Counter()
        for cid, ch in eng.channels.items():
            key: tuple[object, ...] = (ch.klass or "", ch.project, ch.county, ch.township)
            state = states[cid].state if cid in states else "unknown"
            if state == "unknown":
                unknown[key] += 1
                continue
            judged[key] += 1
            if state == "online":
                online[key] += 1
        for name, counts, text in (
            ("camwatch_channels", judged,
             "Connected channels with a verdict (online + offline): the rate's denominator."),
            ("camwatch_channels_online", online, "Connected channels online now."),
            ("camwatch_channels_unknown", unknown,
             "Connected channels not judged (never probed, or prober unhealthy)."),
        ):
            add(f"# HELP {name} {text}\n# TYPE {name} gauge\n")
            for key in sorted(set(judged) | set(unknown), key=str):
                lab = _labels(**{"class": key[0]}, project=key[1], county=key[2],
                              township=key[3])
                add(f"{name}{{{lab}}} {counts.get(key, 0)}\n")

        add("# HELP camwatch_online_rate_target Online-rate target (fraction).\n"
            "# TYPE camwatch_online_rate_target gauge\n")
        for klass, target in sorted(eng.cfg.targets.by_class.items()):
            add(f'camwatch_online_rate_target{{class="{klass}",project=""}} {target}\n')
        for project, target in sorted(eng.cfg.targets.by_project.items()):
            add(f'camwatch_online_rate_target{{class="",project="{_esc(project)}"}} {target}\n')

        stats = eng.stats
        add("# HELP camwatch_probes_total Probes run, by kind and outcome.\n"
            "# TYPE camwatch_probes_total counter\n")
        for (kind, reason), n in sorted(stats.probes.items()):
            add(f"camwatch_probes_total{{{_labels(kind=kind, reason=reason)}}} {n}\n")
        add("# HELP camwatch_probe_phase_seconds Duration of probe phases (recent probes).\n"
            "# TYPE camwatch_probe_phase_seconds histogram\n")
        for phase, samples in sorted(stats.phase_seconds.items()):
            total = 0
            for b in PHASE_BUCKETS:
                total = sum(1 for s in samples if s <= b)
                add(f'camwatch_probe_phase_seconds_bucket{{phase="{phase}",le="{b}"}} '
                    f"{total}\n")
            add(f'camwatch_probe_phase_seconds_bucket{{phase="{phase}",le="+Inf"}} '
                f"{len(samples)}\n")
            add(f'camwatch_probe_phase_seconds_sum{{phase="{phase}"}} {sum(samples):.6f}\n')
            add(f'camwatch_probe_phase_seconds_count{{phase="{phase}"}} {len(samples)}\n')
        add("# HELP camwatch_channel_transitions_total State transitions, by new state.\n"
            "# TYPE camwatch_channel_transitions_total counter\n")
        for to in ("online", "offline", "unknown"):
            add(f'camwatch_channel_transitions_total{{to="{to}"}} {stats.transitions.get(to, 0)}\n')
        healthy = 0 if eng.problems else 1
        try:
            depth = eng.store.outbox_depth()
        except Exception:  # the store is local and cheap; a failure shows as -1
            depth = -1
        for name, kind, value, text in (
            ("camwatch_sweep_lag_seconds", "gauge", stats.sweep_lag_s,
             "Median delay between a probe's due time and its start."),
            ("camwatch_loop_lag_seconds", "gauge", stats.loop_lag_s, "Event-loop lag."),
            ("camwatch_probes_in_flight", "gauge", stats.probes_in_flight, "Probes running now."),
            ("camwatch_prober_healthy", "gauge", healthy,
             "1 when the prober trusts its own results."),
            ("camwatch_alert_outbox_depth", "gauge", depth, "Notifications not yet delivered."),
            ("camwatch_store_write_errors_total", "counter", stats.store_write_errors,
             "Failed store writes (retried)."),
        ):
            add(f"# HELP {name} {text}\n# TYPE {name} {kind}\n{name} {value}\n")
        add("# HELP camwatch_config_reloads_total Config/inventory reloads by result.\n"
            "# TYPE camwatch_config_reloads_total counter\n")
        for result in ("ok", "failed"):
            add(f'camwatch_config_reloads_total{{result="{result}"}} '
                f"{stats.reloads.get(result, 0)}\n")
        return "".join(out).encode() + generate_latest(REGISTRY)
