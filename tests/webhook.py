"""A real HTTP webhook receiver on loopback for the tests: records the ``alert`` of every JSON
body it accepts, and answers 503 while ``down`` (a receiver that is down: camwatch keeps the
outbox item and retries), counting those in ``refused``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.refused = 0
        self.down = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if outer.down:
                    outer.refused += 1
                    self.send_response(503)
                else:
                    outer.alerts.append(json.loads(body)["alert"])
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@contextmanager
def running(receiver: WebhookReceiver) -> Iterator[WebhookReceiver]:
    """``receiver`` serving in a thread of its own until the block ends."""
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.shutdown()
        receiver.server_close()
