"""The HTTP server against a hostile or careless client (issue 16 items 3, 5, 10, 16; issue 17's
HTTP API): the exposure check on the address actually bound, secrets kept out of the logs of
malformed requests, bounded connections and time, one shared ``/metrics`` rendering, and 400s
that say what a query parameter allows. Real sockets on loopback throughout."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import io
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import time
import tracemalloc
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.http_exceptions import BadHttpMessage

from camwatch.config import parse_config
from camwatch.engine import Engine
from camwatch.errors import ConfigError
from camwatch.http import MAX_LIMIT, METRICS, HttpServer, Rendering, serve
from camwatch.inventory import Channel
from camwatch.log import Throttle, configure, register_secret
from camwatch.store import open_store
from tests.conftest import ROOT
from tests.test_daemon import Proc
from tests.test_engine import FakeClock, inventory
from tests.test_metrics import feed
from tests.test_sweep_cli import write_site

ROOT_FLAG = ["--allow-root"] if os.geteuid() == 0 else []


def engine(tmp_path: Path, n: int = 12, timezone: str = "Asia/Shanghai",
           **http: Any) -> Engine:
    chans = [Channel(id=f"41162800001321{i:06d}", klass=1 + i % 3, project="雪亮工程",
                     county="鹿邑县", township="城关镇" if i % 2 else "玄武镇", operator="移动",
                     installed=True, connected=True, rtsp_url=f"rtsp://127.0.0.1:9/ch{i}",
                     host=f"h{i}", credentials="default") for i in range(n)]
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pw").write_text("pw-hardening", encoding="utf-8")
    cfg = parse_config({
        "inventory": {"path": "unused.csv"},
        "credentials": {"default": {"username": "admin", "password_file": "pw"}},
        "probing": {"interval": "60s", "timeout": "300ms", "onvif": False},
        "store": {"path": "state.db"}, "report": {"timezone": timezone},
        "http": {"listen": "127.0.0.1:0", **http}}, base_dir=tmp_path)
    return Engine(cfg, inventory(chans), open_store(cfg.store.path),
                  clock=FakeClock(time.time()))


@asynccontextmanager
async def served(eng: Engine) -> AsyncIterator[tuple[HttpServer, str]]:
    server = await serve(eng, "127.0.0.1", 0)
    try:
        yield server, f"http://127.0.0.1:{server.addresses[0][1]}"
    finally:
        await server.cleanup()
        eng.store.close()


async def poll(what: str, fn: Callable[[], Any], seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        await asyncio.sleep(0.02)  # polling interval, not a wait for an event
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def read_all(reader: asyncio.StreamReader, seconds: float = 20.0) -> bytes:
    """Everything until the server closes (EOF or reset), within a deadline."""
    out = b""
    async with asyncio.timeout(seconds):
        try:
            while chunk := await reader.read(65536):
                out += chunk
        except ConnectionResetError:
            pass
    return out


# --- 16.3: the exposure check runs for the address actually bound -------------------------------


def test_run_listen_override_gets_the_exposure_check(tmp_path: Path) -> None:
    cfg = write_site(tmp_path, [9], "store: {path: state.db}\n")  # loopback, no auth
    for listen in ("0.0.0.0:0", "[::]:0"):
        out = subprocess.run([sys.executable, "-m", "camwatch", "run", "-c", str(cfg),
                              "--listen", listen, *ROOT_FLAG], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 1, out.stderr
        assert f"--listen: listening on {listen} exposes the API" in out.stderr
        assert "http.auth" in out.stderr and "http.allow_unauthenticated: true" in out.stderr
        assert "listening" not in out.stdout
    assert not (tmp_path / "state.db").exists()  # refused before anything was opened
    out = subprocess.run([sys.executable, "-m", "camwatch", "run", "-c", str(cfg), "--listen",
                          "9780", *ROOT_FLAG], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 1 and "expected host:port like '127.0.0.1:9780', got '9780'" \
        in out.stderr


def test_demo_listen_gets_the_exposure_check(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "camwatch", "demo", "--channels", "10", "--dir",
                          str(tmp_path / "demo"), "--listen", "0.0.0.0:0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 1, out.stderr
    assert "camwatch demo --listen: listening on 0.0.0.0:0 exposes the API" in out.stderr
    assert not (tmp_path / "demo").exists()  # no simulated fleet was started


async def test_serve_checks_the_address_it_binds(tmp_path: Path) -> None:
    eng = engine(tmp_path)  # http.listen is loopback: the config alone passes
    try:
        with pytest.raises(ConfigError, match=r"listening on 0\.0\.0\.0:0 exposes the API"):
            await serve(eng, "0.0.0.0", 0)
        with pytest.raises(ConfigError, match=r"listening on \[::\]:9780 exposes the API"):
            await serve(eng, "::", 9780)
    finally:
        eng.store.close()


# --- 16.5: malformed requests: no secret in the logs, a bounded number of lines ----------------


BAD_REQUESTS = [
    # a bare LF after the Authorization header: aiohttp's parser quotes the line
    b"GET /api/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\nX-A: b\r\n\r\n",
    b"GET /api/status HTTP/1.1\r\nHost: x\nAuthorization: Bearer %s\r\n\r\n",
    # unencoded UTF-8 in the query string
    "GET /api/channels?township=城关镇&t=%s HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
]


def _send_raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_bad_requests_never_log_the_token_and_log_a_bounded_number_of_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "tok-Hardening-Canary-7f3a"
    stranger = "tok-Stranger-Canary-0b1c"  # not ours, so not a registered secret either
    monkeypatch.setenv("CAMWATCH_TEST_API_TOKEN", token)
    cfg = write_site(tmp_path, [9], "store: {path: state.db}\nhttp:\n  auth: "
                                    "{token_env: CAMWATCH_TEST_API_TOKEN}\n")
    proc = Proc(cfg)
    try:
        port = int(proc.base.rpartition(":")[2])
        replies = []
        for i in range(1000):
            template = BAD_REQUESTS[i % len(BAD_REQUESTS)]
            secret = (token if i % 2 else stranger).encode()
            replies.append(_send_raw(port, template % secret if b"%s" in template else template))
        assert all(r.startswith(b"HTTP/1.0 400") or r.startswith(b"HTTP/1.1 400")
                   for r in replies)
        head, _, body = replies[2].partition(b"\r\n\r\n")
        assert b"application/json" in head
        assert json.loads(body)["error"] == "malformed HTTP request: Invalid char in url query"
        ok = _send_raw(port, b"GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             b"Authorization: Bearer " + token.encode() + b"\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200")  # the server is fine afterwards
    finally:
        proc.p.terminate()
        proc.p.wait(timeout=30)
        proc.stderr.close()
    text = proc.stderr_path.read_text("utf-8")
    assert token not in text and stranger not in text
    assert "Traceback" not in text and "Authorization" not in text
    bad = [e for e in proc.log() if e.get("event") == "bad HTTP request refused"]
    assert 1 <= len(bad) <= 12, len(bad)  # throttled: 10 a minute (and the run is shorter)
    assert {e["error"] for e in bad} <= {"Missing expected CR after header value",
                                         "Invalid char in url query"}
    assert len(text.splitlines()) < 100


def test_aiohttp_records_go_through_the_scrubber(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", json=True)
    # what logging.basicConfig installs outside pytest: a plain handler on the root logger
    plain = io.StringIO()
    root_handler = logging.StreamHandler(plain)
    logging.getLogger().addHandler(root_handler)
    try:
        register_secret("tok-Routed-Canary-1")
        server = logging.getLogger("aiohttp.server")
        try:
            raise RuntimeError("handler bug near Authorization: Bearer tok-Routed-Canary-1")
        except RuntimeError:
            server.exception("Error handling request from %s", "127.0.0.1")
        logging.getLogger("aiohttp.web").error("header was %s", "Authorization: Basic b3BzOnB3")
        parse_error = BadHttpMessage("Missing expected CR after header value:\n\n  "
                                     "b'Authorization: Bearer tok-Unregistered-2\\nX: y'")
        for _ in range(1000):
            server.error("Error handling request from %s", "127.0.0.1", exc_info=parse_error)
        for _ in range(1000):
            logging.getLogger("aiohttp.access").warning("noise")
    finally:
        logging.getLogger().removeHandler(root_handler)
    err = capsys.readouterr().err
    assert plain.getvalue() == ""  # nothing around the scrubber
    assert "tok-Routed-Canary-1" not in err and "tok-Unregistered-2" not in err
    assert "b3BzOnB3" not in err
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert "handler bug" in lines[0]["exception"]  # our own bug keeps its traceback, redacted
    assert "RuntimeError" in lines[0]["exception"]
    refused = [x for x in lines if x["event"] == "bad HTTP request refused"]
    assert len(refused) == 10
    assert refused[0]["error"] == "Missing expected CR after header value"
    assert len(lines) <= 2 + 10 + 50  # two, then throttled per minute


@pytest.mark.parametrize(("times", "expected"), [
    # burst 3 per 10 s: (clock readings) -> (allowed?, left out before it)
    ([0, 1, 2, 3, 4], [(True, 0), (True, 0), (True, 0), (False, 0), (False, 0)]),
    ([0, 1, 2, 3, 9.999, 10, 11], [(True, 0), (True, 0), (True, 0), (False, 0), (False, 0),
                                   (True, 2), (True, 0)]),
    ([0, 10, 20, 30], [(True, 0)] * 4),
    ([5, 5, 5, 5, 15, 15, 15, 15, 25], [(True, 0)] * 3 + [(False, 0)] + [(True, 1)]
     + [(True, 0)] * 2 + [(False, 0), (True, 1)]),
])
def test_throttle(times: list[float], expected: list[tuple[bool, int]]) -> None:
    clock = iter(times)
    t = Throttle(burst=3, window_s=10.0, clock=lambda: next(clock))
    assert [t.allow() for _ in times] == expected


# --- 16.10: time, connections, /metrics memory, page size --------------------------------------


async def test_slow_and_idle_connections_are_closed(tmp_path: Path) -> None:
    async with served(engine(tmp_path, header_timeout="300ms")) as (server, _base):
        port = server.addresses[0][1]
        # slowloris: a request head that never ends
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
        await writer.drain()
        assert await read_all(reader) == b""  # closed without an answer
        writer.close()
        # a connection that never sends anything
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await read_all(reader) == b""
        writer.close()
        # kept alive after a response, then idle: closed too
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await read_all(reader)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"}")
        writer.close()
        await poll("every connection released", lambda: not server.limits.open)


async def test_connections_are_bounded_per_client_and_in_total(tmp_path: Path) -> None:
    async with served(engine(tmp_path, max_connections=5, max_connections_per_client=3)) \
            as (server, base):
        port = server.addresses[0][1]
        held = []

        async def connect(source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))

        for _ in range(3):
            held.append(await connect("127.0.0.1"))
        await poll("3 connections counted", lambda: server.limits.open == {"127.0.0.1": 3})
        reader, writer = await connect("127.0.0.1")
        refused = await read_all(reader)
        assert refused.startswith(b"HTTP/1.1 503 ")
        assert b"http.max_connections_per_client" in refused
        writer.close()
        for _ in range(2):
            held.append(await connect("127.0.0.2"))  # another client may still connect
        await poll("5 connections counted",
                   lambda: server.limits.open == {"127.0.0.1": 3, "127.0.0.2": 2})
        reader, writer = await connect("127.0.0.3")
        assert b"(http.max_connections)" in await read_all(reader)
        writer.close()
        assert server.limits.refused == 2
        # one leaves: its place is free again, and the held connections still work
        held.pop()[1].close()
        await poll("a place freed", lambda: server.limits.open.get("127.0.0.2") == 1)
        reader, writer = held[0]
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await read_all(reader)).startswith(b"HTTP/1.1 200")
        async with aiohttp.ClientSession() as http, http.get(base + "/healthz") as r:
            assert r.status == 200
        for _, w in held:
            w.close()
        await poll("every connection released", lambda: not server.limits.open)


async def _stalled_metrics_clients(port: int, k: int) -> list[socket.socket]:
    """``k`` clients that ask for /metrics and never read (a tiny receive buffer)."""
    socks = []
    loop = asyncio.get_running_loop()
    for _ in range(k):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        await loop.sock_connect(s, ("127.0.0.1", port))
        await loop.sock_sendall(s, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                                   b"Accept-Encoding: identity\r\n\r\n")
        socks.append(s)
    return socks


async def test_stalled_metrics_clients_share_one_rendering(tmp_path: Path) -> None:
    eng = engine(tmp_path, n=10_000)
    feed(eng, True)
    async with served(eng) as (server, _base):
        cache = server.runner.app[METRICS]
        cache.reuse_s = 3600.0  # the whole test within one rendering's reuse
        k = 20
        gc.collect()
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            socks = await _stalled_metrics_clients(server.addresses[0][1], k)
            rendering: Rendering = await poll(
                "every client stalled in its response",
                lambda: next((r for r in cache._fresh.values() if r.readers == k), None))
            grown = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
        size = len(rendering.body)
        assert size > 3_000_000  # far more than the kernel's socket buffers take
        assert cache.renders == 1  # one rendering, 20 readers of the same bytes
        # each stalled client holds at most a few slices in its transport, not a copy: before,
        # 20 clients held 20 joined bodies (~78 MB here)
        assert grown < size + k * 256 * 1024, (grown, size)
        for s in socks:
            s.close()
        await poll("every response ended", lambda: rendering.readers == 0)


async def test_a_client_that_stops_reading_is_dropped_and_the_rendering_freed(
        tmp_path: Path) -> None:
    eng = engine(tmp_path, n=10_000, send_timeout="500ms")
    feed(eng, True)
    async with served(eng) as (server, _base):
        cache = server.runner.app[METRICS]
        cache.reuse_s = 0.2
        socks = await _stalled_metrics_clients(server.addresses[0][1], 3)
        rendering = await poll("the rendering being sent",
                               lambda: next(iter(cache._fresh.values()), None))
        gone = weakref.ref(rendering)
        size = len(rendering.body)
        del rendering
        await poll("the rendering freed", lambda: (gc.collect(), gone() is None)[1])
        await poll("every stalled connection closed", lambda: not server.limits.open)
        loop = asyncio.get_running_loop()
        for s in socks:  # each got a cut-off response, then the connection closed
            got = 0
            async with asyncio.timeout(20):
                try:
                    while chunk := await loop.sock_recv(s, 65536):
                        got += len(chunk)
                except ConnectionResetError:
                    pass
            assert 0 < got < size
            s.close()


async def test_concurrent_scrapes_share_a_rendering_and_get_the_same_bytes(
        tmp_path: Path) -> None:
    eng = engine(tmp_path, n=3000)
    feed(eng, True)
    async with served(eng) as (server, base):
        cache = server.runner.app[METRICS]
        cache.reuse_s = 3600.0
        async with aiohttp.ClientSession(auto_decompress=False) as http:
            async def scrape(encoding: str) -> bytes:
                async with http.get(base + "/metrics",
                                    headers={"Accept-Encoding": encoding}) as r:
                    assert r.status == 200
                    return await r.read()

            plain = await asyncio.gather(*(scrape("identity") for _ in range(10)))
            packed = await asyncio.gather(*(scrape("gzip") for _ in range(10)))
            async with http.head(base + "/metrics") as r:
                assert r.status == 200 and await r.read() == b""
        assert len(set(plain)) == 1 and len(set(packed)) == 1
        assert cache.renders == 2  # one per encoding, however many clients asked


# --- 16.16 / issue 17: query values -------------------------------------------------------------


@pytest.mark.parametrize(("query", "parameter", "expected"), [
    ("state=bogus", "state", "one of online, offline, unknown"),
    ("class=5", "class", "one of 1, 2, 3, 4, 9"),
    ("class=一类", "class", "one of 1, 2, 3, 4, 9"),
    ("limit=-1", "limit", f"an integer from 0 to {MAX_LIMIT}"),
    (f"limit={MAX_LIMIT + 1}", "limit", f"an integer from 0 to {MAX_LIMIT}"),
    ("limit=10000000", "limit", f"an integer from 0 to {MAX_LIMIT}"),
    ("limit=1e3", "limit", f"an integer from 0 to {MAX_LIMIT}"),
    ("offset=-5", "offset", "an integer from 0"),
    ("offset=", "offset", "an integer from 0"),
    ("reason=broken", "reason", "one of timeout, refused"),
    ("state=online&state=offline", "state", "state given once"),
    ("colour=red", "colour", "one of state, reason, county"),
    ("township=%B3%C7%B9%D8%D5%F2", "township", "percent-encoded UTF-8"),  # 城关镇 in GBK
])
async def test_bad_query_values_are_a_400_naming_the_parameter(
        tmp_path: Path, query: str, parameter: str, expected: str) -> None:
    async with served(engine(tmp_path)) as (_, base), aiohttp.ClientSession() as http, \
            http.get(f"{base}/api/channels?{query}") as r:
        assert r.status == 400
        doc = await r.json()
    assert doc["parameter"] == parameter
    assert doc["expected"].startswith(expected)
    assert parameter in doc["error"]
    if expected.startswith("one of"):
        assert doc["choices"] and ", ".join(doc["choices"]).startswith(expected[7:])


async def test_good_query_values_filter_and_page(tmp_path: Path) -> None:
    eng = engine(tmp_path, n=12)
    feed(eng, True)
    async with served(eng) as (_, base), aiohttp.ClientSession() as http:
        async def get(**params: str) -> dict[str, Any]:
            async with http.get(base + "/api/channels", params=params) as r:
                assert r.status == 200, await r.text()
                return dict(await r.json())

        assert (await get(limit=str(MAX_LIMIT)))["total"] == 12
        assert len((await get(limit="5", offset="10"))["channels"]) == 2
        assert (await get(limit="0"))["channels"] == []
        assert (await get(state="online"))["total"] == 12
        assert (await get(state="offline"))["total"] == 0
        assert (await get(**{"class": "1"}))["total"] == 4
        assert (await get(township="城关镇"))["total"] == 6  # percent-encoded by the client
        assert (await get(reason="timeout"))["total"] == 0


async def test_times_in_iso_8601_with_the_report_offset(tmp_path: Path) -> None:
    for tz, offset in (("Asia/Shanghai", dt.timedelta(hours=8)), ("UTC", dt.timedelta(0))):
        eng = engine(tmp_path / tz.replace("/", "_"), timezone=tz)
        feed(eng, True)
        async with served(eng) as (_, base), aiohttp.ClientSession() as http:
            async with http.get(base + "/api/status") as r:
                status = await r.json()
            async with http.get(base + "/api/channels?limit=1") as r:
                channel = (await r.json())["channels"][0]
        assert status["timezone"] == tz
        for doc, key in ((status, "started"), (status, "now"), (channel, "since"),
                         (channel, "last_probe")):
            iso = dt.datetime.fromisoformat(doc[f"{key}_iso"])
            assert iso.utcoffset() == offset, (key, doc[f"{key}_iso"])
            assert abs(iso.timestamp() - doc[key]) < 1.0  # the same instant, to the second
        assert isinstance(status["started"], float) and isinstance(channel["since"], float)


# --- 16.11: /healthz reports store writes failing ------------------------------------------


async def test_healthz_is_503_while_store_writes_fail(tmp_path: Path) -> None:
    from tests.test_store_faults import Flaky

    eng = engine(tmp_path)
    async with served(eng) as (_, base), aiohttp.ClientSession() as http:
        async with http.get(base + "/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        disk = Flaky(eng.store)  # type: ignore[arg-type]
        with pytest.raises(sqlite3.OperationalError):
            await eng.writer.run(lambda s: s.set_meta("k", 1))
        async with http.get(base + "/healthz") as r:
            assert r.status == 503
            doc = await r.json()
            assert doc["status"] == "degraded" and doc["channels"] == 12
            assert len(doc["problems"]) == 1
            assert "store writes failing" in doc["problems"][0]
            assert "database or disk is full" in doc["problems"][0]
        disk.full = False
        await eng.writer.run(lambda s: s.set_meta("k", 1))
        async with http.get(base + "/healthz") as r:
            assert r.status == 200


def test_every_limit_is_validated(tmp_path: Path) -> None:
    base = {"inventory": {"path": "x"}}
    for http, message in (
            ({"header_timeout": "0s"}, "expected a duration above zero"),
            ({"send_timeout": "5"}, "expected a duration like"),
            ({"max_connections": 0}, "greater than 0"),
            ({"max_connections": 4, "max_connections_per_client": 8},
             "max_connections_per_client (8) is above max_connections (4)")):
        with pytest.raises(ConfigError, match=r"\$\.http") as exc:
            parse_config({**base, "http": http})
        assert message in str(exc.value), str(exc.value)



async def test_a_response_not_read_to_its_end_still_ends_its_connection(
        tmp_path: Path) -> None:
    """The last few KB a client does not take sit in the transport's buffer after the handler
    is done; closing would wait for them for ever. Small kernel buffers (set on the real
    sockets) make the case exact: the client reads all but 24 KiB."""
    eng = engine(tmp_path, n=3000, send_timeout="500ms")
    feed(eng, True)
    async with served(eng) as (server, base):
        async with aiohttp.ClientSession() as http, \
                http.get(base + "/api/channels?limit=5000") as r:
            size = len(await r.read())
        loop = asyncio.get_running_loop()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        await loop.sock_connect(s, ("127.0.0.1", server.addresses[0][1]))
        conn = await poll("the connection accepted", lambda: server.runner.server.connections)
        conn[0].transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await loop.sock_sendall(s, b"GET /api/channels?limit=5000 HTTP/1.1\r\nHost: x\r\n"
                                   b"Connection: close\r\n\r\n")
        got = 0
        async with asyncio.timeout(20):
            while got < size - 24 * 1024:
                chunk = await loop.sock_recv(s, min(4096, size - 24 * 1024 - got))
                if not chunk:  # the server gave up on a slow reader first (a loaded machine):
                    break      # an EOF returns at once, so looping on would never yield
                got += len(chunk)
        await poll("the connection released", lambda: not server.limits.open)
        s.close()
