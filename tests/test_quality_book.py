"""The quality book (pure): records, the scene reference, the bounded thumbnails, the metric
lines; and the sampler's cadence rule."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from camwatch.config import TargetsConfig
from camwatch.inventory import Channel
from camwatch.model import Quality
from camwatch.quality.book import QualityBook
from camwatch.quality.checks import Fault
from camwatch.quality.config import QualityConfig
from camwatch.quality.rates import intact_rates, intact_state, merge_json
from camwatch.quality.sample import QualityVerdict
from camwatch.quality.sampler import interval_for, period_of
from camwatch.reports.period import zone
from camwatch.rules.rates import RateIndex, Targets


def verdict(cid: str, q: Quality, jpeg: bytes | None = None, ts: float = 1.0,
            thumb: float | None = None) -> QualityVerdict:
    faults = (Fault("blur", 0.004),) if q is Quality.DEGRADED else ()
    return QualityVerdict(cid, q, ts, faults=faults, scores={"blur": 0.004}, jpeg=jpeg,
                          thumb=None if thumb is None else np.full((36, 64), thumb, np.float32),
                          codec="H264", width=1920, height=1080)


def test_records_and_json() -> None:
    b = QualityBook()
    b.swap(["a", "b"])
    assert b.json("a") == {"quality": "unknown"}
    b.record(verdict("a", Quality.DEGRADED, b"\xff\xd8x"))
    doc = b.json("a")
    assert doc["quality"] == "degraded" and doc["faults"] == [{"check": "blur", "score": 0.004}]
    assert doc["snapshot"] == "/api/channels/a/snapshot.jpg"
    assert b.quality_of("b") is Quality.UNKNOWN
    b.record(verdict("zz", Quality.OK))  # left the inventory while sampled: ignored
    assert b.get("zz") is None
    assert b.counts(["a", "b"]) == {"degraded": 1, "unknown": 1}


def test_reference_is_the_first_fault_free_picture() -> None:
    b = QualityBook()
    b.record(verdict("a", Quality.DEGRADED, thumb=10.0))
    assert b.reference("a") is None
    b.record(verdict("a", Quality.OK, thumb=100.0))
    b.record(verdict("a", Quality.OK, thumb=200.0))
    ref = b.reference("a")
    assert ref is not None and ref.shape == (36, 64) and float(ref[0, 0]) == 100.0
    b.forget_reference("a")
    b.record(verdict("a", Quality.OK, thumb=50.0))
    ref = b.reference("a")
    assert ref is not None and float(ref[0, 0]) == 50.0


def test_thumbnails_stay_within_the_budget_degraded_kept_longest() -> None:
    b = QualityBook(thumbnail_budget=1000)
    b.record(verdict("bad", Quality.DEGRADED, b"B" * 400))
    b.record(verdict("ok1", Quality.OK, b"1" * 400))
    b.record(verdict("ok2", Quality.OK, b"2" * 400))  # over: the oldest fault-free goes
    assert b.jpeg("ok1") is None and b.jpeg("bad") == b"B" * 400 and b.jpeg("ok2") is not None
    assert b.jpeg_bytes == 800
    b.record(verdict("ok2", Quality.OK, b"3" * 300))  # a channel keeps one, replaced
    assert b.jpeg("ok2") == b"3" * 300 and b.jpeg_bytes == 700
    b.record(verdict("huge", Quality.OK, b"h" * 5000))  # larger than the budget: not kept
    assert b.jpeg("huge") is None and b.jpeg_bytes == 700
    b.swap(["ok2"])
    assert b.jpeg("bad") is None and b.jpeg_bytes == 300 and b.get("bad") is None


def test_exposition() -> None:
    b = QualityBook()
    b.swap(["a", "b", "c"])
    b.record(verdict("a", Quality.OK))
    b.record(verdict("b", Quality.DEGRADED))
    b.record(verdict("c", Quality.UNKNOWN))
    text = b.exposition(["a", "b", "c"]).decode()
    assert 'camwatch_channel_quality_ok{channel="a"} 1\n' in text
    assert 'camwatch_channel_quality_ok{channel="b"} 0\n' in text
    assert 'channel="c"' not in text  # unknown: absent
    assert 'camwatch_channel_quality_score{channel="b",check="blur"} 0.004\n' in text
    assert 'camwatch_channel_quality_score{channel="a"' not in text  # faults only
    assert 'camwatch_channels_quality{quality="unknown"} 1\n' in text
    assert "# TYPE camwatch_quality_samples_total counter" in text
    assert 'camwatch_quality_samples_total{quality="ok"} 1\n' in text
    om = b.exposition(["a"], openmetrics=True).decode()
    assert "# TYPE camwatch_quality_samples counter" in om


def test_interval_overrides() -> None:
    q = QualityConfig(interval="1h", overrides=[{"class": 1, "interval": "30m"},
                                                {"project": "智慧小区", "interval": "2h"}])
    assert interval_for(q, Channel(id="a", klass=1)) == 1800.0
    assert interval_for(q, Channel(id="b", klass=2, project="智慧小区")) == 7200.0
    assert interval_for(q, Channel(id="c", klass=3)) == 3600.0


# (online state, quality) -> the state counted in the intact rate
INTACT = [
    ("online", Quality.OK, "online"),
    ("online", Quality.DEGRADED, "offline"),
    ("online", Quality.UNKNOWN, "unknown"),  # not sampled yet: left out
    ("offline", Quality.OK, "offline"),  # a good picture an hour ago does not make it intact
    ("offline", Quality.UNKNOWN, "offline"),
    ("unknown", Quality.OK, "unknown"),
    ("unknown", Quality.DEGRADED, "unknown"),
]


@pytest.mark.parametrize(("state", "quality", "counted"), INTACT)
def test_intact_state(state: str, quality: Quality, counted: str) -> None:
    assert intact_state(state, quality) == counted


def test_intact_rates_roll_up_like_online_rates() -> None:
    chans = [Channel(id=f"c{i}", klass=1, county="鹿邑县", township="城关镇" if i < 4 else "玄武镇",
                     connected=True) for i in range(6)]
    states = {"c0": "online", "c1": "online", "c2": "online", "c3": "offline", "c4": "online",
              "c5": "unknown"}
    quality = {"c0": Quality.OK, "c1": Quality.DEGRADED, "c2": Quality.UNKNOWN,
               "c4": Quality.OK}
    rows = intact_rates(RateIndex(chans), states.__getitem__,
                        lambda c: quality.get(c, Quality.UNKNOWN), Targets(TargetsConfig()))
    by = {(r.scope, r.klass): r for r in rows}
    site = by[((), 1)]
    assert (site.online, site.connected) == (2, 4)  # c0, c4 of c0, c1, c3, c4
    assert site.target == 0.98 and site.meets_target is False
    town = by[((("county", "鹿邑县"), ("township", "城关镇")), 1)]
    assert (town.online, town.connected) == (1, 3)
    api = [r.as_json() for r in rows]
    merge_json(api, rows)
    assert api[0]["intact"] == 2 and api[0]["intact_rate"] == 0.5


def test_blur_baseline_per_channel_day_and_night() -> None:
    b = QualityBook()
    for score in (0.3, 0.3, 0.3):
        v = verdict("a", Quality.OK)
        v.scores["blur"] = score
        b.record(v, "day")
    assert b.blur_baseline("a", "day") == pytest.approx(0.3)
    assert b.blur_baseline("a", "night") is None  # night has its own
    blurred = verdict("a", Quality.DEGRADED)  # a blur fault never enters the baseline
    b.record(blurred, "day")
    assert b.blur_baseline("a", "day") == pytest.approx(0.3)
    dark = verdict("a", Quality.DEGRADED)
    dark.faults = (Fault("too_dark", 10.0),)
    dark.scores["blur"] = 0.01
    b.record(dark, "day")
    assert b.blur_baseline("a", "day") == pytest.approx(0.3)
    b.swap(["b"])
    assert b.blur_baseline("a", "day") is None


def test_day_and_night() -> None:
    tz = zone("Asia/Shanghai")
    at = dt.datetime(2026, 11, 30, 8, 0, tzinfo=tz).timestamp()
    assert period_of(at, tz) == "day"
    assert period_of(at - 3600.0, tz) == "day"  # 07:00 is day
    assert period_of(at - 3601.0, tz) == "night"  # 06:59:59 night
    assert period_of(at + 11 * 3600.0, tz) == "night"  # 19:00
