"""
Every place where resmon works around txAMQP 0.8.2 or Twisted, and only
those: the rest of L{resmon.bus} reads as if both behaved.

Each workaround is pinned by C{tests/test_bus_workarounds.py} twice: once
showing that the unpatched code still misbehaves (when that test fails, the
library was fixed: drop the workaround), once showing that with it the
behaviour is right.

Codec (patched into txAMQP on import of this module, see L{applyCodecFixes}):

 1. Field tables: txAMQP encodes every non-string value as a 32-bit
    integer, so C{True} goes out as C{I 1}. RabbitMQ insists on a boolean
    for queue arguments such as C{x-single-active-consumer} and closes the
    channel with C{PRECONDITION_FAILED} otherwise. L{bool} is encoded as the
    AMQP boolean.
 2. Message bodies: txAMQP decodes each body frame to L{str} when it
    happens to be valid UTF-8, then counts the body's size in characters. A
    body with multi-byte characters therefore looks short, txAMQP reads the
    next method frame as more body, and the connection dies (a measure with
    a host name such as C{"hôte"} was enough). Body frames stay L{bytes}.
 3. Strings: txAMQP writes a string's length in characters before encoding
    it to UTF-8, which corrupts the frame for any non-ASCII short or long
    string (a routing key, a header). The length is taken after encoding.
 4. Nested field tables: txAMQP encodes a L{dict} value as an integer (and
    fails). The client properties' C{capabilities} are a nested table (see
    L{CLIENT_PROPERTIES}); a L{dict} is encoded as one.

Protocol (L{WorkaroundClient}, L{WorkaroundDelegate} and helpers):

 5. Content headers are decoded within bounds and never raise (see
    L{resmon.bus.properties}): txAMQP's decoder raising in the frame parser
    drops the connection, and the broker redelivers the message for ever.
 6. A channel the broker closes (C{channel.close}: a 404 on a deleted
    exchange, a precondition failure) is silently dead in txAMQP: its
    consumers wait for ever. The connection is dropped instead, so the
    reconnect declares and consumes everything again, unless the channel
    has a L{CLOSE_HANDLER} that recovers on the same connection (the
    publish channel after a refused publish, L{resmon.bus.refusals}).
 7. txAMQP sends no client properties in C{connection.start-ok}, so
    RabbitMQ assumes a client without C{consumer_cancel_notify} and never
    says when a queue resmon consumes from is deleted. L{CLIENT_PROPERTIES}
    advertises it.
 8. txAMQP's delegate has no C{basic_cancel}: the broker's C{basic.cancel}
    raises L{AttributeError} in txAMQP's dispatcher, which closes the whole
    connection. L{WorkaroundDelegate.basic_cancel} hands it to
    C{consumerCancelled}.
 9. txAMQP keeps a consumer's message queue in C{client.queues} for ever,
    and a channel closed at our request stays C{closed = False}, so
    acknowledging on it afterwards would be a channel error:
    L{forgetConsumer} and L{closeChannel}.
 10. A content with an empty body comes as C{''} (L{str}), any other as
    L{bytes}: L{bodyBytes}.
 11. txAMQP does not say why a connection was lost (its C{disconnected}
    event fires with L{True}): L{WorkaroundClient} keeps C{lostReason}.
 12. Twisted's L{ClientService} leaves a connection whose
    C{prepareConnection} failed open; its loss, whenever it comes, reaches
    ClientService's state machine in a state with no transition for it
    (C{automat.NoTransition}, logged as an unhandled error).
    L{abandonConnection} closes it unannounced.
 13. txAMQP 0.8.2 ships no AMQP 0-9-1 spec, and the plain one lacks
    publisher confirms: resmon carries RabbitMQ's extended spec,
    L{SPEC_PATH} (see C{SPEC-ORIGIN.md} beside it).
 14. txAMQP keeps a channel the broker closed in C{client.channels}, so
    asking for its number again hands back the closed one:
    L{reopenChannel}.
"""

import os
import struct
from io import BytesIO

from twisted.logger import Logger
from txamqp import codec, connection
from txamqp.client import Closed, TwistedDelegate
from txamqp.connection import Frame
from txamqp.protocol import AMQClient, GarbageException

from resmon.bus.exchange import PROBING
from resmon.bus.properties import FRAME_HEADER, PropertyLimits, decodeContentHeader

# The attribute of a channel holding a callable that gets the broker's close
# (a Failure) and returns true if it recovers without a reconnect (6).
CLOSE_HANDLER = "resmonCloseHandler"

SPEC_PATH = os.path.join(os.path.dirname(__file__), "amqp0-9-1.stripped.extended.xml")

# What resmon tells the broker in connection.start-ok (workaround 7):
# advertised, the broker sends basic.cancel when a consumed queue is deleted.
CLIENT_PROPERTIES = {
    "product": "resmon",
    "capabilities": {
        "consumer_cancel_notify": True,
        "publisher_confirms": True,
        "basic.nack": True,
        # A refused login is a connection.close naming it, not a silent drop
        # (resmon.bus.errors says which user and vhost).
        "authentication_failure_close": True,
    },
}

# txAMQP's own codec functions, before L{applyCodecFixes}.
ORIGINAL_ENCODE_TABLE = codec.Codec.encode_table
ORIGINAL_ENCODE_STRING = codec.Codec.enc_str
ORIGINAL_DECODE_BODY = connection.Body.decode


def _encodeTable(self, table):
    if not any(isinstance(value, (bool, dict)) for value in table.values()):
        return ORIGINAL_ENCODE_TABLE(self, table)
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
            ORIGINAL_ENCODE_TABLE(codec.Codec(part), {key: value})
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


def applyCodecFixes():
    """
    Install the codec fixes 1 to 4 into txAMQP (idempotent; done on import).
    """
    codec.Codec.encode_table = _encodeTable
    connection.Body.decode = staticmethod(_decodeBody)
    codec.Codec.enc_str = _encodeString


def removeCodecFixes():
    """
    Put txAMQP's own codec back, for the tests that check it still needs
    the fixes.
    """
    codec.Codec.encode_table = ORIGINAL_ENCODE_TABLE
    connection.Body.decode = ORIGINAL_DECODE_BODY
    codec.Codec.enc_str = ORIGINAL_ENCODE_STRING


applyCodecFixes()


class WorkaroundClient(AMQClient):
    """
    An L{AMQClient} that decodes content headers within C{propertyLimits}
    (5), drops the connection when the broker closes a channel (6) and
    keeps why the connection was lost in C{lostReason} (11).
    """

    log = Logger()
    lostReason = None

    def __init__(self, *args, propertyLimits=None, **kwargs):
        AMQClient.__init__(self, *args, **kwargs)
        self.propertyLimits = propertyLimits if propertyLimits is not None else PropertyLimits()

    def _unpack_frame(self, data):
        if data[0] != FRAME_HEADER:
            return AMQClient._unpack_frame(self, data)
        channel, size = struct.unpack_from("!HI", data, 1)
        if data[7 + size] != self.FRAME_END:
            raise GarbageException(f"frame error: expected {self.FRAME_END!r}, got {data[7 + size]!r}")
        return Frame(channel, decodeContentHeader(self.spec, data[7:7 + size], self.propertyLimits))

    def connectionLost(self, reason):
        self.lostReason = reason
        AMQClient.connectionLost(self, reason)

    def channel_failed(self, channel, reason):
        if getattr(channel, PROBING, False):
            return  # a declaration the broker may refuse (resmon.bus.exchange)
        handler = getattr(channel, CLOSE_HANDLER, None)
        if handler is not None and handler(reason):
            return
        self.log.warn("broker closed channel {channel}: {reason}; reconnecting",
                      channel=channel.id, reason=reason.getErrorMessage())
        if self.transport is not None:
            self.transport.loseConnection()


class WorkaroundDelegate(TwistedDelegate):
    """
    A L{TwistedDelegate} that advertises L{CLIENT_PROPERTIES} (7) and
    handles the broker's C{basic.cancel} (8) by calling
    C{consumerCancelled(channel, consumerTag)}, which subclasses define.
    """

    def connection_start(self, channel, message):
        channel.connection_start_ok(
            client_properties=CLIENT_PROPERTIES, mechanism=self.client.mechanism,
            response=self.client.response, locale=self.client.locale)

    def basic_cancel(self, channel, message):
        self.consumerCancelled(channel, message.consumer_tag)

    def consumerCancelled(self, channel, consumerTag):
        raise NotImplementedError()


def forgetConsumer(client, consumerTag):
    """
    Close and forget the message queue txAMQP keeps for C{consumerTag} (9):
    whoever reads it sees it closed.
    """
    messages = client.queues.pop(consumerTag, None)
    if messages is not None:
        messages.close()


def closeChannel(channel, why):
    """
    Close C{channel} with the broker, then mark it closed (9), so that
    nothing more is sent on it.

    @return: a L{Deferred} that fires once the broker closed it.
    """
    d = channel.channel_close()
    d.addCallback(lambda _: channel.close(Closed(why)))
    return d


def bodyBytes(body):
    """
    A content's body as L{bytes} (10).
    """
    return body if isinstance(body, bytes) else body.encode("utf-8")


def reopenChannel(client, channelId):
    """
    A new channel numbered C{channelId}, whose earlier channel the broker
    closed (14): a L{Deferred} of it, not yet opened.
    """
    client.channels.pop(channelId, None)
    return client.channel(channelId)


def abandonConnection(client):
    """
    Close C{client}'s connection, whose preparation failed, without telling
    L{ClientService} (12).
    """
    if hasattr(client, "_lostNotification"):
        client._lostNotification = lambda reason: None
    if client.transport is not None:
        client.transport.abortConnection()
