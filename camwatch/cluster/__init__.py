"""Several camwatch instances sharing one city's inventory on one PostgreSQL: the shard key
(:mod:`camwatch.cluster.shard`), the ``cluster:`` config section
(:mod:`camwatch.cluster.config`), and shard ownership through PostgreSQL's session-level
advisory locks (:mod:`camwatch.cluster.ownership`).

Only the config is re-exported here: :mod:`camwatch.config` imports it, and the shard key
needs :mod:`camwatch.inventory`, which imports :mod:`camwatch.config` (re-exporting both here
would make that a loop)."""

from camwatch.cluster.config import MAX_SHARDS, ClusterConfig, ShardBy

__all__ = ["MAX_SHARDS", "ClusterConfig", "ShardBy"]
