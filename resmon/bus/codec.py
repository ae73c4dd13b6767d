"""
Fixes to txAMQP 0.8.2's codec, applied on import of L{resmon.bus.amqp}.

1. Field tables: txAMQP encodes every non-string value as a 32-bit integer,
   so C{True} goes out as C{I 1}. RabbitMQ insists on a boolean for queue
   arguments such as C{x-single-active-consumer} and closes the channel with
   C{PRECONDITION_FAILED} otherwise. L{bool} is encoded as the AMQP boolean.
2. Message bodies: txAMQP decodes each body frame to L{str} when it happens
   to be valid UTF-8, then counts the body's size in characters. A body
   with multi-byte characters therefore looks short, txAMQP reads the next
   method frame as more body, and the connection dies (a measure with a host
   name such as C{"hôte"} was enough). Body frames stay L{bytes}.
3. Strings: txAMQP writes a string's length in characters before encoding
   it to UTF-8, which corrupts the frame for any non-ASCII short or long
   string (a routing key, a header). The length is taken after encoding.
4. Nested field tables: txAMQP encodes a L{dict} value as an integer (and
   fails). The client properties' C{capabilities} are a nested table (see
   L{resmon.bus.amqp.CLIENT_PROPERTIES}); a L{dict} is encoded as one.
"""

from io import BytesIO

from txamqp import codec, connection

_originalEncodeTable = codec.Codec.encode_table


def _encodeTable(self, table):
    if not any(isinstance(value, (bool, dict)) for value in table.values()):
        return _originalEncodeTable(self, table)
    encoded = BytesIO()
    inner = codec.Codec(encoded)
    for key, value in table.items():
        if isinstance(value, bool):
            inner.encode_shortstr(key)
            inner.write(b"t")
            inner.encode_octet(1 if value else 0)
        elif isinstance(value, dict):
            inner.encode_shortstr(key)
            inner.write(b"F")
            inner.encode_table(value)
        else:
            # One entry through txAMQP's own encoder, without its length prefix.
            part = BytesIO()
            _originalEncodeTable(codec.Codec(part), {key: value})
            inner.write(part.getvalue()[4:])
    data = encoded.getvalue()
    self.encode_long(len(data))
    self.write(data)


def _decodeBody(spec, decoder):
    return connection.Body(decoder.decode_longbytes())


def _encodeString(self, fmt, text):
    if not isinstance(text, bytes):
        text = text.encode("utf-8")
    self.pack(fmt, len(text))
    self.write(text)


def apply():
    """
    Install the fixes (idempotent).
    """
    if codec.Codec.encode_table is _originalEncodeTable:
        codec.Codec.encode_table = _encodeTable
    connection.Body.decode = staticmethod(_decodeBody)
    codec.Codec.enc_str = _encodeString


apply()
