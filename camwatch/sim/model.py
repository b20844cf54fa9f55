"""What the simulator serves: devices (a camera or an NVR) with channels, each with a fault.

Faults are mutable at run time (the control endpoint and timed events change them); servers
read them on every request, so a change applies to the next connection.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from camwatch.sim.pictures import Picture


class Fault(enum.StrEnum):
    """Named scenarios. One per test; the same names in scenario YAML and the control API."""

    NONE = "ok"
    REFUSED = "refused"  # nobody listens: connect gets ECONNREFUSED (device-level)
    HANG = "hang"  # accept, never answer
    AUTH_FAIL = "auth_fail"  # credentials in the inventory are wrong: every auth answer is 401
    NOT_FOUND = "not_found"  # DESCRIBE answers 404
    NO_MEDIA = "no_media"  # DESCRIBE answers an SDP without a video track
    BUSY = "busy"  # DESCRIBE answers 503 (stream busy / too many clients)
    GARBAGE = "garbage"  # answers bytes that are not the protocol
    DRIP = "drip"  # answers one byte per second, forever
    OVERSIZED = "oversized"  # answers an endless header block / body
    REDIRECT = "redirect"  # DESCRIBE answers 302 to the same path on the same server
    RESET = "reset"  # RST in the middle of the reply
    CLOCK_SKEW = "clock_skew"  # ONVIF clock off by SimChannel.clock_skew_s (default 600 s)
    NO_RTP = "no_rtp"  # PLAY answers 200 but no RTP ever comes
    XXE = "xxe"  # ONVIF reply whose external entity names SimDevice.xxe_path (must stay unread)
    XML_BOMB = "xml_bomb"  # ONVIF reply with nested entities ("billion laughs")
    DTD = "dtd"  # ONVIF reply with a harmless internal DTD (SOAP forbids any DTD)
    # old firmware: closes the connection after each 401 (its Digest nonce stays valid for
    # the next connection, which is how any client gets in)
    CLOSE_AFTER_401 = "close_after_401"
    # old firmware: GetSystemDateAndTime answers a LocalDateTime and no UTCDateTime
    LOCAL_TIME_ONLY = "local_time_only"


class RtspAuth(enum.StrEnum):
    """Which RTSP authentication a simulated device demands (cameras differ)."""

    DIGEST = "digest"  # MD5 with qop=auth (RFC 2617): most current Hikvision/Dahua firmware
    DIGEST_NO_QOP = "digest_no_qop"  # MD5 without qop (RFC 2069 style): older firmware
    BASIC = "basic"  # some cheap IPCs and old NVRs
    NONE = "none"  # no authentication at all


@dataclass(slots=True)
class SimChannel:
    id: str
    path: str  # RTSP path, e.g. "/Streaming/Channels/101"
    fault: Fault = Fault.NONE
    codec: str = "H264"
    audio: bool = False  # add a PCMA audio track to the SDP
    # None: PLAY sends small fake RTP packets (enough for the stream-level probe); a Picture:
    # a real clip showing that picture (camwatch.sim.pictures), for the quality lane
    picture: Picture | None = None
    plays: int = 0  # PLAYs answered (a scene_changed picture shows its usual view at the first)


@dataclass(slots=True)
class SimDevice:
    """One address on loopback: a camera (one channel) or an NVR (many channels by path)."""

    host: str  # 127.x.y.z
    rtsp_port: int
    onvif_port: int
    username: str = "admin"
    password: str = "camwatch-sim"
    fault: Fault = Fault.NONE  # applies to every channel (uplink / power / NVR down)
    clock_skew_s: float = 0.0
    manufacturer: str = "CamwatchSim"
    model: str = "SIM-IPC-2"
    firmware: str = "V5.7.3"
    serial: str = "SIM0000000001"
    rtsp_auth: RtspAuth = RtspAuth.DIGEST
    rtsp_nonce_max_uses: int = 0  # > 0: a Digest nonce goes stale after that many requests
    onvif_auth_always: bool = False  # vendor quirk: 401 to an unauthenticated GetSystemDateAndTime
    xxe_path: str = "/etc/hostname"  # the local file a Fault.XXE reply tries to pull in
    channels: dict[str, SimChannel] = field(default_factory=dict)  # by path

    def effective_fault(self, path: str | None = None) -> Fault:
        """The device's fault wins over the channel's (an NVR that is down takes its channels)."""
        if self.fault is not Fault.NONE:
            return self.fault
        if path is not None and (ch := self.channels.get(path)) is not None:
            return ch.fault
        return Fault.NONE
