"""``camwatch status --cluster``: ``/api/cluster`` for a terminal."""

from __future__ import annotations

import time
from typing import Any

from camwatch.textui import table

__all__ = ["format_cluster"]

INSTANCE_HEADERS = ["instance", "alive", "shards", "heartbeat", "takeovers", "listen", "pid"]
TAKEOVER_HEADERS = ["time", "shard", "from", "to"]


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def format_cluster(doc: dict[str, Any]) -> str:
    """This instance, the shards with their owners (unowned ones named: nobody probes
    them), every instance's last heartbeat, the recent takeovers."""
    owned = ", ".join(str(s) for s in doc.get("owned", [])) or "none"
    lines = [f"this instance: {doc.get('instance')}  owns shards {owned}  "
             f"(max {doc.get('max_shards_per_instance')}, {doc.get('shards')} shards by "
             f"{doc.get('shard_by')}, takeover {doc.get('takeover_s'):g}s)"]
    if doc.get("problem"):
        lines.append(f"problem: {doc['problem']}")
    view = doc.get("cluster")
    if not view:
        lines.append(doc.get("error") or "the cluster view is not available")
        return "\n".join(lines) + "\n"
    unowned = view.get("unowned") or []
    lines.append(f"shards owned: {view['owned']}/{view['shards']}" +
                 (f"  UNOWNED (not probed): {', '.join(map(str, unowned))}" if unowned else ""))
    if "coordinator" in view:  # an instance of an older version does not say
        who = view["coordinator"] or "nobody (no instance holds the coordinator lock)"
        lines.append(f"outbox delivered by: {who}")
    rows = [[i["instance"], "yes" if i["alive"] else "NO",
             ", ".join(map(str, i["shards"])) or "-", f"{i['heartbeat_age_s']:g}s ago",
             i["takeovers"], i["listen"], i["pid"]] for i in view.get("instances", [])]
    if rows:
        lines += ["", table(INSTANCE_HEADERS, rows)]
    takeovers = view.get("takeovers") or []
    if takeovers:
        lines += ["", table(TAKEOVER_HEADERS, [[_clock(t["ts"]), t["shard"], t["from"], t["to"]]
                                               for t in takeovers[:10]])]
    return "\n".join(lines) + "\n"
