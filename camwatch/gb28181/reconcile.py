"""Ledger reconciliation (台账核对): the inventory against the lower platforms' catalogs.

Pure: one function from the ledger's rows and the catalogs to what differs. "已联网上云" in the
ledger means the camera is registered with a platform that cascades to us, so a catalog is the
evidence; the measured cloud-connect rate is installed channels some catalog lists ÷
installed channels, beside the ledger's declared one (connected ÷ installed). Rates are sums
of numerators over sums of denominators, as everywhere in camwatch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from camwatch.gb28181.manscdp import Item
from camwatch.inventory import Channel

MAX_LISTED = 500  # rows listed per kind in the JSON (all are counted)


@dataclass(slots=True)
class Reconciliation:
    installed: int = 0
    declared_connected: int = 0  # ledger: 已安装 and 已上云
    measured_connected: int = 0  # installed and listed by a catalog
    complete: bool = True  # every catalog reached its SumNum (else "missing" may be wrong)
    missing: list[tuple[str, str]] = field(default_factory=list)  # 已上云, in no catalog
    not_in_ledger: list[tuple[str, str, str]] = field(default_factory=list)  # id, name, platform
    not_connected_in_ledger: list[tuple[str, str]] = field(default_factory=list)  # listed
    names_differ: list[tuple[str, str, str]] = field(default_factory=list)  # id, ledger, catalog

    @staticmethod
    def _rate(num: int, den: int) -> float | None:
        return round(num / den, 6) if den else None

    def as_json(self, limit: int | None = MAX_LISTED) -> dict[str, Any]:
        """``limit``: rows listed per kind (all are counted); None: every row."""
        n = limit
        return {
            "complete": self.complete, "installed": self.installed,
            "declared_connected": self.declared_connected,
            "measured_connected": self.measured_connected,
            "declared_rate": self._rate(self.declared_connected, self.installed),
            "measured_rate": self._rate(self.measured_connected, self.installed),
            "missing_count": len(self.missing),
            "missing": [{"channel": c, "name": n} for c, n in self.missing[:n]],
            "not_in_ledger_count": len(self.not_in_ledger),
            "not_in_ledger": [{"channel": c, "name": n, "platform": p}
                              for c, n, p in self.not_in_ledger[:n]],
            "not_connected_in_ledger_count": len(self.not_connected_in_ledger),
            "not_connected_in_ledger": [{"channel": c, "name": n} for c, n
                                        in self.not_connected_in_ledger[:n]],
            "names_differ_count": len(self.names_differ),
            "names_differ": [{"channel": c, "ledger": a, "catalog": b}
                             for c, a, b in self.names_differ[:n]],
        }


def reconcile(rows: Iterable[Channel], catalogs: Mapping[str, Mapping[str, Item]],
              complete: bool = True) -> Reconciliation:
    """``rows``: every ledger row; ``catalogs``: platform id -> its catalog's channels."""
    listed: dict[str, tuple[Item, str]] = {}
    for pid, items in catalogs.items():
        for cid, it in items.items():
            listed.setdefault(cid, (it, pid))
    out = Reconciliation(complete=complete)
    ledger: dict[str, Channel] = {}
    for ch in rows:
        ledger[ch.id] = ch
        if not ch.installed:
            if ch.id in listed:  # the ledger says not even installed: it is out of date
                out.not_connected_in_ledger.append((ch.id, ch.name))
            continue
        out.installed += 1
        if ch.connected:
            out.declared_connected += 1
        hit = listed.get(ch.id)
        if hit is not None:
            out.measured_connected += 1
            if not ch.connected:
                out.not_connected_in_ledger.append((ch.id, ch.name))
            name = hit[0].name.strip()
            if name and ch.name.strip() and name != ch.name.strip():
                out.names_differ.append((ch.id, ch.name, name))
        elif ch.connected:
            out.missing.append((ch.id, ch.name))
    out.not_in_ledger = sorted((cid, it.name, pid) for cid, (it, pid) in listed.items()
                               if cid not in ledger)
    return out


def month_reconciliation(rows: Iterable[Channel],
                         stored: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """台账核对 of a month for the bulletin: the month's ledger against each platform's
    latest catalog of that month as the store keeps it (``Store.gb_catalogs``): every row
    listed, and the platforms with their catalog's size, time and completeness."""
    catalogs = {pid: {cid: Item(cid, str(name)) for cid, name in doc["channels"].items()}
                for pid, doc in stored.items()}
    partial = [pid for pid, doc in stored.items() if doc.get("partial")]
    r = reconcile(rows, catalogs, complete=not partial)
    return {**r.as_json(limit=None),
            "platforms": [{"id": pid, "name": str(doc.get("name") or ""),
                           "channels": len(doc["channels"]), "at": doc.get("at"),
                           "partial": bool(doc.get("partial"))}
                          for pid, doc in sorted(stored.items())]}
