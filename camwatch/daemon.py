"""``camwatch run``: load, open the store, start the engine and the HTTP server, handle
signals (SIGTERM/SIGINT stop gracefully, SIGHUP reloads), and wait."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from camwatch.config import Config, load_config
from camwatch.errors import InputError
from camwatch.http import serve
from camwatch.inventory import Inventory, load_inventory
from camwatch.scheduler import Engine
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
        self.listen = listen or cfg.http.listen
        self.on_ready = on_ready
        self.port = 0
        self._inventory_mtime = _mtime(cfg.inventory.path)

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
        http = await serve(self.engine, host.strip("[]"), int(port))
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
            await self.engine.run(extra=[self._watch_inventory])
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
