"""HTTP receivers against local aiohttp servers on 127.0.0.1 that check the payload format,
answer with errors or hang; delivery through the real outbox and dispatcher."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
import structlog
from aiohttp import web

from camwatch.config import TargetsConfig  # noqa: F401  (imports the config first)
from camwatch.rules.alert_config import AlertsConfig
from camwatch.rules.alerts import Alert
from camwatch.sinks.base import SlidingWindow, backoff, markdown
from camwatch.sinks.dingtalk import sign
from camwatch.sinks.dispatch import Dispatcher
from camwatch.store.sqlite import SqliteStore

KEY = "4f2c1a77-wecom-robot-key-9d"
TOKEN = "dingtalk-access-token-5e8a"
SECRET = "SECf00dfacecafe1234567890"


@dataclass
class Fake:
    """A receiver: records requests; ``script`` answers them in turn (then ``default``)."""

    script: list[Any] = field(default_factory=list)
    default: Any = (200, {"errcode": 0, "errmsg": "ok"})
    requests: list[web.Request] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    check: Callable[[web.Request, Any], str | None] | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        answer = self.script.pop(0) if self.script else self.default
        if self.check is not None and (p := self.check(request, body)):
            self.problems.append(p)
        if answer == "hang":
            await asyncio.sleep(3600)
        self.requests.append(request)
        self.bodies.append(body)
        status, doc = answer
        return web.json_response(doc, status=status)


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Fake], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(fake: Fake) -> str:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", fake.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    yield start
    for r in runners:
        await r.cleanup()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "camwatch.db")
    yield s
    s.close()


def payload(i: int = 0, status: str = "firing", name: str = "rate_below_target"
            ) -> dict[str, Any]:
    return Alert(name, f"fp{i:04d}", "warning", status, 1_800_000_000.0 + i,  # type: ignore[arg-type]
                 1_800_000_900.0 + i if status == "resolved" else None,
                 {"county": "鹿邑县", "township": "城关镇", "class": "1"},
                 f"鹿邑县 一类视频监控在线率 96.80%，低于目标 98%（在线 484/500）#{i}",
                 {"notes": ["在线率最低的乡镇：城关镇 90.00%"]}).as_payload()


def alerts_cfg(receiver: dict[str, Any], **delivery: Any) -> AlertsConfig:
    return AlertsConfig.model_validate({
        "receivers": {"r": receiver}, "default_receivers": ["r"],
        "delivery": {"backoff_initial": "50ms", "backoff_max": "200ms", "poll": "100ms",
                     **delivery}})


async def until(cond: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Running:
    def __init__(self, d: Dispatcher) -> None:
        self.d = d
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Dispatcher:
        self.task = asyncio.create_task(self.d.run())
        return self.d

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def enqueue(store: SqliteStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        p = payload(i)
        store.enqueue("r", p["fingerprint"], p, time.time())


# --- WeCom --------------------------------------------------------------------------------------

def wecom_check(request: web.Request, body: Any) -> str | None:
    if request.query.get("key") != KEY:
        return f"key {request.query.get('key')!r}"
    if body.get("msgtype") != "markdown" or set(body) != {"msgtype", "markdown"}:
        return f"body {body!r}"
    content = body["markdown"]["content"]
    if not isinstance(content, str) or len(content.encode()) > 4096:
        return "content missing or over 4096 bytes"
    return None


async def test_wecom_markdown_delivered(server: Any, store: SqliteStore,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Fake(check=wecom_check)
    base = await server(fake)
    monkeypatch.setenv("WECOM_URL", f"{base}/cgi-bin/webhook/send?key={KEY}")
    d = Dispatcher(alerts_cfg({"type": "wecom", "url_env": "WECOM_URL", "digest": 1}), store)
    enqueue(store, 2)
    async with Running(d):
        await until(lambda: store.outbox_depth("r") == 0, "delivery")
    assert fake.problems == []
    contents = [b["markdown"]["content"] for b in fake.bodies]
    assert "低于目标 98%（在线 484/500）#0" in contents[0] and "#1" in contents[1]
    assert "fp0000" in contents[0] and "城关镇 90.00%" in contents[0]


async def test_wecom_errcodes(server: Any, store: SqliteStore,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Fake(script=[(200, {"errcode": 45009, "errmsg": "api freq out of limit"}),
                        (200, {"errcode": -1, "errmsg": "system busy"}),
                        (200, {"errcode": 40008, "errmsg": "invalid message type"})])
    base = await server(fake)
    monkeypatch.setenv("WECOM_URL", f"{base}/cgi-bin/webhook/send?key={KEY}")
    d = Dispatcher(alerts_cfg({"type": "wecom", "url_env": "WECOM_URL", "digest": 1}), store)
    enqueue(store, 2)
    async with Running(d):
        await until(lambda: store.outbox_depth("r") == 0, "delivery")
    # #0: rate limited, busy (both retried), then refused as a message: set aside;
    # #1: delivered. Nothing after the refused one was blocked.
    assert [b["markdown"]["content"].count("#0") for b in fake.bodies] == [1, 1, 1, 0]
    assert d.dropped["r"] == 1 and d.delivered["r"] == 1 and d.failed["r"] == 2


async def test_wecom_invalid_key_keeps_everything(server: Any, store: SqliteStore,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Fake(default=(200, {"errcode": 93000, "errmsg": "invalid webhook url"}))
    base = await server(fake)
    monkeypatch.setenv("WECOM_URL", f"{base}/cgi-bin/webhook/send?key={KEY}")
    d = Dispatcher(alerts_cfg({"type": "wecom", "url_env": "WECOM_URL"}), store)
    enqueue(store, 3)
    with structlog.testing.capture_logs() as logs:
        async with Running(d):
            await until(lambda: len(fake.bodies) >= 3, "retries")
    assert store.outbox_depth("r") == 3  # nothing lost while the key is wrong
    assert all("#0" in b["markdown"]["content"] for b in fake.bodies)  # head of line
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1 and errors[0]["kind"] == "misconfigured"  # logged once
    assert KEY not in json.dumps(logs, ensure_ascii=False, default=str)
    (head, *_) = store.due("r", time.time() + 3600)
    assert head.last_error and "93000" in head.last_error and KEY not in head.last_error


async def test_unset_env_is_misconfigured_not_lost(store: SqliteStore,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_URL", raising=False)
    d = Dispatcher(alerts_cfg({"type": "wecom", "url_env": "NO_SUCH_URL"}), store)
    enqueue(store, 1)
    async with Running(d):
        await until(lambda: d.failed["r"] >= 1, "an attempt")
    assert store.outbox_depth("r") == 1
    (item,) = store.due("r", time.time() + 3600)
    assert item.last_error == "environment variable NO_SUCH_URL is not set"


# --- DingTalk -----------------------------------------------------------------------------------

def dingtalk_check(request: web.Request, body: Any) -> str | None:
    q = request.query
    if q.get("access_token") != TOKEN:
        return "access_token"
    ts = int(q["timestamp"])
    if abs(ts / 1000 - time.time()) > 3600:
        return "timestamp more than an hour off"
    mac = hmac.new(SECRET.encode(), f"{ts}\n{SECRET}".encode(), hashlib.sha256).digest()
    if q.get("sign") != base64.b64encode(mac).decode():  # aiohttp has url-decoded it
        return f"bad sign {q.get('sign')!r}"
    md = body.get("markdown", {})
    if body.get("msgtype") != "markdown" or not md.get("title") or not md.get("text"):
        return f"body {body!r}"
    return None


async def test_dingtalk_signed_markdown(server: Any, store: SqliteStore,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Fake(check=dingtalk_check,
                script=[(200, {"errcode": 130101, "errmsg": "send too fast"})])
    base = await server(fake)
    monkeypatch.setenv("DT_URL", f"{base}/robot/send?access_token={TOKEN}")
    monkeypatch.setenv("DT_SECRET", SECRET)
    d = Dispatcher(alerts_cfg({"type": "dingtalk", "url_env": "DT_URL",
                               "secret_env": "DT_SECRET", "digest": 1}), store)
    enqueue(store, 1)
    p = payload(1, "resolved")
    store.enqueue("r", p["fingerprint"], p, time.time())
    async with Running(d):
        await until(lambda: store.outbox_depth("r") == 0, "delivery")
    assert fake.problems == []
    titles = [b["markdown"]["title"] for b in fake.bodies]
    assert titles == ["【警告】在线率低于目标"] * 2 + ["【恢复】在线率低于目标"]
    assert "恢复：" in fake.bodies[2]["markdown"]["text"]


# --- robots' digests ------------------------------------------------------------------------------


async def test_alerts_due_together_go_to_a_robot_as_digests_in_order(
        server: Any, store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """25 alerts due at once (a robot back after an outage, a burst): three messages of 10,
    10 and 5 alerts (``digest``, default 10) within WeCom's 4,096 bytes, in the outbox's
    order, instead of 25 messages over more than a minute of the robot's rate limit."""
    fake = Fake(check=wecom_check)
    base = await server(fake)
    monkeypatch.setenv("WECOM_URL", f"{base}/cgi-bin/webhook/send?key={KEY}")
    d = Dispatcher(alerts_cfg({"type": "wecom", "url_env": "WECOM_URL"}), store)
    enqueue(store, 24)
    p = payload(24, "resolved")
    store.enqueue("r", p["fingerprint"], p, time.time())
    async with Running(d):
        await until(lambda: store.outbox_depth("r") == 0, "delivery")
    assert fake.problems == [] and d.delivered["r"] == 25
    contents = [b["markdown"]["content"] for b in fake.bodies]
    assert len(contents) == 3
    assert contents[0].startswith("### 【camwatch】10 条告警\n")
    assert contents[2].startswith("### 【camwatch】4 条告警、1 条恢复\n")
    seen = [int(m) for c in contents for m in re.findall(r"（在线 484/500）#(\d+)", c)]
    assert seen == list(range(25))  # every alert once, in order
    assert "**1. <font color=\"warning\">【警告】在线率低于目标</font>**" in contents[0]
    assert "在线率最低的乡镇：城关镇 90.00%" in contents[0]
    assert "恢复：" in contents[2] and "fp00" not in "".join(contents)


async def test_a_refused_digest_is_sent_again_one_alert_at_a_time(
        server: Any, store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The robot refuses the digest as a message (errcode 40008): its alerts are not set
    aside for it but sent one by one; only one it refuses alone is set aside."""
    fake = Fake(script=[(200, {"errcode": 40008, "errmsg": "invalid message type"}),
                        (200, {"errcode": 0, "errmsg": "ok"}),
                        (200, {"errcode": 40008, "errmsg": "invalid message type"})])
    base = await server(fake)
    monkeypatch.setenv("WECOM_URL", f"{base}/cgi-bin/webhook/send?key={KEY}")
    d = Dispatcher(alerts_cfg({"type": "wecom", "url_env": "WECOM_URL"}), store)
    enqueue(store, 3)
    async with Running(d):
        await until(lambda: store.outbox_depth("r") == 0, "delivery")
    contents = [b["markdown"]["content"] for b in fake.bodies]
    assert len(contents) == 4 and "3 条告警" in contents[0]
    assert ["#0" in contents[1], "#1" in contents[2], "#2" in contents[3]] == [True] * 3
    assert d.delivered["r"] == 2 and d.dropped["r"] == 1  # #1 refused alone: set aside


async def test_a_digest_counts_once_in_the_rate_limit_and_dingtalk_signs_it(
        server: Any, store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """``per_minute: 2`` and 10 alerts due: two signed digests of 5 go at once (counted
    per alert, the second would wait a minute and the other eight longer)."""
    fake = Fake(check=dingtalk_check)
    base = await server(fake)
    monkeypatch.setenv("DT_URL", f"{base}/robot/send?access_token={TOKEN}")
    monkeypatch.setenv("DT_SECRET", SECRET)
    d = Dispatcher(alerts_cfg({"type": "dingtalk", "url_env": "DT_URL",
                               "secret_env": "DT_SECRET", "digest": 5,
                               "per_minute": 2}), store)
    enqueue(store, 10)
    async with Running(d):
        await until(lambda: store.outbox_depth("r") == 0, "two digests within the limit")
    assert fake.problems == [] and len(fake.bodies) == 2
    assert [b["markdown"]["title"] for b in fake.bodies] == ["【camwatch】5 条告警"] * 2
    assert "#4" in fake.bodies[0]["markdown"]["text"] and "#5" in fake.bodies[1]["markdown"]["text"]


def test_dingtalk_sign_known_value() -> None:
    ts = 1_700_000_000_000
    mac = hmac.new(b"s3cret", f"{ts}\ns3cret".encode(), hashlib.sha256).digest()
    assert unquote_plus(sign("s3cret", ts)) == base64.b64encode(mac).decode()
    assert "+" not in sign("s3cret", ts) and "/" not in sign("s3cret", ts)


# --- generic webhook ----------------------------------------------------------------------------

async def test_webhook_outage_then_everything_in_order(server: Any, store: SqliteStore,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def check(request: web.Request, body: Any) -> str | None:
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        want = "sha256=" + hmac.new(b"hook-secret", raw, hashlib.sha256).hexdigest()
        if request.headers.get("X-Camwatch-Signature") != want:
            return "signature"
        if set(body) != {"version", "receiver", "alert"} or body["version"] != 1:
            return f"envelope {sorted(body)}"
        a = body["alert"]
        for k in ("name", "fingerprint", "severity", "status", "starts_at", "starts_at_iso",
                  "ends_at", "labels", "summary", "details"):
            if k not in a:
                return f"missing {k}"
        seen.append(a["fingerprint"])
        return None

    # down for a while: 503s, a hang, a 429 with Retry-After; then up
    fake = Fake(check=check, default=(200, {}),
                script=[(503, {}), (502, {}), "hang", (429, {}), (500, {})])
    base = await server(fake)
    monkeypatch.setenv("HOOK_URL", f"{base}/hook")
    monkeypatch.setenv("HOOK_SECRET", "hook-secret")
    d = Dispatcher(alerts_cfg({"type": "webhook", "url_env": "HOOK_URL",
                               "secret_env": "HOOK_SECRET", "timeout": "300ms"}), store)
    enqueue(store, 3)
    async with Running(d):
        await until(lambda: d.failed["r"] >= 2, "failures")
        enqueue(store, 3, start=3)  # more alerts while the receiver is down
        d.notify()
        await until(lambda: store.outbox_depth("r") == 0, "delivery")
    assert fake.problems == []
    delivered = [b["alert"]["fingerprint"] for b in fake.bodies if b]
    # the answered requests: the first item several times (retries), then the rest in order
    first_ok = delivered.index("fp0001") - 1
    assert delivered[first_ok:] == [f"fp{i:04d}" for i in range(6)]
    assert set(delivered[:first_ok]) <= {"fp0000"}


async def test_webhook_permanent_4xx_sets_aside(server: Any, store: SqliteStore,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Fake(default=(200, {}), script=[(400, {"error": "bad"})])
    base = await server(fake)
    monkeypatch.setenv("HOOK_URL", f"{base}/hook")
    d = Dispatcher(alerts_cfg({"type": "webhook", "url_env": "HOOK_URL"}), store)
    enqueue(store, 2)
    async with Running(d):
        await until(lambda: store.outbox_depth("r") == 0, "delivery")
    assert [b["alert"]["fingerprint"] for b in fake.bodies] == ["fp0000", "fp0001"]
    assert d.dropped["r"] == 1 and d.delivered["r"] == 1


# --- Alertmanager -------------------------------------------------------------------------------

async def test_alertmanager_v2_alerts(server: Any, store: SqliteStore,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    paths: list[str] = []

    def check(request: web.Request, body: Any) -> str | None:
        paths.append(request.path)
        if not isinstance(body, list) or len(body) != 1:
            return "expected a list of one alert"
        a = body[0]
        if set(a) - {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}:
            return f"keys {sorted(a)}"
        return None

    fake = Fake(check=check, default=(200, {}))
    base = await server(fake)
    monkeypatch.setenv("AM_URL", base + "/")
    d = Dispatcher(alerts_cfg({"type": "alertmanager", "url_env": "AM_URL"}), store,
                   clock=lambda: 1_800_001_000.0)
    for p in (payload(0), payload(0, "resolved")):
        store.enqueue("r", p["fingerprint"], p, 1_800_001_000.0)
    async with Running(d):
        await until(lambda: store.outbox_depth("r") == 0, "delivery")
    assert fake.problems == [] and paths == ["/api/v2/alerts"] * 2
    firing, resolved = fake.bodies[0][0], fake.bodies[1][0]
    assert firing["labels"] == {"alertname": "rate_below_target", "severity": "warning",
                                "source": "camwatch", "county": "鹿邑县",
                                "township": "城关镇", "class": "1"}
    assert firing["labels"] == resolved["labels"]  # same alert for Alertmanager
    assert firing["startsAt"] == "2027-01-15T08:00:00Z"
    assert firing["endsAt"] > "2027-04"  # far ahead: camwatch sends the resolution itself
    assert resolved["endsAt"] == "2027-01-15T08:15:00Z"
    assert firing["annotations"]["summary"].startswith("鹿邑县 一类视频监控在线率")


# --- pieces -------------------------------------------------------------------------------------

def test_sliding_window_allows_limit_per_minute() -> None:
    w = SlidingWindow(20)
    for i in range(20):
        assert w.wait_time(100.0 + i) == 0.0
        w.record(100.0 + i)
    assert w.wait_time(120.0) == pytest.approx(40.0)  # the 21st waits for the 1st to age out
    assert w.wait_time(160.0) == 0.0
    assert SlidingWindow(0).wait_time(0.0) == 0.0


@pytest.mark.parametrize("attempts", [0, 1, 5, 30, 1000])
def test_backoff_capped_and_jittered(attempts: int) -> None:
    lo = backoff(attempts, 1.0, 300.0, rand=lambda: 0.0)
    hi = backoff(attempts, 1.0, 300.0, rand=lambda: 1.0)
    expected = min(300.0, 2.0 ** attempts)
    assert lo == pytest.approx(expected / 2) and hi == pytest.approx(expected)


def test_markdown_fits_wecom_limit() -> None:
    p = payload()
    p["details"] = {"notes": ["很长的一行" * 100] * 20}
    text = markdown(p, wecom=True, limit=4000)
    assert len(text.encode()) <= 4000 and text.endswith("…")
    assert p["summary"] in text


async def test_store_write_errors_do_not_stop_delivery(server: Any, store: SqliteStore,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """16.1: the disk fills while alerts are being delivered. Marking them fails; the
    dispatcher keeps running (it used to die on the first failed mark), sends again what it
    could not mark (same fingerprint) and, once writes work, drains the outbox in order."""
    from tests.test_store_faults import Flaky

    fake = Fake(default=(200, {}))
    base = await server(fake)
    monkeypatch.setenv("HOOK_URL", f"{base}/hook")
    enqueue(store, 3)
    disk = Flaky(store)  # every write fails: the marks cannot be saved
    d = Dispatcher(alerts_cfg({"type": "webhook", "url_env": "HOOK_URL"}), store)
    running = Running(d)
    async with running:
        await until(lambda: d.store_errors >= 2, "failed marks, retried")
        assert running.task is not None and not running.task.done()
        assert store.outbox_depth("r") == 3  # nothing marked, nothing lost
        disk.full = False
        await until(lambda: store.outbox_depth("r") == 0, "the outbox to drain")
    fps = [b["alert"]["fingerprint"] for b in fake.bodies]
    assert sorted(set(fps), key=fps.index) == ["fp0000", "fp0001", "fp0002"]
