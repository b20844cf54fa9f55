"""Property: whatever a device sends, the SOAP/HTTP reply parsers give a result or a classified
error (ProtocolError / SoapFault / HttpStatusError), never another exception."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from camwatch.probes import soap
from camwatch.probes.onvif import (
    SoapError,
    classify,
    parse_device_information,
    parse_reply,
    parse_system_date_and_time,
)
from camwatch.probes.result import Reason

_PARSERS: list[Callable[[bytes, int], Any]] = [
    parse_reply, parse_system_date_and_time, parse_device_information]
_CLASSIFIED = {Reason.PROTOCOL, Reason.AUTH, Reason.NOT_FOUND}

# Pieces of real replies, so that generated documents get past the first byte.
_FRAGMENTS = [
    '<?xml version="1.0" encoding="UTF-8"?>', '<?xml version="1.0" encoding="x-nope"?>',
    '<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:tt="http://www.onvif.org/ver10/schema" '
    'xmlns:tds="http://www.onvif.org/ver10/device/wsdl">',
    '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">',
    "</env:Envelope>", "<env:Body>", "</env:Body>", "<env:Header/>",
    "<tds:GetSystemDateAndTimeResponse>", "</tds:GetSystemDateAndTimeResponse>",
    "<tds:GetDeviceInformationResponse>", "</tds:GetDeviceInformationResponse>",
    "<tt:UTCDateTime>", "</tt:UTCDateTime>", "<tt:Year>2024</tt:Year>", "<tt:Month>13</tt:Month>",
    "<tt:Day>31</tt:Day>", "<tt:Hour>99</tt:Hour>", "<tt:Minute>-1</tt:Minute>",
    "<tt:Second>٣</tt:Second>", "<tt:Second>59</tt:Second>",
    "<tds:Manufacturer>x</tds:Manufacturer>",
    "<tds:Model/>", "<tds:FirmwareVersion>1</tds:FirmwareVersion>", "<tds:SerialNumber/>",
    "<env:Fault>", "</env:Fault>", "<env:Code><env:Value>env:Sender</env:Value>",
    "<env:Subcode><env:Value>ter:NotAuthorized</env:Value></env:Subcode>", "</env:Code>",
    "<env:Reason><env:Text>Sender not authorized</env:Text></env:Reason>",
    "<faultcode>s:Client</faultcode>", "<faultstring>x</faultstring>",
    '<!DOCTYPE x [<!ENTITY a "b">]>', "&a;", "&#0;", "&#x110000;", "<![CDATA[x]]>", "\x00", "é",
]

_documents = st.one_of(
    st.binary(max_size=2048),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=30).map(lambda xs: "".join(xs).encode()),
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=8)), max_size=30)
    .map(lambda xs: "".join(xs).encode("utf-8", "surrogatepass")),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_documents, status=st.sampled_from([200, 400, 401, 404, 500]),
       which=st.sampled_from(range(len(_PARSERS))))
def test_soap_parsers_only_return_or_raise_classified(data: bytes, status: int,
                                                     which: int) -> None:
    try:
        _PARSERS[which](data, status)
    except SoapError as exc:
        assert classify(exc) in _CLASSIFIED


_heads = st.lists(st.sampled_from([
    b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 401 Unauthorized\r\n", b"HTTP/1.1 100 Continue\r\n\r\n",
    b"RTSP/1.0 200 OK\r\n", b"Content-Length: 5\r\n", b"Content-Length: -1\r\n",
    b"Content-Length: 99999999\r\n", b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n",
    b"X\r\n", b"\r\n", b"5\r\nhello\r\n", b"0\r\n\r\n", b"zz\r\n", b"<a/>",
]), max_size=12).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(_heads, st.binary(max_size=512), st.tuples(_heads, st.binary(max_size=64))
                     .map(lambda t: t[0] + t[1])))
def test_http_reply_reader_only_returns_or_raises_classified(raw: bytes) -> None:
    async def read() -> None:
        reader = asyncio.StreamReader(limit=256)
        reader.feed_data(raw)
        reader.feed_eof()
        try:
            await soap.read_response(reader, 1024)
        except SoapError as exc:
            assert classify(exc) is Reason.PROTOCOL

    asyncio.run(read())
