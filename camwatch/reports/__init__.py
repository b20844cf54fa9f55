"""The monthly bulletin (月度通报): computation (:mod:`.compute`) and its writers (XLSX, HTML,
CSV/JSON), the inventory snapshot rows the daemon saves each month, and the CLI entry points
``report`` and ``exempt`` (:mod:`.cli`)."""

from __future__ import annotations

from camwatch.reports.compute import Bulletin, ReportSettings, compute_bulletin
from camwatch.reports.period import Period
from camwatch.reports.rows import channels_from_rows, inventory_rows

__all__ = ["Bulletin", "Period", "ReportSettings", "channels_from_rows", "compute_bulletin",
           "inventory_rows"]
