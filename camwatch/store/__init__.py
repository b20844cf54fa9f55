"""The state store: current channel states, transitions, rate and inventory snapshots, the
alert outbox. ``open_store`` picks the backend from the config."""

from __future__ import annotations

from pathlib import Path

from camwatch.store.base import ChannelState, OutboxItem, RateSnapshot, Store, Transition

__all__ = ["ChannelState", "OutboxItem", "RateSnapshot", "Store", "Transition", "open_store"]


def open_store(path: str | Path) -> Store:
    from camwatch.store.sqlite import SqliteStore

    return SqliteStore(path)
