"""The daemon's HTTP endpoints (aiohttp): ``/healthz``, ``/metrics``, ``/api/channels``,
``/api/rates``, ``/api/status``. Nothing here carries a password: targets are never
serialised, only inventory fields and states."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hmac
import ssl
from typing import Any

from aiohttp import web

from camwatch.config import HttpConfig
from camwatch.engine import Engine
from camwatch.log import register_secret
from camwatch.sinks.metrics import MetricsRenderer

ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
RENDERER: web.AppKey[MetricsRenderer] = web.AppKey("renderer", MetricsRenderer)
GZIP_MIN_BYTES = 64 * 1024
WRITE_CHUNK_BYTES = 1 << 20


async def healthz(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    problems = eng.problems()
    body = {"status": "ok" if not problems else "degraded", "problems": problems,
            "channels": len(eng.channels)}
    return web.json_response(body, status=200 if not problems else 503,
                             dumps=_dumps)


async def metrics(request: web.Request) -> web.StreamResponse:
    """Pre-rendered exposition (see :mod:`camwatch.sinks.metrics`), joined and gzipped (when
    asked for and large) in a worker thread: both release the GIL, so probing goes on."""
    renderer = request.app[RENDERER]
    await renderer.refresh_outbox()
    parts, content_type = renderer.snapshot(request.headers.get("Accept"))
    headers = {"Content-Type": content_type}
    gz = "gzip" in request.headers.get("Accept-Encoding", "")
    body, compressed = await asyncio.to_thread(_join, parts, gz)
    if compressed:
        headers["Content-Encoding"] = "gzip"
    if len(body) <= WRITE_CHUNK_BYTES:
        return web.Response(body=body, headers=headers)
    # tens of MB in one transport write is one long copy on the loop: hand it over in chunks
    resp = web.StreamResponse(headers=headers)
    resp.content_length = len(body)
    await resp.prepare(request)
    view = memoryview(body)
    for start in range(0, len(body), WRITE_CHUNK_BYTES):
        await resp.write(view[start:start + WRITE_CHUNK_BYTES])
    await resp.write_eof()
    return resp


def _join(parts: list[bytes], gz: bool) -> tuple[bytes, bool]:
    body = b"".join(parts)
    if gz and len(body) >= GZIP_MIN_BYTES:
        return gzip.compress(body, 1), True
    return body, False


def channel_json(eng: Engine, cid: str) -> dict[str, Any]:
    ch = eng.channels[cid]
    st = eng.book.state(cid)
    return {
        "id": ch.id, "name": ch.name, "state": st.state if st else "unknown",
        "reason": st.reason if st else None, "since": st.since if st else None,
        "last_probe": st.last_probe if st else None,
        "latency_ms": st.latency_ms if st else None,
        "clock_drift_s": st.clock_drift_s if st else None,
        "flapping": st.flapping if st else False,
        "class": ch.klass, "project": ch.project or None, "county": ch.county or None,
        "township": ch.township or None, "village": ch.village or None,
        "operator": ch.operator or None, "host": ch.host,
        "device": (st.info.get("device") if st and st.info else None),
    }


CHANNEL_FILTERS = ("county", "township", "village", "operator", "project", "host")
FILTERS = ("state", "reason", *CHANNEL_FILTERS)


async def channels(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    q = request.query
    unknown = [k for k in q if k not in (*FILTERS, "class", "limit", "offset")]
    if unknown:
        raise web.HTTPBadRequest(text=f"unknown query parameter(s): {', '.join(unknown)}; "
                                      f"expected {', '.join((*FILTERS, 'class', 'limit'))}")
    try:
        limit = int(q.get("limit", "1000"))
        offset = int(q.get("offset", "0"))
        klass = int(q["class"]) if "class" in q else None
    except ValueError:
        raise web.HTTPBadRequest(text="limit, offset and class must be integers") from None
    # Filter on the objects, build JSON only for the page: at 100,000 channels a request
    # must not build 100,000 dictionaries on the event loop.
    on_channel = [(k, v) for k, v in q.items() if k in CHANNEL_FILTERS]
    on_state = [(k, v) for k, v in q.items() if k in ("state", "reason")]
    out = []
    matched = 0
    for cid, ch in eng.channels.items():
        if klass is not None and ch.klass != klass:
            continue
        if any(getattr(ch, k) != v for k, v in on_channel):
            continue
        if on_state:
            st = eng.book.state(cid)
            seen = {"state": st.state if st else "unknown", "reason": st.reason if st else None}
            if any(str(seen[k]) != v for k, v in on_state):
                continue
        matched += 1
        if offset < matched <= offset + limit:
            out.append(channel_json(eng, cid))
    return web.json_response({"total": matched, "channels": out}, dumps=_dumps)


async def rates(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    return web.json_response({"rates": [r.as_json() for r in eng.rates]}, dumps=_dumps)


async def status(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    counts: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for cid in eng.channels:
        st = eng.book.state(cid)
        s = st.state if st else "unknown"
        counts[s] = counts.get(s, 0) + 1
        if s == "offline" and st is not None and st.reason:
            reasons[st.reason] = reasons.get(st.reason, 0) + 1
    return web.json_response({
        "site": eng.cfg.site.name, "started": eng.started, "channels": len(eng.channels),
        "states": counts, "offline_reasons": dict(sorted(reasons.items(),
                                                         key=lambda kv: -kv[1])),
        "problems": eng.problems(), "sweep_lag_s": eng.health.sweep_lag(),
        "rates": [r.as_json() for r in eng.rates if len(r.scope) <= 2],
    }, dumps=_dumps)


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, ensure_ascii=False)


OPEN_PATHS = frozenset({"/healthz"})


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
        expected.append(f"Basic {basic}".encode())
    open_paths = OPEN_PATHS if cfg.metrics_auth else OPEN_PATHS | {"/metrics"}

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in open_paths:
            return await handler(request)  # type: ignore[no-any-return]
        given = request.headers.get("Authorization", "").encode()
        if not any(hmac.compare_digest(given, e) for e in expected):
            raise web.HTTPUnauthorized(
                text="authentication required", headers={
                    "WWW-Authenticate": 'Bearer realm="camwatch", Basic realm="camwatch"'})
        return await handler(request)  # type: ignore[no-any-return]

    return check


def make_app(engine: Engine) -> web.Application:
    http_cfg = engine.cfg.http
    middlewares = [auth_middleware(http_cfg)] if http_cfg.auth is not None else []
    app = web.Application(middlewares=middlewares)
    app[ENGINE] = engine
    app[RENDERER] = MetricsRenderer(engine)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/channels", channels)
    app.router.add_get("/api/rates", rates)
    app.router.add_get("/api/status", status)
    return app


async def serve(engine: Engine, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(engine), access_log=None)
    await runner.setup()
    tls = None
    cfg = engine.cfg.http
    if cfg.tls_cert is not None and cfg.tls_key is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        tls.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=tls)
    await site.start()
    return runner
