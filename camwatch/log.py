"""Logging: structlog, JSON lines when stderr is not a terminal, readable when it is.

A redaction processor runs last-but-one: whatever a caller passes, URL passwords and the
registered secret values never reach the output.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import traceback
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

from camwatch.secrets import REDACTED, redact_text

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
    # tracebacks become text before redaction, on a terminal too (an exception's message
    # can hold what a client or a camera sent)
    processors.append(structlog.processors.format_exc_info)
    if json:
        processors += [_redact, structlog.processors.JSONRenderer(ensure_ascii=False)]
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
    route_stdlib_loggers(ROUTED_LOGGERS, max(lvl, logging.WARNING))


# --- stdlib loggers through the scrubber ----------------------------------------------------

#: stdlib loggers whose records are re-emitted through structlog (and so redacted): aiohttp's
#: server logs the raw bytes of a malformed request, Authorization header included.
ROUTED_LOGGERS = ("aiohttp",)


class Throttle:
    """At most ``burst`` events per ``window_s`` (a fixed window); the rest are counted, so the
    next line let through can say how many were left out. For what a remote peer can trigger
    at will: one hostile client must not fill the disk with log lines."""

    def __init__(self, burst: int, window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._start = float("-inf")
        self._count = 0
        self._suppressed = 0

    def allow(self) -> tuple[bool, int]:
        """(log this one?, events left out before it since the last one logged)."""
        now = self._clock()
        if now - self._start >= self.window_s:
            self._start = now
            self._count = 0
        if self._count >= self.burst:
            self._suppressed += 1
            return False, 0
        self._count += 1
        left_out, self._suppressed = self._suppressed, 0
        return True, left_out


# up to the end of the line, a quote, or the backslash of an escaped newline in a bytes repr
_AUTH_HEADER = re.compile(r"(?i)(authorization\s*[:=]\s*)[^\r\n'\"\\]*")


def scrub_header_text(text: str) -> str:
    """``Authorization: Bearer abc`` -> ``Authorization: ******`` wherever a library quotes a
    request header (registered secrets and URL passwords are the redaction processor's)."""
    return _AUTH_HEADER.sub(lambda m: f"{m[1]}{REDACTED}", text)


def client_error_text(exc: BaseException) -> str:
    """What a malformed request did wrong, without any byte of the request: aiohttp's parser
    errors quote the offending line (``Missing expected CR after header value:\n\n  b'...'``);
    keep the words before the quote, printable ASCII, at most 100 characters."""
    text = str(getattr(exc, "message", "") or exc).split("\n", 1)[0]
    text = re.split(r"\s*b?['\"]", text, maxsplit=1)[0].rstrip(" :")
    text = "".join(c for c in text if " " <= c <= "~")[:100]
    return text or type(exc).__name__


def is_client_protocol_error(exc: BaseException | None) -> bool:
    """An HTTP request the peer got wrong (aiohttp's parser refused it): the client's fault,
    not camwatch's, and its text may carry the request's bytes."""
    from aiohttp.http_exceptions import HttpProcessingError

    return isinstance(exc, HttpProcessingError)


class _ToStructlog(logging.Handler):
    """Re-emits a stdlib record through structlog: the message and the traceback as text, so
    the redaction processor sees both. A client's protocol error becomes one INFO line without
    the request; everything is throttled."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.client_errors = Throttle(burst=10, window_s=60.0)
        self.other = Throttle(burst=50, window_s=60.0)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc = record.exc_info[1] if record.exc_info else None
            logger = structlog.get_logger(record.name)
            if is_client_protocol_error(exc):
                assert exc is not None
                ok, left_out = self.client_errors.allow()
                if ok:
                    logger.info("bad HTTP request refused", error=client_error_text(exc),
                                **({"not_logged_before": left_out} if left_out else {}))
                return
            ok, left_out = self.other.allow()
            if not ok:
                return
            fields: dict[str, Any] = {}
            if record.exc_info and record.exc_info[0] is not None:
                fields["exception"] = scrub_header_text(
                    "".join(traceback.format_exception(*record.exc_info)))
            if left_out:
                fields["not_logged_before"] = left_out
            logger.log(record.levelno, scrub_header_text(record.getMessage()), **fields)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def route_stdlib_loggers(names: tuple[str, ...], level: int) -> None:
    """Send the records of the stdlib loggers ``names`` (and their children) through
    structlog instead of the plain root handler. Idempotent."""
    for name in names:
        lg = logging.getLogger(name)
        for h in [h for h in lg.handlers if isinstance(h, _ToStructlog)]:
            lg.removeHandler(h)
        lg.addHandler(_ToStructlog(level))
        lg.setLevel(level)
        lg.propagate = False
