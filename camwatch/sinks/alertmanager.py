"""Prometheus Alertmanager: POST ``/api/v2/alerts`` with labels, annotations and times.

Alertmanager ends an alert that is not re-sent within its ``resolve_timeout`` unless the alert
carries ``endsAt``; camwatch sends each event once (through the outbox) and always sends the
resolution, so a firing alert carries ``endsAt = now + firing_ttl`` and the resolved one the
real end.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from camwatch.sinks.base import (
    ALERT_TITLES,
    HttpSink,
    classify_http,
    iso,
    json_bytes,
)
from camwatch.sinks.config import AlertmanagerReceiver

_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def build_body(payload: Mapping[str, Any], now: float, firing_ttl: float,
               generator_url: str = "") -> list[dict[str, Any]]:
    labels = {"alertname": payload["name"], "severity": payload["severity"],
              "source": "camwatch"}
    for k, v in (payload.get("labels") or {}).items():
        if v:
            labels[_LABEL.sub("_", k)] = str(v)
    details = payload.get("details") or {}
    annotations = {"summary": payload["summary"],
                   "title": ALERT_TITLES.get(payload["name"], payload["name"]),
                   "fingerprint": payload["fingerprint"]}
    if details.get("notes"):
        annotations["description"] = "\n".join(details["notes"])
    resolved = payload["status"] == "resolved"
    ends = payload.get("ends_at") if resolved else None
    alert: dict[str, Any] = {
        "labels": labels, "annotations": annotations, "startsAt": iso(payload["starts_at"]),
        "endsAt": iso(ends if ends is not None else now + firing_ttl)}
    if generator_url:
        alert["generatorURL"] = generator_url
    return [alert]


class AlertmanagerSink(HttpSink):
    cfg: AlertmanagerReceiver

    async def send(self, payload: Mapping[str, Any]) -> None:
        url, _ = self._resolve()
        target = url.reveal().rstrip("/") + "/api/v2/alerts"
        body = json_bytes(build_body(payload, self.clock(), self.cfg.firing_ttl,
                                     self.cfg.generator_url))
        status, headers, _ = await self._http.post(target, body, {}, (url.reveal(),))
        err = classify_http(status, headers.get("Retry-After"))
        if err is not None:
            raise err

    async def close(self) -> None:
        await self._http.close()
