"""The simulated fleet: every device of a generated inventory served from one process.

Each device gets its own loopback address (127.x.y.z, 127.0.0.1 is left to the control
endpoint) with an RTSP and an ONVIF listener on the usual ports, or, with ``addressing="ports"``,
two ports of 127.0.0.1. Servers come from injected factories (the real RTSP and ONVIF servers by
default; tests pass stand-ins)::

    async with Fleet.start(FleetConfig(inventory=InventorySpec(connected=500), out_dir=d)) as f:
        f.files.config, f.control_url, await f.set_device_fault("127.1.0.3", Fault.REFUSED)

Faults come from layered *holds*: the scenario's shares (base), flapping, timed events and the
control API, highest layer winning. A device whose winning fault is ``refused`` has its
listening sockets closed, so a connect gets ECONNREFUSED; when it clears, it listens again on
the same ports. Every other fault is read by the servers on each request.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import random
import resource
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from camwatch.errors import CamwatchError
from camwatch.sim.inventory_gen import (
    InventoryFormat,
    InventoryPlan,
    InventorySpec,
    WrittenFiles,
    plan_inventory,
    write_all,
)
from camwatch.sim.model import Fault, RtspAuth, SimChannel, SimDevice
from camwatch.sim.pictures import Picture
from camwatch.sim.scenario import (
    Assignment,
    Clock,
    LoopClock,
    Scenario,
    TimedEvent,
    assign,
    flap_down,
    next_flap_change,
)

if TYPE_CHECKING:
    from camwatch.sim.gb_cloud import GbClouds

log = structlog.get_logger(__name__)

ServerFactory = Callable[[SimDevice, str, int], Awaitable[Any]]
"""``(device, host, port) -> server``; the server has ``close()`` (plain or async) and exposes
its bound port as ``.port`` or ``.sockets`` (an :class:`asyncio.Server`)."""

LISTENERS_PER_DEVICE = 2  # RTSP + ONVIF
# Hold layers, lowest first; within a layer the higher sequence number wins (for events: the
# later start).
BASE, FLAP, EVENT, CONTROL = 0, 1, 2, 3
HoldKey = tuple[int, int]


class FdLimitError(CamwatchError):
    """The open-file limit cannot hold the fleet's listening sockets."""

    def __init__(self, *, needed: int, hard: int, devices: int, channels: int,
                 headroom: int) -> None:
        self.needed, self.hard, self.devices = needed, hard, devices
        per_device = max(1, (hard - headroom) // LISTENERS_PER_DEVICE)
        avg = channels / per_device if per_device else float("inf")
        # NVRs of 32-64 channels (48 on average): the share that reaches avg with 10 % margin
        share = math.ceil(max(0.0, avg * 1.1 - 1) / 47 / 0.05) * 0.05
        example = (f"--nvr-share {share:.2f} --nvr-channels 32-64" if share <= 0.9
                   else "--nvr-share 0.9 with larger --nvr-channels")
        super().__init__(
            f"the simulated fleet needs {needed:,} file descriptors ({LISTENERS_PER_DEVICE} "
            f"listening sockets x {devices:,} devices + {headroom:,} headroom for connections), "
            f"but the open-file hard limit is {hard:,}. Either raise the limit (shell: "
            f"`ulimit -n {needed}`, as root or after raising the hard limit in "
            f"/etc/security/limits.conf; systemd: `LimitNOFILE={needed}` in the unit; docker: "
            f"`--ulimit nofile={needed}:{needed}`), or pack more channels per device: "
            f"{channels:,} channels within {hard:,} fds need about {avg:.1f} channels per "
            f"device on average, e.g. {example}."
        )


def fds_needed(devices: int, headroom: int) -> int:
    return LISTENERS_PER_DEVICE * devices + headroom


def ensure_fd_limit(needed: int, *, devices: int, channels: int, headroom: int) -> int:
    """Raise the soft open-file limit to the hard limit; return the new soft limit.
    :class:`FdLimitError` when even the hard limit is below ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise FdLimitError(needed=needed, hard=hard, devices=devices, channels=channels,
                           headroom=headroom)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log.info("fd_limit_raised", soft=soft, new_soft=target, hard=hard)
    return target


def default_rtsp_factory() -> ServerFactory:
    from camwatch.sim.rtsp_server import start_rtsp_server

    return start_rtsp_server


def default_onvif_factory() -> ServerFactory:
    from camwatch.sim.onvif_server import start_onvif_server

    return start_onvif_server


def _bound_port(server: Any) -> int | None:
    port = getattr(server, "port", None)
    if isinstance(port, int) and port:
        return port
    socks = getattr(server, "sockets", None)
    if socks:
        return int(socks[0].getsockname()[1])
    return None


async def _close_server(server: Any) -> None:
    result = server.close()
    if inspect.isawaitable(result):
        await result
    elif (wait_closed := getattr(server, "wait_closed", None)) is not None:
        # asyncio.Server: from 3.12 this waits for open connections too, which a hung
        # client may hold; the listening socket is closed already, so do not wait long.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await wait_closed()


@dataclass(frozen=True, slots=True)
class FleetConfig:
    inventory: InventorySpec = field(default_factory=InventorySpec)
    scenario: Scenario = field(default_factory=Scenario)
    out_dir: Path | None = None  # where inventory, config and password go; None: not written
    inventory_format: InventoryFormat = "csv"
    control: str | None = "127.0.0.1:0"  # host:port of the control endpoint; None: none
    username: str = "admin"
    password: str | None = None  # None: a random one, written to sim-password.txt
    fd_headroom: int = 1024  # fds kept free for accepted connections, files, the control API
    start_batch: int = 256  # listeners opened concurrently at start
    auth_mix: tuple[tuple[RtspAuth, float], ...] = (
        (RtspAuth.DIGEST, 0.90), (RtspAuth.DIGEST_NO_QOP, 0.06), (RtspAuth.BASIC, 0.04))
    audio_share: float = 0.3
    # GB/T 28181 lower platforms (when ``inventory.gb_channels``): keepalive period, the
    # registration password (None: a random one, written to gb-password.txt), and when the
    # last operator cloud goes silent (seconds after start) and for how long (None: for good)
    gb_keepalive_s: float = 60.0
    gb_password: str | None = None
    gb_down_at: float | None = None
    gb_down_for: float | None = None


@dataclass(slots=True)
class _Index:
    """Where things are, for the control API and timed events."""

    channels: dict[str, tuple[SimDevice, SimChannel]] = field(default_factory=dict)
    device_township: dict[str, str] = field(default_factory=dict)  # key -> township code
    township_devices: dict[str, list[str]] = field(default_factory=dict)  # code -> keys


class Fleet:
    """A running fleet. Build it with :meth:`start`."""

    def __init__(self, config: FleetConfig, plan: InventoryPlan, *,
                 rtsp_factory: ServerFactory, onvif_factory: ServerFactory, clock: Clock,
                 password: str) -> None:
        self.config = config
        self.plan = plan
        self.county = plan.county
        self.password = password
        self.devices: dict[str, SimDevice] = {}
        self.files: WrittenFiles | None = None
        self.gb: GbClouds | None = None  # the lower platforms, when the inventory has clouds
        self.gb_password = config.gb_password or secrets.token_urlsafe(12)
        self.control_url: str | None = None
        self.started_s = 0.0
        self._rtsp_factory = rtsp_factory
        self._onvif_factory = onvif_factory
        self._clock = clock
        self._index = _Index()
        self._device_holds: dict[str, dict[HoldKey, Fault]] = {}
        self._channel_holds: dict[str, dict[HoldKey, Fault]] = {}
        self._servers: dict[str, tuple[Any, Any]] = {}
        self._converging: dict[str, asyncio.Task[None]] = {}
        self._t0 = 0.0
        self._timeline_t = -1.0
        self._event_targets: list[list[tuple[str, str]]] = []
        self._event_rank: dict[int, int] = {}
        self.assignment = Assignment()
        self._build()

    # -- construction ----------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, config: FleetConfig, *, rtsp_factory: ServerFactory | None = None,
                    onvif_factory: ServerFactory | None = None,
                    clock: Clock | None = None) -> AsyncIterator[Fleet]:
        """Plan, check the fd budget, listen, write the files, serve the control API and run
        the timeline; everything is stopped on exit."""
        t_start = time.perf_counter()
        plan = plan_inventory(config.inventory)
        devices = len(plan.devices)
        channels = plan.channel_count
        needed = fds_needed(devices, config.fd_headroom)
        ensure_fd_limit(needed, devices=devices, channels=channels, headroom=config.fd_headroom)
        fleet = cls(config, plan,
                    rtsp_factory=rtsp_factory or default_rtsp_factory(),
                    onvif_factory=onvif_factory or default_onvif_factory(),
                    clock=clock or LoopClock(),
                    password=config.password or secrets.token_urlsafe(12))
        control: Any = None
        timeline: asyncio.Task[None] | None = None
        stack = contextlib.AsyncExitStack()
        try:
            fleet._t0 = fleet._clock.now()
            if config.scenario.serves_pictures:  # encode the clips before the first PLAY
                from camwatch.sim.pictures import prepare

                codecs = sorted({ch.codec for _, ch in fleet._index.channels.values()})
                await asyncio.to_thread(prepare, set(fleet.assignment.pictures.values()),
                                        codecs)
            fleet._apply_time_holds(0.0)
            await fleet._open_all()
            for d in plan.devices:  # ports asked as 0 are known now
                dev = fleet.devices[d.key]
                d.rtsp_port, d.onvif_port = dev.rtsp_port, dev.onvif_port
            if config.out_dir is not None:
                fleet.files = await asyncio.to_thread(
                    write_all, plan, config.out_dir, fleet.password,
                    fmt=config.inventory_format, username=config.username,
                    gb_password=fleet.gb_password)
            if config.control is not None:
                from camwatch.sim.control import start_control

                host, _, port = config.control.rpartition(":")
                control = await start_control(fleet, host or "127.0.0.1", int(port or 0))
                fleet.control_url = control.url
            timeline = asyncio.create_task(fleet._run_timeline(), name="sim-timeline")
            if plan.clouds:
                await stack.enter_async_context(fleet._gb_clouds())
            fleet.started_s = time.perf_counter() - t_start
            log.info("fleet_started", devices=devices, channels=channels,
                     seconds=round(fleet.started_s, 2), control=fleet.control_url)
            yield fleet
        finally:
            await stack.aclose()
            if timeline is not None:
                timeline.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await timeline
            if control is not None:
                await control.close()
            await fleet._close_all()

    def _build(self) -> None:
        cfg, plan = self.config, self.plan
        rng = random.Random(f"camwatch-sim-devices:{cfg.inventory.seed}")
        auths = [a for a, _ in cfg.auth_mix]
        weights = [w for _, w in cfg.auth_mix]
        for n, d in enumerate(plan.devices):
            dev = SimDevice(host=d.host, rtsp_port=d.rtsp_port, onvif_port=d.onvif_port,
                            username=cfg.username, password=self.password,
                            model="SIM-NVR-32" if d.nvr else "SIM-IPC-2",
                            serial=f"SIM{n + 1:010d}",
                            rtsp_auth=rng.choices(auths, weights)[0])
            for cid, path in zip(d.channel_ids, d.paths, strict=True):
                ch = SimChannel(cid, path, audio=rng.random() < cfg.audio_share)
                dev.channels[path] = ch
                self._index.channels[cid] = (dev, ch)
            self.devices[d.key] = dev
            code = self.county.townships[d.township].code
            self._index.device_township[d.key] = code
            self._index.township_devices.setdefault(code, []).append(d.key)
        scenario = cfg.scenario
        seed = scenario.seed if scenario.seed is not None else cfg.inventory.seed
        self.assignment = assign(scenario, [(d.key, d.channel_ids) for d in plan.devices], seed)
        for key in self.assignment.dead_devices:
            self._hold_device(key, (BASE, 0), Fault.REFUSED)
        for key, skew in self.assignment.clock_skew.items():
            self.devices[key].clock_skew_s = skew
        for cid, fault in self.assignment.channel_faults.items():
            self._hold_channel(cid, (BASE, 0), fault)
        for cid, picture in self.assignment.pictures.items():
            self._index.channels[cid][1].picture = picture
        self._event_targets = [self._resolve_event(i, ev) for i, ev in enumerate(scenario.events)]
        # Between overlapping events on one target, the one that started last wins.
        by_start = sorted(range(len(scenario.events)), key=lambda i: scenario.events[i].at_s)
        self._event_rank = {i: rank for rank, i in enumerate(by_start)}

    def _resolve_event(self, i: int, ev: TimedEvent) -> list[tuple[str, str]]:
        """("device", key) / ("channel", id) pairs an event acts on; ValueError if unknown."""
        where = f"scenario events[{i}]"
        if ev.township is not None:
            t = self.county.township(ev.township)
            if t is None:
                known = ", ".join(f"{x.code} {x.name}" for x in self.county.townships[:8])
                raise ValueError(f"{where}: no township {ev.township!r} in {self.county.name}; "
                                 f"known include {known}")
            return [("device", k) for k in self._index.township_devices.get(t.code, [])]
        if ev.device is not None:
            if ev.device not in self.devices:
                raise ValueError(f"{where}: no device {ev.device!r} in the fleet")
            return [("device", ev.device)]
        assert ev.channel is not None
        if ev.channel not in self._index.channels:
            raise ValueError(f"{where}: no channel {ev.channel!r} in the fleet")
        return [self._channel_target(ev.channel, ev.fault)]

    # -- GB/T 28181 lower platforms ----------------------------------------------------------

    def gb_status(self, channel_id: str) -> str:
        """What the county platform's catalog says of a simulated camera now: OFF when its
        device refuses or hangs (the platform has lost it), else ON (a wrong password or a
        missing stream is no concern of the platform's)."""
        dev, ch = self._index.channels[channel_id]
        return "OFF" if dev.effective_fault(ch.path) in (Fault.REFUSED, Fault.HANG) else "ON"

    @contextlib.asynccontextmanager
    async def _gb_clouds(self) -> AsyncIterator[GbClouds]:
        from camwatch.sim.gb_cloud import GbClouds
        from camwatch.sim.inventory_gen import iter_rows

        names = await asyncio.to_thread(
            lambda: {row[0]: row[1] for row in iter_rows(self.plan) if row[15]})
        clouds = GbClouds(self.plan, self.config.inventory.gb_listen,
                          self.gb_password, keepalive_s=self.config.gb_keepalive_s,
                          status_of=self.gb_status, names=names)
        async with clouds.running():
            self.gb = clouds
            drop = asyncio.create_task(self._gb_drop(clouds), name="sim-gb-drop")
            try:
                yield clouds
            finally:
                drop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drop

    async def _gb_drop(self, clouds: GbClouds) -> None:
        """The last operator cloud goes silent at ``gb_down_at`` (for ``gb_down_for``)."""
        at, length = self.config.gb_down_at, self.config.gb_down_for
        if at is None or not self.plan.clouds:
            return
        pid = self.plan.clouds[-1].id
        await self._clock.sleep_until(self._t0 + at)
        clouds.set_silent(pid, True)
        if length is not None:
            await self._clock.sleep_until(self._t0 + at + length)
            clouds.set_silent(pid, False)

    # -- lookups ---------------------------------------------------------------------------

    @property
    def channel_count(self) -> int:
        return len(self._index.channels)

    def channel_ids(self) -> list[str]:
        """Every served channel id, device by device."""
        return list(self._index.channels)

    def channel(self, channel_id: str) -> tuple[SimDevice, SimChannel]:
        """``KeyError`` when unknown."""
        return self._index.channels[channel_id]

    def device_key(self, channel_id: str) -> str:
        """The key (host, or host:port) of the device serving a channel."""
        dev, _ = self._index.channels[channel_id]
        return self._key_of(dev)

    def _key_of(self, dev: SimDevice) -> str:
        if self.config.inventory.addressing == "hosts":
            return dev.host
        return f"{dev.host}:{dev.rtsp_port}"

    def township_code(self, code_or_name: str) -> str | None:
        t = self.county.township(code_or_name)
        return t.code if t is not None else None

    def township_of(self, key: str) -> str:
        return self._index.device_township[key]

    def township_devices(self, code: str) -> list[str]:
        return list(self._index.township_devices.get(code, []))

    def is_listening(self, key: str) -> bool:
        return key in self._servers

    def rtsp_url(self, channel_id: str) -> str:
        dev, ch = self._index.channels[channel_id]
        return f"rtsp://{dev.host}:{dev.rtsp_port}{ch.path}"

    def onvif_url(self, key: str) -> str:
        dev = self.devices[key]
        return f"http://{dev.host}:{dev.onvif_port}/onvif/device_service"

    def device_info(self, key: str) -> dict[str, Any]:
        dev = self.devices[key]
        own = {ch.id: ch.fault.value for ch in dev.channels.values() if ch.fault is not Fault.NONE}
        return {
            "host": key, "address": dev.host, "rtsp_port": dev.rtsp_port,
            "onvif_port": dev.onvif_port, "township": self._index.device_township[key],
            "channels": len(dev.channels), "fault": dev.fault.value,
            "listening": key in self._servers, "clock_skew_s": dev.clock_skew_s,
            "rtsp_auth": dev.rtsp_auth.value, "channel_faults": own,
        }

    def channel_info(self, channel_id: str) -> dict[str, Any]:
        dev, ch = self._index.channels[channel_id]
        key = self.device_key(channel_id)
        return {
            "id": ch.id, "host": key, "path": ch.path, "rtsp_url": self.rtsp_url(channel_id),
            "onvif_url": self.onvif_url(key), "township": self._index.device_township[key],
            "fault": ch.fault.value, "device_fault": dev.fault.value,
            "effective_fault": dev.effective_fault(ch.path).value,
            "listening": key in self._servers,
            "picture": None if ch.picture is None else ch.picture.value,
        }

    def set_channel_picture(self, channel_id: str, picture: Picture | None) -> None:
        """What the channel shows from its next PLAY on (None: no picture, fake RTP)."""
        self._index.channels[channel_id][1].picture = picture

    def picture_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, ch in self._index.channels.values():
            if ch.picture is not None:
                counts[ch.picture.value] = counts.get(ch.picture.value, 0) + 1
        return counts

    # -- holds -----------------------------------------------------------------------------

    def _channel_target(self, channel_id: str, fault: Fault | None) -> tuple[str, str]:
        """A single camera *is* its channel: its faults go on the device, so ONVIF sees them
        too. On an NVR, ``refused`` cannot be one channel's (they share a listener)."""
        dev, _ = self._index.channels[channel_id]
        key = self.device_key(channel_id)
        if len(dev.channels) == 1:
            return ("device", key)
        if fault is Fault.REFUSED:
            raise ValueError(f"channel {channel_id} is one of {len(dev.channels)} channels of "
                             f"NVR {key}: refused is a device fault, set it on the device")
        return ("channel", channel_id)

    def _hold_device(self, key: str, hold: HoldKey, fault: Fault | None) -> bool:
        """Set or (``None``) drop a hold; True when the device's fault changed."""
        holds = self._device_holds.get(key)
        if fault is None:
            if not holds or hold not in holds:
                return False
            del holds[hold]
        else:
            holds = self._device_holds.setdefault(key, {})
            if holds.get(hold) is fault:
                return False
            holds[hold] = fault
        dev = self.devices[key]
        new = holds[max(holds)] if holds else Fault.NONE
        if not holds:
            self._device_holds.pop(key, None)
        changed = new is not dev.fault
        dev.fault = new
        return changed

    def _hold_channel(self, channel_id: str, hold: HoldKey, fault: Fault | None) -> bool:
        target, name = self._channel_target(channel_id, fault)
        if target == "device":
            return self._hold_device(name, hold, fault)
        holds = self._channel_holds.get(channel_id)
        if fault is None:
            if not holds or hold not in holds:
                return False
            del holds[hold]
        else:
            holds = self._channel_holds.setdefault(channel_id, {})
            holds[hold] = fault
        _, ch = self._index.channels[channel_id]
        new = holds[max(holds)] if holds else Fault.NONE
        if not holds:
            self._channel_holds.pop(channel_id, None)
        changed = new is not ch.fault
        ch.fault = new
        return changed

    # -- control ---------------------------------------------------------------------------

    async def set_device_fault(self, key: str, fault: Fault | None) -> None:
        """Override a device's fault (``None`` drops the override). ``KeyError`` if unknown.
        Returns once the listeners match (closed for ``refused``, open otherwise)."""
        if key not in self.devices:
            raise KeyError(key)
        self._hold_device(key, (CONTROL, 0), fault)
        await self._reconcile(key)

    async def set_channel_fault(self, channel_id: str, fault: Fault | None) -> None:
        """Override one channel's fault; ``KeyError`` if unknown, ``ValueError`` for ``refused``
        on an NVR channel."""
        self._hold_channel(channel_id, (CONTROL, 0), fault)
        await self._reconcile(self.device_key(channel_id))

    async def set_township_fault(self, code_or_name: str, fault: Fault | None) -> list[str]:
        """Override every device of a township; returns their keys. ``KeyError`` if unknown."""
        code = self.township_code(code_or_name)
        if code is None:
            raise KeyError(code_or_name)
        keys = self.township_devices(code)
        for key in keys:
            self._hold_device(key, (CONTROL, 0), fault)
        await asyncio.gather(*(self._reconcile(k) for k in keys))
        return keys

    async def reset(self, *, keep_scenario: bool = True) -> None:
        """Drop every control override; with ``keep_scenario=False`` drop the scenario's
        faults too (shares, flapping, events), so everything is ``ok`` until the timeline
        next changes something."""
        layers = {CONTROL} if keep_scenario else {BASE, FLAP, EVENT, CONTROL}
        touched: set[str] = set()
        for key in list(self._device_holds):
            for hold in [h for h in self._device_holds.get(key, {}) if h[0] in layers]:
                self._hold_device(key, hold, None)
                touched.add(key)
        for cid in list(self._channel_holds):
            for hold in [h for h in self._channel_holds.get(cid, {}) if h[0] in layers]:
                self._hold_channel(cid, hold, None)
                touched.add(self.device_key(cid))
        if not keep_scenario:
            for dev in self.devices.values():
                dev.clock_skew_s = 0.0
        await asyncio.gather(*(self._reconcile(k) for k in touched))

    def fault_counts(self) -> dict[str, int]:
        """Channels per effective fault, for the control API and tests."""
        counts: dict[str, int] = {}
        for dev in self.devices.values():
            for ch in dev.channels.values():
                f = dev.effective_fault(ch.path).value
                counts[f] = counts.get(f, 0) + 1
        return counts

    # -- timeline --------------------------------------------------------------------------

    def _apply_time_holds(self, t: float) -> set[str]:
        """Set flapping and event holds for scenario time ``t``; returns devices touched."""
        scenario = self.config.scenario
        touched: set[str] = set()
        for key, offset in self.assignment.flapping.items():
            down = flap_down(offset, scenario.flap_period_s, t)
            if self._hold_device(key, (FLAP, 0), Fault.REFUSED if down else None):
                touched.add(key)
        for i, ev in enumerate(scenario.events):
            fault = ev.fault if ev.active(t) else None
            hold = (EVENT, self._event_rank[i])
            for kind, name in self._event_targets[i]:
                if kind == "device":
                    changed = self._hold_device(name, hold, fault)
                    key = name
                else:
                    changed = self._hold_channel(name, hold, fault)
                    key = self.device_key(name)
                if changed:
                    touched.add(key)
        self._timeline_t = t
        return touched

    def _next_change(self, t: float) -> float | None:
        scenario = self.config.scenario
        times = [x for ev in scenario.events for x in (ev.at_s, ev.end_s)
                 if x is not None and x > t]
        if self.assignment.flapping:
            times.append(min(next_flap_change(off, scenario.flap_period_s, t)
                             for off in self.assignment.flapping.values()))
        return min(times) if times else None

    @property
    def scenario_time(self) -> float:
        """Seconds of scenario time the timeline has applied."""
        return self._timeline_t

    async def apply_time(self, t: float) -> None:
        """Apply the scenario as of ``t`` seconds after start and wait for the listeners."""
        touched = self._apply_time_holds(t)
        if touched:
            log.info("sim_timeline", t=round(t, 1), devices_changed=len(touched))
        await asyncio.gather(*(self._reconcile(k) for k in touched))

    async def _run_timeline(self) -> None:
        while True:
            now = self._clock.now() - self._t0
            try:
                await self.apply_time(now)
            except Exception:  # keep the timeline going; the next change may apply
                log.exception("sim_timeline_error", t=round(now, 1))
            nxt = self._next_change(now)
            if nxt is None:
                return
            await self._clock.sleep_until(self._t0 + nxt)

    # -- listeners -------------------------------------------------------------------------

    async def _open(self, key: str) -> None:
        dev = self.devices[key]
        rtsp = await self._rtsp_factory(dev, dev.host, dev.rtsp_port)
        try:
            onvif = await self._onvif_factory(dev, dev.host, dev.onvif_port)
        except BaseException:
            await _close_server(rtsp)
            raise
        # Port 0 asks for a free port once; keep it so the device comes back where it was.
        dev.rtsp_port = _bound_port(rtsp) or dev.rtsp_port
        dev.onvif_port = _bound_port(onvif) or dev.onvif_port
        self._servers[key] = (rtsp, onvif)

    async def _close(self, key: str) -> None:
        servers = self._servers.pop(key, None)
        if servers is not None:
            await asyncio.gather(*(_close_server(s) for s in servers), return_exceptions=True)

    async def _open_all(self) -> None:
        """Open every device (so that port 0 gives each its ports for the inventory), then
        close those that start refused."""
        keys = list(self.devices)
        batch = max(1, self.config.start_batch)
        for i in range(0, len(keys), batch):
            part = keys[i:i + batch]
            results = await asyncio.gather(*(self._open(k) for k in part), return_exceptions=True)
            errors = [(k, r) for k, r in zip(part, results, strict=True)
                      if isinstance(r, BaseException)]
            if errors:
                key, exc = errors[0]
                dev = self.devices[key]
                await self._close_all()
                hint = (" (is another simulator running? choose other ports or first_host)"
                        if isinstance(exc, OSError) else "")
                raise CamwatchError(f"cannot listen for device {key} on {dev.host} (RTSP "
                                    f"{dev.rtsp_port}, ONVIF {dev.onvif_port}): {exc}{hint}; "
                                    f"{len(errors)} of {len(part)} devices in the batch "
                                    f"failed") from exc
        refused = [k for k, d in self.devices.items() if d.fault is Fault.REFUSED]
        for i in range(0, len(refused), batch):
            await asyncio.gather(*(self._close(k) for k in refused[i:i + batch]))

    async def _close_all(self) -> None:
        for task in list(self._converging.values()):
            task.cancel()
        await asyncio.gather(*self._converging.values(), return_exceptions=True)
        keys = list(self._servers)
        batch = max(1, self.config.start_batch)
        for i in range(0, len(keys), batch):
            await asyncio.gather(*(self._close(k) for k in keys[i:i + batch]))

    async def _reconcile(self, key: str) -> None:
        """Make the listeners match the device's fault; concurrent callers share the work."""
        for _ in range(2):  # a second pass when we joined work started before our change
            task = self._converging.get(key)
            if task is None:
                want = self.devices[key].fault is not Fault.REFUSED
                if want == (key in self._servers):
                    return
                task = asyncio.create_task(self._converge(key), name=f"sim-converge-{key}")
                self._converging[key] = task
            await asyncio.shield(task)

    async def _converge(self, key: str) -> None:
        try:
            while True:
                want = self.devices[key].fault is not Fault.REFUSED
                have = key in self._servers
                if want == have:
                    return
                if want:
                    try:
                        await self._open(key)
                    except OSError as exc:
                        log.error("sim_relisten_failed", host=key, error=str(exc))
                        return
                    log.info("sim_device_up", host=key)
                else:
                    await self._close(key)
                    log.info("sim_device_refusing", host=key)
        finally:
            self._converging.pop(key, None)
