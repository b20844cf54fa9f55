"""Sinks: where alerts and rates leave camwatch (MQTT, WeCom and DingTalk robots, a generic
webhook, Alertmanager), fed from the store's outbox by :class:`Dispatcher`."""

from __future__ import annotations

from camwatch.sinks.base import DeliveryError
from camwatch.sinks.dispatch import Dispatcher

__all__ = ["DeliveryError", "Dispatcher"]
