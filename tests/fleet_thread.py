"""Simulated RTSP devices served from a background event loop, for tests that run camwatch in a
subprocess or through its synchronous CLI."""

from __future__ import annotations

import asyncio
import threading

from camwatch.sim.model import Fault, SimChannel, SimDevice
from camwatch.sim.rtsp_server import start_rtsp_server


class FleetThread:
    """A few simulated devices served from a background event loop."""

    def __init__(self, faults: list[Fault]) -> None:
        self.loop = asyncio.new_event_loop()
        self.devices = [SimDevice(host="127.0.0.1", rtsp_port=0, onvif_port=0,
                                  password="Sweep-Pw-1",
                                  channels={"/ch": SimChannel(id=str(i), path="/ch", fault=f)})
                        for i, f in enumerate(faults)]
        self.ports: list[int] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FleetThread:
        self.thread.start()

        async def start() -> list[asyncio.base_events.Server]:
            return [await start_rtsp_server(d, "127.0.0.1", 0) for d in self.devices]

        self.servers = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.ports = [s.sockets[0].getsockname()[1] for s in self.servers]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for s in self.servers:
                s.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def set_fault(self, index: int, fault: Fault) -> None:
        async def change() -> None:
            self.devices[index].channels["/ch"].fault = fault

        asyncio.run_coroutine_threadsafe(change(), self.loop).result(10)
