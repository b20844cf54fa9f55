"""What every receiver has in common: the failure classes, backoff, rate limit, rendering.

A sink delivers one outbox payload (an :meth:`Alert.as_payload` dict) and either returns or
raises :class:`DeliveryError` with one of three kinds, classified once here:

- ``retry``: the receiver may take it later (network error, timeout, 5xx, 429, a robot's
  rate-limit errcode, an errcode we do not know): retried with capped jittered backoff;
- ``misconfigured``: the receiver refuses *every* message (401/403/404, invalid robot key,
  signature mismatch, unresolvable ``*_env``): also retried with backoff and logged as an
  error, so that nothing is lost while somebody fixes the config;
- ``rejected``: the receiver refuses *this* message (another 4xx, a robot's content errcode):
  retrying cannot help and would block every later message (delivery is in order), so the
  item is set aside (marked done with its error kept in the outbox row) and logged.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, urlsplit

import aiohttp

from camwatch.localtime import format_time, local_zone
from camwatch.log import register_secret
from camwatch.secrets import Secret, redact_text
from camwatch.sinks.config import _HttpReceiver

Kind = Literal["retry", "misconfigured", "rejected"]

ALERT_TITLES = {
    "rate_below_target": "在线率低于目标",
    "channel_offline_long": "点位长时间离线",
    "clock_drift": "点位时钟偏差",
    "mass_outage": "批量离线",
    "prober_unhealthy": "探测服务异常",
    "quality_degraded": "点位画面异常",
    "intact_rate_below_target": "完好率低于目标",
    "repair_ticket": "维修工单",  # camwatch.repairs
}
SEVERITY_NAMES = {"info": "提示", "warning": "警告", "critical": "严重"}
MAX_BODY = 64 * 1024  # what we read of a receiver's answer


class DeliveryError(Exception):
    """A delivery failed; ``kind`` decides what happens to the outbox item. ``message`` is
    free of secrets (it is logged and stored in the outbox row)."""

    def __init__(self, kind: Kind, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind: Kind = kind
        self.message = message
        self.retry_after = retry_after


class Sink(Protocol):
    name: str
    max_batch: int  # payloads that may be in flight at once (in order)

    async def send(self, payload: Mapping[str, Any]) -> None: ...

    async def send_batch(self, payloads: Sequence[Mapping[str, Any]]
                         ) -> list[BaseException | None]:
        """Send up to ``max_batch`` payloads, started in order; each one's error or None."""
        ...

    async def close(self) -> None: ...


# --- backoff and rate limit -----------------------------------------------------------------


def backoff(attempts: int, initial: float, cap: float,
            rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempts + 1``: doubling from ``initial``, capped at
    ``cap``, with the upper half jittered so receivers coming back are not stampeded."""
    delay = min(cap, initial * 2.0 ** min(attempts, 40))
    return delay / 2 + rand() * delay / 2


class SlidingWindow:
    """At most ``limit`` sends in any ``window`` seconds (robots count a sliding minute:
    a token bucket refilled at 20/min would let a 21st message through within 60 s)."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._sent: deque[float] = deque()

    def wait_time(self, now: float) -> float:
        if self.limit <= 0:
            return 0.0
        while self._sent and now - self._sent[0] >= self.window:
            self._sent.popleft()
        if len(self._sent) < self.limit:
            return 0.0
        return self._sent[0] + self.window - now

    def record(self, now: float) -> None:
        if self.limit > 0:
            self._sent.append(now)


# --- secrets --------------------------------------------------------------------------------


def register_url(url: Secret) -> None:
    """Register a webhook URL and every value in its query (robot key, access token) and
    userinfo, so no log line can carry them."""
    text = url.reveal()
    register_secret(text)
    parts = urlsplit(text)
    for _, value in parse_qsl(parts.query):
        register_secret(value)
    if parts.password:
        register_secret(parts.password)


def safe_error(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """An exception as text without URLs (aiohttp puts the full URL, key included, into
    several of its messages)."""
    if isinstance(exc, aiohttp.ClientResponseError):
        text = f"HTTP {exc.status}"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        text = f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or ''}"
    elif isinstance(exc, aiohttp.InvalidURL):
        text = "invalid URL"
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    else:
        text = str(exc)
    return redact_text(f"{type(exc).__name__}: {text}", secrets)


def classify_http(status: int, retry_after: str | None = None) -> DeliveryError | None:
    """None for 2xx, else the error to raise."""
    if 200 <= status < 300:
        return None
    if status == 429:
        return DeliveryError("retry", "HTTP 429 (rate limited)", _retry_after(retry_after))
    if status == 408 or status >= 500:
        return DeliveryError("retry", f"HTTP {status}")
    if status in (401, 403, 404, 405, 407, 410) or 300 <= status < 400:
        return DeliveryError("misconfigured", f"HTTP {status}: check the receiver's URL "
                                              f"and credentials")
    return DeliveryError("rejected", f"HTTP {status}: the receiver refused this message")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


# --- HTTP -----------------------------------------------------------------------------------


class HttpPoster:
    """One aiohttp session per sink, created in the running loop on first use; POSTs JSON
    without following redirects (a redirect would turn the POST into a GET elsewhere)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str],
                   secrets: tuple[str, ...]) -> tuple[int, Mapping[str, str], bytes]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(url, data=body, headers={
                    "Content-Type": "application/json; charset=utf-8", **headers},
                    allow_redirects=False) as resp:
                data = await resp.content.read(MAX_BODY)
                return resp.status, resp.headers, data
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError("retry", safe_error(exc, secrets)) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def json_bytes(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_errcode(body: bytes) -> tuple[int | None, str]:
    """The ``errcode``/``errmsg`` of a robot's JSON answer; ``None`` when it has none."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, ""
    if not isinstance(doc, dict) or not isinstance(doc.get("errcode"), int):
        return None, ""
    return int(doc["errcode"]), str(doc.get("errmsg", ""))[:200]


# --- rendering ------------------------------------------------------------------------------


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def title(payload: Mapping[str, Any]) -> str:
    what = ALERT_TITLES.get(payload["name"], payload["name"])
    if payload["status"] == "resolved":
        return f"【恢复】{what}"
    return f"【{SEVERITY_NAMES.get(payload['severity'], payload['severity'])}】{what}"


def markdown(payload: Mapping[str, Any], *, wecom: bool = False, limit: int = 4000) -> str:
    """The robots' markdown: title, summary, notes, times and the fingerprint. ``limit`` is
    in UTF-8 bytes (WeCom allows 4096); long texts are cut at a line."""
    resolved = payload["status"] == "resolved"
    head = title(payload)
    if wecom:
        color = "info" if resolved else ("warning" if payload["severity"] != "info"
                                         else "comment")
        head = f'<font color="{color}">{head}</font>'
    lines = [f"### {head}", f"**{payload['summary']}**"]
    details = payload.get("details") or {}
    lines += [f"> {n}" for n in details.get("notes", [])]
    tz = local_zone(payload.get("timezone"))
    times = f"开始：{format_time(payload['starts_at'], tz)}"
    if resolved and payload.get("ends_at"):
        times += f"　恢复：{format_time(payload['ends_at'], tz)}"
    lines.append(f"> {times}")
    lines.append(f"> 告警指纹：{payload['fingerprint']}")
    sep = "\n" if wecom else "\n\n"  # DingTalk needs a blank line to break a line
    return _cut(lines, sep, limit)


def _cut(lines: list[str], sep: str, limit: int) -> str:
    """``lines`` joined by ``sep`` within ``limit`` UTF-8 bytes, cut at a line (the first
    line cut by characters if it alone is too long), "…" marking a cut."""
    text = sep.join(lines)
    if len(text.encode("utf-8")) <= limit:
        return text
    keep: list[str] = []
    for line in lines:
        if len(sep.join([*keep, line, "…"]).encode("utf-8")) > limit:
            break
        keep.append(line)
    if not keep:
        first = lines[0]
        while first and len((first + "…").encode("utf-8")) > limit:
            first = first[:-1]
        return first + "…"
    return sep.join([*keep, "…"])


def digest_title(payloads: Sequence[Mapping[str, Any]]) -> str:
    resolved = sum(1 for p in payloads if p["status"] == "resolved")
    firing = len(payloads) - resolved
    parts = [f"{firing} 条告警" if firing else "", f"{resolved} 条恢复" if resolved else ""]
    return f"【camwatch】{'、'.join(x for x in parts if x)}"


def digest_markdown(payloads: Sequence[Mapping[str, Any]], *, wecom: bool = False,
                    limit: int = 4000) -> str:
    """Several alerts in one robot message, in their order: a heading with the counts, then
    for each its title and summary, its notes and its time, each alert within an equal share
    of ``limit`` (UTF-8 bytes). The fingerprints are left out (they are in the payloads of
    the other receivers and in the outbox)."""
    sep = "\n" if wecom else "\n\n"
    head = f"### {digest_title(payloads)}"
    share = max(64, (limit - len(head.encode("utf-8")) - 2 * len(sep) * len(payloads))
                // len(payloads))
    blocks = [head]
    for i, p in enumerate(payloads, start=1):
        resolved = p["status"] == "resolved"
        tz = local_zone(p.get("timezone"))
        when = format_time(p["ends_at"] if resolved and p.get("ends_at") else p["starts_at"],
                           tz)
        name = title(p)
        if wecom:
            color = "info" if resolved else ("warning" if p["severity"] != "info"
                                             else "comment")
            name = f'<font color="{color}">{name}</font>'
        notes = [f"> {n}" for n in (p.get("details") or {}).get("notes", [])]
        blocks.append(_cut([f"**{i}. {name}** {p['summary']}", *notes,
                            f"> {'恢复' if resolved else '开始'}：{when}"], sep, share))
    return _cut(blocks, sep, limit)


class HttpSink:
    """What the HTTP receivers share: the poster, and their URL (which carries the robot's
    key) and signing secret resolved once, on first use, and registered for log scrubbing.
    A reference that cannot be resolved is a misconfiguration, retried until it is fixed."""

    max_batch = 1

    async def send_batch(self, payloads: Sequence[Mapping[str, Any]]
                         ) -> list[BaseException | None]:
        results = await asyncio.gather(*(self.send(p) for p in payloads),
                                       return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    async def send(self, payload: Mapping[str, Any]) -> None:
        raise NotImplementedError  # each receiver's own

    def __init__(self, name: str, cfg: _HttpReceiver,
                 clock: Callable[[], float] | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.clock = clock if clock is not None else time.time
        self._http = HttpPoster(cfg.timeout)
        self._resolved: tuple[Secret, Secret | None] | None = None

    def _resolve(self) -> tuple[Secret, Secret | None]:
        if self._resolved is None:
            secret_of = getattr(self.cfg, "secret", None)
            try:
                url = self.cfg.url()
                secret = secret_of() if secret_of is not None else None
            except LookupError as exc:
                raise DeliveryError("misconfigured", str(exc)) from None
            register_url(url)
            if secret is not None:
                register_secret(secret.reveal())
            self._resolved = (url, secret)
        return self._resolved


class RobotSink(HttpSink):
    """A group robot (WeCom, DingTalk): alerts due together go out as one digest message of
    up to ``digest`` of them, in order, since a robot takes about 20 messages a minute; one
    alert due is its own message as always. A digest the robot refuses as a message is sent
    again one alert at a time, so that no alert is set aside for the digest's sake."""

    combines = True  # a batch is one message: the dispatcher's rate limit counts it once

    def __init__(self, name: str, cfg: _HttpReceiver,
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(name, cfg, clock)
        self.max_batch = int(getattr(cfg, "digest", 1))

    async def send_digest(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        raise NotImplementedError  # each robot's own

    async def send_batch(self, payloads: Sequence[Mapping[str, Any]]
                         ) -> list[BaseException | None]:
        if len(payloads) > 1:
            try:
                await self.send_digest(payloads)
            except DeliveryError as exc:
                if exc.kind != "rejected":
                    return [exc] * len(payloads)
            except Exception as exc:  # settled by the dispatcher
                return [exc] * len(payloads)
            else:
                return [None] * len(payloads)
        out: list[BaseException | None] = []
        for p in payloads:  # in order; a refused one is set aside, any other failure waits
            try:
                await self.send(p)
            except Exception as exc:  # settled by the dispatcher
                out.append(exc)
                if not (isinstance(exc, DeliveryError) and exc.kind == "rejected"):
                    # the dispatcher stops at this one: the rest are not attempted
                    out += [exc] * (len(payloads) - len(out))
                    break
                continue
            out.append(None)
        return out
