"""Generic JSON webhook: one POST per alert event, schema in ``docs/alerts.md``.

With ``secret_env``/``secret_file`` the body is signed: ``X-Camwatch-Signature: sha256=<hex
HMAC-SHA256 of the raw body keyed with the secret>``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from camwatch.sinks.base import (
    HttpSink,
    classify_http,
    iso,
    json_bytes,
)
from camwatch.sinks.config import WebhookReceiver

SCHEMA_VERSION = 1


def build_body(receiver: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    alert = dict(payload)
    alert.pop("version", None)
    alert["starts_at_iso"] = iso(payload["starts_at"])
    alert["ends_at_iso"] = iso(payload["ends_at"]) if payload.get("ends_at") else None
    return {"version": SCHEMA_VERSION, "receiver": receiver, "alert": alert}


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookSink(HttpSink):
    cfg: WebhookReceiver

    async def send(self, payload: Mapping[str, Any]) -> None:
        url, secret = self._resolve()
        body = json_bytes(build_body(self.name, payload))
        headers = {"X-Camwatch-Fingerprint": str(payload["fingerprint"])}
        if secret is not None:
            headers["X-Camwatch-Signature"] = signature(secret.reveal(), body)
        status, resp_headers, _ = await self._http.post(url.reveal(), body, headers,
                                                        (url.reveal(),))
        err = classify_http(status, resp_headers.get("Retry-After"))
        if err is not None:
            raise err

    async def close(self) -> None:
        await self._http.close()
