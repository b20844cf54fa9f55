"""GStreamer's RTSP server serving pictures with faults made by real GStreamer elements, for
the quality fault table (``tests/test_quality_gst.py``).

Run with Debian's ``/usr/bin/python3`` (python3-gi, gir1.2-gst-rtsp-server-1.0)::

    /usr/bin/python3 tests/peers/gst_quality_server.py FRAMES_DIR

``FRAMES_DIR`` holds ``f00.png`` .. ``fNN.png``: a textured scene panning (made by the test),
looped by ``multifilesrc`` at 10 frames a second. Each mount serves one case, H.264 unless
its name ends in ``-h265``; the server prints its port once listening and runs until stdin
closes. Media are not shared: each client gets its own pipeline (and first keyframe).
"""

from __future__ import annotations

import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

W, H = 800, 450
RAW = f"video/x-raw,width={W},height={H},framerate=10/1"
H264 = ("x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bitrate=3000 ! "
        "rtph264pay name=pay0 pt=96 config-interval=1")
H265 = ("x265enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bitrate=3000 ! "
        "rtph265pay name=pay0 pt=96 config-interval=1")


def cases(frames: str) -> dict[str, str]:
    scene = (f"multifilesrc location={frames}/f%02d.png loop=true "
             f"caps=image/png,framerate=10/1 ! pngdec ! videoconvert ! videoscale ! {RAW}")

    def test(pattern: str) -> str:
        return f"videotestsrc is-live=true {pattern} ! {RAW}"

    return {
        "ok": scene,
        "black": test("pattern=black"),
        "snow": test("pattern=snow"),
        "blue": test("pattern=solid-color foreground-color=0xff0000c8"),  # ARGB: 无视频信号 blue
        "blur": f"{scene} ! videoconvert ! gaussianblur sigma=4 ! videoconvert",
        "frozen": f"{scene} ! imagefreeze",
        "dark": f"{scene} ! videobalance brightness=-0.4",
        "bright": f"{scene} ! videobalance brightness=0.5",
        "cast": f"{scene} ! videoconvert ! coloreffects preset=sepia ! videoconvert",
        "occluded": f"{scene} ! videobox left={W * 55 // 100} right=-{W * 55 // 100} fill=black",
    }


def main() -> int:
    frames = sys.argv[1]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service("0")
    mounts = server.get_mount_points()
    all_cases = cases(frames)
    for name, pipe in [*all_cases.items(), ("ok-h265", all_cases["ok"]),
                       ("blue-h265", all_cases["blue"])]:
        enc = H265 if name.endswith("-h265") else H264
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(f"( {pipe} ! videoconvert ! video/x-raw,format=I420 ! {enc} )")
        factory.set_shared(False)
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
        mounts.add_factory(f"/{name}", factory)
    if server.attach(None) == 0:
        print("attach failed", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()

    def wait_stdin() -> None:
        sys.stdin.read()
        GLib.idle_add(loop.quit)

    threading.Thread(target=wait_stdin, daemon=True).start()
    print(server.get_bound_port(), flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
