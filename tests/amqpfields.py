"""
An encoder for AMQP 0-9-1 content headers that writes every field type of
RabbitMQ's errata (txAMQP's encoder writes only S, I and tables), odd
property values and deliberately broken bytes: what pika and other clients
put on the wire, and worse.
"""

import struct
from decimal import Decimal

BASIC_CLASS = 60
# The basic class's properties, in flag order, with their AMQP types.
PROPERTIES = [
    ("content-type", "shortstr"), ("content-encoding", "shortstr"), ("headers", "table"),
    ("delivery-mode", "octet"), ("priority", "octet"), ("correlation-id", "shortstr"),
    ("reply-to", "shortstr"), ("expiration", "shortstr"), ("message-id", "shortstr"),
    ("timestamp", "timestamp"), ("type", "shortstr"), ("user-id", "shortstr"),
    ("app-id", "shortstr"), ("reserved", "shortstr"),
]


class Field:
    """
    A header value with an explicit field type, e.g. C{Field("b", -3)}.
    """

    def __init__(self, kind, value):
        self.kind = kind
        self.value = value

    def __repr__(self):
        return f"Field({self.kind!r}, {self.value!r})"


class Raw:
    """
    Bytes written as they are, where a value (or a whole property) goes.
    """

    def __init__(self, data):
        self.data = data

    def __repr__(self):
        return f"Raw({self.data[:40]!r}{'...' if len(self.data) > 40 else ''})"


_FIXED = {"b": "!b", "B": "!B", "s": "!h", "u": "!H", "I": "!i", "i": "!I",
          "l": "!q", "L": "!Q", "f": "!f", "d": "!d", "T": "!Q"}


def _text(value):
    return value if isinstance(value, bytes) else value.encode("utf-8")


def shortstr(value):
    data = _text(value)
    return struct.pack("!B", len(data)) + data


def longstr(value):
    data = _text(value)
    return struct.pack("!I", len(data)) + data


def value(v):
    """
    A typed field value: C{Field}s as they say, else by Python type (str S,
    bytes x, bool t, int I or l, float d, None V, Decimal D, list A, dict F).
    """
    if isinstance(v, Raw):
        return v.data
    if not isinstance(v, Field):
        if isinstance(v, bool):
            v = Field("t", v)
        elif isinstance(v, int):
            v = Field("I" if -2 ** 31 <= v < 2 ** 31 else "l", v)
        elif isinstance(v, float):
            v = Field("d", v)
        elif isinstance(v, str):
            v = Field("S", v)
        elif isinstance(v, bytes):
            v = Field("x", v)
        elif v is None:
            v = Field("V", None)
        elif isinstance(v, Decimal):
            v = Field("D", v)
        elif isinstance(v, (list, tuple)):
            v = Field("A", v)
        elif isinstance(v, dict):
            v = Field("F", v)
        else:
            raise TypeError(v)
    kind, inner = v.kind, v.value
    tag = kind.encode()
    if kind in _FIXED:
        return tag + struct.pack(_FIXED[kind], inner)
    if kind == "t":
        return tag + struct.pack("!B", 1 if inner else 0)
    if kind in ("S", "x"):
        return tag + longstr(inner)
    if kind == "V":
        return tag
    if kind == "D":
        sign, digits, exponent = inner.as_tuple()
        unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        return tag + struct.pack("!Bi", -exponent, unscaled)
    if kind == "A":
        items = b"".join(value(item) for item in inner)
        return tag + struct.pack("!I", len(items)) + items
    if kind == "F":
        return tag + table(inner)
    raise ValueError(kind)


def table(entries):
    """
    A field table (length-prefixed); keys are str or bytes.
    """
    data = b"".join(shortstr(key) + value(v) for key, v in entries.items())
    return struct.pack("!I", len(data)) + data


def nestedTable(depth):
    """
    A header table C{depth} tables deep, built without recursion.
    """
    data = struct.pack("!I", 0)
    for _ in range(depth - 1):
        entry = shortstr("n") + b"F" + data
        data = struct.pack("!I", len(entry)) + entry
    return Raw(data)


def contentHeader(bodySize, properties):
    """
    The payload of a content-header frame of the basic class.

    @param properties: property name to value: a str/bytes for a shortstr,
        an int for an octet or a timestamp, a dict (or L{Raw}) for headers.
    """
    flags, encoded = 0, b""
    for index, (name, kind) in enumerate(PROPERTIES):
        if name not in properties:
            continue
        flags |= 1 << (15 - index)
        v = properties[name]
        if isinstance(v, Raw):
            encoded += v.data
        elif kind == "shortstr":
            encoded += shortstr(v)
        elif kind == "table":
            encoded += table(v)
        elif kind == "octet":
            encoded += struct.pack("!B", v)
        elif kind == "timestamp":
            encoded += struct.pack("!Q", v)
    return struct.pack("!HHQH", BASIC_CLASS, 0, bodySize, flags) + encoded
