"""Talking to a running daemon's HTTP API from the command line (``camwatch status``,
``camwatch reload``, ``camwatch ticket``): where it listens, and what to say when it does not
answer."""

from __future__ import annotations

import argparse

from camwatch.config import load_config

DEFAULT_LISTEN = "127.0.0.1:9780"  # http.listen's default (camwatch.config.HttpConfig)


def daemon_address(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """The running daemon's base URL and auth headers: ``--url``, else the config's
    ``http.listen`` (a wildcard address asked on loopback), else the default address."""
    headers: dict[str, str] = {}
    url = args.url
    if args.config:
        cfg = load_config(args.config)
        scheme = "https" if cfg.http.tls_cert else "http"
        host = cfg.http.host if cfg.http.host not in ("0.0.0.0", "::") else "127.0.0.1"
        url = url or f"{scheme}://{host}:{cfg.http.port}"
        if cfg.http.auth is not None and (token := cfg.http.auth.token()) is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
    return (url or f"http://{DEFAULT_LISTEN}").rstrip("/"), headers


def status_error(url: str, config: str | None, exc: BaseException) -> str:
    """What ``camwatch status`` says when it cannot read the daemon's API: "nobody there"
    in words when the connection is refused, the cause otherwise."""
    reason = getattr(exc, "reason", exc)
    where = url.split("://", 1)[-1]
    if isinstance(reason, ConnectionRefusedError):
        return (f"no camwatch is running at {where} (start it with "
                f"`camwatch run -c {config or 'camwatch.yaml'}`)")
    if isinstance(reason, TimeoutError):
        return f"error: camwatch at {where} did not answer within 10 s ({reason})"
    if isinstance(exc, ValueError):
        return f"error: {url}/api/status did not answer camwatch's JSON: {exc}"
    return f"error: cannot read {url}/api/status: {reason}"
