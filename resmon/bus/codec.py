"""
A fix to txAMQP 0.8.2's field-table encoding, applied on import.

txAMQP encodes every non-string table value as a 32-bit integer, so
C{True} goes out as C{I 1}. RabbitMQ insists on a boolean for queue
arguments such as C{x-single-active-consumer} and closes the channel with
C{PRECONDITION_FAILED} otherwise. This encodes L{bool} as the AMQP boolean
(C{t}) and leaves every other type as txAMQP has it.
"""

from io import BytesIO

from txamqp import codec

_originalEncodeTable = codec.Codec.encode_table


def _encodeTable(self, table):
    if not any(isinstance(value, bool) for value in table.values()):
        return _originalEncodeTable(self, table)
    encoded = BytesIO()
    inner = codec.Codec(encoded)
    for key, value in table.items():
        if isinstance(value, bool):
            inner.encode_shortstr(key)
            inner.write(b"t")
            inner.encode_octet(1 if value else 0)
        else:
            # One entry through txAMQP's own encoder, without its length prefix.
            part = BytesIO()
            _originalEncodeTable(codec.Codec(part), {key: value})
            inner.write(part.getvalue()[4:])
    data = encoded.getvalue()
    self.encode_long(len(data))
    self.write(data)


if codec.Codec.encode_table is _originalEncodeTable:
    codec.Codec.encode_table = _encodeTable
