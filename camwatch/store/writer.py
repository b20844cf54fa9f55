"""The one thread that writes the store.

Every write of the daemon (channel states and transitions, outbox items with the alert
evaluator's state, delivery marks, rate and inventory snapshots) goes through
:class:`StoreWriter`: a queue of jobs run in order by one thread on the write connection. So the
event loop never waits on the disk or on SQLite's lock, writes never interleave, and a write
that fails (disk full, read-only file, a lock held by another process past the busy timeout)
fails its own job only: the caller's future gets the exception and decides what to retry,
while the writer goes on with the next job.

The writer keeps the health of the store for ``/healthz`` and the metrics: how many jobs
failed, and since when writes have been failing (cleared by the next success).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from camwatch.errors import short_error
from camwatch.store.base import Store

log = structlog.get_logger(__name__)

T = TypeVar("T")
_Job = tuple[Callable[[Store], Any], "concurrent.futures.Future[Any]"]


class StoreWriter:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.errors = 0  # failed jobs since start
        self.failing_since: float | None = None  # first failure of the current run of them
        self.last_error: str | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="store-writer",
                                            daemon=True)
            self._thread.start()

    def submit(self, job: Callable[[Store], T]) -> concurrent.futures.Future[T]:
        """Queue ``job(store)``; its result (or exception) arrives in the future."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._thread is None:
            raise RuntimeError("StoreWriter.submit before start()")
        self._jobs.put((job, fut))
        return fut

    async def run(self, job: Callable[[Store], T]) -> T:
        """``job(store)`` on the writer thread, awaited from the event loop."""
        return await asyncio.wrap_future(self.submit(job))

    def call(self, job: Callable[[Store], T]) -> T:
        """``job(store)`` on the writer thread, waited for by a thread that is not the loop's."""
        return self.submit(job).result()

    @property
    def problem(self) -> str | None:
        """Why the store is not being written, for ``/healthz``; None while writes work."""
        if self.failing_since is None:
            return None
        since = time.strftime("%H:%M:%S", time.localtime(self.failing_since))
        return (f"store writes failing since {since}: {self.last_error}; nothing is lost, "
                f"writes are retried")

    def close(self) -> None:
        """Run what is queued, then stop the thread (the store is closed by its owner)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = job(self.store)
            except BaseException as exc:
                self.errors += 1
                self.last_error = short_error(exc)
                if self.failing_since is None:
                    self.failing_since = self._clock()
                    log.error("store write failed; retrying, nothing is lost",
                              error=self.last_error)
                fut.set_exception(exc)
            else:
                if self.failing_since is not None:
                    log.info("store writes work again",
                             failed_for_s=round(self._clock() - self.failing_since, 1))
                    self.failing_since = None
                fut.set_result(result)

