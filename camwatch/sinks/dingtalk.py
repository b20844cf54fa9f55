"""钉钉自定义机器人 (DingTalk custom robot): markdown messages, signed when it uses 加签.

Signing: ``timestamp`` (ms) and ``sign`` = url-encoded base64 of HMAC-SHA256, keyed with the
secret, of ``"<timestamp>\\n<secret>"``, added to the webhook URL's query. DingTalk refuses a
timestamp more than an hour off, so the signature is made at each send. Like WeCom it answers
HTTP 200 with an ``errcode``; it takes 20 messages a minute.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote_plus

from camwatch.sinks.base import (
    Kind,
    RobotSink,
    classify_http,
    digest_markdown,
    digest_title,
    json_bytes,
    markdown,
    title,
)
from camwatch.sinks.config import DingtalkReceiver
from camwatch.sinks.wecom import check_errcode

ERRCODES: dict[int, tuple[Kind, str]] = {
    -1: ("retry", "system busy"),
    130101: ("retry", "sending too fast (20 messages a minute per robot)"),
    300001: ("misconfigured", "invalid access_token"),
    310000: ("misconfigured", "signature, keyword or IP allow-list check failed"),
    400102: ("misconfigured", "the robot is disabled"),
    40035: ("rejected", "invalid parameter"),
    430101: ("rejected", "message contains unsafe content"),
}
MAX_TEXT = 18000


def sign(secret: str, timestamp_ms: int) -> str:
    """The ``sign`` query value for ``timestamp_ms`` (already url-encoded)."""
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode("utf-8"), to_sign, hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode("ascii"))


def signed_url(url: str, secret: str, timestamp_ms: int) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}timestamp={timestamp_ms}&sign={sign(secret, timestamp_ms)}"


def build_body(payload: Mapping[str, Any], at_mobiles: tuple[str, ...] = ()) -> dict[str, Any]:
    text = markdown(payload, limit=MAX_TEXT)
    if at_mobiles:  # DingTalk @s a mobile only when the text names it too
        text += "\n\n" + " ".join(f"@{m}" for m in at_mobiles)
    return {"msgtype": "markdown", "markdown": {"title": title(payload), "text": text},
            "at": {"atMobiles": list(at_mobiles), "isAtAll": False}}


def build_digest(payloads: Sequence[Mapping[str, Any]], at_mobiles: tuple[str, ...] = ()
                 ) -> dict[str, Any]:
    """Several alerts in one markdown message (:class:`~camwatch.sinks.base.RobotSink`)."""
    text = digest_markdown(payloads, limit=MAX_TEXT)
    if at_mobiles:
        text += "\n\n" + " ".join(f"@{m}" for m in at_mobiles)
    return {"msgtype": "markdown", "markdown": {"title": digest_title(payloads), "text": text},
            "at": {"atMobiles": list(at_mobiles), "isAtAll": False}}


class DingtalkSink(RobotSink):
    cfg: DingtalkReceiver

    async def send(self, payload: Mapping[str, Any]) -> None:
        await self._post(build_body(payload, self.cfg.at_mobiles))

    async def send_digest(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        await self._post(build_digest(payloads, self.cfg.at_mobiles))

    async def _post(self, doc: dict[str, Any]) -> None:
        url, secret = self._resolve()
        target = url.reveal()
        if secret is not None:
            target = signed_url(target, secret.reveal(), int(self.clock() * 1000))
        secrets = tuple(s for s in (url.reveal(), secret.reveal() if secret else "") if s)
        body = json_bytes(doc)
        status, headers, data = await self._http.post(target, body, {}, secrets)
        err = classify_http(status, headers.get("Retry-After"))
        if err is not None:
            raise err
        check_errcode(data, ERRCODES, rate_limited=130101)

    async def close(self) -> None:
        await self._http.close()
