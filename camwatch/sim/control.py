"""The simulator's control endpoint: look at the fleet and change faults while it runs.

============================================  ==============================================
``GET  /api/devices[?township=X]``            every device: host, ports, fault, listening
``GET  /api/devices/{host}``                  one device
``GET  /api/channels/{id}``                   one channel: URL, own / device / effective fault
``GET  /api/townships``                       codes, names and device counts
``GET  /api/faults``                          channels per effective fault
``GET  /api/pictures``                        channels per picture they show (with pictures)
``POST /api/channels/{id}/picture``           ``{"picture": "frozen"}`` from the next PLAY;
                                              ``{"picture": null}``: fake RTP, no picture
``POST /api/channels/{id}/fault``             ``{"fault": "hang"}``; ``{"fault": null}`` drops
``POST /api/devices/{host}/fault``            the override (the scenario applies again)
``POST /api/townships/{code or name}/fault``
``POST /api/reset``                           drop every override; ``{"scenario": false}``
                                              also drops the scenario's faults
============================================  ==============================================

A POST answers once the change is in effect: after ``refused`` the device's sockets are closed.
Errors are ``{"error": "..."}`` with 400 (bad body or fault) or 404 (unknown target).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from camwatch.sim.inventory_gen import County
from camwatch.sim.model import Fault, SimDevice
from camwatch.sim.pictures import Picture


class Fleet(Protocol):
    """What the control API needs of :class:`camwatch.sim.fleet.Fleet` (which starts it, so
    this module does not import it back)."""

    @property
    def devices(self) -> Mapping[str, SimDevice]: ...
    @property
    def county(self) -> County: ...
    def township_code(self, code_or_name: str) -> str | None: ...
    def township_devices(self, code: str) -> list[str]: ...
    def device_info(self, key: str) -> dict[str, Any]: ...
    def channel_info(self, channel_id: str) -> dict[str, Any]: ...
    def fault_counts(self) -> dict[str, int]: ...
    def picture_counts(self) -> dict[str, int]: ...
    def set_channel_picture(self, channel_id: str, picture: Picture | None) -> None: ...
    async def set_device_fault(self, key: str, fault: Fault | None) -> None: ...
    async def set_channel_fault(self, channel_id: str, fault: Fault | None) -> None: ...
    async def set_township_fault(self, code_or_name: str, fault: Fault | None) -> list[str]: ...
    async def reset(self, *, keep_scenario: bool = True) -> None: ...


FLEET: web.AppKey[Fleet] = web.AppKey("fleet")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _fault_from(request: web.Request) -> Fault | web.Response | None:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, 'expected a JSON body such as {"fault": "hang"}')
    if not isinstance(body, dict) or "fault" not in body:
        return _error(400, 'expected a JSON object with a "fault" key, e.g. {"fault": "hang"}')
    value = body["fault"]
    if value is None:
        return None
    try:
        return Fault(str(value))
    except ValueError:
        return _error(400, f"unknown fault {value!r}; expected null or one of "
                           f"{', '.join(f.value for f in Fault)}")


async def list_devices(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    keys: list[str] = list(fleet.devices)
    if (t := request.query.get("township")) is not None:
        code = fleet.township_code(t)
        if code is None:
            return _error(404, f"no township {t!r}")
        keys = fleet.township_devices(code)
    return web.json_response({"devices": [fleet.device_info(k) for k in keys]})


async def get_device(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    key = request.match_info["host"]
    if key not in fleet.devices:
        return _error(404, f"no device {key!r}")
    return web.json_response(fleet.device_info(key))


async def get_channel(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    cid = request.match_info["id"]
    try:
        return web.json_response(fleet.channel_info(cid))
    except KeyError:
        return _error(404, f"no channel {cid!r}")


async def list_townships(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    return web.json_response({"townships": [
        {"code": t.code, "name": t.name, "devices": len(fleet.township_devices(t.code))}
        for t in fleet.county.townships]})


async def fault_counts(request: web.Request) -> web.Response:
    return web.json_response(request.app[FLEET].fault_counts())


async def set_channel_fault(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    cid = request.match_info["id"]
    fault = await _fault_from(request)
    if isinstance(fault, web.Response):
        return fault
    try:
        await fleet.set_channel_fault(cid, fault)
    except KeyError:
        return _error(404, f"no channel {cid!r}")
    except ValueError as exc:
        return _error(400, str(exc))
    return web.json_response(fleet.channel_info(cid))


async def picture_counts(request: web.Request) -> web.Response:
    return web.json_response(request.app[FLEET].picture_counts())


async def set_channel_picture(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    cid = request.match_info["id"]
    names = ", ".join(p.value for p in Picture)
    try:
        body: Any = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict) or "picture" not in body:
        return _error(400, f'expected a JSON object such as {{"picture": "frozen"}}; '
                           f"pictures: null, {names}")
    value = body["picture"]
    try:
        picture = None if value is None else Picture(str(value))
    except ValueError:
        return _error(400, f"unknown picture {value!r}; expected null or one of {names}")
    try:
        fleet.set_channel_picture(cid, picture)
    except KeyError:
        return _error(404, f"no channel {cid!r}")
    return web.json_response(fleet.channel_info(cid))


async def set_device_fault(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    key = request.match_info["host"]
    fault = await _fault_from(request)
    if isinstance(fault, web.Response):
        return fault
    try:
        await fleet.set_device_fault(key, fault)
    except KeyError:
        return _error(404, f"no device {key!r}")
    return web.json_response(fleet.device_info(key))


async def set_township_fault(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    name = request.match_info["code"]
    fault = await _fault_from(request)
    if isinstance(fault, web.Response):
        return fault
    try:
        keys = await fleet.set_township_fault(name, fault)
    except KeyError:
        return _error(404, f"no township {name!r}")
    return web.json_response({"township": fleet.township_code(name), "devices": keys,
                              "fault": None if fault is None else fault.value})


async def reset(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    keep = True
    if request.can_read_body:
        try:
            body: Any = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, 'expected no body or {"scenario": true|false}')
        if not isinstance(body, dict) or not isinstance(body.get("scenario", True), bool):
            return _error(400, 'expected no body or {"scenario": true|false}')
        keep = body.get("scenario", True)
    await fleet.reset(keep_scenario=keep)
    return web.json_response({"reset": True, "scenario": keep, "faults": fleet.fault_counts()})


def make_app(fleet: Fleet) -> web.Application:
    app = web.Application()
    app[FLEET] = fleet
    app.router.add_get("/api/devices", list_devices)
    app.router.add_get("/api/devices/{host}", get_device)
    app.router.add_post("/api/devices/{host}/fault", set_device_fault)
    app.router.add_get("/api/channels/{id}", get_channel)
    app.router.add_post("/api/channels/{id}/fault", set_channel_fault)
    app.router.add_post("/api/channels/{id}/picture", set_channel_picture)
    app.router.add_get("/api/pictures", picture_counts)
    app.router.add_get("/api/townships", list_townships)
    app.router.add_post("/api/townships/{code}/fault", set_township_fault)
    app.router.add_get("/api/faults", fault_counts)
    app.router.add_post("/api/reset", reset)
    return app


@dataclass(slots=True)
class ControlServer:
    runner: web.AppRunner
    url: str

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_control(fleet: Fleet, host: str = "127.0.0.1", port: int = 0) -> ControlServer:
    """Serve the control API on ``host:port`` (0: a free port; see ``.url``)."""
    runner = web.AppRunner(make_app(fleet), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return ControlServer(runner, f"http://{host}:{bound}")
