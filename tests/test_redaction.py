"""Redaction of credentials a device may echo: the table of what goes and what stays."""

from __future__ import annotations

import json

import pytest
import structlog
from hypothesis import example, given
from hypothesis import strategies as st

from camwatch.log import configure
from camwatch.secrets import credential_forms, redact_text

B64 = "YWRtaW46czNjcmV0LVB3"  # base64("admin:s3cret-Pw")


@pytest.mark.parametrize(("text", "want"), [
    (f"403 Authorization: Basic {B64}", "403 Authorization: Basic ******"),
    (f"basic {B64}==, next", "basic ******, next"),
    (f"Basic {B64[:9]}", "Basic ******"),  # cut off by a length limit: still a token
    ('Digest username="admin", realm="r", nonce="n"',
     'Digest username="******", realm="r", nonce="n"'),
    ("Digest username=admin,realm=r", 'Digest username="******",realm=r'),
    ('username="adm', 'username="******"'),  # cut off inside the quotes
    ("rtsp://admin:pw@10.0.0.1/live", "rtsp://admin:******@10.0.0.1/live"),
    # what must stay: a challenge, and text that merely mentions a scheme
    ('WWW-Authenticate: Basic realm="cam"', 'WWW-Authenticate: Basic realm="cam"'),
    ("Basic realm=cam", "Basic realm=cam"),
    ("DESCRIBE answered 401", "DESCRIBE answered 401"),
])
def test_redact_text(text: str, want: str) -> None:
    assert redact_text(text) == want


def _redact_every_pattern(text: str) -> str:
    """redact_text without its shortcuts: every pattern over the whole text."""
    from camwatch.secrets import _BASIC, _USERINFO, _USERNAME, REDACTED

    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    out = _BASIC.sub(lambda m: f"{m[1]}{REDACTED}", out)
    return _USERNAME.sub(lambda m: f'{m[1]}"{REDACTED}"', out)


pieces = st.sampled_from(["Basic ", "BASIC\t", "baſic ", "basiK ", "username=", "USERNAME = ",
                          '"', "rtsp://", "a:b@", "://", B64, "==", " ", ",", "Server: Hik/2.0"])


@given(st.lists(st.one_of(pieces, st.text(max_size=5)), max_size=12).map("".join))
@example("Hikvision/2.0 RTSP Server")
@example(f"baſic {B64}")  # (?i) folds U+017F into "s": no ASCII shortcut for such text
@example(f'uſername="admin" Basic {B64}')
def test_redact_text_shortcuts_change_nothing(text: str) -> None:
    assert redact_text(text) == _redact_every_pattern(text)


def test_credential_forms_cover_encodings() -> None:
    forms = credential_forms("admin", "s3cret-Pw")
    assert forms == ("s3cret-Pw", B64)  # nothing to percent-encode: one form less
    assert credential_forms("admin", "p@ss w") == ("p@ss w", "p%40ss%20w", "YWRtaW46cEBzcyB3")
    assert credential_forms(None, "pw") == ("pw",)
    assert credential_forms("admin", None) == ()
    text = "echo YWRtaW46cEBzcyB3 and rtsp://h/?pw=p%40ss%20w"
    assert redact_text(text, credential_forms("admin", "p@ss w")) == \
        "echo ****** and rtsp://h/?pw=******"


def test_log_lines_scrub_an_echoed_basic_token(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", json=True)
    structlog.get_logger("t").warning("camera said", reply=f"Authorization: Basic {B64}")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["reply"] == "Authorization: Basic ******"
