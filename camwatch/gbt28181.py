"""GB/T 28181 20-digit device codes (编码规则): format checks only.

Layout: centre code (8: province 2, city 2, county 2, grassroots unit 2), industry (2), type (3),
network (1), serial (6). The centre code's last two digits are *not* a township code: area is
never derived from the id.
"""

from __future__ import annotations

VIDEO_CHANNEL_TYPES = {
    "111": "DVR",
    "112": "video server",
    "118": "NVR",
    "131": "camera",
    "132": "IP camera",
}
# 2xx are platform-side codes: 200 centre/platform, 215 business group, 216 virtual
# organisation (catalogue tree nodes). None of them is a camera channel.
PLATFORM_TYPES = range(200, 300)


def check_id(code: str) -> tuple[str | None, str | None]:
    """Return ``(error, warning)`` for a device code; both None when it is a video channel.

    An error means the row is not a channel at all (or not a GB/T 28181 code); a warning means
    a well-formed code of a device type that is not a video channel (an alarm input, say),
    which the data-quality annex lists.
    """
    if len(code) != 20 or not code.isascii() or not code.isdigit():
        return (f"expected a GB/T 28181 code of 20 digits, got {code!r} ({len(code)} characters)",
                None)
    type_code = code[10:13]
    if int(type_code) in PLATFORM_TYPES:
        return (f"type code {type_code} (digits 11-13) is a platform or catalogue node, "
                f"not a video channel", None)
    if type_code not in VIDEO_CHANNEL_TYPES:
        return None, f"type code {type_code} is not a video channel type " \
                     f"({', '.join(sorted(VIDEO_CHANNEL_TYPES))})"
    return None, None
