"""The outbox drainer: delivers every queued alert to its receiver, in order, at least once.

One task per receiver (in one ``TaskGroup``) reads that receiver's due items from the store's
outbox, sends them through its sink, and marks each delivered or failed. A failed item stays
at the head of the receiver's queue (the store's ``due`` stops there), so a receiver that was
down for an hour gets everything, in order, when it returns; retries back off exponentially
from ``delivery.backoff_initial`` to ``delivery.backoff_max`` with jitter. Each receiver has
its own sliding-window rate limit (robots: 20 a minute). ``notify()`` wakes the drainers at
once after the evaluator enqueued; without it they look every ``delivery.poll``. A restart
simply resumes: the outbox is the state.

Store errors never stop delivery: reads (``due``) come from the daemon's read connection and
writes (``mark_delivered`` / ``mark_failed``) go through the store writer; when either fails
(disk full, read-only file, a lock held too long) the drainer logs it once, waits and tries
again. An item sent but not marked (the mark failed) is sent again later with the same
fingerprint: at least once, never lost.

Logged once per change, not per attempt: a receiver going down (WARNING, or ERROR when it is
misconfigured) and coming back (INFO). Messages never carry a URL's key or a secret.

In a cluster (docs/scale-out.md) every instance enqueues the alerts of its shards into the
one outbox and one instance delivers it, the holder of the coordinator lock (``active``):
the order per receiver is kept across shards, and when that instance dies the next
coordinator resumes from the outbox, as a restart does. The others' items reach it within
``delivery.poll``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

import structlog

from camwatch.rules.alert_config import AlertsConfig
from camwatch.rules.rates import RateRow
from camwatch.sinks.alertmanager import AlertmanagerSink
from camwatch.sinks.base import DeliveryError, Sink, SlidingWindow, backoff, safe_error
from camwatch.sinks.config import (
    AlertmanagerReceiver,
    DingtalkReceiver,
    MqttReceiver,
    WebhookReceiver,
    WecomReceiver,
)
from camwatch.sinks.dingtalk import DingtalkSink
from camwatch.sinks.mqtt import MqttSink
from camwatch.sinks.webhook import WebhookSink
from camwatch.sinks.wecom import WecomSink
from camwatch.store.base import OutboxItem, Store
from camwatch.store.writer import StoreWriter

log = structlog.get_logger(__name__)


def make_sink(name: str, cfg: AlertsConfig, clock: Callable[[], float] = time.time) -> Sink:
    rcv = cfg.receivers[name]
    if isinstance(rcv, MqttReceiver):
        return MqttSink(name, rcv)
    if isinstance(rcv, WecomReceiver):
        return WecomSink(name, rcv)
    if isinstance(rcv, DingtalkReceiver):
        return DingtalkSink(name, rcv, clock)
    if isinstance(rcv, WebhookReceiver):
        return WebhookSink(name, rcv)
    assert isinstance(rcv, AlertmanagerReceiver)
    return AlertmanagerSink(name, rcv, clock)


class Dispatcher:
    def __init__(self, cfg: AlertsConfig, store: Store, writer: StoreWriter | None = None,
                 clock: Callable[[], float] = time.time, *,
                 active: Callable[[], bool] | None = None) -> None:
        self.cfg = cfg
        # in a cluster, whether this instance delivers now (it holds the coordinator lock):
        # one instance at a time drains the one outbox, in order per receiver
        self.active: Callable[[], bool] = active or (lambda: True)
        self.store = store  # reads
        if writer is None:  # standalone (tests, tools): its own writer on the same store
            writer = StoreWriter(store)
            writer.start()
        self.writer = writer
        self.clock = clock
        self.sinks: dict[str, Sink] = {n: make_sink(n, cfg, clock) for n in cfg.receivers}
        self._limits = {n: SlidingWindow(r.per_minute) for n, r in cfg.receivers.items()}
        self._wake: dict[str, asyncio.Event] = {n: asyncio.Event() for n in cfg.receivers}
        self._retry_at: dict[str, float] = {}
        self._down: dict[str, str] = {}  # receiver -> kind of its current failure
        self._loop: asyncio.AbstractEventLoop | None = None
        self.delivered: dict[str, int] = dict.fromkeys(cfg.receivers, 0)
        self.failed: dict[str, int] = dict.fromkeys(cfg.receivers, 0)
        self.dropped: dict[str, int] = dict.fromkeys(cfg.receivers, 0)
        self.store_errors = 0
        self._closing = False

    # --- public ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Drain every receiver's outbox forever (until cancelled)."""
        self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as tg:
                for name in self.sinks:
                    tg.create_task(self._drain(name), name=f"outbox:{name}")
        finally:
            for sink in self.sinks.values():
                with contextlib.suppress(Exception):
                    await sink.close()

    def close_soon(self) -> None:
        """Finish the batches being sent (and settle them in the store), then return from
        :meth:`run`: a shutdown should not send an alert and forget that it did."""
        self._closing = True
        self._wake_all()

    def notify(self) -> None:
        """New items were enqueued: wake every drainer now. Safe from any thread."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            loop.call_soon_threadsafe(self._wake_all)
        else:
            self._wake_all()

    async def publish_rates(self, rates: Sequence[RateRow]) -> None:
        """Retained rate topics on every MQTT receiver with ``rates: true``; best effort."""
        ts = self.clock()
        jobs = [sink.publish_rates(rates, ts) for name, sink in self.sinks.items()
                if isinstance(sink, MqttSink) and sink.cfg.rates]
        if jobs:
            await asyncio.gather(*jobs, return_exceptions=True)

    # --- the drainer -------------------------------------------------------------------------

    def _wake_all(self) -> None:
        for ev in self._wake.values():
            ev.set()

    async def _drain(self, name: str) -> None:
        sink = self.sinks[name]
        wake = self._wake[name]
        poll = self.cfg.delivery.poll
        failing = 0
        while not self._closing:
            wake.clear()
            now = self.clock()
            if not self.active():  # another instance of the cluster delivers; look again
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll):
                        await wake.wait()
                continue
            try:
                items = await asyncio.to_thread(self.store.due, name, now,
                                                self.cfg.delivery.batch)
                step = max(1, sink.max_batch)
                for i in range(0, len(items), step):
                    if not await self._deliver(name, sink, items[i:i + step]):
                        break
            except Exception as exc:  # the store failed: keep the items, try again later
                self.store_errors += 1
                failing += 1
                if failing == 1:
                    log.error("outbox unreadable or unwritable; delivery resumes when the "
                              "store works again", receiver=name, error=safe_error(exc))
                await asyncio.sleep(min(30.0, backoff(failing, 1.0, 30.0)))
                continue
            if failing:
                log.info("outbox works again", receiver=name)
                failing = 0
            if not items:
                retry_at = self._retry_at.get(name)
                timeout = poll if retry_at is None else max(0.01, min(poll, retry_at - now))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await wake.wait()
                continue

    async def _deliver(self, name: str, sink: Sink, items: list[OutboxItem]) -> bool:
        """Send ``items`` (at most ``max_batch``, concurrently but started in order) and
        settle them in order; False when one failed and the rest must wait."""
        limiter = self._limits[name]
        # a robot sends a batch as one digest message: its rate limit counts messages
        for _ in range(1 if getattr(sink, "combines", False) else len(items)):
            wait = limiter.wait_time(time.monotonic())
            if wait > 0:  # the oldest send in the window expires after ``wait``
                await asyncio.sleep(wait)
            limiter.record(time.monotonic())
        results = await sink.send_batch([it.payload for it in items])
        for item, result in zip(items, results, strict=True):
            now = self.clock()
            if result is None:
                self.delivered[name] += 1  # counted as the receiver saw it, marked next
                await self.writer.run(_delivered(item.id, now))
                self._retry_at.pop(name, None)
                if name in self._down:
                    del self._down[name]
                    log.info("receiver delivering again", receiver=name)
                continue
            err = (result if isinstance(result, DeliveryError)
                   else DeliveryError("retry", safe_error(result)))
            if err.kind == "rejected":
                self.dropped[name] += 1
                await self.writer.run(_set_aside(item.id, err.message, now))
                log.error("receiver rejected an alert; set aside", receiver=name,
                          fingerprint=item.fingerprint, error=err.message)
                continue
            delay = backoff(item.attempts, self.cfg.delivery.backoff_initial,
                            self.cfg.delivery.backoff_max)
            if err.retry_after is not None:
                delay = max(delay, min(err.retry_after, self.cfg.delivery.backoff_max))
            self.failed[name] += 1
            await self.writer.run(_failed(item.id, err.message, now + delay))
            self._retry_at[name] = now + delay
            if self._down.get(name) != err.kind:
                self._down[name] = err.kind
                level = log.error if err.kind == "misconfigured" else log.warning
                level("receiver failing; alerts kept in the outbox", receiver=name,
                      kind=err.kind, error=err.message, pending=self.store.outbox_depth(name),
                      retry_in=round(delay, 1))
            else:
                log.debug("delivery failed", receiver=name, error=err.message,
                          attempts=item.attempts + 1, retry_in=round(delay, 1))
            return False
        return True


def _delivered(item_id: int, now: float) -> Callable[[Store], None]:
    return lambda s: s.mark_delivered(item_id, now)


def _set_aside(item_id: int, error: str, now: float) -> Callable[[Store], None]:
    """A receiver rejected the item for good: marked delivered, its error kept in the row."""
    def job(s: Store) -> None:
        s.mark_failed(item_id, error, now)
        s.mark_delivered(item_id, now)
    return job


def _failed(item_id: int, error: str, retry_at: float) -> Callable[[Store], None]:
    return lambda s: s.mark_failed(item_id, error, retry_at)
