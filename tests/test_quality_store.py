"""Quality state kept in the store (issue #13): the book stages what to write and takes it
back after a restart; the engine flushes it with the channel states and loads it at start, so
a restart keeps each channel's quality, its run (what ``quality_degraded`` and the repair desk
count), the scene reference, the blur baselines and the thumbnails."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest

from camwatch.config import parse_config
from camwatch.engine import Engine
from camwatch.inventory import Channel, Inventory
from camwatch.model import Quality
from camwatch.quality.book import QualityBook
from camwatch.quality.checks import Fault
from camwatch.quality.sample import QualityVerdict
from camwatch.store.sqlite import SqliteStore

T0 = 1_800_000_000.0


def verdict(cid: str, q: Quality, ts: float, *, jpeg: bytes | None = None,
            faults: tuple[str, ...] = ("black",), thumb: float | None = None,
            blur: float = 0.3) -> QualityVerdict:
    fs = tuple(Fault(c, 1.5) for c in faults) if q is Quality.DEGRADED else ()
    return QualityVerdict(cid, q, ts, faults=fs, scores={"blur": blur}, jpeg=jpeg,
                          thumb=None if thumb is None else np.full((36, 64), thumb, np.float32),
                          codec="H264", width=1280, height=720, latency_ms=900.0,
                          reason="decode" if q is Quality.UNKNOWN else None)


def test_book_stages_writes_and_logs_only_changes(tmp_path: Path) -> None:
    b = QualityBook()
    b.swap(["a", "b"])
    b.record(verdict("a", Quality.OK, T0, jpeg=b"\xff\xd8a1", thumb=80.0), "day")
    b.record(verdict("a", Quality.OK, T0 + 10, jpeg=b"\xff\xd8a2"), "day")
    b.record(verdict("b", Quality.UNKNOWN, T0))  # never sampled before: no change
    b.record(verdict("b", Quality.DEGRADED, T0 + 5, jpeg=b"\xff\xd8b1"))
    b.record(verdict("b", Quality.DEGRADED, T0 + 15, faults=("black", "frozen")))
    b.record(verdict("b", Quality.DEGRADED, T0 + 25, faults=("black", "frozen")))
    states, changes = b.take_writes()
    assert [(c.channel_id, c.ts, c.from_quality, c.to_quality, c.faults) for c in changes] == [
        ("a", T0, "unknown", "ok", ()),
        ("b", T0 + 5, "unknown", "degraded", ("black",)),
        ("b", T0 + 15, "degraded", "degraded", ("black", "frozen"))]  # other faults
    by = {q.channel_id: q for q in states}
    a, bb = by["a"], by["b"]
    assert (a.quality, a.since, a.streak, a.jpeg, a.jpeg_ts) == ("ok", T0, 2, b"\xff\xd8a2",
                                                                 T0 + 10)
    assert a.reference is not None and a.reference == bytes([80]) * (64 * 36)
    assert a.baselines == {"day": (0.3, 2)}
    # b's picture of T0+5 is still to be written although later samples brought none
    assert (bb.quality, bb.since, bb.streak) == ("degraded", T0 + 5, 3)
    assert (bb.jpeg, bb.fault_jpeg, bb.fault_ts) == (b"\xff\xd8b1", b"\xff\xd8b1", T0 + 5)
    assert b.take_writes() == ([], [])
    # a refused batch comes back; a newer state of the same channel wins
    b.record(verdict("a", Quality.OK, T0 + 20))
    b.restore_writes(states, changes)
    states2, changes2 = b.take_writes()
    assert changes2 == changes
    a2 = {q.channel_id: q for q in states2}["a"]
    assert (a2.ts, a2.streak, a2.jpeg) == (T0 + 20, 3, b"\xff\xd8a2")

    store = SqliteStore(tmp_path / "s.db")
    store.write_quality(states2, changes2)
    again = QualityBook()
    again.swap(["a", "b"])
    again.load(store.load_quality())
    ra, rb = again.get("a"), again.get("b")
    assert ra is not None and rb is not None
    assert (ra.quality, ra.since, ra.streak, ra.codec) == (Quality.OK, T0, 3, "H264")
    assert (rb.quality, rb.since, rb.streak) == (Quality.DEGRADED, T0 + 5, 3)
    assert [f.check for f in rb.faults] == ["black", "frozen"]
    assert again.degraded == {"b"} and again.jpeg("b") == b"\xff\xd8b1"
    ref = again.reference("a")
    assert ref is not None and float(ref[0, 0]) == 80.0
    assert again.blur_baseline("a", "day") is None  # 3 sharp samples make a baseline; 2 here
    assert b"camwatch_channel_quality_ok{channel=\"b\"} 0" in again.exposition(["a", "b"])
    # nothing is logged again after the restart: the same quality is no change
    again.record(verdict("b", Quality.DEGRADED, T0 + 35, faults=("black", "frozen")))
    st, ch = again.take_writes()
    assert ch == [] and st[0].streak == 4 and st[0].since == T0 + 5
    # a channel that leaves the inventory leaves no state to write (its row is deleted with
    # it); what happened to it before (here: other faults) stays in the log
    again.record(verdict("b", Quality.DEGRADED, T0 + 45))
    again.swap(["a"])
    st, ch = again.take_writes()
    assert st == [] and [(c.channel_id, c.faults) for c in ch] == [("b", ("black",))]
    store.close()


def _engine(tmp_path: Path, **more: object) -> Engine:
    chs = [Channel(id=f"c{i}", name=f"点位{i}", klass=1, project="雪亮工程", county="鹿邑县",
                   township="城关镇", village="东关", operator="移动", installed=True,
                   connected=True, host=f"h{i}", rtsp_url="rtsp://127.0.0.1:9/")
           for i in range(3)]
    cfg = parse_config({
        "inventory": {"path": "unused.csv"},
        "probing": {"onvif": False},
        "store": {"path": str(tmp_path / "cw.db")},
        # a day's interval: no sample of the test's own is due while it runs
        "quality": {"enabled": True, "interval": "1d"},
        **more,
    }, base_dir=tmp_path)
    return Engine(cfg, Inventory(source="t", channels=chs, rows_read=len(chs)),
                  SqliteStore(tmp_path / "cw.db"))


async def test_engine_flushes_quality_and_a_restart_takes_it_back(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    run = asyncio.create_task(eng.run())
    eng.quality.record(verdict("c0", Quality.DEGRADED, T0, jpeg=b"\xff\xd8c0"))
    eng.quality.record(verdict("c0", Quality.DEGRADED, T0 + 3600))
    eng.quality.record(verdict("c1", Quality.OK, T0, jpeg=b"\xff\xd8c1", thumb=40.0))
    eng.stop()  # the last flush of a stopping engine writes them
    await run
    eng.close()
    eng.store.close()

    eng2 = _engine(tmp_path)
    c0, c1 = eng2.quality.get("c0"), eng2.quality.get("c1")
    assert c0 is not None and c1 is not None and eng2.quality.get("c2") is None
    assert (c0.quality, c0.since, c0.streak) == (Quality.DEGRADED, T0, 2)
    assert eng2.quality.jpeg("c0") == b"\xff\xd8c0" and eng2.quality.degraded == {"c0"}
    assert c1.quality is Quality.OK and eng2.quality.reference("c1") is not None
    assert [(r[0], r[3]) for r in eng2.store.quality_changes()] == [("c0", "degraded"),
                                                                     ("c1", "ok")]
    eng2.close()
    eng2.store.close()


async def test_engine_evaluator_alerts_on_quality_through_the_outbox(tmp_path: Path) -> None:
    """The daemon's evaluator feeds the quality book to the rules: quality_degraded goes to the
    outbox with the evaluator's state; a restarted engine (states, alert state and quality
    state from the store) does not send it again."""
    def engine() -> Engine:
        chs = [Channel(id=f"c{i}", name=f"点位{i}", klass=1, project="雪亮工程",
                       county="鹿邑县", township="城关镇", village="东关", operator="移动",
                       installed=True, connected=True, host=f"h{i}",
                       rtsp_url="rtsp://127.0.0.1:9/") for i in range(3)]
        cfg = parse_config({
            "inventory": {"path": "unused.csv"}, "probing": {"onvif": False},
            "store": {"path": str(tmp_path / "cw.db")},
            "quality": {"enabled": True, "interval": "1d"},
            "alerts": {"rules": {"rate_below_target": {"enabled": False},
                                 "quality_degraded": {"samples": 2}},
                       "default_receivers": ["hook"],
                       "receivers": {"hook": {"type": "webhook", "url_env": "NO_SUCH_HOOK"}}},
        }, base_dir=tmp_path)
        return Engine(cfg, Inventory(source="t", channels=chs, rows_read=len(chs)),
                      SqliteStore(tmp_path / "cw.db"), clock=lambda: T0 + 7200)

    eng = engine()
    eng.quality.record(verdict("c0", Quality.DEGRADED, T0))
    assert [a.name for a in await eng.evaluate()] == []
    eng.quality.record(verdict("c0", Quality.DEGRADED, T0 + 3600))
    (alert,) = await eng.evaluate()
    assert (alert.name, alert.status, alert.labels["channel"]) == ("quality_degraded",
                                                                   "firing", "c0")
    assert eng.store.outbox_depth("hook") == 1
    await eng.writer.run(lambda s: s.write_quality(*eng.quality.take_writes()))
    eng.close()
    eng.store.close()

    eng2 = engine()
    assert await eng2.evaluate() == []  # still degraded, already sent
    assert eng2.store.outbox_depth("hook") == 1
    eng2.quality.record(verdict("c0", Quality.OK, T0 + 7200))
    assert [a.status for a in await eng2.evaluate()] == ["resolved"]
    eng2.close()
    eng2.store.close()


def test_metrics_export_the_intact_rate_by_label_set(tmp_path: Path) -> None:
    """camwatch_channels_intact / _judged: c0 online ok (intact), c1 online degraded, c2
    offline (judged, not intact): 1 / 3; an unsampled online channel would be left out."""
    from camwatch.model import Verdict
    from camwatch.probes.result import ProbeResult, Reason
    from camwatch.sinks.metrics import MetricsRenderer

    eng = _engine(tmp_path)
    ok, bad = ProbeResult.success("describe"), ProbeResult.failure("describe", Reason.REFUSED)
    for _ in range(3):
        eng.book.judge("c0", Verdict.of(ok), T0)
        eng.book.judge("c1", Verdict.of(ok), T0)
        eng.book.judge("c2", Verdict.of(bad), T0)
    eng.quality.record(verdict("c0", Quality.OK, T0))
    eng.quality.record(verdict("c1", Quality.DEGRADED, T0))
    text = MetricsRenderer(eng).render()[0].decode()
    labels = 'class="1",project="雪亮工程",county="鹿邑县",township="城关镇"'
    assert f"camwatch_channels_intact{{{labels}}} 1\n" in text
    assert f"camwatch_channels_intact_judged{{{labels}}} 3\n" in text
    assert 'camwatch_intact_rate_target{class="1",project=""} 0.98\n' in text
    eng.close()
    eng.store.close()


async def test_engine_evaluator_alerts_on_the_intact_rate(tmp_path: Path) -> None:
    """intact_rate_below_target through the daemon's evaluator: 2 of 3 online channels with
    an ok picture = 66.67 % < 98 %; the rows are recounted at most once a minute."""
    from camwatch.model import Verdict
    from camwatch.probes.result import ProbeResult

    clock = [T0]
    chs = [Channel(id=f"c{i}", name=f"点位{i}", klass=1, project="雪亮工程", county="鹿邑县",
                   township="城关镇", village="东关", operator="移动", installed=True,
                   connected=True, host=f"h{i}", rtsp_url="rtsp://127.0.0.1:9/")
           for i in range(3)]
    cfg = parse_config({
        "inventory": {"path": "unused.csv"}, "probing": {"onvif": False},
        "store": {"path": str(tmp_path / "cw.db")}, "targets": {"min_channels": 1},
        "quality": {"enabled": True, "interval": "1d"},
        "alerts": {"rules": {"rate_below_target": {"enabled": False},
                             "quality_degraded": {"enabled": False},
                             "intact_rate_below_target": {"for": "0s", "scopes": ["county"]}},
                   "default_receivers": ["hook"],
                   "receivers": {"hook": {"type": "webhook", "url_env": "NO_SUCH_HOOK"}}},
    }, base_dir=tmp_path)
    eng = Engine(cfg, Inventory(source="t", channels=chs, rows_read=len(chs)),
                 SqliteStore(tmp_path / "cw.db"), clock=lambda: clock[0])
    for c in chs:
        eng.book.judge(c.id, Verdict.of(ProbeResult.success("describe")), T0)
        eng.quality.record(verdict(c.id, Quality.OK, T0))
    assert await eng.evaluate() == []
    eng.quality.record(verdict("c0", Quality.DEGRADED, T0 + 10))
    clock[0] = T0 + 30
    assert await eng.evaluate() == []  # the rows of T0 still stand (recounted once a minute)
    clock[0] = T0 + 60
    (alert,) = await eng.evaluate()
    assert alert.name == "intact_rate_below_target"
    assert "完好率 66.67%，低于目标 98%（完好 2/3，画面异常 1，离线 0）" in alert.summary
    eng.close()
    eng.store.close()


async def test_the_sampler_raises_the_malloc_threshold_while_it_samples(tmp_path: Path) -> None:
    """While pictures are sampled the daemon's mmap threshold is raised to fit them
    (camwatch.malloc.set_picture_threshold, tested in test_malloc_tuning), and put back when
    sampling stops."""
    eng = _engine(tmp_path)
    run = asyncio.create_task(eng.run())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while eng.sampler._picture_width != eng.cfg.quality.width:
        assert loop.time() < deadline, "the sampler never set the threshold for its pictures"
        await asyncio.sleep(0.01)
    eng.stop()
    await run
    assert eng.sampler._picture_width is None
    eng.close()
    eng.store.close()


def test_a_claim_being_verified_across_a_restart_has_its_pictures_asked_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quality ticket claimed fixed (being verified) when the daemon stopped: the new
    engine asks the sampler for its channel's picture at once (docs/repairs.md), as the
    claim did; and the sampler's requests are bounded and only for channels it has."""
    from camwatch.quality import sampler
    from camwatch.repairs.model import Ticket

    store = SqliteStore(tmp_path / "cw.db")
    claimed = Ticket.from_dict(dict(no=1, state="fixed", channels=["c0"], opened=T0,
                                    fault_since=T0, response_s=7200.0, repair_s=86400.0,
                                    kind="quality", faults=["too_dark"], fixed=T0 + 60))
    store.commit_tickets([claimed], [], [], T0 + 60)
    store.close()
    eng = _engine(tmp_path, repairs={"enabled": True})
    s = eng.sampler
    assert s.requested("c0") and not s.requested("c1")
    series = s._requests["c0"]
    assert series.every == eng.cfg.repairs.verify_for
    assert s.request(["c0"], api=True) == 1  # "sample now" during the claim: sooner, and ...
    assert s._requests["c0"] is series  # ... the claim's series goes on after it
    assert s.request(["gone"]) == 0  # not in the inventory
    monkeypatch.setattr(sampler, "MAX_REQUESTS", 2)
    assert s.request(["c0", "c1", "c2"]) == 2  # c0 asked again (replaced), c1; c2 over
    assert s.requested("c1") and not s.requested("c2")
    eng.close()
    eng.store.close()
    # sampling off: the same claim asks for nothing, and nothing can be asked for
    off = _engine(tmp_path, repairs={"enabled": True}, quality={"enabled": False})
    assert not off.sampler.requested("c0") and off.sampler.request(["c0"]) == 0
    off.close()
    off.store.close()


async def test_a_sample_that_could_not_be_taken_is_tried_once_more(tmp_path: Path) -> None:
    """``quality.retry``: a sample that fails (the camera refuses: 127.0.0.1:9) is tried once
    more that much later, not left unknown for a whole interval (a day here); the retry's
    own failure is not retried again."""
    eng = _engine(tmp_path, quality={"enabled": True, "interval": "1d", "retry": "1s"})
    run = asyncio.create_task(eng.run())
    s = eng.sampler
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    assert s.request(["c0"]) == 1
    while not (s.requested_total >= 1 and eng.quality.get("c0") is not None):
        assert loop.time() < deadline, "the sample asked for never ran"
        await asyncio.sleep(0.01)
    first = eng.quality.get("c0")
    assert first is not None and first.quality is Quality.UNKNOWN and first.reason == "refused"
    while s.requested_total < 2 or s.in_flight:  # the retry (a second request of the lane's)
        assert loop.time() < deadline, "the failed sample was not tried again"
        await asyncio.sleep(0.01)
    again = eng.quality.get("c0")
    assert again is not None and again.ts > first.ts and again.streak == 2
    assert not s.requested("c0")  # the retry failed too: no third try, the cadence's turn
    eng.stop()
    await run
    eng.close()
    eng.store.close()


async def test_a_lane_that_cannot_keep_up_says_so(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Twelve cameras that accept RTSP and never answer (a real socket on loopback), sampled
    every 10 s by one session at a time with a 2 s timeout: 24 s of sessions per 10 s. The
    lane falls behind: ``camwatch_quality_lag_seconds`` rises above 0 and one warning names
    quality.max_concurrency (the threshold lowered from 60 s for the test)."""
    import structlog

    from camwatch.quality import sampler
    from camwatch.sinks.metrics import MetricsRenderer

    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)  # accepted, never answered

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    chs = [Channel(id=f"h{i:02d}", klass=1, county="鹿邑县", township="城关镇",
                   installed=True, connected=True, host=f"127.0.0.{i + 1}",
                   rtsp_url=f"rtsp://127.0.0.1:{port}/ch{i}") for i in range(12)]
    cfg = parse_config({"inventory": {"path": "unused.csv"},
                        "probing": {"onvif": False, "interval": "1h"},
                        "store": {"path": str(tmp_path / "cw.db")},
                        "quality": {"enabled": True, "interval": "10s", "timeout": "2s",
                                    "max_concurrency": 1, "retry": "0s"}}, base_dir=tmp_path)
    monkeypatch.setattr(sampler, "LAG_WARN_S", 1.0)
    eng = Engine(cfg, Inventory(source="t", channels=chs, rows_read=len(chs)),
                 SqliteStore(tmp_path / "cw.db"))
    assert 'camwatch_quality_lag_seconds 0\n' in MetricsRenderer(eng).render()[0].decode()
    with structlog.testing.capture_logs() as logs:
        run = asyncio.create_task(eng.run())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while eng.sampler.lag_s <= 3.0:
            assert loop.time() < deadline, "the lane never fell behind"
            await asyncio.sleep(0.05)
        text = MetricsRenderer(eng).render()[0].decode()
        eng.stop()
        await run
    lag = float(re.findall(r"^camwatch_quality_lag_seconds (\S+)$", text, re.M)[0])
    assert lag > 3.0
    warned = [e for e in logs if e["event"].startswith("quality lane behind")]
    assert len(warned) == 1 and warned[0]["max_concurrency"] == 1  # once, not per sample
    server.close()
    for w in held:
        w.close()
    eng.close()
    eng.store.close()
