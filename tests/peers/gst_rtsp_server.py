"""A real third-party RTSP peer for tests: GStreamer's RTSP server on 127.0.0.1.

Run with Debian's ``/usr/bin/python3`` (it needs ``python3-gi`` and
``gir1.2-gst-rtsp-server-1.0``, which the project's virtualenv does not see)::

    /usr/bin/python3 tests/peers/gst_rtsp_server.py [--digest USER:PASSWORD] [--path /live]

Serves ``videotestsrc is-live=true ! x264enc tune=zerolatency ! rtph264pay name=pay0`` from a
shared media factory on a free port, prints the port on stdout once listening, and runs until
stdin is closed or it is killed (so it dies with the test process that started it).

Quirk of GStreamer 1.22 worth knowing: a shared media prepared for a DESCRIBE-only client is
unprepared when that client leaves, and a DESCRIBE arriving meanwhile is answered 503 (and
``set_reusable(True)`` makes later PLAYs send no RTP at all). The tests therefore start one
server per test instead of reusing one across probes.
"""

from __future__ import annotations

import argparse
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

PIPELINE = ("( videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=10/1 ! "
            "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! "
            "rtph264pay name=pay0 pt=96 config-interval=1 )")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--digest", metavar="USER:PASSWORD", help="require Digest auth")
    parser.add_argument("--path", default="/live")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service("0")  # a free port, read back after attach

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)

    if args.digest:
        user, _, password = args.digest.partition(":")
        auth = GstRtspServer.RTSPAuth()
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_digest(user, password, token)
        server.set_auth(auth)
        factory.add_role_from_structure(Gst.Structure.new_from_string(
            "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))

    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print("attach failed", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()

    def wait_stdin() -> None:
        sys.stdin.read()  # returns when the parent closes our stdin or exits
        GLib.idle_add(loop.quit)

    threading.Thread(target=wait_stdin, daemon=True).start()
    print(server.get_bound_port(), flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
