"""The daemon's HTTP endpoints (aiohttp): ``/healthz``, ``/metrics``, ``/api/channels``,
``/api/rates``, ``/api/status``. Nothing here carries a password: targets are never
serialised, only inventory fields and states.

Anybody who can reach the port can open connections, authenticated or not, so what one client
can hold is bounded here (docs/security.md): the time to send a request head
(``http.header_timeout``, also the keep-alive limit) and to take a response
(``http.send_timeout``), connections per client address and in total, the page size of
``/api/channels``; ``/metrics`` is served to every client from one shared rendering. A request
the parser refuses is answered with a JSON 400 and logged as one throttled line that quotes
none of its bytes.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hmac
import json
import math
import re
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import structlog
from aiohttp import web
from aiohttp.web_request import BaseRequest
from prometheus_client.exposition import choose_encoder

from camwatch.config import HttpConfig, check_listen
from camwatch.engine import Engine
from camwatch.log import Throttle, client_error_text, is_client_protocol_error, register_secret
from camwatch.model import CLASS_NAMES, Quality, State, Why
from camwatch.quality.sampler import SAMPLE_SPACING_S
from camwatch.reports.period import zone
from camwatch.sinks.metrics import MetricsRenderer, Part

log = structlog.get_logger(__name__)

ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
GZIP_MIN_BYTES = 64 * 1024
#: /metrics goes out in slices of one shared buffer; a client that stops reading holds at
#: most about two slices in the transport's buffer, not a copy of the exposition.
WRITE_CHUNK_BYTES = 64 * 1024
#: A rendering younger than this is served again instead of rendering anew.
METRICS_REUSE_S = 1.0
#: ``/api/channels?limit=``: the default and the largest page.
DEFAULT_LIMIT = 1000
MAX_LIMIT = 5000
SHUTDOWN_TIMEOUT_S = 3.0  # in-flight requests at shutdown (the daemon exits within 10 s)


# --- what the endpoints read from the engine ----------------------------------------------------


def _zone(eng: Engine) -> dt.tzinfo:
    return zone(eng.cfg.report.timezone)


def _iso(ts: float | None, tz: dt.tzinfo) -> str | None:
    """Epoch seconds as ISO 8601 with the offset of ``report.timezone``."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


async def healthz(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    problems = eng.problems()
    body = {"status": "ok" if not problems else "degraded", "problems": problems,
            "channels": len(eng.channels)}
    return web.json_response(body, status=200 if not problems else 503,
                             dumps=_dumps)


def channel_json(eng: Engine, cid: str, tz: dt.tzinfo | None = None) -> dict[str, Any]:
    tz = tz or _zone(eng)
    ch = eng.channels[cid]
    st = eng.book.state(cid)
    since = st.since if st else None
    last_probe = st.last_probe if st else None
    return {
        "id": ch.id, "name": ch.name, "state": st.state if st else "unknown",
        "reason": st.reason if st else None,
        "since": since, "since_iso": _iso(since, tz),
        "last_probe": last_probe, "last_probe_iso": _iso(last_probe, tz),
        "latency_ms": st.latency_ms if st else None,
        "clock_drift_s": st.clock_drift_s if st else None,
        "flapping": st.flapping if st else False,
        "class": ch.klass, "project": ch.project or None, "county": ch.county or None,
        "township": ch.township or None, "village": ch.village or None,
        "operator": ch.operator or None, "host": ch.host,
        "device": (st.info.get("device") if st and st.info else None),
        "quality": eng.quality.json(cid),
    }


# --- query parameters ---------------------------------------------------------------------------

CHANNEL_FILTERS = ("county", "township", "village", "operator", "project", "host")
FILTERS = ("state", "reason", *CHANNEL_FILTERS)
CHANNELS_PARAMS = (*FILTERS, "class", "quality", "limit", "offset")
_CHOICES: dict[str, tuple[str, ...]] = {
    "state": tuple(s.value for s in State),
    "quality": tuple(q.value for q in Quality),
    "reason": tuple(w.value for w in Why),
    "class": tuple(str(k) for k in CLASS_NAMES),
}
_DIGITS = re.compile(r"[0-9]{1,9}")


def bad_query(param: str, value: str | None, expected: str,
              choices: tuple[str, ...] | None = None) -> web.HTTPBadRequest:
    """A 400 whose JSON body names the parameter, what was given and what is allowed."""
    got = "" if value is None else f", got {value!r}"
    body: dict[str, Any] = {"error": f"query parameter {param!r}: expected {expected}{got}",
                            "parameter": param, "value": value, "expected": expected}
    if choices is not None:
        body["choices"] = list(choices)
    return web.HTTPBadRequest(text=_dumps(body), content_type="application/json")


def _single(q: Any, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query as a plain dict: every key known, none given twice."""
    out: dict[str, str] = {}
    for key, value in q.items():
        if "\ufffd" in key or "\ufffd" in value:  # what is left of bytes that are not UTF-8
            raise bad_query(key, value, "percent-encoded UTF-8, e.g. township=%E5%9F%8E%E5%85"
                                        "%B3%E9%95%87 for 城关镇 (GBK is not understood)")
        if key not in allowed:
            raise bad_query(key, value, f"one of {', '.join(allowed)}", allowed)
        if key in out:
            raise bad_query(key, value, f"{key} given once")
        out[key] = value
    return out


def _choice(params: dict[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is not None and value not in _CHOICES[name]:
        raise bad_query(name, value, f"one of {', '.join(_CHOICES[name])}", _CHOICES[name])
    return value


def _count(params: dict[str, str], name: str, default: int, most: int | None = None) -> int:
    value = params.get(name)
    if value is None:
        return default
    if not _DIGITS.fullmatch(value) or (most is not None and int(value) > most):
        span = f"an integer from 0 to {most}" if most is not None else "an integer from 0"
        raise bad_query(name, value, span)
    return int(value)


async def channels(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    params = _single(request.query, CHANNELS_PARAMS)
    state = _choice(params, "state")
    reason = _choice(params, "reason")
    quality = _choice(params, "quality")  # the picture's (docs/quality.md)
    klass_text = _choice(params, "class")
    klass = int(klass_text) if klass_text is not None else None
    limit = _count(params, "limit", DEFAULT_LIMIT, MAX_LIMIT)
    offset = _count(params, "offset", 0)
    # Filter on the objects, build JSON only for the page: at 100,000 channels a request
    # must not build 100,000 dictionaries on the event loop.
    on_channel = [(k, v) for k, v in params.items() if k in CHANNEL_FILTERS]
    out = []
    matched = 0
    tz = _zone(eng)
    for cid, ch in eng.channels.items():
        if klass is not None and ch.klass != klass:
            continue
        if any(getattr(ch, k) != v for k, v in on_channel):
            continue
        if quality is not None and eng.quality.quality_of(cid) != quality:
            continue
        if state is not None or reason is not None:
            st = eng.book.state(cid)
            if state is not None and (st.state if st else "unknown") != state:
                continue
            if reason is not None and (st.reason if st else None) != reason:
                continue
        matched += 1
        if offset < matched <= offset + limit:
            out.append(channel_json(eng, cid, tz))
    return web.json_response({"total": matched, "limit": limit, "offset": offset,
                              "channels": out}, dumps=_dumps)


async def snapshot(request: web.Request) -> web.Response:
    """``/api/channels/{id}/snapshot.jpg``: the last picture sampled (docs/quality.md)."""
    eng = request.app[ENGINE]
    cid = request.match_info["id"]
    if cid not in eng.channels:
        return _json_error(404, f"no connected channel {cid[:40]!r}")
    data = eng.quality.jpeg(cid)
    if data is None:
        return _json_error(404, f"no picture of channel {cid} kept (not sampled yet, sampling "
                                "off, or evicted by quality.thumbnail_budget)")
    rec = eng.quality.get(cid)
    headers = {"Cache-Control": "no-store"}
    if rec is not None:
        headers["X-Camwatch-Quality"] = rec.quality.value
        headers["Last-Modified"] = dt.datetime.fromtimestamp(rec.ts, dt.UTC).strftime(
            "%a, %d %b %Y %H:%M:%S GMT")
    return web.Response(body=data, content_type="image/jpeg", headers=headers)


async def sample_now(request: web.Request) -> web.Response:
    """``POST /api/channels/{id}/sample``: the channel's picture sampled now, besides its
    cadence (docs/quality.md); 202 once queued, with the last sample's time (``ts``, None
    when never sampled): the new verdict is in ``/api/channels`` once its ``ts`` is later."""
    eng = request.app[ENGINE]
    cid = request.match_info["id"]
    if request.query:
        param = next(iter(request.query))
        raise bad_query(param, request.query.get(param), "no query parameters")
    if cid not in eng.channels:
        return _json_error(404, f"no connected channel {cid[:40]!r}")
    if not eng.cfg.quality.enabled:
        return _json_error(409, "picture sampling is off (quality.enabled: false)")
    if eng.book.state_of(cid) == State.OFFLINE:
        return _json_error(409, f"channel {cid} is offline: its picture is not sampled")
    wait = eng.sampler.asked_recently(cid)
    if wait > 0:  # one camera is not to be kept streaming by a client asking in a loop
        return web.Response(status=429, text=_dumps({
            "error": f"channel {cid} was asked for a sample less than "
                     f"{SAMPLE_SPACING_S:g} s ago; try again in {math.ceil(wait)} s"}),
            content_type="application/json", headers={"Retry-After": str(math.ceil(wait))})
    if not eng.sampler.request([cid], api=True):
        return _json_error(503, "too many samples asked for and not yet taken; try again "
                                "in a minute")
    rec = eng.quality.get(cid)
    return web.json_response({"id": cid, "queued": True,
                              "ts": rec.ts if rec is not None else None},
                             status=202, dumps=_dumps)


async def rates(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    rows = [r.as_json() for r in eng.rates]
    _with_intact(eng, rows)  # 完好率 beside 在线率 (docs/quality.md)
    return web.json_response({"rates": rows}, dumps=_dumps)


async def status(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    tz = _zone(eng)
    counts: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for cid in eng.channels:
        st = eng.book.state(cid)
        s = st.state if st else "unknown"
        counts[s] = counts.get(s, 0) + 1
        if s == "offline" and st is not None and st.reason:
            reasons[st.reason] = reasons.get(st.reason, 0) + 1
    now = time.time()
    rows = [r.as_json() for r in eng.rates if len(r.scope) <= 2]
    pictures = _with_intact(eng, rows)
    return web.json_response({
        "site": eng.cfg.site.name, "started": eng.started, "started_iso": _iso(eng.started, tz),
        "now": now, "now_iso": _iso(now, tz), "timezone": eng.cfg.report.timezone,
        "channels": len(eng.channels),
        "states": counts, "offline_reasons": dict(sorted(reasons.items(),
                                                         key=lambda kv: -kv[1])),
        "problems": eng.problems(), "sweep_lag_s": eng.health.sweep_lag(),
        "rates": rows,
        **({"pictures": pictures} if pictures is not None else {}),
        **({"gb28181": eng.gb.summary()} if eng.gb is not None else {}),
    }, dumps=_dumps)


def _with_intact(eng: Engine, rows: list[dict[str, Any]]) -> dict[str, int] | None:
    """With ``quality.enabled``: the 完好率 merged into the rate ``rows`` (docs/quality.md),
    and the channels by picture quality; None (nothing added) without sampling."""
    inputs = eng.evaluator.inputs
    if not eng.cfg.quality.enabled or inputs is None:
        return None
    from camwatch.quality.rates import intact_rates, merge_json

    merge_json(rows, intact_rates(inputs.index, eng.book.state_of, eng.quality.quality_of,
                                  eng.evaluator.intact_targets))
    counts = eng.quality.counts(eng.channels)
    return {q.value: counts.get(q.value, 0) for q in Quality}


async def platforms(request: web.Request) -> web.Response:
    """``/api/platforms``: the GB/T 28181 lower platforms registered with camwatch."""
    eng = request.app[ENGINE]
    if eng.gb is None:
        return web.json_response({"enabled": False, "platforms": []}, dumps=_dumps)
    tz = _zone(eng)
    return web.json_response(eng.gb.platforms_json(lambda ts: _iso(ts, tz)), dumps=_dumps)


async def recordings(request: web.Request) -> web.Response:
    """``/api/recordings``: 录像完整率 from the GB/T 28181 platforms' RecordInfo answers."""
    eng = request.app[ENGINE]
    if eng.gb is None:
        return web.json_response({"enabled": False}, dumps=_dumps)
    tz = _zone(eng)
    return web.json_response(eng.gb.recordings_json(lambda ts: _iso(ts, tz)), dumps=_dumps)


async def reconciliation(request: web.Request) -> web.Response:
    """``/api/reconciliation``: the ledger against the GB/T 28181 catalogs (台账核对)."""
    eng = request.app[ENGINE]
    if eng.gb is None:
        return web.json_response({"enabled": False}, dumps=_dumps)
    return web.json_response(eng.gb.reconciliation(), dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


# --- /metrics: one rendering shared by every client ---------------------------------------------


@dataclass(eq=False)
class Rendering:
    """One rendering of the exposition. Every response sent from it writes slices of the same
    ``body``; ``readers`` counts the responses still sending. The bytes are freed when the
    cache has moved on (after :data:`METRICS_REUSE_S`) and the last reader is done."""

    body: bytes
    content_type: str
    gzipped: bool
    made_at: float
    readers: int = 0


class MetricsCache:
    """Renders the exposition at most once per :data:`METRICS_REUSE_S` and content type, and
    lets concurrent scrapes wait for the rendering in progress instead of starting their own:
    300 stalled clients share one body instead of holding 300 copies."""

    def __init__(self, renderer: MetricsRenderer, reuse_s: float = METRICS_REUSE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.renderer = renderer
        self.reuse_s = reuse_s
        self._clock = clock
        self._fresh: dict[tuple[str, bool], Rendering] = {}
        self._pending: dict[tuple[str, bool], asyncio.Future[Rendering]] = {}
        self.renders = 0

    async def get(self, accept: str | None, gz: bool) -> Rendering:
        _, content_type = choose_encoder(accept or "")
        key = (content_type, gz)
        fresh = self._fresh.get(key)
        if fresh is not None and self._clock() - fresh.made_at < self.reuse_s:
            return fresh
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._render(key, accept, gz))
            self._pending[key] = pending
            pending.add_done_callback(lambda f: self._done(key, f))
        # shielded: a client that leaves does not cancel the rendering the others wait for
        return await asyncio.shield(pending)

    async def _render(self, key: tuple[str, bool], accept: str | None, gz: bool) -> Rendering:
        await self.renderer.refresh_outbox()
        await self.renderer.ready()  # after a reload: caches rebuilt off the loop
        parts, content_type = self.renderer.snapshot(accept)
        body, compressed = await join_sliced(parts, gz)
        self.renders += 1
        rendering = Rendering(body, content_type, compressed, self._clock())
        self._fresh[key] = rendering
        # the cache lets go of it once stale; the readers still sending it keep it alive
        asyncio.get_running_loop().call_later(self.reuse_s, self._expire, key, rendering)
        return rendering

    def _done(self, key: tuple[str, bool], fut: asyncio.Future[Rendering]) -> None:
        self._pending.pop(key, None)
        if not fut.cancelled():
            fut.exception()  # retrieved: waiters that left must not leave it unobserved

    def _expire(self, key: tuple[str, bool], rendering: Rendering) -> None:
        if self._fresh.get(key) is rendering:
            del self._fresh[key]


METRICS: web.AppKey[MetricsCache] = web.AppKey("metrics", MetricsCache)


async def metrics(request: web.Request) -> web.StreamResponse:
    """The exposition (see :mod:`camwatch.sinks.metrics`), formatted a slice per turn of the
    loop, joined and gzipped (when asked for and large) in a worker thread (see
    :func:`join_sliced`), so probing goes on. Sent in slices of the shared rendering: tens
    of MB in one transport write would be one long copy on the loop, and a copy per stalled
    client."""
    gz = "gzip" in request.headers.get("Accept-Encoding", "")
    rendering = await request.app[METRICS].get(request.headers.get("Accept"), gz)
    headers = {"Content-Type": rendering.content_type}
    if rendering.gzipped:
        headers["Content-Encoding"] = "gzip"
    resp = web.StreamResponse(headers=headers)
    resp.content_length = len(rendering.body)
    rendering.readers += 1
    try:
        await resp.prepare(request)
        if request.method != "HEAD":
            with memoryview(rendering.body) as view:
                for start in range(0, len(view), WRITE_CHUNK_BYTES):
                    await resp.write(view[start:start + WRITE_CHUNK_BYTES])
        await resp.write_eof()
    finally:
        rendering.readers -= 1
    return resp


async def join_sliced(parts: list[Part], gz: bool) -> tuple[bytes, bool]:
    """The exposition from :meth:`MetricsRenderer.snapshot`'s parts, gzipped when asked for
    and large. The lazy parts are formatted here on the event loop, one slice of
    ``CHUNK_LINES`` lines (1-2 ms) per turn: at 100,000 channels that is ~0.4 s of Python a
    scrape, which in a worker thread took the GIL from the loop in turns and slowed every
    probe for as long; in slices the loop keeps its pace and only the scrape waits.

    Each slice is appended to one growing buffer as it comes, so that the 180 KB slices die
    at once and reuse one block of the heap: kept in a list until the end, the 36 MB of them
    came from glibc's heap (under its mmap threshold) and stayed resident after the scrape.
    Copying the buffer out and compressing it, which release the GIL or hold it briefly, go
    to a worker thread."""
    body = bytearray()
    for p in parts:
        if isinstance(p, bytes):
            body += p
            continue
        for chunk in p():
            body += chunk
            await asyncio.sleep(0)  # a turn of the loop between slices
    if gz and len(body) >= GZIP_MIN_BYTES:
        return await asyncio.to_thread(_gzip, body), True
    return await asyncio.to_thread(bytes, body), False


def _gzip(body: bytearray) -> bytes:
    z = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # level 1, gzip framing
    return z.compress(body) + z.flush()


# --- middlewares --------------------------------------------------------------------------------

OPEN_PATHS = frozenset({"/healthz"})
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def send_timeout_middleware(seconds: float) -> Any:
    """Every response is prepared and sent within ``seconds`` (``http.send_timeout``), here
    rather than after the handler returns: a client that stops reading is disconnected instead
    of holding its connection and the unsent bytes for ever."""

    @web.middleware
    async def bounded(request: web.Request, handler: _Handler) -> web.StreamResponse:
        resp: web.StreamResponse | None = None
        try:
            async with asyncio.timeout(seconds):
                resp = await handler(request)
                await resp.prepare(request)
                await resp.write_eof()
                await request.writer.drain()  # all of it in the kernel (see _Protocol)
        except TimeoutError:
            if request.writer.output_size == 0 and (resp is None or not resp.prepared):
                return _json_error(503, f"no response within http.send_timeout ({seconds:g}s)")
            # part of a response went out (the handler's or ours): closing is all that is
            # left, and abort() rather than close(), which would wait for the unsent bytes
            if request.transport is not None:
                request.transport.abort()
            log.debug("response not taken within http.send_timeout, disconnected",
                      client=request.remote, path=request.path)
            return resp if resp is not None else web.Response(status=503)
        return resp

    return bounded


def auth_middleware(cfg: HttpConfig) -> Any:
    """Bearer token or Basic credentials on every path but /healthz (and /metrics unless
    ``metrics_auth``). Secrets are read once, here, and compared in constant time."""
    assert cfg.auth is not None
    token = cfg.auth.token()
    password = cfg.auth.password()
    for secret in (token, password):
        if secret is not None:
            register_secret(secret.reveal())
    expected: list[bytes] = []
    if token is not None:
        expected.append(f"Bearer {token.reveal()}".encode())
    if cfg.auth.username and password is not None:
        basic = base64.b64encode(f"{cfg.auth.username}:{password.reveal()}".encode()).decode()
        register_secret(basic)  # as a client sends it
        expected.append(f"Basic {basic}".encode())
    open_paths = OPEN_PATHS if cfg.metrics_auth else OPEN_PATHS | {"/metrics"}

    @web.middleware
    async def check(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path in open_paths:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        if not any(hmac.compare_digest(given, e) for e in expected):
            raise web.HTTPUnauthorized(
                text="authentication required", headers={
                    "WWW-Authenticate": 'Bearer realm="camwatch", Basic realm="camwatch"'})
        return await handler(request)

    return check


def _json_error(status: int, message: str, **fields: Any) -> web.Response:
    return web.Response(status=status, text=_dumps({"error": message, **fields}),
                        content_type="application/json")


Reloader = Callable[[bool], Awaitable[tuple[bool, dict[str, Any]]]]
RELOAD: web.AppKey[Reloader] = web.AppKey("reload")


async def reload(request: web.Request) -> web.Response:
    """``POST /api/reload[?allow_drop=1]``: reload as SIGHUP does, and say how it went (200
    with the channel count, or 409 with why it was refused). ``allow_drop`` confirms a reload
    that drops more than ``inventory.max_drop`` of the channels."""
    reloader = request.app.get(RELOAD)
    if reloader is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no reload here"}),
                               content_type="application/json")
    unknown = [k for k in request.query if k != "allow_drop"]
    if unknown:
        raise bad_query(unknown[0], request.query.get(unknown[0]), "only allow_drop")
    flag = request.query.get("allow_drop", "0")
    if flag not in ("0", "1", "true", "false"):
        raise bad_query("allow_drop", flag, "1 or 0", ("0", "1", "true", "false"))
    ok, detail = await reloader(flag in ("1", "true"))
    return web.json_response({"ok": ok, **detail}, status=200 if ok else 409, dumps=_dumps)


Routes = Sequence[tuple[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]


def make_app(engine: Engine, reloader: Reloader | None = None,
             routes: Routes = ()) -> web.Application:
    http_cfg = engine.cfg.http
    middlewares = [send_timeout_middleware(http_cfg.send_timeout)]
    if http_cfg.auth is not None:
        middlewares.append(auth_middleware(http_cfg))
    app = web.Application(middlewares=middlewares)
    app[ENGINE] = engine
    app[METRICS] = MetricsCache(MetricsRenderer(engine))
    if reloader is not None:
        app[RELOAD] = reloader
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/channels", channels)
    app.router.add_get("/api/channels/{id}/snapshot.jpg", snapshot)
    app.router.add_post("/api/channels/{id}/sample", sample_now)
    app.router.add_get("/api/rates", rates)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/platforms", platforms)
    app.router.add_get("/api/reconciliation", reconciliation)
    app.router.add_get("/api/recordings", recordings)
    app.router.add_post("/api/reload", reload)
    from camwatch.repairs.api import add_routes as add_ticket_routes
    add_ticket_routes(app, engine.repairs, engine.store, engine.clock)  # /api/tickets
    for path, handler in routes:  # more GET endpoints (the cluster's)
        app.router.add_get(path, handler)
    return app


# --- connections --------------------------------------------------------------------------------


class ConnectionLimits:
    """Open connections per client address and in total (``http.max_connections_per_client``,
    ``http.max_connections``). Behind a reverse proxy every request comes from the proxy's
    address: raise the per-client limit to the total there."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open: dict[str, int] = {}
        self.open_total = 0
        self.refusals = Throttle(burst=10, window_s=60.0)
        self.accepted = 0
        self.refused = 0

    def acquire(self, client: str) -> str | None:
        """None when ``client`` may open one more connection (counted), else why not."""
        if self.open_total >= self.total:
            return f"{self.total} connections open (http.max_connections)"
        if self.open.get(client, 0) >= self.per_client:
            return (f"{self.per_client} connections open from this address "
                    f"(http.max_connections_per_client)")
        self.open[client] = self.open.get(client, 0) + 1
        self.open_total += 1
        self.accepted += 1
        return None

    def release(self, client: str) -> None:
        self.open_total -= 1
        n = self.open.get(client, 0) - 1
        if n > 0:
            self.open[client] = n
        else:
            self.open.pop(client, None)


class _Protocol(web.RequestHandler):
    """aiohttp's connection handler, with two changes: a connection over the limits is
    answered 503 and closed before anything is read, and a request the parser refuses is
    answered with a JSON 400 and one throttled log line that quotes none of its bytes (the
    base class logs the raw request line and headers with a traceback)."""

    def __init__(self, limits: ConnectionLimits, bad_requests: Throttle,
                 manager: Any, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._bad_requests = bad_requests
        self._client: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        refused = self._limits.acquire(client)
        if refused is None:
            self._client = client
            super().connection_made(transport)
            # writing "pauses" while anything is unsent, so a drain waits until every byte is
            # in the kernel: the send timeout then covers the whole response, and a close
            # never waits for ever on bytes a client will not read
            cast(asyncio.WriteTransport, transport).set_write_buffer_limits(high=0)
            return
        self._limits.refused += 1
        ok, left_out = self._limits.refusals.allow()
        if ok:
            log.warning("HTTP connection refused", client=client, why=refused,
                        **({"not_logged_before": left_out} if left_out else {}))
        body = _dumps({"error": f"too many connections: {refused}"}).encode()
        transport = cast(asyncio.Transport, transport)
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json"
                        b"\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                        b"%s" % (len(body), body))
        transport.close()
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._client is not None:
            self._limits.release(self._client)
            self._client = None
        super().connection_lost(exc)

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not is_client_protocol_error(exc):
            return super().handle_error(request, status, exc, message)
        assert exc is not None
        error = client_error_text(exc)
        ok, left_out = self._bad_requests.allow()
        if ok:
            log.info("bad HTTP request refused", client=request.remote, error=error,
                     **({"not_logged_before": left_out} if left_out else {}))
        resp = _json_error(status, f"malformed HTTP request: {error}",
                           hint="percent-encode non-ASCII characters of the URL (UTF-8); "
                                "end every header line with CRLF")
        resp.force_close()
        return resp


@dataclass
class HttpServer:
    """What :func:`serve` started: the bound addresses, and :meth:`cleanup` to stop."""

    runner: web.AppRunner
    server: asyncio.Server
    limits: ConnectionLimits

    @property
    def addresses(self) -> list[Any]:
        return [s.getsockname() for s in self.server.sockets]

    async def cleanup(self) -> None:
        self.server.close()
        await self.runner.cleanup()


async def serve(engine: Engine, host: str, port: int,
                reloader: Reloader | None = None, routes: Routes = ()) -> HttpServer:
    """Serve the app on ``host:port``, the address finally bound (``--listen`` or
    ``http.listen``): the exposure check runs here for it."""
    cfg = engine.cfg.http
    check_listen(cfg, f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                 "--listen / http.listen")
    tls = None
    if cfg.tls_cert is not None and cfg.tls_key is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        tls.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    handler_args: dict[str, Any] = {"access_log": None, "keepalive_timeout": cfg.header_timeout}
    runner = web.AppRunner(make_app(engine, reloader, routes), shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                           **handler_args)
    await runner.setup()
    manager = runner.server
    assert manager is not None
    limits = ConnectionLimits(cfg.max_connections, cfg.max_connections_per_client)
    bad_requests = Throttle(burst=10, window_s=60.0)
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(
            lambda: _Protocol(limits, bad_requests, manager, loop=loop, **handler_args),
            host, port, ssl=tls, reuse_address=True,
            ssl_handshake_timeout=cfg.header_timeout if tls is not None else None)
    except BaseException:
        await runner.cleanup()
        raise
    return HttpServer(runner, server, limits)
