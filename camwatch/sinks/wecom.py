"""企业微信群机器人 (WeCom group robot): markdown messages to its webhook.

The robot answers HTTP 200 with ``{"errcode": 0, "errmsg": "ok"}``; failures are errcodes in
that body, classified below. A robot takes about 20 messages a minute (``per_minute``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from camwatch.sinks.base import (
    DeliveryError,
    Kind,
    RobotSink,
    classify_http,
    digest_markdown,
    json_bytes,
    markdown,
    parse_errcode,
)
from camwatch.sinks.config import WecomReceiver

# errcode -> kind; anything else non-zero is retried (nothing is dropped on a guess).
ERRCODES: dict[int, tuple[Kind, str]] = {
    -1: ("retry", "system busy"),
    45009: ("retry", "rate limited (about 20 messages a minute per robot)"),
    93000: ("misconfigured", "invalid webhook URL or key"),
    93004: ("misconfigured", "the robot was disabled or removed"),
    40008: ("rejected", "invalid message type"),
    44004: ("rejected", "empty content"),
    40058: ("rejected", "invalid parameter"),
}
RATE_LIMIT_WAIT = 60.0
MAX_MARKDOWN = 4096


def build_body(payload: Mapping[str, Any], mentioned_mobiles: tuple[str, ...] = ()
               ) -> dict[str, Any]:
    content = markdown(payload, wecom=True, limit=MAX_MARKDOWN - 96)
    if mentioned_mobiles:  # markdown messages @ people with <@userid>; mobiles need text
        content += "\n" + " ".join(f"<@{m}>" for m in mentioned_mobiles)
    return {"msgtype": "markdown", "markdown": {"content": content}}


def build_digest(payloads: Sequence[Mapping[str, Any]],
                 mentioned_mobiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """Several alerts in one markdown message (:class:`~camwatch.sinks.base.RobotSink`)."""
    content = digest_markdown(payloads, wecom=True, limit=MAX_MARKDOWN - 96)
    if mentioned_mobiles:
        content += "\n" + " ".join(f"<@{m}>" for m in mentioned_mobiles)
    return {"msgtype": "markdown", "markdown": {"content": content}}


class WecomSink(RobotSink):
    cfg: WecomReceiver

    async def send(self, payload: Mapping[str, Any]) -> None:
        await self._post(build_body(payload, self.cfg.mentioned_mobiles))

    async def send_digest(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        await self._post(build_digest(payloads, self.cfg.mentioned_mobiles))

    async def _post(self, doc: dict[str, Any]) -> None:
        url, _ = self._resolve()
        body = json_bytes(doc)
        status, headers, data = await self._http.post(url.reveal(), body, {}, (url.reveal(),))
        err = classify_http(status, headers.get("Retry-After"))
        if err is not None:
            raise err
        check_errcode(data, ERRCODES, rate_limited=45009)

    async def close(self) -> None:
        await self._http.close()


def check_errcode(data: bytes, table: Mapping[int, tuple[Kind, str]], rate_limited: int) -> None:
    """Raise for a robot's non-zero errcode (shared by the WeCom and DingTalk sinks)."""
    code, msg = parse_errcode(data)
    if code is None:
        raise DeliveryError("retry", "HTTP 200 without an errcode: not a robot's answer")
    if code == 0:
        return
    kind, meaning = table.get(code, ("retry", "unknown errcode"))
    text = f"errcode {code} ({meaning}): {msg}"
    wait = RATE_LIMIT_WAIT if code == rate_limited else None
    raise DeliveryError(kind, text, wait)
