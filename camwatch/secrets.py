"""Secrets by reference, and redaction of anything that could carry one.

A :class:`Secret` never shows its value in ``str``/``repr``/logs; code that needs the value
calls :meth:`Secret.reveal` at the last moment (building an auth header).
"""

from __future__ import annotations

import base64
import functools
import os
import re
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

REDACTED = "******"


class Secret:
    """A string that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def read_secret(env: str | None, file: Path | None) -> Secret | None:
    """Resolve a ``*_env`` / ``*_file`` reference. Raises ``LookupError`` naming the reference
    (never the value) when it cannot be resolved."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise LookupError(f"environment variable {env} is not set")
        return Secret(value)
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise LookupError(f"cannot read secret file {file}: {exc.strerror}") from None
        return Secret(text.rstrip("\r\n"))
    return None


def split_userinfo(url: str) -> tuple[str, str | None, Secret | None]:
    """Split ``rtsp://user:pass@host/path`` into the URL without userinfo, the user and the
    password. Real spreadsheets carry credentials inline; we accept them and keep them apart.
    A URL that does not parse (a device's garbage) loses its userinfo by text, and gives none."""
    if "@" not in url:  # no userinfo to split: what both ways below would answer, without
        return url, None, None  # urlsplit (its cache holds 128 URLs; a sweep has 10,000+)
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url, None, None
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        scheme, sep, rest = url.partition("://")
        netloc, slash, path = rest.partition("/")
        if not sep or "@" not in netloc:
            return url, None, None
        return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}", None, None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user = unquote(parts.username) if parts.username else None
    pw = Secret(unquote(parts.password)) if parts.password is not None else None
    return clean, user, pw


_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
# What an echoed Authorization header gives away: Basic's token is base64("user:password"),
# Digest's username is the account. The Basic token is any token68 (RFC 7235) after "Basic",
# so a cut-off one is caught too; "Basic realm=..." (a challenge) is not a token68 and stays.
_BASIC = re.compile(r"(?i)\b(basic\s+)[A-Za-z0-9+/._~-]+=*(?![A-Za-z0-9+/._~=\"-])")
_USERNAME = re.compile(r'(?i)\b(username\s*=\s*)(?:"(?:[^"\\]|\\.)*"?|[^\s,"]+)')


@functools.lru_cache(maxsize=256)
def credential_forms(username: str | None, password: str | None) -> tuple[str, ...]:
    """The forms in which a device can echo a credential back: the password as is and
    percent-encoded, and the Basic token of ``username:password``. For :func:`redact_text`.
    Cached: every successful RTSP probe redacts the camera's Server header with them, and a
    fleet has few distinct credentials (2.3 µs a call otherwise)."""
    if not password:
        return ()
    forms = [password, quote(password, safe="")]
    if username is not None:
        forms.append(base64.b64encode(f"{username}:{password}".encode()).decode("ascii"))
    return tuple(dict.fromkeys(forms))


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove URL passwords (``scheme://user:pass@``), Basic tokens and Digest usernames (an
    echoed ``Authorization`` header) and any of ``secrets`` from ``text``."""
    # Each pattern runs only where its literal part is (4 µs for the three on a camera's
    # Server header, run on every successful probe). Their (?i) also folds a few non-ASCII
    # letters into ASCII ones (U+017F into "s", U+212A into "k"): such text takes every pattern.
    out = text
    if "://" in out:
        out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", out)
    low = out.lower() if out.isascii() else None
    if low is None or "basic" in low:
        out = _BASIC.sub(lambda m: f"{m[1]}{REDACTED}", out)
    if low is None or "username" in low:
        out = _USERNAME.sub(lambda m: f'{m[1]}"{REDACTED}"', out)
    for s in secrets:
        if s:
            out = out.replace(s, REDACTED)
    return out
