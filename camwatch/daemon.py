"""``camwatch run``: load, open the store, start the engine and the HTTP server, handle
signals (SIGTERM/SIGINT stop gracefully, SIGHUP reloads), and wait."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from camwatch.config import Config, load_config
from camwatch.errors import CamwatchError, InputError
from camwatch.http import serve
from camwatch.inventory import Inventory, load_inventory
from camwatch.reports.period import zone
from camwatch.reports.rows import inventory_rows
from camwatch.rules.alerts import AlertEvaluator
from camwatch.rules.rates import Targets
from camwatch.scheduler import Engine
from camwatch.sinks.dispatch import Dispatcher
from camwatch.store import open_store

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_S = 8.0  # SIGTERM to exit within 10 s, writes flushed


def load_all(path: str) -> tuple[Config, Inventory]:
    cfg = load_config(path)
    return cfg, load_inventory(cfg.inventory, known_credentials=cfg.credentials)


class Daemon:
    def __init__(self, config_path: str, *, listen: str | None = None,
                 on_ready: Callable[[Daemon], None] | None = None) -> None:
        self.config_path = config_path
        cfg, inv = load_all(config_path)
        self.cfg = cfg
        self.store = open_store(cfg.store.path)
        self.engine = Engine(cfg, inv, self.store, config_path=config_path)
        self._dispatch_changed = asyncio.Event()
        self._wire_alerts(cfg)
        self._snapshot_month: str | None = None
        self.listen = listen or cfg.http.listen
        self.on_ready = on_ready
        self.port = 0
        self._inventory_mtime = _mtime(cfg.inventory.path)

    def _wire_alerts(self, cfg: Config) -> None:
        """The alert evaluator (its state lives in the store, so rebuilding it loses nothing)
        and the outbox dispatcher for the configured receivers."""
        if not cfg.alerts.enabled:
            self.engine.alerts = self.engine.dispatcher = None
            return
        self.engine.alerts = AlertEvaluator(cfg.alerts, Targets(cfg.targets),
                                            cfg.targets.min_channels, self.store)
        self.engine.dispatcher = Dispatcher(cfg.alerts, self.store) if cfg.alerts.receivers \
            else None
        self._dispatch_changed.set()

    async def _dispatch(self) -> None:
        """Run the dispatcher; restart it when a reload changed the receivers. Undelivered
        notifications stay in the outbox across restarts of either."""
        stop = self.engine._stop
        while not stop.is_set():
            self._dispatch_changed.clear()
            dispatcher = self.engine.dispatcher
            task = asyncio.create_task(dispatcher.run(), name="dispatcher") \
                if dispatcher is not None else None
            await self.engine._wait(self._dispatch_changed, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def snapshot_inventory(self, now: float | None = None) -> None:
        """Keep this month's inventory snapshot (install / cloud-connect figures of the
        monthly bulletin) up to date: at start, on every reload and when the month turns."""
        month = self._month(time.time() if now is None else now)
        self.store.save_inventory_snapshot(month, inventory_rows(self.engine.inventory.channels))
        self._snapshot_month = month

    def _month(self, now: float) -> str:
        """``2026-11``: the month ``now`` falls in where the bulletin's months begin."""
        return dt.datetime.fromtimestamp(now, zone(self.cfg.report.timezone)).strftime("%Y-%m")

    async def _monthly(self) -> None:
        while not self.engine._stop.is_set():
            now = time.time()
            if self._month(now) != self._snapshot_month:
                await asyncio.to_thread(self.snapshot_inventory, now)
            await self.engine._wait(asyncio.Event(), 60.0)

    def reload(self) -> bool:
        """Validate everything first, then swap; a bad reload keeps the old config running."""
        try:
            cfg, inv = load_all(self.config_path)
            self.engine.reload(cfg, inv)
        except InputError as exc:
            self.engine.stats.reloads["failed"] += 1
            log.error("reload rejected, keeping the running config",
                      problems=[str(p) for p in exc.problems[:20]])
            return False
        except Exception as exc:
            self.engine.stats.reloads["failed"] += 1
            log.error("reload failed, keeping the running config", error=repr(exc))
            return False
        self.cfg = cfg
        self._wire_alerts(cfg)
        self.snapshot_inventory()
        self._inventory_mtime = _mtime(cfg.inventory.path)
        return True

    async def _watch_inventory(self) -> None:
        while not self.engine._stop.is_set():
            await self.engine._wait(asyncio.Event(), 5.0)
            m = _mtime(self.cfg.inventory.path)
            if m != self._inventory_mtime:
                self._inventory_mtime = m
                log.info("inventory file changed, reloading")
                self.reload()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        host, _, port = self.listen.rpartition(":")
        try:
            http = await serve(self.engine, host.strip("[]"), int(port))
        except OSError as exc:
            self.store.close()
            raise CamwatchError(f"cannot listen on {self.listen}: {exc.strerror or exc} "
                                f"(another camwatch running? choose another address with "
                                f"--listen or http.listen)") from None
        addresses = http.addresses
        self.port = int(addresses[0][1]) if addresses else int(port)
        log.info("listening", url=f"http://{host}:{self.port}/metrics")
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            if not stopping:
                stopping = True
                log.info("stopping")
                self.engine.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self.on_ready is not None:
            self.on_ready(self)
        try:
            await self.engine.run(extra=[self._watch_inventory, self._dispatch, self._monthly])
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await http.cleanup()
            self.store.close()
        return 0


def _mtime(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None
