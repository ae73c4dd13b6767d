"""
The bounded content-header decoder (resmon.bus.properties), pinned down where
mutation testing (.ci/mutation.sh) found it unchecked: the shortest
headers, long and empty short strings, continued property flags, huge and
truncated table and array lengths, the class and weight of what it returns.
"""

import struct

import pytest
from txamqp.spec import load as loadSpec

from amqpfields import Raw, contentHeader
from resmon.bus.amqp import SPEC_PATH
from resmon.bus.properties import REFUSED, PropertyLimits, Refused, _Reader, decodeContentHeader

SPEC = loadSpec(SPEC_PATH)
LIMITS = PropertyLimits()


def decode(properties):
    return decodeContentHeader(SPEC, contentHeader(7, properties), LIMITS).properties


def test_a_header_without_its_fixed_part_is_garbage_and_one_without_flags_is_refused():
    with pytest.raises(ValueError, match="^a content header of 11 bytes$"):
        decodeContentHeader(SPEC, b"\x00" * 11, LIMITS)
    header = decodeContentHeader(SPEC, struct.pack("!HHQ", 60, 3, 5), LIMITS)
    assert (header.klass.name, header.weight, header.size) == ("basic", 3, 5)
    assert header.properties == {REFUSED: "truncated at byte 12"}


def test_a_header_of_an_unknown_class_is_read_as_basic_with_its_weight():
    header = decodeContentHeader(SPEC, struct.pack("!HHQH", 999, 2, 42, 0), LIMITS)
    assert (header.klass.name, header.weight, header.size) == ("basic", 2, 42)


def test_short_strings_may_be_empty_or_up_to_255_bytes_long():
    assert decode({"content-type": "", "type": "t" * 255, "app-id": "a" * 128}) == {
        "content-type": "", "type": "t" * 255, "app-id": "a" * 128}


def test_property_flags_continue_into_a_second_word_but_not_a_third():
    basic = struct.pack("!HHQ", 60, 0, 1)
    # content-type present, then a continuation word with no property set.
    header = decodeContentHeader(SPEC, basic + b"\x80\x01\x00\x00\x02ok", LIMITS)
    assert header.properties == {"content-type": "ok"}
    header = decodeContentHeader(SPEC, basic + b"\x80\x01\x00\x01\x00\x00\x02ok", LIMITS)
    assert header.properties == {REFUSED: "property flags continued past every known property"}


class Field:
    def __init__(self, name, type):
        self.name, self.type = name, type


def test_a_property_of_a_type_the_decoder_does_not_know_is_refused():
    with pytest.raises(Refused, match="^property weird of unknown type bit$"):
        _Reader(b"\x80\x00\x01", 0, LIMITS).properties([Field("weird", "bit")])


def test_table_and_array_lengths_that_lie_are_refused_and_say_which():
    def array(data):
        return {"headers": {"a": Raw(b"A" + data)}}
    cases = [
        # A length of 2 GiB or more, read as unsigned: past the frame's end.
        ({"headers": Raw(struct.pack("!I", 0x80000000))}, "truncated table at byte 18"),
        (array(struct.pack("!I", 100)), "truncated array at byte 25"),
        (array(struct.pack("!I", 2) + b"I\x00"), "truncated array at byte 26"),
        (array(struct.pack("!I", 3) + b"I\x00\x00\x00\x01"),
         "a header array's length does not match its fields"),
        (array(struct.pack("!I", 0x80000000)), "truncated array at byte 25"),
    ]
    for properties, why in cases:
        assert decode(properties) == {REFUSED: why}, properties
