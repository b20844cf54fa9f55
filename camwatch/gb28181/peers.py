"""What the upper platform knows of each lower platform (or device) registered with it, and
the assembly of a catalog sent over several MESSAGEs. Pure: no I/O, time passed in."""

from __future__ import annotations

from dataclasses import dataclass, field

from camwatch.gb28181.manscdp import Item

MAX_CATALOG = 200_000  # items one catalog may announce (SumNum) and we keep per peer
MAX_PENDING = 4  # catalogs being assembled per peer at once


@dataclass(slots=True)
class Assembly:
    """A catalog arriving in parts, keyed by SN, until ``sum_num`` items (or the deadline)."""

    sn: int
    sum_num: int
    deadline: float
    items: dict[str, Item] = field(default_factory=dict)
    messages: int = 0

    @property
    def complete(self) -> bool:
        return len(self.items) >= self.sum_num


@dataclass(slots=True)
class Catalog:
    """The channels and tree nodes a peer listed. ``partial``: the last catalog did not reach
    its SumNum before the deadline, so a channel missing from it may still be there."""

    channels: dict[str, Item] = field(default_factory=dict)
    nodes: int = 0
    at: float | None = None
    partial: bool = False
    declared: int = 0  # SumNum of the last catalog


@dataclass(slots=True)
class Peer:
    """A lower platform (type 200) or a device registered with camwatch."""

    id: str
    name: str = ""
    transport: str = "udp"  # udp | tcp
    address: tuple[str, int] = ("", 0)
    registered_since: float | None = None
    expires_at: float = 0.0
    last_keepalive: float | None = None
    up: bool = False
    down_reason: str = ""  # keepalive_timeout | expired | unregistered | ""
    catalog: Catalog = field(default_factory=Catalog)
    assemblies: dict[int, Assembly] = field(default_factory=dict)
    next_catalog: float = 0.0
    subscribed_until: float = 0.0
    call_id: str = ""  # of its REGISTER dialog
    keepalives: int = 0
    messages: int = 0
    next_status: float = 0.0  # DeviceStatus query due (devices without channels)

    @property
    def is_device(self) -> bool:
        """A device (type 111-199: DVR, NVR, camera ...) registered directly, not a
        platform (2xx)."""
        return self.id[10] != "2"

    def alive_at(self) -> float:
        """When the peer last gave a sign of life (a REGISTER or a keepalive)."""
        return max(self.last_keepalive or 0.0, self.registered_since or 0.0)

    # --- catalog assembly ------------------------------------------------------------------

    def catalog_part(self, sn: int, sum_num: int, items: tuple[Item, ...], now: float,
                     timeout: float) -> Assembly | None:
        """Add one MESSAGE's items to the catalog of ``sn``; returns the assembly when it
        is complete (and forgets it), else None. Raises ValueError for a SumNum beyond
        ``MAX_CATALOG``."""
        if sum_num > MAX_CATALOG:
            raise ValueError(f"SumNum {sum_num} is more than the {MAX_CATALOG} accepted")
        a = self.assemblies.get(sn)
        if a is None:
            if len(self.assemblies) >= MAX_PENDING:  # drop the oldest: it will time out anyway
                oldest = min(self.assemblies.values(), key=lambda x: x.deadline)
                del self.assemblies[oldest.sn]
            a = self.assemblies[sn] = Assembly(sn, sum_num, now + timeout)
        a.messages += 1
        for it in items:
            if len(a.items) >= max(a.sum_num, 1) + 1000:
                break  # a peer repeating items forever does not grow us
            a.items[it.device_id] = it
        if a.complete:
            del self.assemblies[sn]
            return a
        return None

    def overdue(self, now: float) -> list[Assembly]:
        """Assemblies past their deadline (forgotten here)."""
        late = [a for a in self.assemblies.values() if now >= a.deadline]
        for a in late:
            del self.assemblies[a.sn]
        return late

    def take_catalog(self, a: Assembly, now: float, partial: bool) -> None:
        """A whole catalog replaces what we knew; a partial one only adds and updates
        (never "the rest are gone")."""
        channels = {k: v for k, v in a.items.items() if v.is_channel}
        nodes = len(a.items) - len(channels)
        if partial:
            self.catalog.channels.update(channels)
            self.catalog.nodes = max(self.catalog.nodes, nodes)
        else:
            self.catalog.channels = channels
            self.catalog.nodes = nodes
        self.catalog.at = now
        self.catalog.partial = partial
        self.catalog.declared = a.sum_num
