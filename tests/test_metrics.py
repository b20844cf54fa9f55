"""``/metrics``: the pre-rendered exposition stays equal to one rebuilt from scratch while the
engine judges real simulated cameras, parses in both formats, and is served (gzip, chunks)."""

from __future__ import annotations

import gzip
import itertools
import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from camwatch import __version__
from camwatch.engine import Engine
from camwatch.inventory import Channel
from camwatch.model import Verdict
from camwatch.probes import ProbeResult, Reason
from camwatch.rules.rates import Targets, compute_rates
from camwatch.sim.model import Fault
from camwatch.sinks.metrics import MetricsRenderer
from camwatch.stats import Histogram
from camwatch.store import open_store
from tests.test_engine import FakeClock, config, inventory, make_engine, rounds, serve

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(body: bytes, openmetrics: bool = False) -> Samples:
    text = body.decode()
    families = parse_openmetrics(text) if openmetrics else parse_text(text)
    out: Samples = {}
    for fam in families:
        for s in fam.samples:
            if s.name.startswith("camwatch_"):
                key = (s.name, frozenset(s.labels.items()))
                assert key not in out, f"duplicate series {key}"
                out[key] = s.value
    return out


def pick(all_: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    want = set(labels.items())
    return {k[1]: v for k, v in all_.items() if k[0] == name and want <= k[1]}


def live_only(s: Samples) -> Samples:
    """Without the figures that move by themselves (lags, in-flight, sweep duration)."""
    moving = {"camwatch_loop_lag_seconds", "camwatch_sweep_lag_seconds",
              "camwatch_probes_in_flight", "camwatch_sweep_duration_seconds"}
    return {k: v for k, v in s.items() if k[0] not in moving}


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 3.0):
        h.observe(v)
    assert h.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert h.count == 5 and h.sum == pytest.approx(4.65)


async def test_incremental_exposition_equals_a_rebuild(tmp_path: Path) -> None:
    site = await serve([("城关镇", 4), ("玄武镇", 3)])
    try:
        clock = FakeClock()
        eng = make_engine(tmp_path, site, clock, fail_threshold=1)
        renderer = MetricsRenderer(eng)
        before = samples(renderer.render()[0])
        assert pick(before, "camwatch_channel_up") == {}  # all unknown: absent
        assert sum(pick(before, "camwatch_channels_unknown").values()) == 7
        assert set(pick(before, "camwatch_channels").values()) == {0}  # pre-created

        await rounds(eng, clock, 1)
        ids = [c.id for c in site.channels]
        site.channel(ids[0]).fault = Fault.NOT_FOUND
        site.channel(ids[5]).fault = Fault.AUTH_FAIL
        await rounds(eng, clock, 1)
        body, ctype = renderer.render()
        assert ctype.startswith("text/plain; version=0.0.4")
        now = samples(body)
        fresh = samples(MetricsRenderer(eng).render()[0])
        assert live_only(now) == live_only(fresh)

        up = {dict(k)["channel"]: v for k, v in pick(now, "camwatch_channel_up").items()}
        assert up == {cid: 0.0 if cid in (ids[0], ids[5]) else 1.0 for cid in ids}
        reasons = {dict(k)["channel"]: dict(k)["reason"]
                   for k in pick(now, "camwatch_channel_offline_reason")}
        assert reasons == {ids[0]: "not_found", ids[5]: "auth"}
        labels0 = next(iter(pick(now, "camwatch_channel_up", channel=ids[0])))
        assert dict(labels0) == {"channel": ids[0], "name": "", "village": "", "class": "2",
                                 "project": "雪亮工程", "county": "鹿邑县",
                                 "township": "城关镇", "operator": "移动"}
        assert pick(now, "camwatch_channel_last_probe_timestamp_seconds",
                    channel=ids[3]) == {frozenset({("channel", ids[3])}): clock.t}
        assert pick(now, "camwatch_channel_state_since_timestamp_seconds",
                    channel=ids[0]) == {frozenset({("channel", ids[0])}): clock.t}

        # the aggregates are the rates' counts: Σ online / Σ judged by class
        online: dict[str, float] = defaultdict(float)
        judged: dict[str, float] = defaultdict(float)
        for k, v in pick(now, "camwatch_channels_online").items():
            online[dict(k)["class"]] += v
        for k, v in pick(now, "camwatch_channels").items():
            judged[dict(k)["class"]] += v
        rows = compute_rates(eng.channels.values(), eng.book.state_of, Targets(eng.cfg.targets))
        for row in rows:
            if not row.scope and row.klass is not None and row.project is None:
                assert (online[str(row.klass)], judged[str(row.klass)]) == \
                    (row.online, row.connected)

        probes = pick(now, "camwatch_probes_total", kind="describe")
        assert len(probes) == 1 + len(Reason)  # every reason pre-created
        assert probes[frozenset({("kind", "describe"), ("reason", "ok")})] == 12
        assert probes[frozenset({("kind", "describe"), ("reason", "not_found")})] == 1
        count = pick(now, "camwatch_probe_phase_seconds_count", phase="connect")
        inf = pick(now, "camwatch_probe_phase_seconds_bucket", phase="connect", le="+Inf")
        assert list(count.values()) == list(inf.values()) == [14.0]
        assert pick(now, "camwatch_build_info") == {frozenset({("version", __version__)}): 1}

        site.channel(ids[5]).fault = Fault.NONE  # recovers: its reason series goes
        await rounds(eng, clock, 1)
        assert not pick(samples(renderer.render()[0]), "camwatch_channel_offline_reason",
                        channel=ids[5])
        # a reload that drops a channel: rebuilt, and the channel is gone everywhere
        eng.reload(eng.cfg, inventory(site.channels[1:]))
        after = samples(renderer.render()[0])
        assert not [k for k in after if ("channel", ids[0]) in k[1]]
        assert sum(pick(after, "camwatch_channels").values()) == 6
        await rounds(eng, clock, 1)
        assert live_only(samples(renderer.render()[0])) == \
            live_only(samples(MetricsRenderer(eng).render()[0]))
    finally:
        for s in site.servers:
            s.close()


def synthetic_engine(tmp_path: Path, n: int, township: str = "城关镇") -> Engine:
    chans = [Channel(id=f"41162800001321{i:06d}", klass=1 + i % 3, project="雪亮工程",
                     county="鹿邑县", township=township, operator="移动", installed=True,
                     connected=True, rtsp_url=f"rtsp://127.0.0.1:9/ch{i}", host=f"h{i}",
                     credentials="default") for i in range(n)]
    cfg = config(tmp_path)
    return Engine(cfg, inventory(chans), open_store(cfg.store.path), clock=FakeClock())


def feed(eng: Engine, ok: bool, every: int = 1, drift: float | None = None) -> None:
    now = eng.clock()
    r = ProbeResult.success("rtsp", latency_s=0.01, phases={"connect": 0.002},
                            clock_drift_s=drift) if ok else \
        ProbeResult.failure("rtsp", Reason.TIMEOUT, "x", latency_s=1.0)
    for i, ch in enumerate(eng.channels.values()):
        if i % every == 0:
            eng.book.judge(ch.id, Verdict.of(r), now)


def test_escaping_openmetrics_unknown_and_sweep_duration(tmp_path: Path) -> None:
    eng = synthetic_engine(tmp_path, 30, township='北"关\\镇\n')
    t = [100.0]
    renderer = MetricsRenderer(eng, clock=lambda: t[0])
    feed(eng, True, drift=-7.5)
    t[0] = 160.0
    for _ in range(3):  # fail_threshold 3: offline
        feed(eng, False, every=2)
    body, ctype = renderer.render(OPENMETRICS)
    assert ctype.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
    om = samples(body, openmetrics=True)
    assert live_only(om) == live_only(samples(renderer.render()[0]))
    assert b"# TYPE camwatch_probes counter" in body  # OpenMetrics: family without _total
    rows = pick(om, "camwatch_channels", township='北"关\\镇\n')
    assert sum(rows.values()) == 30
    assert sum(pick(om, "camwatch_channels_online").values()) == 15
    assert set(pick(om, "camwatch_channel_clock_drift_seconds").values()) == {-7.5}
    # 30 verdicts took the first round (t=100..160), then 45 more: one more round of 30
    assert om[("camwatch_sweep_duration_seconds", frozenset())] == 60.0
    # a prober that cannot judge: unknown, so no channel_up, counted as unknown
    first = next(iter(eng.channels.values()))
    eng.book.judge(first.id, Verdict(None, "prober_unhealthy"), 200.0)
    text = samples(renderer.render()[0])
    assert not pick(text, "camwatch_channel_up", channel=first.id)
    assert sum(pick(text, "camwatch_channels_unknown").values()) == 1
    assert sum(pick(text, "camwatch_channels").values()) == 29


async def test_served_gzip_and_in_chunks(tmp_path: Path) -> None:
    from camwatch.http import GZIP_MIN_BYTES, WRITE_CHUNK_BYTES
    from camwatch.http import serve as serve_http

    eng = synthetic_engine(tmp_path, 6000)
    feed(eng, True)
    runner = await serve_http(eng, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"
        async with aiohttp.ClientSession(auto_decompress=False) as http:
            async with http.get(url, headers={"Accept-Encoding": "identity"}) as r:
                plain = await r.read()
                assert r.headers.get("Content-Encoding") is None
                assert r.content_length == len(plain) > WRITE_CHUNK_BYTES  # the chunked path
            async with http.get(url, headers={"Accept-Encoding": "gzip, deflate"}) as r:
                packed = await r.read()
                assert r.headers["Content-Encoding"] == "gzip"
            async with http.get(url, headers={"Accept": OPENMETRICS,
                                              "Accept-Encoding": "identity"}) as r:
                assert r.headers["Content-Type"].startswith("application/openmetrics-text")
                om = await r.read()
        assert len(packed) < len(plain) / 5 and len(plain) > GZIP_MIN_BYTES
        a, b = samples(plain), samples(gzip.decompress(packed))
        assert live_only(a) == live_only(b)
        assert len(pick(a, "camwatch_channel_up")) == 6000
        assert a[("camwatch_alert_outbox_depth", frozenset())] == 0  # counted in a thread
        assert live_only(samples(om, openmetrics=True)) == live_only(a)
        assert not math.isnan(a[("camwatch_prober_healthy", frozenset())])
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("gz", [False, True])
async def test_a_scrape_gives_the_loop_back_between_slices(gz: bool) -> None:
    """The families every channel has are formatted a slice of ``CHUNK_LINES`` lines at a
    time on the loop's thread, with a turn of the loop between slices (not in one go, and
    not in a thread that takes the GIL from the loop in turns), and the body is the same as
    formatted in one go."""
    import asyncio
    import threading

    from camwatch.http import join_sliced
    from camwatch.sinks import metrics

    lines = 20 * metrics.CHUNK_LINES
    turns = 0
    made: list[tuple[int, int]] = []  # (thread, turns of the loop so far) at each slice

    def lazy() -> Iterator[bytes]:
        for chunk in metrics._encoded(f'm{{i="{i}"}} 1\n' for i in range(lines)):
            made.append((threading.get_ident(), turns))
            yield chunk

    parts: list[metrics.Part] = [b"# head\n", lazy, b"# tail\n"]
    stop = asyncio.Event()

    async def beside() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(beside())
    body, packed = await join_sliced(parts, gz)
    stop.set()
    await task
    assert len(made) == 20
    assert {thread for thread, _ in made} == {threading.get_ident()}
    assert all(b[1] > a[1] for a, b in itertools.pairwise(made)), made
    assert packed is gz
    text = gzip.decompress(body) if gz else body
    made.clear()
    assert text == metrics.join_parts(parts)
    assert text.count(b"\n") == lines + 2 and text.startswith(b'# head\nm{i="0"} 1\n')
