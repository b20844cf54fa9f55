"""The ``cluster:`` section: several camwatch instances sharing one city's inventory on one
PostgreSQL (docs/scale-out.md, Shards and ownership)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from camwatch.configbase import Duration, _Model

__all__ = ["MAX_SHARDS", "ClusterConfig", "ShardBy"]

ShardBy = Literal["county", "township"]
# Each shard is one advisory lock held by one session, and one label value of
# camwatch_cluster_shard_owner: a city needs tens (one per county or per few townships), and
# a bound keeps a typo (shards: 100000) from making 100,000 locks and series.
MAX_SHARDS = 1024
_INSTANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,39}$")


class ClusterConfig(_Model):
    enabled: bool = False
    shard_by: ShardBy = "township"
    shards: int = Field(default=16, ge=1, le=MAX_SHARDS)
    # None: as many as there are (one instance can run the whole city alone)
    max_shards_per_instance: int | None = Field(default=None, ge=1, le=MAX_SHARDS)
    takeover: Duration = 30.0
    # the name other instances, /api/cluster and the metrics show; default: host name and pid
    instance: str | None = None

    @field_validator("takeover")
    @classmethod
    def _takeover_bounds(cls, value: float) -> float:
        if not 3.0 <= value <= 3600.0:
            raise ValueError(f"expected a duration from 3s to 1h, got {value:g}s")
        return value

    @field_validator("instance")
    @classmethod
    def _instance_name(cls, value: str | None) -> str | None:
        if value is not None and not _INSTANCE.match(value):
            raise ValueError(
                f"expected 1-40 characters of letters, digits and . _ : @ - (starting with a "
                f"letter or digit), got {value[:60]!r}")
        return value
