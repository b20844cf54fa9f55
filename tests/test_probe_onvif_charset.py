"""ONVIF replies in GB2312/GBK (Chinese firmware) are read, not judged "not XML".

A small aiohttp server in front of the project's ONVIF simulator re-encodes every reply the
way such firmware sends it: the XML declaration and/or the Content-Type naming GB2312, GBK or
GB18030, the body in that encoding, a Chinese manufacturer name in it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web

from camwatch.probes import ProbeSettings, Target
from camwatch.probes.onvif import get_stream_uri, probe
from camwatch.probes.result import Reason
from camwatch.probes.soap import as_utf8, parse_reply
from camwatch.secrets import Secret
from camwatch.sim.model import SimChannel, SimDevice
from camwatch.sim.onvif_server import start_onvif_server

PASSWORD = "s3cret-Pw!camwatch"
PATH = "/Streaming/Channels/101"

# (XML declaration's encoding or None, Content-Type charset or None, bytes' real encoding)
Style = tuple[str | None, str | None, str]


async def _reencoding_proxy(upstream: str, style: Style) -> tuple[web.AppRunner, int]:
    declared, charset, encoding = style
    session = aiohttp.ClientSession()

    async def handle(request: web.Request) -> web.Response:
        async with session.post(f"{upstream}{request.path}", data=await request.read(),
                                headers={"Content-Type": request.content_type}) as up:
            text = (await up.read()).decode("utf-8")
            status = up.status
        text = re.sub(r"^<\?xml[^>]*\?>\s*", "", text)
        if declared is not None:
            text = f'<?xml version="1.0" encoding="{declared}"?>\n{text}'
        ctype = "application/soap+xml" + (f"; charset={charset}" if charset else "")
        return web.Response(status=status, body=text.encode(encoding),
                            headers={"Content-Type": ctype})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    app.on_cleanup.append(lambda _app: session.close())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    return runner, port


@pytest.fixture
async def gbk_device() -> AsyncIterator[Callable[[Style], object]]:
    device = SimDevice(host="127.0.0.1", rtsp_port=8554, onvif_port=0, password=PASSWORD,
                       manufacturer="海康威视", model="DS-2CD3T46 球机",
                       channels={PATH: SimChannel("34020000001320000001", PATH)})
    sim = await start_onvif_server(device, "127.0.0.1")
    runners: list[web.AppRunner] = []

    async def start(style: Style) -> Target:
        runner, port = await _reencoding_proxy(sim.url.split("/onvif")[0], style)
        runners.append(runner)
        return Target("34020000001320000001", "127.0.0.1",
                      onvif_url=f"http://127.0.0.1:{port}/onvif/device_service",
                      username="admin", password=Secret(PASSWORD))

    yield start
    for r in runners:
        await r.cleanup()
    await sim.close()


STYLES: list[Style] = [
    ("GB2312", "GB2312", "gbk"),  # declared twice, and GBK really
    ("GBK", None, "gbk"),  # the declaration only
    (None, "gbk", "gbk"),  # the Content-Type only
    ("GB2312", "utf-8", "gbk"),  # a fixed Content-Type template the body does not follow
    ("UTF-8", "GBK", "gbk"),  # a declaration copied from a template, the header right
    ("GB18030", None, "gb18030"),
    ("UTF-8", "GB2312", "utf-8"),  # the declaration right, the header wrong
]


@pytest.mark.parametrize("style", STYLES, ids=["-".join(map(str, s)) for s in STYLES])
async def test_gbk_replies_are_read(gbk_device: Callable[[Style], object],
                                    style: Style) -> None:
    target = await gbk_device(style)  # type: ignore[misc]
    r = await probe(target, ProbeSettings(timeout_s=2.0))
    assert r.ok, r.detail
    assert r.info["device"]["manufacturer"] == "海康威视"
    assert r.info["device"]["model"] == "DS-2CD3T46 球机"
    assert r.clock_drift_s is not None and abs(r.clock_drift_s) < 2


async def test_gbk_stream_uri_through_zeep(gbk_device: Callable[[Style], object]) -> None:
    target = await gbk_device(("GB2312", "GB2312", "gbk"))  # type: ignore[misc]
    assert await get_stream_uri(target, ProbeSettings(timeout_s=3.0)) == \
        f"rtsp://127.0.0.1:8554{PATH}"


async def test_bytes_that_are_not_what_they_declare_are_still_protocol(
        gbk_device: Callable[[Style], object]) -> None:
    target = await gbk_device(("UTF-8", "utf-8", "gbk"))  # type: ignore[misc]
    r = await probe(target, ProbeSettings(timeout_s=2.0))
    assert r.reason is Reason.PROTOCOL and "not XML" in r.detail


def test_as_utf8_table() -> None:
    body = "<a>海康</a>"
    gbk = body.encode("gbk")
    decl = b'<?xml version="1.0" encoding="GB2312"?>'
    assert as_utf8(decl + gbk) == body.encode()
    assert as_utf8(gbk, "GBK") == body.encode()
    assert as_utf8(body.encode()) == body.encode()  # nothing to do: the same bytes
    assert as_utf8(decl + gbk, "klingon") == body.encode()  # unknown charset ignored
    assert as_utf8(b'<?xml version="1.0" encoding="x-unknown"?><a/>') == \
        b'<?xml version="1.0" encoding="x-unknown"?><a/>'  # left for the parser to refuse
    assert as_utf8(b"\xef\xbb\xbf<a/>", "gbk") == b"\xef\xbb\xbf<a/>"  # a BOM wins
    envelope = ('<?xml version="1.0" encoding="GBK"?><s:Envelope xmlns:s='
                '"http://www.w3.org/2003/05/soap-envelope"><s:Body><x>设备</x></s:Body>'
                '</s:Envelope>').encode("gbk")
    assert parse_reply(envelope).text == "设备"
