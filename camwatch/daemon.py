"""``camwatch run``: load, take the store, start the engine, the dispatcher and the HTTP server,
handle signals (SIGTERM/SIGINT stop gracefully, SIGHUP reloads), and wait.

Reloads (SIGHUP, or the inventory file changing) keep the event loop going: the config and
inventory are read and validated in a process of their own, the new inventory is planned in
a worker thread, and the engine takes the plan in one step. A reload is refused, and the
running config kept, when

- the config or inventory is invalid (every problem is logged, with its place);
- it changes a key that only a restart can apply (``store.path``, ``http.*``), or the API
  token's file now holds another token: the reload names them;
- it would drop more than ``inventory.max_drop`` of the channels (a truncated or half-saved
  file): a second SIGHUP for the same file confirms it, or ``camwatch reload --allow-drop``
  (``POST /api/reload?allow_drop=1``), which also answers with the outcome.

The inventory file is reloaded by the watcher only once its size and mtime have been stable
for ``inventory.stable_for``, so an editor's half-written file is never read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from camwatch.cluster.member import cluster_member
from camwatch.config import Config, load_config
from camwatch.engine import Engine, no_full_collection
from camwatch.errors import CamwatchError, InputError, short_error
from camwatch.http import serve
from camwatch.inventory import Digests, Inventory, load_inventory, only_changed, with_unchanged
from camwatch.malloc import release_free_memory, tune_malloc
from camwatch.reports.period import zone
from camwatch.reports.rows import iter_inventory_rows
from camwatch.sinks.dispatch import Dispatcher
from camwatch.store import Lock, open_configured, store_lock
from camwatch.store.writer import StoreWriter

log = structlog.get_logger(__name__)

SETTLE_S = 3.0  # what a shutdown or a receivers' change gives the deliveries in flight
# How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms).
# The event loop gives the GIL up at every socket call; while a worker thread runs Python code
# (parsing a reloaded inventory, the writer converting a full flush), the loop waits up to the
# interval to get it back, at every call: 100,000 channels' inventory parsed in a thread beside
# a loop doing I/O gave loop lags of 614 ms at 5 ms, 150 ms at 1 ms and 35 ms at 0.2 ms (the
# parse itself 4.6 s -> 5.2 s). Only threads that compete pay for it.
GIL_SWITCH_S = 0.0002


def load_all(path: str) -> tuple[Config, Inventory]:
    cfg = load_config(path)
    return cfg, load_inventory(cfg.inventory, known_credentials=cfg.credentials)


def load_changed(path: str, known: Digests | None) -> tuple[Config, Inventory, Digests]:
    """:func:`load_all` for a reload, in a process of its own: the inventory comes back
    with only the channels that differ from ``known`` (the running inventory's digests), so
    the daemon unpickles a few changed rows, not 100,000 (1.2 s of a thread holding the GIL
    beside the loop, and copies that fragment its heap for good)."""
    cfg, inv = load_all(path)
    return cfg, inv, only_changed(inv, known)


def restart_keys(old: Config, new: Config) -> list[str]:
    """The changed keys a running daemon cannot apply."""
    keys = []
    if old.store != new.store:
        keys.append("store")
    if old.cluster != new.cluster:
        keys.append("cluster")
    for key in ("listen", "tls_cert", "tls_key", "metrics_auth", "allow_unauthenticated"):
        if getattr(old.http, key) != getattr(new.http, key):
            keys.append(f"http.{key}")
    if _auth_fingerprint(old) != _auth_fingerprint(new):
        keys.append("http.auth (or the token/password file it names)")
    for key in ("enabled", "listen", "transport", "allow_public"):
        if getattr(old.gb28181, key) != getattr(new.gb28181, key):
            keys.append(f"gb28181.{key}")
    return keys


def _auth_fingerprint(cfg: Config) -> object:
    auth = cfg.http.auth
    if auth is None:
        return None
    try:
        token, password = auth.token(), auth.password()
    except (LookupError, OSError):
        return ("unreadable", auth.model_dump_json())
    import hashlib

    def digest(secret: Any) -> str | None:
        return None if secret is None else hashlib.sha256(secret.reveal().encode()).hexdigest()

    return (auth.username, digest(token), digest(password))


class Daemon:
    def __init__(self, config_path: str, *, listen: str | None = None,
                 on_ready: Callable[[Daemon], None] | None = None) -> None:
        self.config_path = config_path
        tune_malloc()  # before the first worker thread
        cfg, inv = load_all(config_path)
        self.cfg = cfg
        # what a reload compares the file with (a cluster member keeps only its part of the
        # inventory, so its reloads send everything)
        self._digests = None if cfg.cluster.enabled else Digests.of(inv.channels)
        self.listen = listen or cfg.http.listen
        # in a cluster the shards are the lock (docs/scale-out.md); the engine gets their part
        self.cluster = cluster_member(cfg, self.listen)
        self.lock: Lock = self.cluster.ownership if self.cluster else store_lock(cfg.store)
        self.lock.acquire(f"listening on {self.listen}")
        try:
            self.store = open_configured(cfg.store)  # reads
            self.writer = StoreWriter(open_configured(cfg.store))
            cut = self.cluster.mine(inv) if self.cluster else None
            self.engine = Engine(cfg, cut.part if cut else inv, self.store, self.writer,
                                 forget=self.cluster.forget if self.cluster else None)
            if self.cluster and cut:
                self.cluster.attach(self.engine)
                self.cluster.start_alerts(self.engine, cut)
            self.engine.health.watch("store lock", lambda: self.lock.problem)
        except BaseException:
            self.lock.release()
            raise
        self.dispatcher: Dispatcher | None = None
        self._dispatch_changed = asyncio.Event()
        self._wire_alerts(cfg)
        self._snapshot_month: str | None = None
        self.snapshot_problem: str | None = None
        self.engine.health.watch("inventory snapshot", lambda: self.snapshot_problem)
        self.on_ready = on_ready
        self.port = 0
        self._inventory_seen = _stat(cfg.inventory.path)
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Future[bool]] = set()
        self._confirm_drop: tuple[object, ...] | None = None  # the file a drop was refused for
        self.last_refusal: dict[str, Any] = {}

    def _wire_alerts(self, cfg: Config) -> None:
        """The outbox dispatcher for the configured receivers (undelivered notifications stay
        in the outbox, so rebuilding it loses nothing)."""
        # in a cluster the outbox is delivered by one instance at a time, the coordinator
        cluster = self.cluster
        active = (lambda: cluster.ownership.coordinator) if cluster is not None else None
        self.dispatcher = Dispatcher(cfg.alerts, self.store, self.writer, active=active) \
            if cfg.alerts.enabled and cfg.alerts.receivers else None
        dispatcher = self.dispatcher
        self.engine.evaluator.on_enqueued = dispatcher.notify if dispatcher else lambda: None
        self.engine.repairs.on_enqueued = self.engine.evaluator.on_enqueued
        self._dispatch_changed.set()

    async def _dispatch(self) -> None:
        """Run the dispatcher; restart it when a reload changed the receivers, or when it
        died (it should not: it handles store and receiver errors itself)."""
        while not self.engine.stopping.is_set():
            self._dispatch_changed.clear()
            dispatcher = self.dispatcher
            task = asyncio.create_task(dispatcher.run(), name="dispatcher") \
                if dispatcher is not None else None
            waits: set[asyncio.Future[Any]] = {
                asyncio.ensure_future(self._dispatch_changed.wait()),
                asyncio.ensure_future(self.engine.stopping.wait())}
            if task is not None:
                waits.add(task)
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                if w is not task:
                    w.cancel()
            if task is not None and dispatcher is not None:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("dispatcher died; restarting it", error=repr(task.exception()))
                    await self.engine.wait(1.0)
                else:  # let the batches in flight settle, briefly
                    dispatcher.close_soon()
                    await asyncio.wait({task}, timeout=SETTLE_S)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def publish_rates(self, rates: Any) -> None:
        if self.dispatcher is not None:
            scope = self.engine.evaluator.scope
            if scope is not None:  # a cluster: only the scopes this instance sees whole
                rates = scope.inside(rates)
            await self.dispatcher.publish_rates(rates)

    # --- the month's inventory snapshot ---------------------------------------------------------

    def _month(self, now: float) -> str:
        """``2026-11``: the month ``now`` falls in where the bulletin's months begin."""
        return dt.datetime.fromtimestamp(now, zone(self.cfg.report.timezone)).strftime("%Y-%m")

    async def snapshot_inventory(self, now: float | None = None) -> bool:
        """Keep this month's inventory snapshot (install / cloud-connect figures of the
        monthly bulletin) up to date: at start, on every reload and when the month turns.
        A failure is reported (``/healthz``) and retried, never fatal."""
        now = time.time() if now is None else now
        month = self._month(now)
        channels = self.engine.inventory.channels
        if self.cluster is not None:  # the city's whole inventory, by one instance at a time
            if not self.cluster.ownership.coordinator or self.cluster.full is None:
                return False
            channels = self.cluster.full.channels
        try:
            # rows made one at a time on the writer thread as SQLite takes them: 100,000
            # decoded rows held at once would cost about 230 MB
            await self.writer.run(
                lambda s: s.save_inventory_snapshot(month, iter_inventory_rows(channels)))
        except Exception as exc:
            self.snapshot_problem = (f"this month's inventory snapshot is not saved "
                                     f"({short_error(exc)}); retrying every minute")
            return False
        self._snapshot_month = month
        self.snapshot_problem = None
        return True

    async def _monthly(self) -> None:
        while True:
            if self._month(time.time()) != self._snapshot_month:
                await self.snapshot_inventory()
            if await self.engine.wait(60.0):
                return

    # --- reloads -----------------------------------------------------------------------------

    async def reload(self, confirm_drop: bool = False) -> bool:
        """Validate and plan in a thread, then swap; a bad reload keeps the old config."""
        async with self._reload_lock:
            with no_full_collection():
                ok = await self._reload(confirm_drop)
            await asyncio.to_thread(release_free_memory)  # what the old inventory held
            return ok

    async def _reload(self, confirm_drop: bool) -> bool:
        eng = self.engine
        seen = _stat(self.cfg.inventory.path)
        try:
            cfg, inv, digests = await self._load_elsewhere(self._digests)
            await asyncio.to_thread(with_unchanged, inv, digests, eng.inventory.channels)
        except InputError as exc:
            return self._refuse("reload rejected, keeping the running config",
                                problems=[str(p) for p in exc.problems[:20]])
        except Exception as exc:
            return self._refuse("reload failed, keeping the running config", error=repr(exc))
        keys = restart_keys(self.cfg, cfg)
        if keys:
            return self._refuse("reload refused: these settings need a restart, keeping the "
                                "running config", keys=keys)
        # this instance's shards of it: the shards applied now (a change of ownership is
        # applied by ClusterMember.run, with the claimed shards' states)
        cut = await asyncio.to_thread(self.cluster.part, inv, self.cluster.applied) \
            if self.cluster else None
        if cut is not None:
            inv = cut.part
        try:
            plan = await asyncio.to_thread(eng.plan, cfg, inv, True)
        except Exception as exc:
            return self._refuse("reload failed, keeping the running config", error=repr(exc))
        before = len(eng.channels)
        dropped = sum(1 for cid in eng.channels if cid not in plan.channels)
        if before and dropped / before > cfg.inventory.max_drop and not confirm_drop:
            # only an explicit SIGHUP for this same file confirms (see _sighup): the file
            # watcher looking at it again does not
            self._confirm_drop = (seen, dropped)
            self._inventory_seen = seen  # the watcher does not retry it every second
            return self._refuse(
                "reload refused: it would drop more channels than inventory.max_drop; "
                "send SIGHUP again to confirm", dropped=dropped, channels=before,
                max_drop=cfg.inventory.max_drop)
        self._confirm_drop = None
        if self.cluster is not None and cut is not None:
            self.cluster.adopt(cut)
            async with eng.evaluator.lock:  # the same shards, the alerts' map of them anew
                gone = await eng.apply_sliced(plan)
                eng.evaluator.use_shards(cut.alerts.scope(cut.owned), {})
        else:
            gone = await eng.apply_sliced(plan)
        if self._digests is not None:
            self._digests = digests
        if eng.gb is not None:
            eng.gb.configure(cfg.gb28181)
        self.cfg = cfg
        self._wire_alerts(cfg)
        self._inventory_seen = seen
        eng.reloads["ok"] += 1
        log.info("reloaded", channels=len(eng.channels), removed=len(gone))
        await self.snapshot_inventory()
        return True

    async def _load_elsewhere(self, known: Digests | None
                              ) -> tuple[Config, Inventory, Digests]:
        """:func:`load_changed` in a process of its own: parsing 100,000 rows is seconds of
        Python, which in a thread shares the GIL with the event loop; in another process it
        does not, and the parse's garbage is that process's, not the daemon's. Only what
        changed comes back (unpickled here, in a worker thread)."""
        loop = asyncio.get_running_loop()
        pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
        try:
            return await loop.run_in_executor(pool, load_changed, self.config_path, known)
        finally:
            await asyncio.to_thread(pool.shutdown)

    def _refuse(self, event: str, **kw: Any) -> bool:
        self.engine.reloads["failed"] += 1
        self.last_refusal = {"error": event, **kw}
        log.error(event, **kw)
        return False

    async def reload_for_api(self, allow_drop: bool) -> tuple[bool, dict[str, Any]]:
        """What ``POST /api/reload`` (``camwatch reload``) gets: the outcome and why."""
        ok = await self.reload(confirm_drop=allow_drop)
        return ok, ({"channels": len(self.engine.channels)} if ok else self.last_refusal)

    async def _watch_inventory(self) -> None:
        """Reload when the inventory file changed and has been stable for
        ``inventory.stable_for``."""
        changed_at: float | None = None
        last = self._inventory_seen
        while not await self.engine.wait(1.0):
            now = time.monotonic()
            current = _stat(self.cfg.inventory.path)
            if current != last:
                if changed_at is None:
                    log.info("inventory file changing; reloading once it is stable",
                             stable_for=self.cfg.inventory.stable_for)
                last, changed_at = current, now  # still being written, perhaps: wait
                continue
            if changed_at is None or current == self._inventory_seen:
                continue
            if now - changed_at >= self.cfg.inventory.stable_for:
                changed_at = None
                log.info("inventory file changed, reloading")
                if not await self.reload():
                    self._inventory_seen = current  # do not retry the same file every second

    def _sighup(self) -> None:
        # a second SIGHUP for a refused drop is the confirmation
        confirm = self._confirm_drop is not None and \
            self._confirm_drop[0] == _stat(self.cfg.inventory.path)
        task = asyncio.ensure_future(self.reload(confirm_drop=confirm))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- running -----------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        switch = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_S)
        try:
            return await self._run(loop)
        finally:
            sys.setswitchinterval(switch)

    async def _run(self, loop: asyncio.AbstractEventLoop) -> int:
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            if not stopping:
                stopping = True
                log.info("stopping")
                self.engine.stop()

        # before anything answers: a SIGHUP sent as soon as the API answers (a deploy script,
        # systemd's ExecReload) must reload, not kill the daemon with the default action
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        loop.add_signal_handler(signal.SIGHUP, self._sighup)
        try:
            return await self._serve_and_run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def _serve_and_run(self) -> int:
        host, _, port = self.listen.rpartition(":")
        try:
            http = await serve(self.engine, host.strip("[]"), int(port),
                               reloader=self.reload_for_api,
                               routes=self.cluster.routes() if self.cluster else ())
        except OSError as exc:
            self.close()
            raise CamwatchError(f"cannot listen on {self.listen}: {exc.strerror or exc} "
                                f"(another camwatch running? choose another address with "
                                f"--listen or http.listen)") from None
        except BaseException:  # the exposure check, or anything else: release the store
            self.close()
            raise
        addresses = http.addresses
        self.port = int(addresses[0][1]) if addresses else int(port)
        self.engine.repairs.listening(f"{host}:{self.port}")  # ticket links
        log.info("listening", url=f"http://{host}:{self.port}/metrics")
        extra = [self._watch_inventory, self._dispatch, self._monthly]
        if self.cluster is not None:
            extra.append(self._follow_shards)
        if self.cfg.gb28181.enabled:
            from camwatch.gb28181 import start_service

            try:
                gb = await start_service(self.cfg.gb28181, self.engine)
            except OSError as exc:
                await http.cleanup()
                self.close()
                raise CamwatchError(f"cannot listen for GB/T 28181 on "
                                    f"{self.cfg.gb28181.listen}: {exc.strerror or exc} "
                                    f"(choose another gb28181.listen)") from None
            extra.append(gb.run)
        try:
            await self.snapshot_inventory()
            if self.on_ready is not None:
                self.on_ready(self)
            await self.engine.run(extra=extra, publish=self.publish_rates)
        finally:
            await http.cleanup()
            self.close()
        return 0

    async def _follow_shards(self) -> None:
        assert self.cluster is not None
        await self.cluster.run(self.engine, self._reload_lock, self.engine.wait)

    def close(self) -> None:
        self.engine.close()
        self.writer.store.close()
        self.store.close()
        self.lock.release()


def _stat(path: Path) -> tuple[float, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime, st.st_size)

