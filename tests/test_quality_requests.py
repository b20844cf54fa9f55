"""Pictures sampled on request (issue #13 with #18): the real daemon (``camwatch run``) against
simulated cameras streaming real H.264 clips on loopback. ``quality.interval`` is an hour, so
within the test every sample is one asked for: by ``POST /api/channels/{id}/sample``, or by a
repair ticket claimed fixed, which has its pictures sampled at the claim and every
``repairs.verify_for`` after, and is rejected or verified in seconds instead of hours."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from camwatch.cli import format_status
from camwatch.sim.model import Fault
from camwatch.sim.pictures import Picture
from tests.fleet_thread import FleetThread
from tests.test_daemon import Proc, get, poll
from tests.test_repairs_daemon import post
from tests.test_sweep_cli import write_site

TOKEN = "sample-token-77ab"
GOOD, BLACK = "41162800001321000000", "41162800001321000001"
pytestmark = pytest.mark.timeout(240)


def _channel(base: str, cid: str) -> dict[str, Any]:
    code, body = get(f"{base}/api/channels?limit=5000")
    assert code == 200, body
    return next(c for c in json.loads(body)["channels"] if c["id"] == cid)


def _sampled_after(base: str, cid: str, ts: float | None) -> Callable[[], dict[str, Any] | None]:
    """The channel's picture once a sample later than ``ts`` is in."""
    def check() -> dict[str, Any] | None:
        q = _channel(base, cid)["quality"]
        return q if q.get("ts") is not None and (ts is None or q["ts"] > ts) else None
    return check


def _requested(base: str) -> int:
    text = get(f"{base}/metrics")[1]
    line = next(x for x in text.splitlines()
                if x.startswith("camwatch_quality_requested_samples_total "))
    return int(float(line.split()[1]))


def test_samples_on_request_and_a_repair_claim_verified_by_fresh_pictures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CW_TICKET_TOKEN", TOKEN)
    with FleetThread([Fault.NONE, Fault.NONE, Fault.AUTH_FAIL]) as fleet:
        fleet.set_picture(0, Picture.OK)
        fleet.set_picture(1, Picture.TOO_DARK)
        cfg = write_site(tmp_path, fleet.ports,
                         "probing: {interval: 2s, timeout: 1s, per_host_concurrency: 64, "
                         "onvif: false}\nstates: {fail_threshold: 1}\nstore: {path: state.db}\n"
                         "quality: {enabled: true, interval: 1h, decode_workers: 1, "
                         "timeout: 10s}\n"
                         "repairs: {enabled: true, open_after: 1h, quality_after: 1, "
                         "verify_for: 4s, token_env: CW_TICKET_TOKEN}\n")
        proc = Proc(cfg)
        try:
            _scenario(proc.base, fleet)
        finally:
            if proc.p.poll() is None:
                proc.p.kill()
                proc.p.wait()
            proc.stderr.close()


def _scenario(base: str, fleet: FleetThread) -> None:
    poll("both cameras online", lambda: _channel(base, GOOD)["state"] == "online"
         and _channel(base, BLACK)["state"] == "online")
    url = f"{base}/api/channels/{{}}/sample"
    # bad requests: bounded, clear, nothing queued
    assert post(url.format("41162800001321009999"), b"")[0] == 404
    code, doc = post(url.format(BLACK) + "?now=1", b"")
    assert code == 400 and doc["parameter"] == "now"
    poll("the wrong password seen", lambda: _channel(base, "41162800001321000002")["state"]
         == "offline")
    code, doc = post(url.format("41162800001321000002"), b"")
    assert code == 409 and "offline" in doc["error"]
    assert _requested(base) == 0

    # asked for: sampled now, not at the cadence's turn (an hour)
    code, doc = post(url.format(GOOD), b"")
    assert code == 202 and doc == {"id": GOOD, "queued": True, "ts": None}
    assert poll("the good picture", _sampled_after(base, GOOD, None), 60)["quality"] == "ok"
    code, doc = post(url.format(BLACK), b"")
    assert code == 202
    # asked again at once: refused for a while (a client must not keep a camera streaming)
    code, doc = post(url.format(BLACK), b"")
    assert code == 429 and "try again in" in doc["error"], doc
    first = poll("the dark picture", _sampled_after(base, BLACK, None), 60)
    assert first["quality"] == "degraded"
    assert [f["check"] for f in first["faults"]] == ["too_dark"]

    def tickets() -> list[dict[str, Any]]:
        return list(json.loads(get(f"{base}/api/tickets?kind=quality")[1])["tickets"])

    # /api/status (and so `camwatch status`) gives the pictures and the 完好率 too
    doc = json.loads(get(f"{base}/api/status")[1])
    assert doc["pictures"] == {"ok": 1, "degraded": 1, "unknown": 1}  # + the offline one
    (site1,) = [r for r in doc["rates"] if r["scope"] == {} and r["class"] == 1
                and r["project"] is None]
    assert (site1["intact"], site1["intact_judged"]) == (1, 3)  # GOOD; BLACK, the offline
    assert "完好率" in format_status(doc) and "pictures: ok 1  degraded 1" in format_status(doc)
    (t,) = poll("the quality ticket (repairs.quality_after: 1)", tickets)
    no = t["no"]
    assert t["channels"] == [BLACK] and t["faults"] == ["too_dark"]
    asked = _requested(base)
    assert asked == 2

    def ticket() -> dict[str, Any]:
        return dict(json.loads(get(f"{base}/api/tickets/{no}")[1])["ticket"])

    # "fixed" while still dark: the claim has the picture sampled at once, and verify_for
    # after it that fresh picture rejects the claim
    code, doc = post(f"{base}/api/tickets/{no}/done", b'{"by": "\\u5f20\\u4e09"}', TOKEN)
    assert code == 200 and doc["ticket"]["state"] == "fixed", doc
    poll("the rejection", lambda: ticket()["state"] == "rework", 60)
    assert _requested(base) > asked
    rejected = json.loads(get(f"{base}/api/tickets/{no}")[1])["events"][-1]
    assert rejected["kind"] == "rejected" and "画面异常" in rejected["note"]
    settled = _requested(base)

    # repaired for real: the claim's own samples verify it within seconds
    fleet.set_picture(1, Picture.OK)
    code, doc = post(f"{base}/api/tickets/{no}/done", b'{"by": "\\u5f20\\u4e09"}', TOKEN)
    assert code == 200 and doc["ticket"]["state"] == "fixed", doc
    done = poll("verification", lambda: (t := ticket())["state"] == "closed" and t, 90)
    kinds = [e["kind"] for e in json.loads(get(f"{base}/api/tickets/{no}")[1])["events"]]
    assert kinds[kinds.index("fixed"):] == ["fixed", "rejected", "fixed", "verified"], kinds
    assert done["closed"] - done["fixed"] < 60  # the cadence would have taken up to 2 hours
    after_claim = _requested(base) - settled
    # at the claim and verify_for later; one more may be the first claim's follow-up, in
    # flight when its rejection was read, and one the second claim's next
    assert 2 <= after_claim <= 4, after_claim
    # closed: no sample asked for any more (one may have been in flight), three verify_for on
    closed_at = _requested(base)
    poll("three verify_for of probing", lambda: _channel(base, GOOD)["last_probe"]
         > done["closed"] + 12, 60)
    assert _requested(base) <= closed_at + 1
