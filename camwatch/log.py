"""Logging: structlog, JSON lines when stderr is not a terminal, readable when it is.

A redaction processor runs last-but-one: whatever a caller passes, URL passwords and the
registered secret values never reach the output.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from camwatch.secrets import redact_text

_SECRETS: set[str] = set()


def register_secret(value: str) -> None:
    """Values (camera passwords, webhook keys) to scrub from every log line."""
    if value and len(value) >= 3:
        _SECRETS.add(value)


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    secrets = tuple(_SECRETS)
    for key, value in list(event.items()):
        if isinstance(value, str):
            event[key] = redact_text(value, secrets)
        elif isinstance(value, BaseException):
            event[key] = redact_text(f"{type(value).__name__}: {value}", secrets)
    return event


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured
    (pytest and daemonising tools swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        raise ValueError(f"expected a log level (debug, info, warning, error), got {level!r}")
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [structlog.processors.format_exc_info, _redact,
                       structlog.processors.JSONRenderer(ensure_ascii=False)]
    else:
        processors += [_redact, structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (zeep, httpx, aiohttp) stay quiet below WARNING.
    logging.basicConfig(level=max(lvl, logging.WARNING), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
