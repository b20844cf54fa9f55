"""camwatch as a GB/T 28181 upper platform (上级平台): lower platforms and devices register
with it, and their catalogs' channel status becomes verdicts (source ``gb28181``).

- :mod:`~camwatch.gb28181.sip`: the small SIP message layer (parse, build; bounded).
- :mod:`~camwatch.gb28181.digest`: MD5 Digest for REGISTER.
- :mod:`~camwatch.gb28181.manscdp`: the XML bodies (GB18030/UTF-8, hostile XML refused).
- :mod:`~camwatch.gb28181.peers`: what is known of each peer; catalogs assembled by SN.
- :mod:`~camwatch.gb28181.server`: UDP/TCP listeners, registrations, queries, timers.
- :mod:`~camwatch.gb28181.service`: the glue to the channel book, the API and the metrics.
"""

from typing import Any

from camwatch.gb28181.config import GbConfig, GbPeer

__all__ = ["GbConfig", "GbPeer", "GbService", "start_service", "verdict_of"]


def __getattr__(name: str) -> Any:
    """The service's names on first use: the config (read by every command that loads a
    config) imports this package, and the service pulls in the book, the store and aiohttp."""
    if name in ("GbService", "start_service", "verdict_of"):
        from camwatch.gb28181 import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
