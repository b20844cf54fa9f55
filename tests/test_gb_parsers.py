"""The pure parts of the GB/T 28181 upper platform, as tables: SIP parsing (compact forms,
folding, several Vias, rport), Digest, MANSCDP (encodings, hostile XML), catalog assembly and
the event -> verdict mapping; and fuzzing: whatever arrives, the parsers give a result or their
own error, nothing else."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from camwatch.gb28181 import manscdp, sip, verdict_of
from camwatch.gb28181.digest import Authenticator, expected_response, parse_authorization
from camwatch.gb28181.manscdp import Item, ManscdpError
from camwatch.gb28181.peers import MAX_CATALOG, Peer
from camwatch.gb28181.sip import SipError
from camwatch.model import Source, Why

REGISTER = (
    b"REGISTER sip:3402000000 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.1.2.3:5060;rport;branch=z9hG4bK1, SIP/2.0/TCP [::1]:5070;branch=b2\r\n"
    b"Via: SIP/2.0/UDP proxy.example:5062;branch=z9hG4bK3;received=10.9.9.9\r\n"
    b"f: \"\xe7\x9b\x91\xe6\x8e\xa7\" <sip:34020000002000000200@3402000000>;tag=abc\r\n"
    b"t: <sip:34020000002000000200@3402000000>\r\n"
    b"i: call-1@10.1.2.3\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"m: <sip:34020000002000000200@10.1.2.3:5060>;expires=600\r\n"
    b"User-Agent: IP Camera\r\n"
    b"  (folded) v5.6\r\n"
    b"l: 0\r\n\r\n")


def test_register_with_compact_forms_folding_and_three_vias() -> None:
    m = sip.parse_message(REGISTER)
    assert m.method == "REGISTER" and m.uri == "sip:3402000000"
    vias = [sip.parse_via(v) for v in m.get_all("via")]
    assert [(v.transport, v.host, v.port) for v in vias] == [
        ("UDP", "10.1.2.3", 5060), ("TCP", "::1", 5070), ("UDP", "proxy.example", 5062)]
    assert vias[0].params == {"rport": "", "branch": "z9hG4bK1"}
    assert m.from_user() == "34020000002000000200" and m.call_id == "call-1@10.1.2.3"
    assert m.get("user-agent") == "IP Camera (folded) v5.6"
    assert m.cseq == (1, "REGISTER")
    assert m.expires(3600) == 600  # the contact's expires parameter
    assert "监控" in m.get("from")


def test_response_answers_rport_and_keeps_vias_in_order() -> None:
    m = sip.parse_message(REGISTER)
    r = sip.response(m, 401, source=("192.0.2.7", 40000), to_tag="t1",
                     extra=[("www-authenticate", 'Digest realm="x"')])
    out = sip.parse_message(sip.serialize(r))
    assert out.status == 401 and out.reason == "Unauthorized"
    vias = out.get_all("via")
    assert vias[0] == "SIP/2.0/UDP 10.1.2.3:5060;rport=40000;branch=z9hG4bK1;" \
                      "received=192.0.2.7"
    assert vias[1:] == m.get_all("via")[1:]
    assert out.get("to").endswith(";tag=t1") and out.get("content-length") == "0"
    assert sip.reply_address(m, ("192.0.2.7", 40000)) == ("192.0.2.7", 40000)  # rport: NAT


@pytest.mark.parametrize(("data", "error"), [
    (b"", "no empty line"),
    (b"HELLO\r\n\r\n", "start line"),
    (b"SIP/2.0 2000 OK\r\n\r\n", "status line"),
    (b"MESSAGE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\n\r\n", "without a From"),
    (REGISTER.replace(b"CSeq: 1 REGISTER", b"CSeq: 1 INVITE"), "CSeq method"),
    (REGISTER.replace(b"CSeq: 1 REGISTER", b"CSeq: x REGISTER"), "CSeq"),
    (REGISTER.replace(b"l: 0", b"l: 10"), "Content-Length 10 but only 0"),
    (REGISTER.replace(b"l: 0", b"l: 99999999"), "more than the"),
    (REGISTER.replace(b"l: 0", b"l: -1"), "Content-Length"),
    (REGISTER.replace(b"User-Agent", b"Bad Header"), "header line"),
    (b"REGISTER sip:x SIP/2.0\r\n" + b"X: y\r\n" * 101 + b"\r\n", "more than 100"),
    (b"REGISTER sip:x SIP/2.0\r\nX: " + b"a" * 20000 + b"\r\n\r\n", "longer than"),
    (b"REGISTER sip:x SIP/2.0\r\n folded first\r\n\r\n", "folded line"),
])
def test_bad_messages_are_refused_with_a_reason(data: bytes, error: str) -> None:
    with pytest.raises(SipError, match=error):
        sip.parse_message(data)


def test_via_must_be_sip_2_0() -> None:
    with pytest.raises(SipError, match="Via"):
        sip.parse_via("SIP/1.0/UDP host")
    with pytest.raises(SipError, match="out of range"):
        sip.parse_via("SIP/2.0/UDP host:70000")


# --- Digest -------------------------------------------------------------------------------------

def _answer(auth: Authenticator, password: str, now: float, qop: bool = False,
            user: str = "34020000002000000200") -> dict[str, str]:
    ch = parse_authorization(auth.challenge(now))
    assert ch is not None
    p = {"username": user, "realm": ch["realm"], "nonce": ch["nonce"], "uri": "sip:34020000"}
    if qop:
        p |= {"qop": "auth", "nc": "00000001", "cnonce": "0a4f113b"}
    p["response"] = expected_response(p, password, "REGISTER")
    return p


def test_digest_known_answer() -> None:
    # RFC 2617 §3.5's worked example (the HTTP method is GET there)
    p = {"username": "Mufasa", "realm": "testrealm@host.com", "uri": "/dir/index.html",
         "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093", "qop": "auth", "nc": "00000001",
         "cnonce": "0a4f113b"}
    assert expected_response(p, "Circle Of Life", "GET") == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize("qop", [False, True])
def test_digest_check(qop: bool) -> None:
    auth = Authenticator("3402000000")
    now = 1_800_000_000.0
    assert auth.check(_answer(auth, "pw", now, qop), "pw", "REGISTER", now).ok
    wrong = auth.check(_answer(auth, "nope", now, qop), "pw", "REGISTER", now)
    assert not wrong.ok and wrong.why == "wrong password" and not wrong.stale
    stale = auth.check(_answer(auth, "pw", now, qop), "pw", "REGISTER", now + 301)
    assert not stale.ok and stale.stale
    forged = _answer(Authenticator("3402000000"), "pw", now, qop)  # another key's nonce
    assert auth.check(forged, "pw", "REGISTER", now).why == "nonce not ours"
    other_realm = _answer(auth, "pw", now, qop) | {"realm": "elsewhere"}
    assert not auth.check(other_realm, "pw", "REGISTER", now).ok


def test_parse_authorization() -> None:
    p = parse_authorization('Digest username="a b", realm="r", nonce="n\\"x", '
                            'uri="sip:1", response="abc", algorithm=MD5, qop=auth, nc=00000001')
    assert p is not None and p["username"] == "a b" and p["algorithm"] == "MD5"
    assert p["nc"] == "00000001"
    assert parse_authorization('Basic dXNlcjpwYXNz') is None


# --- MANSCDP ------------------------------------------------------------------------------------

CATALOG = """<?xml version="1.0" encoding="{enc}"?>
<Response><CmdType>Catalog</CmdType><SN>17</SN><DeviceID>34020000002000000200</DeviceID>
<SumNum>3</SumNum><DeviceList Num="3">
<Item><DeviceID>34120000002150000001</DeviceID><Name>城关镇分组</Name></Item>
<Item><DeviceID>34120000002160000001</DeviceID><Name>虚拟组织</Name></Item>
<Item><DeviceID>34120000001320000001</DeviceID><Name>东街路口</Name><Status>online</Status>
<ParentID>34120000002150000001</ParentID><CivilCode>341623</CivilCode></Item>
</DeviceList></Response>"""


@pytest.mark.parametrize(("enc", "codec"), [("GB2312", "gb18030"), ("GB18030", "gb18030"),
                                            ("UTF-8", "utf-8"), ("gbk", "gb18030")])
def test_catalog_in_each_encoding(enc: str, codec: str) -> None:
    doc = manscdp.parse(CATALOG.format(enc=enc).encode(codec))
    assert (doc.root, doc.cmd, doc.sn, doc.sum_num) == ("Response", "Catalog", 17, 3)
    names = [i.name for i in doc.items]
    assert names == ["城关镇分组", "虚拟组织", "东街路口"]
    assert [i.is_channel for i in doc.items] == [False, False, True]  # 215/216: tree nodes
    assert doc.items[2].status == "ONLINE" and doc.items[2].civil_code == "341623"


def test_undeclared_gb18030_body() -> None:
    text = CATALOG.format(enc="x").split("?>", 1)[1]
    doc = manscdp.parse(text.encode("gb18030"))
    assert doc.items[2].name == "东街路口"


@pytest.mark.parametrize(("body", "error"), [
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><Notify><CmdType>x</CmdType>'
     b"</Notify>", "hostile XML"),
    (b"<Notify>" * 20 + b"</Notify>" * 20, "deeper than"),
    (b"<Notify><SN>1</SN></Notify>", "without <CmdType>"),
    (b"<Envelope/>", "expected <Query>"),
    (b"<Notify><CmdType>Keepalive</CmdType><SN>x</SN></Notify>", "SN"),
    (b"not xml", "not XML"),
    (b"<Notify>" + b" " * (manscdp.MAX_XML + 1) + b"</Notify>", "more than"),
])
def test_bad_bodies(body: bytes, error: str) -> None:
    with pytest.raises(ManscdpError, match=error):
        manscdp.parse(body)


@pytest.mark.parametrize(("status", "ok"), [("ON", True), ("on", True), ("ONLINE", True),
                                            ("OK", True), ("OFF", False), ("Offline", False),
                                            ("", None), ("DEFECT", None)])
def test_status(status: str, ok: bool | None) -> None:
    assert manscdp.status_ok(status) is ok


@pytest.mark.parametrize(("event", "status", "ok", "reason"), [
    ("ON", "", True, None),
    ("OFF", "", False, Why.GB_OFF),
    ("VLOST", "", False, Why.VIDEO_LOST),
    ("DEFECT", "", False, Why.GB_DEFECT),
    ("ADD", "ON", True, None),
    ("UPDATE", "OFF", False, Why.GB_OFF),
    ("", "off", False, Why.GB_OFF),
    ("", "ONLINE", True, None),
])
def test_verdict_of(event: str, status: str, ok: bool, reason: str | None) -> None:
    v = verdict_of(event, status)
    assert v is not None and (v.ok, v.reason) == (ok, reason)
    assert v.source is Source.GB28181 and v.firm  # the platform's word, at once


@pytest.mark.parametrize(("event", "status"), [("DEL", ""), ("ADD", ""), ("UPDATE", "?"),
                                               ("", ""), ("REBOOT", "ON")])
def test_verdict_of_says_nothing(event: str, status: str) -> None:
    assert verdict_of(event, status) is None


# --- catalog assembly ---------------------------------------------------------------------------

def test_catalog_parts_by_sn() -> None:
    p = Peer("34020000002000000200")
    a = (Item("34120000001320000001"), Item("34120000002150000001"))
    assert p.catalog_part(5, 3, a, 0.0, 30.0) is None
    assert p.catalog_part(6, 1, (Item("34120000001320000009"),), 1.0, 30.0) is not None  # other
    done = p.catalog_part(5, 3, (Item("34120000001320000002"),), 2.0, 30.0)
    assert done is not None and done.messages == 2 and len(done.items) == 3
    p.take_catalog(done, 2.0, partial=False)
    assert set(p.catalog.channels) == {"34120000001320000001", "34120000001320000002"}
    assert p.catalog.nodes == 1
    # a later partial one adds, never removes
    assert p.catalog_part(7, 10, (Item("34120000001320000003"),), 3.0, 30.0) is None
    assert p.overdue(32.9) == []
    [late] = p.overdue(33.0)
    p.take_catalog(late, 33.0, partial=True)
    assert len(p.catalog.channels) == 3 and p.catalog.partial and p.catalog.declared == 10
    with pytest.raises(ValueError, match="SumNum"):
        p.catalog_part(8, MAX_CATALOG + 1, (), 0.0, 30.0)
    for sn in range(10, 20):  # pending assemblies stay bounded
        p.catalog_part(sn, 5, (), 0.0, 30.0)
    assert len(p.assemblies) <= 4


# --- fuzz ---------------------------------------------------------------------------------------

_SIP_PIECES = [b"REGISTER sip:x SIP/2.0\r\n", b"MESSAGE sip:1@2 SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n",
               b"Via: SIP/2.0/UDP 1.2.3.4:5060;rport;branch=z\r\n", b"v: SIP/2.0/TCP h\r\n",
               b"From: <sip:34020000002000000200@d>;tag=1\r\n", b"t: <sip:a@b>\r\n",
               b"i: c\r\n", b"CSeq: 1 REGISTER\r\n", b"CSeq: 99999999999 X\r\n",
               b"l: 5\r\n", b"Content-Length: -3\r\n", b" folded\r\n", b"\r\n", b"\n",
               b"Expires: 0\r\n", b"m: <sip:a@b>;expires=x\r\n", b"\xff\xfe", b":", b";",
               b"<?xml version='1.0' encoding='GB2312'?><Notify><CmdType>Catalog</CmdType>"]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(_SIP_PIECES), st.binary(max_size=40)), max_size=25))
def test_sip_parser_fuzz(parts: list[bytes]) -> None:
    data = b"".join(parts)
    try:
        m = sip.parse_message(data)
    except SipError:
        return
    for v in m.get_all("via"):
        with contextlib.suppress(SipError):
            sip.parse_via(v)
    try:
        m.expires(3600)
        _ = m.cseq
    except SipError:
        pass
    m.from_user()
    if m.is_request:
        sip.serialize(sip.response(m, 200, source=("127.0.0.1", 1)))


_XML_PIECES = ['<?xml version="1.0" encoding="GB2312"?>', '<?xml version="1.0" encoding="x"?>',
               "<Response>", "</Response>", "<Notify>", "</Notify>", "<CmdType>Catalog</CmdType>",
               "<SN>12</SN>", "<SN>-1</SN>", "<SumNum>3</SumNum>", "<DeviceList Num=\"1\">",
               "</DeviceList>", "<Item>", "</Item>", "<DeviceID>34120000001320000001</DeviceID>",
               "<Status>ON</Status>", "<Event>VLOST</Event>", "<Name>东街</Name>",
               "<!DOCTYPE a [<!ENTITY b 'c'>]>", "&b;", "<![CDATA[x]]>", "<a:b xmlns:a='u'>"]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(_XML_PIECES), st.text(max_size=20)), max_size=30),
       st.sampled_from(["utf-8", "gb18030"]))
def test_manscdp_parser_fuzz(parts: list[str], codec: str) -> None:
    data = "".join(parts).encode(codec, errors="replace")
    try:
        doc = manscdp.parse(data)
    except ManscdpError:
        return
    for it in doc.items:
        assert it.device_id
        verdict_of(it.event, it.status)


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_authorization_fuzz(text: str) -> None:
    p = parse_authorization("Digest " + text)
    assert p is not None
    Authenticator("r").check(p, "pw", "REGISTER", 0.0)


# --- reconciliation -------------------------------------------------------------------------

def test_reconcile_table() -> None:
    from camwatch.gb28181.reconcile import reconcile
    from camwatch.inventory import Channel

    def row(n: int, name: str, installed: bool = True, connected: bool = True) -> Channel:
        return Channel(id=f"341200000013200000{n:02d}", name=name, installed=installed,
                       connected=connected)

    rows = [row(1, "东街"), row(2, "西街"), row(3, "南街", connected=False),
            row(4, "北街"), row(5, "未装", installed=False, connected=False)]
    cat = {"34020000002000000200": {
        f"341200000013200000{n:02d}": Item(f"341200000013200000{n:02d}", name)
        for n, name in ((1, "东街"), (2, "西街路口"), (3, "南街"), (5, "未装"), (9, "陌生"))}}
    r = reconcile(rows, cat)
    j = r.as_json()
    assert (j["installed"], j["declared_connected"], j["measured_connected"]) == (4, 3, 3)
    assert j["declared_rate"] == 0.75 and j["measured_rate"] == 0.75
    assert j["missing"] == [{"channel": "34120000001320000004", "name": "北街"}]
    assert [x["channel"] for x in j["not_in_ledger"]] == ["34120000001320000009"]
    assert j["not_in_ledger"][0]["platform"] == "34020000002000000200"
    assert [x["channel"] for x in j["not_connected_in_ledger"]] == [
        "34120000001320000003", "34120000001320000005"]
    assert j["names_differ"] == [{"channel": "34120000001320000002", "ledger": "西街",
                                  "catalog": "西街路口"}]
    assert reconcile([], {}).as_json()["measured_rate"] is None  # no installed rows
