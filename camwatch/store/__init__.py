"""The state store: current channel states, transitions, rate and inventory snapshots, the
alert outbox. ``open_store`` picks the backend from the config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from camwatch.errors import StoreError
from camwatch.secrets import Secret
from camwatch.store.base import ChannelState, OutboxItem, RateSnapshot, Store, Transition

if TYPE_CHECKING:
    from camwatch.config import StoreConfig

__all__ = [
    "ChannelState",
    "OutboxItem",
    "RateSnapshot",
    "Store",
    "Transition",
    "open_configured",
    "open_store",
    "store_lock",
]


def open_store(path: str | Path) -> Store:
    from camwatch.store.sqlite import SqliteStore

    return SqliteStore(path)


class Lock(Protocol):
    problem: str | None  # why the lock may no longer be held (for /healthz); None when it is

    def acquire(self, holder: str) -> None: ...
    def release(self) -> None: ...


def open_configured(cfg: StoreConfig) -> Store:
    """The store the config names: SQLite at ``store.path``, or PostgreSQL at the DSN read
    from ``store.dsn_env`` / ``store.dsn_file`` (a :class:`StoreError` if it cannot be read)."""
    if cfg.backend == "postgresql":
        require_postgres_driver()
        from camwatch.store.postgres import PostgresStore

        return PostgresStore(_dsn(cfg))
    return open_store(cfg.path)


def store_lock(cfg: StoreConfig) -> Lock:
    """One daemon per store: a lock file beside SQLite, an advisory lock in PostgreSQL."""
    if cfg.backend == "postgresql":
        require_postgres_driver()
        from camwatch.store.postgres import PgStoreLock

        return PgStoreLock(_dsn(cfg))
    from camwatch.store.lock import StoreLock

    return StoreLock(cfg.path)


def require_postgres_driver() -> None:
    """A :class:`StoreError` saying how to install psycopg 3 when it is missing (an optional
    dependency: the embedded default does not need it)."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise StoreError(f"store.backend postgresql needs the psycopg 3 driver ({exc}); "
                         f"install it with: pip install 'camwatch[postgresql]'") from None


def _dsn(cfg: StoreConfig) -> Secret:
    try:
        return cfg.dsn()
    except LookupError as exc:
        raise StoreError(f"store: cannot read the PostgreSQL DSN: {exc}") from None
