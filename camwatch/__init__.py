"""camwatch: health monitoring for public-security video networks (雪亮工程 / 数字乡村).

Probes every channel over RTSP and ONVIF, turns results into channel states, computes online
rates of class 1/2/3 points against their targets, and tells the people concerned.
"""

from __future__ import annotations

from camwatch.errors import CamwatchError, ConfigError, InputError, InventoryError, StoreError

__version__ = "0.1.0"

__all__ = ["CamwatchError", "ConfigError", "InputError", "InventoryError", "StoreError",
           "__version__"]
