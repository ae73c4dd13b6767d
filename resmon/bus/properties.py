"""
Decoding of AMQP content-header frames (a message's properties), with bounds.

txAMQP 0.8.2 decodes a content header inside its frame parser: a header
table it cannot decode (a field type it does not know, such as the C{A},
C{l} or C{V} that pika sends, or a table nested thousands deep) raises
there, the connection drops, and the broker redelivers the same message to
the next consumer, for ever. L{decodeContentHeader} decodes every field
type of AMQP 0-9-1 as RabbitMQ's errata defines them, refuses a header over
L{PropertyLimits} (its size from the frame header, before decoding; its
depth and field count while decoding, stopping at the first field over),
and never raises for the properties themselves: a header it refuses comes
back with no properties but L{REFUSED}, saying why, so the delivery is
still read whole (its body frames) and then rejected by the bus.
"""

import struct
from decimal import Decimal

from txamqp.connection import Header

# The key of the one property a refused content header carries: no field of
# the AMQP basic class can have this name.
REFUSED = "resmon:refused"

FRAME_HEADER = 2
# class-id, weight, body-size: what every content header starts with.
_FIXED = struct.Struct("!HHQ")

DEFAULT_MAX_PROPERTIES_BYTES = 16384
DEFAULT_MAX_TABLE_DEPTH = 8
DEFAULT_MAX_TABLE_FIELDS = 128


class PropertyLimits:
    """
    Bounds on a content header.

    @param maxBytes: the most bytes of properties (the frame's payload after
        its fixed part); a larger header is refused from its frame header,
        without decoding any of it.
    @param maxDepth: how deep tables and arrays may nest in the C{headers}
        table (the table itself is depth 1).
    @param maxFields: how many fields (table entries and array items, at
        every depth) the C{headers} table may hold in all.
    """

    def __init__(self, maxBytes=DEFAULT_MAX_PROPERTIES_BYTES, maxDepth=DEFAULT_MAX_TABLE_DEPTH,
                 maxFields=DEFAULT_MAX_TABLE_FIELDS):
        self.maxBytes = maxBytes
        self.maxDepth = maxDepth
        self.maxFields = maxFields


class Refused(Exception):
    """
    A content header that is over a bound or cannot be decoded; the message
    says which and where.
    """


def decodeContentHeader(spec, payload, limits):
    """
    Decode a content-header frame's payload.

    @param spec: the txAMQP spec (for the basic class and its fields).
    @param payload: the frame's payload, L{bytes}.
    @param limits: a L{PropertyLimits}.
    @return: a txAMQP L{Header}; if its properties were refused, they are
        C{{REFUSED: why}}.
    @raise ValueError: the fixed part (class, weight, body size) is missing
        or names an unknown class: the frame itself is garbage.
    """
    if len(payload) < _FIXED.size:
        raise ValueError(f"a content header of {len(payload)} bytes")
    classId, weight, size = _FIXED.unpack_from(payload, 0)
    klass = spec.classes.byid[classId]
    try:
        if len(payload) - _FIXED.size > limits.maxBytes:
            raise Refused(f"{len(payload) - _FIXED.size} bytes of properties, over {limits.maxBytes}")
        properties = _Reader(payload, _FIXED.size, limits).properties(klass.fields)
    except Refused as e:
        properties = {REFUSED: str(e)}
    return Header(klass, weight, size, **properties)


class _Reader:
    """
    Reads AMQP 0-9-1 values from C{data} at C{offset}, counting the fields
    of tables and arrays against the limits.
    """

    def __init__(self, data, offset, limits):
        self.data = data
        self.offset = offset
        self.limits = limits
        self.fields = 0

    def take(self, count):
        start = self.offset
        end = start + count
        if count < 0 or end > len(self.data):
            raise Refused(f"truncated at byte {start}")
        self.offset = end
        return self.data[start:end]

    def unpack(self, fmt):
        layout = _STRUCTS[fmt]
        start = self.offset
        if start + layout.size > len(self.data):
            raise Refused(f"truncated at byte {start}")
        self.offset = start + layout.size
        return layout.unpack_from(self.data, start)[0]

    def properties(self, fields):
        present = []
        while True:
            flags = self.unpack("!H")
            present.extend(bool(flags >> bit & 1) for bit in range(15, 0, -1))
            if not flags & 1:
                break
        properties = {}
        for isPresent, field in zip(present, fields):
            if isPresent:
                properties[str(field.name)] = self.property(field)
        return properties

    def property(self, field):
        kind = field.type
        try:
            if kind == "shortstr":
                return self.shortstr(field.name)
            if kind == "table":
                return self.table(1)
            return self.unpack(_PROPERTY_FORMATS[kind])
        except KeyError:
            raise Refused(f"property {field.name} of unknown type {kind}") from None

    def shortstr(self, what):
        raw = self.take(self.unpack("!B"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(f"{what} is not UTF-8") from None

    def table(self, depth):
        if depth > self.limits.maxDepth:
            raise Refused(f"header tables nested deeper than {self.limits.maxDepth}")
        size = self.unpack("!I")
        end = self.offset + size
        if end > len(self.data):
            raise Refused(f"truncated table at byte {self.offset}")
        table = {}
        while self.offset < end:
            self.count()
            key = self.shortstr("a header name")
            table[key] = self.value(depth)
        if self.offset != end:
            raise Refused("a header table's length does not match its fields")
        return table

    def array(self, depth):
        if depth > self.limits.maxDepth:
            raise Refused(f"header tables nested deeper than {self.limits.maxDepth}")
        size = self.unpack("!I")
        end = self.offset + size
        if end > len(self.data):
            raise Refused(f"truncated array at byte {self.offset}")
        items = []
        while self.offset < end:
            self.count()
            items.append(self.value(depth))
        if self.offset != end:
            raise Refused("a header array's length does not match its items")
        return items

    def count(self):
        self.fields += 1
        if self.fields > self.limits.maxFields:
            raise Refused(f"header tables with more than {self.limits.maxFields} fields")

    def value(self, depth):
        kind = self.take(1)
        if kind == b"F":
            return self.table(depth + 1)
        if kind == b"A":
            return self.array(depth + 1)
        if kind == b"S":
            raw = self.take(self.unpack("!I"))
            try:
                return raw.decode("utf-8")  # txAMQP's own choice: text when it is UTF-8
            except UnicodeDecodeError:
                return raw
        if kind == b"x":
            return self.take(self.unpack("!I"))
        if kind == b"V":
            return None
        if kind == b"D":
            scale = self.unpack("!B")
            return Decimal(self.unpack("!i")).scaleb(-scale)
        if kind == b"t":
            return self.unpack("!B") != 0
        fmt = _VALUE_FORMATS.get(kind)
        if fmt is None:
            raise Refused(f"unknown header field type {kind!r}")
        return self.unpack(fmt)


_PROPERTY_FORMATS = {"octet": "!B", "short": "!H", "long": "!I", "longlong": "!Q",
                     "timestamp": "!Q"}

# Field types with a fixed-size value, as RabbitMQ's errata to AMQP 0-9-1
# defines them (what RabbitMQ, pika and most clients use).
_VALUE_FORMATS = {
    b"b": "!b", b"B": "!B",
    b"s": "!h", b"u": "!H",
    b"I": "!i", b"i": "!I",
    b"l": "!q", b"L": "!Q",
    b"f": "!f", b"d": "!d",
    b"T": "!Q",
}

_STRUCTS = {fmt: struct.Struct(fmt) for fmt in
            set(_PROPERTY_FORMATS.values()) | set(_VALUE_FORMATS.values()) | {"!B", "!H", "!I", "!i"}}
