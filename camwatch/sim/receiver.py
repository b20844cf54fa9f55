"""A webhook receiver on loopback that stands for the people an alert goes to (a duty group's
or the maintainers' robot), for ``camwatch demo``: each alert it gets is handed to a callback."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web


@asynccontextmanager
async def webhook_receiver(path: str, url_env: str,
                           on_alert: Callable[[dict[str, Any]], None]) -> AsyncIterator[str]:
    """Listen on 127.0.0.1 (a free port) at ``path``; yields the URL, also set in the
    environment variable ``url_env`` (the receiver's ``url_env`` in the demo's config)."""

    async def hook(request: web.Request) -> web.Response:
        on_alert((await request.json()).get("alert", {}))
        return web.json_response({})

    app = web.Application()
    app.router.add_post(path, hook)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}{path}"
    os.environ[url_env] = url
    try:
        yield url
    finally:
        await runner.cleanup()
