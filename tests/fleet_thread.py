"""Simulated RTSP devices served from a background event loop, for tests that run camwatch in a
subprocess or through its synchronous CLI."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path

from camwatch.sim.model import Fault, SimChannel, SimDevice
from camwatch.sim.pictures import Picture
from camwatch.sim.rtsp_server import start_rtsp_server


class FleetThread:
    """A few simulated devices served from a background event loop."""

    def __init__(self, faults: list[Fault]) -> None:
        self.loop = asyncio.new_event_loop()
        self.devices = [SimDevice(host="127.0.0.1", rtsp_port=0, onvif_port=0,
                                  password=PASSWORD,
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

    def set_picture(self, index: int, picture: Picture | None) -> None:
        """What camera ``index`` streams from its next PLAY: a real clip of ``picture``
        (camwatch.sim.pictures), or the small fake packets (None)."""
        async def change() -> None:
            self.devices[index].channels["/ch"].picture = picture

        asyncio.run_coroutine_threadsafe(change(), self.loop).result(10)


HEADER = "设备编码,点位名称,点位类型,项目,区县,乡镇,村,运营商,安装状态,上云状态,RTSP地址,凭据"
PASSWORD = "Sweep-Pw-1"


@dataclass(frozen=True)
class Row:
    """One connected channel of a test inventory; ``url`` is its RTSP address."""

    url: str
    klass: int = 1
    project: str = "雪亮工程"
    county: str = "鹿邑县"
    township: str = "城关镇"
    operator: str = "移动"


def write_site(tmp: Path, rows: list[Row], config: str = "",
               password: str = PASSWORD) -> Path:
    """A Chinese-header inventory of ``rows`` (ids 4116280000132100NNNN in order) plus one
    installed-but-not-connected channel, the password file, and a config that names both,
    followed by ``config`` (more YAML). Returns the config's path."""
    lines = [HEADER]
    for i, r in enumerate(rows):
        lines.append(f"4116280000132100{i:04d},点位{i},{r.klass},{r.project},{r.county},"
                     f"{r.township},村,{r.operator},已安装,已上云,{r.url},default")
    lines.append("41162800001321009999,未上云,3,数字乡村,鹿邑县,城关镇,村,联通,已安装,未上云,,")
    (tmp / "inv.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp / "pw").write_text(password + "\n", encoding="utf-8")
    cfg = tmp / "c.yaml"
    cfg.write_text("inventory: {path: inv.csv}\n"
                   "credentials: {default: {username: admin, password_file: pw}}\n" + config,
                   encoding="utf-8")
    return cfg
