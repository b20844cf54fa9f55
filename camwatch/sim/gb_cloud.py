"""The simulated lower platforms of ``camwatch simulate`` and ``camwatch demo``: the operator
clouds of the generated inventory (:class:`~camwatch.sim.inventory_gen.CloudPlan`, a few
hundred channels reached only through them, some deliberately out of step with the ledger)
and the county's own platform (县级视频共享平台), which lists the simulated cameras that are
also probed over RTSP and reports each as it is now (a device that refuses or hangs is OFF).

Each registers with camwatch over GB/T 28181 (UDP, Digest), retrying until camwatch answers
(the daemon may start after the simulator), sends keepalives, renews its registration and
answers catalog queries. :meth:`GbClouds.set_silent` makes one stop its keepalives and answer
nothing, as a platform whose uplink is cut: camwatch takes its channels offline as
``platform_down`` once ``gb28181.keepalive_timeout`` passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import zlib
from collections.abc import AsyncIterator, Callable

import structlog

from camwatch.sim.gb_platform import SimChannel, SimPlatform
from camwatch.sim.inventory_gen import COUNTY_PLATFORM_NAME, InventoryPlan, platform_id

log = structlog.get_logger(__name__)

REGISTER_EXPIRES = 3600  # s; renewed at half of it
PER_MESSAGE = 50  # catalog items per MESSAGE (a few KiB: one UDP datagram)


def sim_records(channel_id: str, start: str, end: str) -> list[tuple[str, str]]:
    """What a simulated platform has recorded of a channel between two local times (its
    RecordInfo answer): by a hash of the id, one channel in 20 nothing (a full disk), two in
    20 a gap of 08:00-10:30, the rest the whole period in files of six hours (and, for one
    in 4, a sub-stream recording overlapping them, which must not count twice)."""
    try:
        a, b = dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)
    except ValueError:
        return []
    k = zlib.crc32(channel_id.encode()) % 20
    if k == 0 or b <= a:
        return []
    fmt = "%Y-%m-%dT%H:%M:%S"
    out: list[tuple[str, str]] = []
    t = a
    while t < b:
        u = min(t + dt.timedelta(hours=6), b)
        out.append((t.strftime(fmt), u.strftime(fmt)))
        t = u
    if k in (1, 2):
        ga = a.replace(hour=8).strftime(fmt)
        gb = a.replace(hour=10, minute=30).strftime(fmt)
        cut = [(p, min(q, ga)) for p, q in out] + [(max(p, gb), q) for p, q in out]
        out = sorted((x, y) for x, y in cut if x < y)  # (the times sort as text)
    if k % 4 == 3:
        out.append((a.strftime(fmt), (a + dt.timedelta(hours=3)).strftime(fmt)))
    return out


def county_platform_id(plan: InventoryPlan) -> str:
    return platform_id(plan.spec.county_code, 1)


class GbClouds:
    """The lower platforms of one simulated county, registering with camwatch at ``listen``."""

    def __init__(self, plan: InventoryPlan, listen: str, password: str, *,
                 keepalive_s: float = 60.0, status_of: Callable[[str], str] | None = None,
                 names: dict[str, str] | None = None) -> None:
        """``status_of(channel id)``: ON/OFF of a simulated camera, for the county platform's
        catalog (None: no county platform); ``names``: their ledger names; ``listen``:
        camwatch's ``HOST:PORT``."""
        host, _, port = listen.rpartition(":")
        server = (host.strip("[]"), int(port))
        self.keepalive_s = keepalive_s
        self.platforms: list[SimPlatform] = []
        self.names: dict[str, str] = {}
        self.registered: dict[str, float] = {}  # platform id -> when camwatch accepted it
        self._wake: dict[str, asyncio.Event] = {}
        if status_of is not None and plan.devices:
            pid = county_platform_id(plan)
            chans = [SimChannel(cid, (names or {}).get(cid, "")) for d in plan.devices
                     for cid in d.channel_ids]
            self.platforms.append(SimPlatform(pid, password, server, channels=chans,
                                              per_message=PER_MESSAGE, status_of=status_of,
                                              records_of=sim_records))
            self.names[pid] = COUNTY_PLATFORM_NAME
        for cloud in plan.clouds:
            chans = [SimChannel(cid, name) for cid, name in cloud.catalog()]
            self.platforms.append(SimPlatform(cloud.id, password, server, channels=chans,
                                              per_message=PER_MESSAGE, records_of=sim_records))
            self.names[cloud.id] = cloud.name

    def platform(self, pid: str) -> SimPlatform:
        for p in self.platforms:
            if p.id == pid:
                return p
        raise KeyError(pid)

    def set_silent(self, pid: str, silent: bool) -> None:
        """Stop (or resume) a platform's keepalives and answers."""
        p = self.platform(pid)
        p.mute = silent
        log.info("sim_gb_platform_silent" if silent else "sim_gb_platform_resumed",
                 platform=pid, name=self.names.get(pid, ""))
        self._wake[pid].set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[GbClouds]:
        """Start every platform's socket and keep it registered until the context ends."""
        tasks: list[asyncio.Task[None]] = []
        try:
            for p in self.platforms:
                await p.start()
                self._wake[p.id] = asyncio.Event()
                tasks.append(asyncio.create_task(self._keep(p), name=f"sim-gb-{p.id}"))
            yield self
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for p in self.platforms:
                await p.close()

    async def _keep(self, p: SimPlatform) -> None:
        """Register (again whenever camwatch has forgotten us), keep alive, renew."""
        registered_at: float | None = None
        wake = self._wake[p.id]
        while True:
            pause = self.keepalive_s
            if not p.mute:
                try:
                    now = time.monotonic()
                    if registered_at is None or now - registered_at > REGISTER_EXPIRES / 2:
                        if await p.register(expires=REGISTER_EXPIRES) == 200:
                            registered_at = now
                            self.registered[p.id] = time.time()
                            log.info("sim_gb_registered", platform=p.id)
                        else:
                            registered_at, pause = None, min(pause, 5.0)
                    elif await p.keepalive() != 200:  # camwatch restarted: register again
                        registered_at, pause = None, 0.0
                except (TimeoutError, OSError):  # camwatch not (yet) there
                    registered_at, pause = None, min(pause, 5.0)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):  # the keepalive period, or a resume
                    await wake.wait()
