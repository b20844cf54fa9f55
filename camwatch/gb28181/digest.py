"""SIP Digest authentication (RFC 2617 / 3261 §22, MD5, as GB/T 28181 requires) for REGISTER.

Nonces are stateless: ``<issued, hex>.<hmac>`` signed with a per-process key, so a flood of
REGISTERs costs no memory, and a nonce older than ``NONCE_TTL_S`` is answered with a fresh
challenge marked ``stale=true`` (the peer retries without a new password prompt).

Both the plain form (``response = MD5(HA1:nonce:HA2)``) that GB/T 28181's examples show and
``qop=auth`` are accepted; we challenge without ``qop``, as most lower platforms expect.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

NONCE_TTL_S = 300.0
_PAIR = re.compile(r"([A-Za-z][A-Za-z0-9_-]{0,31})\s*=\s*"
                   r"(\"((?:[^\"\\]|\\.){0,512})\"|[^\s,\"]{1,512})")


def parse_authorization(value: str) -> dict[str, str] | None:
    """``Digest username="x", realm="y", ...`` -> its parameters (names lower-case), or None
    when it is not a Digest credential."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest" or len(rest) > 4096:
        return None
    out: dict[str, str] = {}
    for m in _PAIR.finditer(rest):
        out[m.group(1).lower()] = m.group(3) if m.group(3) is not None else m.group(2)
    return out


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def expected_response(params: dict[str, str], password: str, method: str) -> str:
    ha1 = _md5(f"{params.get('username', '')}:{params.get('realm', '')}:{password}")
    ha2 = _md5(f"{method}:{params.get('uri', '')}")
    qop = params.get("qop", "")
    if qop:
        return _md5(f"{ha1}:{params.get('nonce', '')}:{params.get('nc', '')}:"
                    f"{params.get('cnonce', '')}:{qop}:{ha2}")
    return _md5(f"{ha1}:{params.get('nonce', '')}:{ha2}")


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    stale: bool = False  # a right answer to an expired nonce
    why: str = ""


class Authenticator:
    """Issues challenges and checks answers for one realm."""

    def __init__(self, realm: str, key: bytes | None = None) -> None:
        self.realm = realm
        self._key = key or secrets.token_bytes(32)

    def _sign(self, issued: str) -> str:
        return hmac.new(self._key, issued.encode(), hashlib.sha256).hexdigest()[:24]

    def nonce(self, now: float) -> str:
        issued = f"{int(now):x}{secrets.token_hex(4)}"
        return f"{issued}.{self._sign(issued)}"

    def challenge(self, now: float, stale: bool = False) -> str:
        extra = ", stale=true" if stale else ""
        return f'Digest realm="{self.realm}", nonce="{self.nonce(now)}", algorithm=MD5{extra}'

    def check(self, params: dict[str, str], password: str, method: str, now: float) -> Check:
        nonce = params.get("nonce", "")
        issued, _, sig = nonce.partition(".")
        if not sig or not hmac.compare_digest(sig, self._sign(issued)):
            return Check(False, why="nonce not ours")
        if params.get("realm", "") != self.realm:
            return Check(False, why="realm not ours")
        if params.get("algorithm", "MD5").upper() != "MD5":
            return Check(False, why="algorithm not MD5")
        given = params.get("response", "").lower()
        if not hmac.compare_digest(given, expected_response(params, password, method)):
            return Check(False, why="wrong password")
        try:
            age = now - int(issued[:-8] or "0", 16)
        except ValueError:
            return Check(False, why="nonce not ours")
        if age > NONCE_TTL_S:
            return Check(False, stale=True, why="nonce expired")
        return Check(True)
