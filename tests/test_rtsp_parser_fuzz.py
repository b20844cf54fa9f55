"""Property tests of the RTSP probe's sans-IO parsers: whatever bytes a camera sends, they return
a result or raise ``RtspParseError``, never anything else; and how bytes are split across reads
never changes what is parsed."""

from __future__ import annotations

import itertools

from hypothesis import example, given, settings
from hypothesis import strategies as st

from camwatch.probes.rtsp import (
    Interleaved,
    Response,
    ResponseParser,
    RtspParseError,
    parse_challenges,
    parse_sdp,
    resolve_control,
)

VALID = (b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://127.0.0.1/a/\r\n"
         b"WWW-Authenticate: Basic realm=\"x\"\r\n"
         b"WWW-Authenticate: Digest realm=\"x\", nonce=\"y\"\r\n"
         b"Content-Length: 10\r\n\r\nv=0\r\nm=vid"
         b"$\x00\x00\x03abc"
         b"RTSP/1.0 404 Not Found\r\nCSeq: 3\r\n\r\n")

# Bytes that look a bit like RTSP, so the fuzzer reaches deep into the parser.
pieces = st.sampled_from([b"RTSP/1.0 ", b"200 OK", b"401", b"\r\n", b"\n", b"\r\n\r\n", b"$",
                          b"\x00\x05", b"Content-Length: ", b"5", b"99999999999", b"-1",
                          b"CSeq: 1", b"WWW-Authenticate: Digest ", b"realm=\"", b"\"", b",",
                          b" ", b":", b"\xb2", b"\x16\x03\x01", b"HTTP/1.1 "])
rtspish = st.lists(st.one_of(pieces, st.binary(max_size=8)), max_size=40).map(b"".join)
chunks = st.lists(st.one_of(st.binary(max_size=64), rtspish), max_size=10)


def _run(parser: ResponseParser, data: list[bytes]) -> list[Response | Interleaved]:
    out: list[Response | Interleaved] = []
    for chunk in data:
        out.extend(parser.feed(chunk))
    return out


@settings(max_examples=400, deadline=None)
@given(chunks)
@example([b"RTSP/1.0 \xb2\xb3\xb9 OK\r\n\r\n"])  # latin-1 superscripts: str.isdigit() is True
@example([b"RTSP/1.0 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"])  # int() limit
def test_response_parser_only_returns_or_raises_its_error(data: list[bytes]) -> None:
    parser = ResponseParser(max_header_bytes=256, max_body_bytes=64)
    try:
        events = _run(parser, data)
    except RtspParseError:
        return
    for ev in events:
        assert isinstance(ev, Response | Interleaved)
        if isinstance(ev, Response):
            assert 100 <= ev.status <= 999
            assert len(ev.body) <= 64
            assert ev.cseq is None or ev.cseq >= 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(VALID)), max_size=12))
def test_split_points_do_not_matter(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(VALID)]
    parts = [VALID[a:b] for a, b in itertools.pairwise(bounds)]
    events = _run(ResponseParser(), parts)
    assert events == _run(ResponseParser(), [VALID])
    first, frame, second = events
    assert isinstance(first, Response) and isinstance(second, Response)
    assert (first.status, first.cseq, first.body) == (200, 2, b"v=0\r\nm=vid")
    assert len(first.challenges) == 2
    assert frame == Interleaved(0, 3)
    assert (second.status, second.reason) == (404, "Not Found")


KEPT = (b"$\x00\x00\x03abc$\x01\x00\x00$\x00\x00\x02de"
        b"RTSP/1.0 200 OK\r\nCSeq: 5\r\n\r\n$\x00\x00\x04fghi")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(KEPT)), max_size=12))
def test_kept_payloads_do_not_depend_on_split_points(cuts: list[int]) -> None:
    """Keeping payloads (the keyframe fetch), frames complete in one read are taken all at
    once and frames split across reads byte by byte: the same frames either way."""
    bounds = [0, *sorted(cuts), len(KEPT)]
    events = _run(ResponseParser(keep_payload=True),
                  [KEPT[a:b] for a, b in itertools.pairwise(bounds)])
    assert [e for e in events if isinstance(e, Interleaved)] == [
        Interleaved(0, 3, b"abc"), Interleaved(1, 0), Interleaved(0, 2, b"de"),
        Interleaved(0, 4, b"fghi")]
    assert [e.cseq for e in events if isinstance(e, Response)] == [5]


def test_limits() -> None:
    try:
        ResponseParser(max_header_bytes=100).feed(b"RTSP/1.0 200 OK\r\n" + b"X: y\r\n" * 50)
    except RtspParseError as exc:
        assert "header block" in str(exc)
    else:
        raise AssertionError("header limit not enforced")
    try:
        ResponseParser(max_body_bytes=10).feed(b"RTSP/1.0 200 OK\r\nContent-Length: 11\r\n\r\n")
    except RtspParseError as exc:
        assert "body" in str(exc)
    else:
        raise AssertionError("body limit not enforced")


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.lists(st.sampled_from([b"v=0\n", b"m=video 0 RTP/AVP 96\n", b"m=audio\n",
                                           b"a=rtpmap:96 H264/90000\n", b"a=rtpmap:\n",
                                           b"a=control:", b"trackID=1", b"*", b"\r\n", b"m=",
                                           b"a=rtpmap:\xb2\xb3 x\n", b"\xff\xfe"]),
                          max_size=30).map(b"".join)))
def test_sdp_parser_only_returns_or_raises_its_error(body: bytes) -> None:
    try:
        control, media = parse_sdp(body)
    except RtspParseError:
        return
    assert control is None or isinstance(control, str)
    for m in media:
        assert isinstance(m.type, str) and m.codec


@given(st.lists(st.text(max_size=80), max_size=4))
def test_challenge_parser_never_raises(values: list[str]) -> None:
    for ch in parse_challenges(values):
        assert ch.scheme == ch.scheme.lower()


@given(st.text(max_size=40), st.one_of(st.none(), st.text(max_size=40)))
def test_resolve_control_never_raises(base: str, control: str | None) -> None:
    assert isinstance(resolve_control("rtsp://127.0.0.1/" + base, control), str)


def test_sdp_examples() -> None:
    sdp = (b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=Media Presentation\r\na=control:*\r\n"
           b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=1\r\n"
           b"m=audio 0 RTP/AVP 8\r\na=control:trackID=2\r\n"
           b"m=application 0 RTP/AVP 107\r\na=rtpmap:107 vnd.onvif.metadata/90000\r\n")
    control, media = parse_sdp(sdp)
    assert control == "*"
    assert [(m.type, m.codec, m.control) for m in media] == [
        ("video", "H264", "trackID=1"), ("audio", "PCMA", "trackID=2"),
        ("application", "VND.ONVIF.METADATA", None)]
    try:
        parse_sdp(b"<html>404</html>")
    except RtspParseError:
        pass
    else:
        raise AssertionError("HTML accepted as SDP")


def test_resolve_control_examples() -> None:
    base = "rtsp://10.0.0.1/Streaming/Channels/101"
    assert resolve_control(base, "trackID=1") == base + "/trackID=1"
    assert resolve_control(base + "/", "trackID=1") == base + "/trackID=1"
    assert resolve_control(base, "*") == base
    assert resolve_control(base, None) == base
    assert resolve_control(base, "rtsp://10.0.0.2/x") == "rtsp://10.0.0.2/x"
    assert resolve_control(base, "/other/track") == "rtsp://10.0.0.1/other/track"


# --- cheaper ways to the same answers (bench/bench_sweep.py) ------------------------------------

url_pieces = st.sampled_from(["rtsp://", "RTSP://", "rtsps://", "http://", " ", "\t", "\n",
                              "cam.example", "10.0.0.1", "[::1]", "u:p@", "@", ":", ":554",
                              ":99999", ":0", "/", "?q", "#f", "%41", "-", ".", "ſ", "K"])
urls = st.lists(st.one_of(url_pieces, st.text(max_size=4)), max_size=8).map("".join)


@given(urls)
@example("rtsp://127.0.0.1:554/Streaming/Channels/101")
@example("rtsp://Cam.Example/live")
@example("rtsp://cam:99999/")
@example("rtsp://cam:/")
@example("rtsp://u:p@cam/")
def test_plain_addr_is_urlsplit_or_leaves_it_to_urlsplit(url: str) -> None:
    """The probe's hand split of a plain ``rtsp://host[:port]/`` URL gives what urlsplit
    gives, and gives nothing (urlsplit decides) for every other URL."""
    from urllib.parse import urlsplit

    from camwatch.probes.rtsp import _plain_addr

    addr = _plain_addr(url)
    if addr is not None:
        parts = urlsplit(url)
        assert parts.scheme.lower() == "rtsp"
        assert addr == (parts.hostname, parts.port)
    if url in ("rtsp://127.0.0.1:554/Streaming/Channels/101", "rtsp://Cam.Example/live"):
        assert addr is not None  # the common case takes the short way


def _challenges_by_steps(values: list[str]) -> list[tuple[str, dict[str, str]]]:
    """parse_challenges as it was written before it used finditer: match at i, else skip one."""
    import re

    from camwatch.probes.rtsp import _AUTH_ITEM

    out: list[tuple[str, dict[str, str]]] = []
    for value in values:
        cur: dict[str, str] | None = None
        i = 0
        while i < len(value):
            m = _AUTH_ITEM.match(value, i)
            if m is None or m.end() == i:
                i += 1
                continue
            i = m.end()
            token, val = m.group(1), m.group(2)
            if val is None:
                cur = {}
                out.append((token.lower(), cur))
            elif cur is not None:
                if val.startswith('"'):
                    val = val[1:-1] if len(val) > 1 and val.endswith('"') else val[1:]
                    val = re.sub(r"\\(.)", r"\1", val)
                cur[token.lower()] = val.strip()
    return out


challenge_text = st.lists(st.one_of(st.sampled_from(
    ["Digest ", "Basic ", "realm", "=", '"', "\\", ",", " ", "\t", "nonce", "abc", 'x"y']),
    st.text(max_size=4)), max_size=20).map("".join)


@given(st.lists(challenge_text, max_size=3))
@example(['Basic realm="IP Camera(12345)"',
          'Digest realm="IP Camera(12345)", nonce="0a1b", qop="auth", opaque="x", algorithm=MD5'])
@example(['=Digest =realm="a\\"b", ,,nonce=', '"Basic'])
def test_challenge_parser_matches_the_step_by_step_scan(values: list[str]) -> None:
    assert [(c.scheme, c.params) for c in parse_challenges(values)] == \
        _challenges_by_steps(values)
