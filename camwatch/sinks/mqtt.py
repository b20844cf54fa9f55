"""MQTT: alerts on ``<prefix>/alerts/<county>/<township>`` (QoS 1, not retained) and the current
rates, retained, on ``<prefix>/rates/<county>/<township>/<class>`` so an app that connects
sees the latest state at once.

Topic levels: ``-`` stands for a missing county or township (a county-wide alert, the
prober's own health); in rate topics ``all`` is the whole county (township level) or all
classes (class level), and a project's rate uses the project name as its last level
(``.../智慧小区``). ``/``, ``+`` and ``#`` inside names become ``_``.

One connection per receiver, opened on first use and re-opened after any error; at most
``max_inflight`` QoS 1 publishes wait for their PUBACK at a time. An alert counts as delivered
when the broker acknowledged it (PUBACK), never earlier.

Order across reconnects: the dispatcher hands a batch of alerts to :meth:`MqttSink.send_batch`,
which publishes them in order on *one* connection and never reconnects in the middle. When
the connection breaks, every alert of the batch not yet acknowledged fails, and the
dispatcher sends them again, in order, on the next connection: a receiver sees each alert's
first copy in the order they were raised (at most one unacknowledged batch is repeated).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiomqtt
import structlog

from camwatch.log import register_secret
from camwatch.rules.rates import RateRow, format_rate
from camwatch.sinks.base import DeliveryError, safe_error
from camwatch.sinks.config import MqttReceiver

log = structlog.get_logger(__name__)


def level(value: str | None, empty: str = "-") -> str:
    if not value:
        return empty
    return "".join("_" if c in "/+#\0" else c for c in value)


def alert_topic(prefix: str, labels: Mapping[str, str]) -> str:
    return f"{prefix}/alerts/{level(labels.get('county'))}/{level(labels.get('township'))}"


def rate_topic(prefix: str, row: RateRow) -> str | None:
    """Topic of a county or township rate row; ``None`` for other scopes."""
    scope = dict(row.scope)
    if set(scope) not in ({"county"}, {"county", "township"}):
        return None
    last = (str(row.klass) if row.klass is not None
            else level(row.project) if row.project is not None else "all")
    return (f"{prefix}/rates/{level(scope['county'])}/"
            f"{level(scope.get('township'), 'all')}/{last}")


def rate_payload(row: RateRow, ts: float | None = None) -> bytes:
    doc: dict[str, Any] = {**row.as_json(), "label": row.label(), "rate_text":
                           format_rate(row.rate)}
    if ts is not None:
        doc["ts"] = ts
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


class MqttSink:
    def __init__(self, name: str, cfg: MqttReceiver) -> None:
        self.name = name
        self.cfg = cfg
        self.max_batch = cfg.max_inflight
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()
        self._inflight = asyncio.Semaphore(cfg.max_inflight)
        self._rates_lock = asyncio.Lock()
        self._latest_rates: tuple[Sequence[RateRow], float | None] | None = None

    def _tls(self) -> ssl.SSLContext | None:
        if not self.cfg.tls:
            return None
        ctx = ssl.create_default_context(cafile=str(self.cfg.ca_file) if self.cfg.ca_file
                                         else None)
        if self.cfg.cert_file is not None:
            ctx.load_cert_chain(str(self.cfg.cert_file),
                                str(self.cfg.key_file) if self.cfg.key_file else None)
        return ctx

    async def _connect(self) -> aiomqtt.Client:
        async with self._lock:
            if self._client is not None:
                return self._client
            try:
                password = self.cfg.password()
            except LookupError as exc:
                raise DeliveryError("misconfigured", str(exc)) from None
            if password is not None:
                register_secret(password.reveal())
            try:
                tls = self._tls()
            except (OSError, ssl.SSLError) as exc:
                raise DeliveryError("misconfigured", f"TLS files: {exc}") from None
            client = aiomqtt.Client(
                self.cfg.host, self.cfg.port, username=self.cfg.username,
                password=password.reveal() if password is not None else None,
                identifier=self.cfg.client_id, tls_context=tls, timeout=self.cfg.timeout,
                max_inflight_messages=self.cfg.max_inflight)
            try:
                async with asyncio.timeout(self.cfg.timeout):
                    await client.__aenter__()
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                raise DeliveryError("retry", self._error(exc)) from None
            log.info("mqtt connected", receiver=self.name, host=self.cfg.host,
                     port=self.cfg.port)
            self._client = client
            return client

    def _error(self, exc: BaseException) -> str:
        return f"{self.cfg.host}:{self.cfg.port}: {safe_error(exc)}"

    async def _drop(self, client: aiomqtt.Client) -> None:
        async with self._lock:
            if self._client is client:
                self._client = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.cfg.timeout):
                await client.__aexit__(None, None, None)

    async def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        client = await self._connect()
        async with self._inflight:
            try:
                async with asyncio.timeout(self.cfg.timeout):
                    await client.publish(topic, payload, qos=self.cfg.qos, retain=retain,
                                         timeout=self.cfg.timeout)
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                await self._drop(client)
                raise DeliveryError("retry", self._error(exc)) from None

    async def send_batch(self, payloads: Sequence[Mapping[str, Any]]
                         ) -> list[BaseException | None]:
        """Publish ``payloads`` in order on one connection; the result of each (None: the
        broker acknowledged it). A failure drops the connection only after the whole batch
        settled, so no later alert of the batch goes out on a new connection before it."""
        try:
            client = await self._connect()
        except DeliveryError as exc:
            return [exc for _ in payloads]

        async def one(payload: Mapping[str, Any]) -> None:
            topic = alert_topic(self.cfg.prefix, payload.get("labels") or {})
            body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            try:
                # aiomqtt hands the PUBLISH to the socket before its first await: the tasks,
                # started in order, put the batch on the wire in order
                async with asyncio.timeout(self.cfg.timeout):
                    await client.publish(topic, body, qos=self.cfg.qos, retain=False,
                                         timeout=self.cfg.timeout)
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                raise DeliveryError("retry", self._error(exc)) from None

        results = await asyncio.gather(*(one(p) for p in payloads), return_exceptions=True)
        out: list[BaseException | None] = [r if isinstance(r, BaseException) else None
                                           for r in results]
        if any(r is not None for r in out):
            await self._drop(client)
        return out

    async def send(self, payload: Mapping[str, Any]) -> None:
        topic = alert_topic(self.cfg.prefix, payload.get("labels") or {})
        await self._publish(topic, json.dumps(payload, ensure_ascii=False).encode("utf-8"),
                            retain=False)

    async def publish_rates(self, rows: Sequence[RateRow], ts: float | None = None) -> int:
        """Publish every county/township rate row, retained. Best effort and latest wins: a
        call while another is publishing replaces what that one publishes next. Returns the
        number of rows published by this call (0 when it handed over or failed)."""
        self._latest_rates = (rows, ts)
        if self._rates_lock.locked():
            return 0
        published = 0
        async with self._rates_lock:
            while self._latest_rates is not None:
                batch, stamp = self._latest_rates
                self._latest_rates = None
                msgs = [(t, rate_payload(r, stamp)) for r in batch
                        if (t := rate_topic(self.cfg.prefix, r)) is not None]
                results = await asyncio.gather(
                    *(self._publish(t, p, retain=True) for t, p in msgs),
                    return_exceptions=True)
                errors = [r for r in results if isinstance(r, BaseException)]
                if errors:
                    first = errors[0]
                    log.warning("mqtt rates not published", receiver=self.name,
                                failed=len(errors), error=first.message
                                if isinstance(first, DeliveryError) else safe_error(first))
                    return 0
                published = len(msgs)
        return published

    async def close(self) -> None:
        if self._client is not None:
            await self._drop(self._client)
