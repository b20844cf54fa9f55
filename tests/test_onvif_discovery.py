"""Inventory rows with only an ONVIF address are probed at the RTSP levels through the stream
URI the device gives over ONVIF (GetProfiles + GetStreamUri) — against the simulator's real
ONVIF and RTSP servers."""

from __future__ import annotations

from camwatch.probes import Level, ProbeSettings, Reason, Target
from camwatch.secrets import Secret
from camwatch.sim.model import Fault, SimChannel, SimDevice
from camwatch.sim.onvif_server import start_onvif_server
from camwatch.sim.rtsp_server import start_rtsp_server
from camwatch.sweep import ProbeRunner


async def test_rtsp_level_through_onvif_stream_uri() -> None:
    dev = SimDevice(host="127.0.0.1", rtsp_port=0, onvif_port=0, password="pw-onvif-1",
                    channels={"/Streaming/Channels/101": SimChannel(
                        id="c1", path="/Streaming/Channels/101")})
    rtsp = await start_rtsp_server(dev, "127.0.0.1", 0)
    dev.rtsp_port = rtsp.sockets[0].getsockname()[1]
    onvif = await start_onvif_server(dev, "127.0.0.1", 0)
    try:
        target = Target(channel_id="c1", host="127.0.0.1",
                        onvif_url=f"http://127.0.0.1:{onvif.port}/onvif/device_service",
                        username="admin", password=Secret("pw-onvif-1"))
        runner = ProbeRunner(ProbeSettings(timeout_s=3.0), 10, 4)
        r = await runner.run(Level.DESCRIBE, target)
        assert r.ok, r
        assert r.info["media"][0]["codec"] == "H264"
        assert runner._stream_uris["c1"].endswith(f":{dev.rtsp_port}/Streaming/Channels/101")

        dev.channels["/Streaming/Channels/101"].fault = Fault.NOT_FOUND  # RTSP path gone
        r = await runner.run(Level.DESCRIBE, target)
        assert (r.ok, r.reason) == (False, Reason.NOT_FOUND)

        # a device whose ONVIF service refuses: the ONVIF probe says why
        await onvif.close()
        fresh = ProbeRunner(ProbeSettings(timeout_s=1.0), 10, 4)
        r = await fresh.run(Level.DESCRIBE, target)
        assert (r.ok, r.reason) == (False, Reason.REFUSED)
    finally:
        rtsp.close()
        await onvif.close()
