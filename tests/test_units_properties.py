"""
The bounded content-header decoder (resmon.bus.properties) on its own: every
field type decodes to what was encoded, every bound refuses, and no bytes
make it raise for the properties.
"""

import struct
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from txamqp.spec import load as loadSpec

from amqpfields import Field, Raw, contentHeader, nestedTable, shortstr
from resmon.bus.amqp import SPEC_PATH
from resmon.bus.properties import REFUSED, PropertyLimits, decodeContentHeader

SPEC = loadSpec(SPEC_PATH)
LIMITS = PropertyLimits()


def decode(properties, limits=LIMITS, bodySize=7):
    header = decodeContentHeader(SPEC, contentHeader(bodySize, properties), limits)
    assert header.size == bodySize and header.weight == 0
    return header.properties


def test_every_field_type_decodes_to_its_value():
    headers = {
        "A": [1, "two", None, [3.5]], "l": 2 ** 40, "ln": Field("l", -2 ** 63), "V": None,
        "d": 0.1, "f": Field("f", 0.5), "T": Field("T", 2 ** 64 - 1), "D": Decimal("-12.345"),
        "b": Field("b", -128), "B": Field("B", 255), "s": Field("s", -32768), "u": Field("u", 65535),
        "I": -2 ** 31, "i": Field("i", 2 ** 32 - 1), "L": Field("L", 2 ** 64 - 1), "t": True,
        "tf": False, "S": "é", "Sb": Field("S", b"\xff"), "x": b"\x00\xff", "F": {"a": {"b": 1}},
    }
    assert decode({"headers": headers}) == {"headers": {
        "A": [1, "two", None, [3.5]], "l": 2 ** 40, "ln": -2 ** 63, "V": None, "d": 0.1,
        "f": 0.5, "T": 2 ** 64 - 1, "D": Decimal("-12.345"), "b": -128, "B": 255, "s": -32768,
        "u": 65535, "I": -2 ** 31, "i": 2 ** 32 - 1, "L": 2 ** 64 - 1, "t": True, "tf": False,
        "S": "é", "Sb": b"\xff", "x": b"\x00\xff", "F": {"a": {"b": 1}}}}


def test_every_property_decodes():
    properties = {"content-type": "application/json", "content-encoding": "gzip",
                  "headers": {"a": 1}, "delivery-mode": 2, "priority": 9, "correlation-id": "c",
                  "reply-to": "r", "expiration": "60000", "message-id": "m",
                  "timestamp": 2 ** 64 - 1, "type": "t", "user-id": "guest", "app-id": "a",
                  "reserved": "x"}
    assert decode(properties) == properties
    assert decode({}) == {}


def test_bounds_refuse_and_say_which():
    assert decode({"headers": nestedTable(8)})["headers"]
    assert decode({"headers": nestedTable(9)}) == {REFUSED: "header tables nested deeper than 8"}
    assert decode({"headers": {"a": [[[[[[[1]]]]]]]}})["headers"]
    assert decode({"headers": {"a": [[[[[[[[1]]]]]]]]}}) == {
        REFUSED: "header tables nested deeper than 8"}
    assert decode({"headers": {f"{i}": None for i in range(128)}})["headers"]
    assert decode({"headers": {f"{i}": None for i in range(129)}}) == {
        REFUSED: "header tables with more than 128 fields"}
    # Array items count too, at every depth.
    assert decode({"headers": {"a": [None] * 127}})["headers"]
    assert decode({"headers": {"a": [None] * 128}}) == {
        REFUSED: "header tables with more than 128 fields"}
    # Bytes: from the frame alone, before decoding.
    small = PropertyLimits(maxBytes=100)
    assert decode({"content-type": "x" * 97}, small) == {"content-type": "x" * 97}
    assert decode({"content-type": "x" * 98}, small) == {REFUSED: "101 bytes of properties, over 100"}


def test_undecodable_properties_are_refused_not_raised():
    cases = [
        ({"content-type": Raw(shortstr(b"\xff"))}, "content-type is not UTF-8"),
        ({"headers": {b"\xff": 1}}, "a header name is not UTF-8"),
        ({"headers": {"a": Raw(b"Q")}}, "unknown header field type b'Q'"),
        ({"headers": Raw(struct.pack("!I", 100) + b"\x01a")}, "truncated table at byte 18"),
        ({"headers": Raw(struct.pack("!I", 3) + b"\x01aI\x00\x00\x00\x01")},
         "a header table's length does not match its fields"),
        ({"headers": {"a": Raw(b"I\x00")}}, "truncated table at byte 21"),
        ({"content-type": Raw(b"\x05ab")}, "truncated at byte 15"),
    ]
    for properties, why in cases:
        assert decode(properties) == {REFUSED: why}, properties


def test_property_flags_may_not_continue_for_ever():
    header = decodeContentHeader(SPEC, struct.pack("!HHQ", 60, 0, 1) + b"\x00\x01" * 8000, LIMITS)
    assert header.properties == {REFUSED: "property flags continued past every known property"}


def test_a_header_of_an_unknown_class_is_refused_with_its_body_size():
    header = decodeContentHeader(SPEC, struct.pack("!HHQH", 999, 0, 42, 0), LIMITS)
    assert header.size == 42 and header.properties == {REFUSED: "a content header of unknown class 999"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 0xFFFF))
def test_no_bytes_make_the_decoder_raise(tail, flags):
    payload = struct.pack("!HHQH", 60, 0, 3, flags | 0x0001 if flags & 0x8000 else flags) + tail
    header = decodeContentHeader(SPEC, payload, LIMITS)
    assert header.size == 3


def test_the_client_reads_a_refused_delivery_whole_and_stays_connected():
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from txamqp.connection import Body, Frame, Method

    from resmon.bus.connection import Delegate, ResmonAMQClient

    client = ResmonAMQClient(Delegate(None, None), vhost="/", spec=SPEC, heartbeat=0, clock=Clock())
    transport = StringTransport()
    client.makeConnection(transport)
    deliver = SPEC.classes.byname["basic"].methods.byname["deliver"]

    def delivery(tag, header, body):
        frames = [client._pack_frame(Frame(1, Method(deliver, "ctag", tag, False, "ex", "h.measure"))),
                  struct.pack("!BHI", 2, 1, len(header)) + header + b"\xce",
                  client._pack_frame(Frame(1, Body(body)))]
        return b"".join(frames)

    deep = contentHeader(4, {"headers": nestedTable(3000)})
    odd = contentHeader(4, {"headers": {"list": [1, None], "big": 2 ** 40}})
    # Both deliveries in one read, the way TCP may hand them over.
    client.dataReceived(delivery(1, deep, b"bad!") + delivery(2, odd, b"good"))
    messages = []
    client.queue("ctag").addCallback(lambda queue: [queue.get().addCallback(messages.append)
                                                    for _ in range(2)])
    assert [(m.delivery_tag, m.content.body) for m in messages] == [(1, b"bad!"), (2, b"good")]
    assert messages[0].content.properties == {REFUSED: "20999 bytes of properties, over 16384"}
    assert messages[1].content.properties == {"headers": {"list": [1, None], "big": 2 ** 40}}
    assert not transport.disconnecting
