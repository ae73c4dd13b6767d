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
    @raise ValueError: the fixed part (class, weight, body size) is missing:
        the frame itself is garbage.
    """
    if len(payload) < _FIXED.size:
        raise ValueError(f"a content header of {len(payload)} bytes")
    classId, weight, size = _FIXED.unpack_from(payload, 0)
    klass = spec.classes.byid.get(classId)
    if klass is None:
        # Still a delivery whose body follows: read it, then reject it.
        return Header(spec.classes.byname["basic"], weight, size,
                      **{REFUSED: f"a content header of unknown class {classId}"})
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
            if len(present) > len(fields) + 15:
                raise Refused("property flags continued past every known property")
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
        return self.fieldsOf(depth, True)

    def fieldsOf(self, depth, isTable):
        """
        A table (or an array) at C{self.offset}, C{depth} deep: one loop
        with local variables, as this is where a hostile header spends time.
        """
        limits = self.limits
        if depth > limits.maxDepth:
            raise Refused(f"header tables nested deeper than {limits.maxDepth}")
        data = self.data
        size = self.unpack("!I")
        offset = self.offset
        end = offset + size
        if end > len(data):
            raise Refused(f"truncated {'table' if isTable else 'array'} at byte {offset}")
        result = {} if isTable else []
        fields, maxFields = self.fields, limits.maxFields
        try:
            while offset < end:
                fields += 1
                if fields > maxFields:
                    raise Refused(f"header tables with more than {maxFields} fields")
                if isTable:
                    keyEnd = offset + 1 + data[offset]
                    try:
                        key = data[offset + 1:keyEnd].decode("utf-8")
                    except UnicodeDecodeError:
                        raise Refused("a header name is not UTF-8") from None
                    offset = keyEnd
                kind = data[offset:offset + 1]
                offset += 1
                layout = _VALUE_STRUCTS.get(kind)
                if layout is not None:
                    value, = layout.unpack_from(data, offset)
                    offset += layout.size
                elif kind == b"S" or kind == b"x":
                    length, = _LENGTH.unpack_from(data, offset)
                    offset += 4
                    value = data[offset:offset + length]
                    offset += length
                    if kind == b"S":
                        try:
                            value = value.decode("utf-8")  # txAMQP's choice: text when it is UTF-8
                        except UnicodeDecodeError:
                            pass
                elif kind == b"V":
                    value = None
                elif kind == b"t":
                    value = data[offset] != 0
                    offset += 1
                elif kind == b"F" or kind == b"A":
                    self.offset, self.fields = offset, fields
                    value = self.fieldsOf(depth + 1, kind == b"F")
                    offset, fields = self.offset, self.fields
                elif kind == b"D":
                    scale, unscaled = _DECIMAL.unpack_from(data, offset)
                    offset += _DECIMAL.size
                    # Rare in headers: loaded when met (the agent never is).
                    from decimal import Decimal
                    value = Decimal(unscaled).scaleb(-scale)
                else:
                    raise Refused(f"unknown header field type {kind!r}")
                if isTable:
                    result[key] = value
                else:
                    result.append(value)
        except (struct.error, IndexError):
            raise Refused(f"truncated {'table' if isTable else 'array'} at byte {offset}") from None
        if offset != end:
            raise Refused(f"a header {'table' if isTable else 'array'}'s length does not match its fields")
        self.offset, self.fields = offset, fields
        return result


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

_VALUE_STRUCTS = {kind: struct.Struct(fmt) for kind, fmt in _VALUE_FORMATS.items()}
_LENGTH = struct.Struct("!I")
_DECIMAL = struct.Struct("!Bi")
_STRUCTS = {fmt: struct.Struct(fmt) for fmt in
            set(_PROPERTY_FORMATS.values()) | set(_VALUE_FORMATS.values()) | {"!B", "!H", "!I", "!i"}}
