"""
Every workaround of L{resmon.bus.workarounds}, pinned twice, with real
txAMQP and Twisted objects (and the real broker where the workaround is
about what the broker does):

 - C{test_..._still_needed}: txAMQP or Twisted without the workaround still
   misbehaves. When one of these fails, the library was fixed: drop the
   workaround, and these two tests.
 - the other: with the workaround, the behaviour is right (it fails if the
   workaround is removed).

The numbers are those of the module docstring of L{resmon.bus.workarounds}.
The queue deleted under running processes, end to end:
C{tests/test_integration_queue_deleted.py}.
"""

import os
import struct
from io import BytesIO

import pytest
import pytest_twisted
from automat import NoTransition
from twisted.application.internet import ClientService
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from txamqp.client import Closed, TwistedDelegate
from txamqp.codec import Codec
from txamqp.connection import Body, Frame, Method
from txamqp.message import Message
from txamqp.protocol import AMQClient
from txamqp.queue import Closed as QueueClosed
from txamqp.spec import load as loadSpec

from amqpfields import contentHeader, nestedTable
from resmon.bus import workarounds
from resmon.bus.amqp import SPEC_PATH, AMQPBus
from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.connection import ClientFactory, Delegate, ResmonAMQClient
from resmon.bus.properties import REFUSED, PropertyLimits
from support import uniqueName, withTimeout

SPEC = loadSpec(SPEC_PATH)


@pytest.fixture
def txamqpCodec():
    """
    txAMQP's own codec, without the fixes 1 to 4, for the test's duration.
    """
    workarounds.removeCodecFixes()
    try:
        yield
    finally:
        workarounds.applyCodecFixes()


def encoded(method, *args):
    buffer = BytesIO()
    getattr(Codec(buffer), method)(*args)
    return buffer.getvalue()


def decoded(method, data):
    return getattr(Codec(BytesIO(data)), method)()


def method(klass, name):
    return SPEC.classes.byname[klass].methods.byname[name]


def connectedClient(client):
    """
    C{client} (an L{AMQClient}) over a L{StringTransport}, as after the
    protocol header.
    """
    transport = StringTransport()
    client.makeConnection(transport)
    transport.clear()
    return client, transport


def plainClient():
    return connectedClient(AMQClient(TwistedDelegate(), "/", SPEC, heartbeat=0, clock=Clock()))


class RecordingConsumers:
    def __init__(self):
        self.cancelled = []
        self.whenCancelled = defer.Deferred()

    def consumerCancelled(self, client, channel, consumerTag):
        self.cancelled.append((client, channel.id, consumerTag))
        self.whenCancelled.callback(consumerTag)
        return defer.succeed(None)


def resmonClient(consumers=None):
    return connectedClient(ResmonAMQClient(
        Delegate(None, consumers), "/", SPEC, heartbeat=0, clock=Clock()))


def fromBroker(client, channel, payload):
    client.dataReceived(client._pack_frame(Frame(channel, payload)))


# 1. Booleans in field tables.

def test_txamqp_encodes_a_boolean_table_value_as_an_integer_still_needed(txamqpCodec):
    data = encoded("encode_table", {"x-single-active-consumer": True})
    assert b"x-single-active-consumerI\x00\x00\x00\x01" in data
    assert decoded("decode_table", data) == {"x-single-active-consumer": 1}


def test_a_boolean_table_value_is_an_amqp_boolean():
    data = encoded("encode_table", {"x-single-active-consumer": True, "x-max-length": 5, "s": "v"})
    assert b"x-single-active-consumert\x01" in data
    assert decoded("decode_table", data) == {"x-single-active-consumer": True, "x-max-length": 5,
                                             "s": "v"}


@pytest_twisted.inlineCallbacks
def test_rabbitmq_refuses_txamqps_boolean_queue_argument_still_needed(amqp, txamqpCodec):
    channel = yield amqp.client.channel(11)
    yield channel.channel_open()
    with pytest.raises(Closed, match="PRECONDITION_FAILED"):
        yield channel.queue_declare(queue=uniqueName("resmon.test.sac"), auto_delete=True,
                                    arguments={"x-single-active-consumer": True})


@pytest_twisted.inlineCallbacks
def test_rabbitmq_takes_the_boolean_queue_argument(amqp):
    channel = yield amqp.client.channel(12)
    yield channel.channel_open()
    reply = yield channel.queue_declare(queue=uniqueName("resmon.test.sac"), auto_delete=True,
                                        arguments={"x-single-active-consumer": True})
    yield channel.queue_delete(queue=reply.queue)


# 2. Bodies with multi-byte characters.

BODY = '{"host": "hôte-✓"}'.encode()


def test_txamqp_decodes_a_body_to_str_and_miscounts_it_still_needed(txamqpCodec):
    body = Body.decode(None, Codec(BytesIO(encoded("encode_longstr", BODY))))
    assert isinstance(body.content, str) and len(body.content) < len(BODY)


def test_a_body_stays_bytes():
    buffer = BytesIO()
    Body(BODY).encode(Codec(buffer))
    body = Body.decode(None, Codec(BytesIO(buffer.getvalue())))
    assert body.content == BODY


# 3. Non-ASCII strings.

def test_txamqp_writes_a_strings_length_in_characters_still_needed(txamqpCodec):
    data = encoded("encode_shortstr", "hôte.measure")
    assert data[0] == len("hôte.measure") != len("hôte.measure".encode())


def test_a_non_ascii_string_survives_the_framing():
    data = encoded("encode_shortstr", "hôte.measure")
    assert decoded("decode_shortstr", data) == "hôte.measure"


# 4. Nested field tables.

def test_txamqp_cannot_encode_a_nested_table_still_needed(txamqpCodec):
    with pytest.raises(Exception):
        encoded("encode_table", {"capabilities": {"consumer_cancel_notify": True}})


def test_a_nested_table_is_encoded_as_one():
    table = {"product": "resmon", "capabilities": {"consumer_cancel_notify": True, "n": 3}}
    data = encoded("encode_table", table)
    assert decoded("decode_table", data) == table


# 5. Content headers txAMQP cannot decode.

ODD_HEADER = contentHeader(2, {"headers": {"list": [1, None], "big": 2 ** 40}})


def headerFrame(client, payload):
    return struct.pack("!BHI", 2, 1, len(payload)) + payload + bytes([client.FRAME_END])


def test_txamqps_frame_parser_raises_on_an_undecodable_header_still_needed():
    client, _ = plainClient()
    with pytest.raises(Exception):
        client._unpack_frame(headerFrame(client, ODD_HEADER))


def test_every_header_is_decoded_or_refused_without_raising():
    client, _ = resmonClient()
    frame = client._unpack_frame(headerFrame(client, ODD_HEADER))
    assert frame.channel == 1 and frame.payload.size == 2
    assert frame.payload.properties == {"headers": {"list": [1, None], "big": 2 ** 40}}
    frame = client._unpack_frame(headerFrame(client, contentHeader(2, {"headers": nestedTable(3000)})))
    assert set(frame.payload.properties) == {REFUSED}


# 6. A channel closed by the broker.

def brokerClosesChannel(client):
    client.channel(1)
    fromBroker(client, 1, Method(method("channel", "close"), 404, "NOT_FOUND - no exchange", 40, 10))


def test_txamqp_ignores_a_channel_the_broker_closed_still_needed():
    client, transport = plainClient()
    brokerClosesChannel(client)
    assert client.channels[1].closed and not transport.disconnecting


def test_a_channel_the_broker_closed_drops_the_connection():
    client, transport = resmonClient()
    client.log = type(client.log)(observer=lambda event: None)
    brokerClosesChannel(client)
    assert client.channels[1].closed and transport.disconnecting


def vhostOf(broker):
    return parseBrokerURL(broker).vhost


@defer.inlineCallbacks
def connectTo(broker, client):
    """
    Connect C{client} (an L{AMQClient}, built by this function's caller) to
    the real broker and authenticate.
    """
    url = parseBrokerURL(broker)

    class Factory(protocol.ClientFactory):
        def buildProtocol(self, addr):
            return client
    yield TCP4ClientEndpoint(reactor, url.host, url.port, timeout=5).connect(Factory())
    yield client.authenticate(url.username, url.password)
    return client


@defer.inlineCallbacks
def brokerClosesAChannelOf(client):
    channel = yield client.channel(5)
    yield channel.channel_open()
    with pytest.raises(Closed, match="NOT_FOUND"):
        yield channel.exchange_declare(exchange=uniqueName("resmon.test.missing"), type="topic",
                                       passive=True)


@pytest_twisted.inlineCallbacks
def test_rabbitmq_closes_a_channel_and_txamqp_stays_connected_still_needed(broker):
    client = yield connectTo(broker, AMQClient(TwistedDelegate(), vhostOf(broker), SPEC))
    try:
        yield brokerClosesAChannelOf(client)
        channel = yield client.channel(6)  # the connection still works
        yield channel.channel_open()
        assert not client.transport.disconnecting and not client.closed
    finally:
        yield client.close(within=2)


@pytest_twisted.inlineCallbacks
def test_rabbitmq_closes_a_channel_and_the_connection_is_dropped(broker):
    client = ResmonAMQClient(Delegate(None, None), vhostOf(broker), SPEC)
    client.log = type(client.log)(observer=lambda event: None)
    yield connectTo(broker, client)
    yield brokerClosesAChannelOf(client)
    yield withTimeout(client.disconnected.wait(), 5, "the connection to be dropped")


# 7. consumer_cancel_notify.

def startOk(client, transport):
    """
    Play the broker's connection.start to C{client} and return the
    arguments of the connection.start-ok it answers, decoded from the bytes
    it wrote to C{transport}.
    """
    start = client.spec.classes.byname["connection"].methods.byname["start"]
    server = client._pack_frame(Frame(0, Method(
        start, 0, 9, {"product": "RabbitMQ", "capabilities": {"consumer_cancel_notify": True}},
        "AMQPLAIN PLAIN", "en_US")))
    transport.clear()
    client.dataReceived(server)
    payload = client._unpack_frame(transport.value()).payload
    return Message(payload.method, payload.args)


def clientOver(factory):
    """
    A client built by C{factory}, connected to a L{StringTransport},
    authenticating (so waiting for the broker's connection.start).
    """
    client = factory.buildProtocol(None)
    transport = StringTransport()
    client.makeConnection(transport)
    client.authenticate("guest", "guest")
    return client, transport


def test_txamqp_advertises_nothing_still_needed():
    class PlainFactory:
        def buildProtocol(self, addr):
            return AMQClient(TwistedDelegate(), "/", SPEC, heartbeat=0, clock=Clock())
    reply = startOk(*clientOver(PlainFactory()))
    assert "consumer_cancel_notify" not in (reply.client_properties or {}).get("capabilities", {})


def test_the_bus_advertises_consumer_cancel_notify_in_its_start_ok():
    # Without it RabbitMQ never sends basic.cancel: a deleted queue leaves
    # its consumer waiting for ever.
    bus = AMQPBus(parseBrokerURL("amqp://localhost/"), "ex", Clock())
    reply = startOk(*clientOver(ClientFactory(
        bus.outbox, bus.consumers, bus.spec, "/", 0, Clock(), PropertyLimits())))
    assert reply.method.name == "start-ok"
    capabilities = reply.client_properties["capabilities"]
    assert capabilities["consumer_cancel_notify"] is True
    assert capabilities["publisher_confirms"] is True
    assert reply.mechanism == "AMQPLAIN"


# 8. basic.cancel from the broker.

def brokerCancels(client, tag):
    client.channel(2)
    fromBroker(client, 2, Method(method("basic", "cancel"), tag, True))


def test_a_basic_cancel_closes_txamqps_whole_connection_still_needed():
    client, transport = plainClient()
    assert not hasattr(TwistedDelegate, "basic_cancel")
    brokerCancels(client, "ctag-1")
    assert client.closed and transport.disconnecting


def test_a_basic_cancel_reaches_the_consumers_and_the_connection_stays():
    consumers = RecordingConsumers()
    client, transport = resmonClient(consumers)
    brokerCancels(client, "ctag-1")
    assert consumers.cancelled == [(client, 2, "ctag-1")]
    assert not client.closed and not transport.disconnecting


@pytest_twisted.inlineCallbacks
def test_rabbitmq_cancels_the_consumer_of_a_deleted_queue(broker, amqp):
    # The broker's side of 7 and 8, on a real connection of resmon's client.
    consumers = RecordingConsumers()
    client = yield connectTo(broker, ResmonAMQClient(Delegate(None, consumers), vhostOf(broker), SPEC))
    try:
        channel = yield client.channel(1)
        yield channel.channel_open()
        queue = uniqueName("resmon.test.cancelled")
        yield channel.queue_declare(queue=queue, auto_delete=True)
        consumer = yield channel.basic_consume(queue=queue)
        yield amqp.channel.queue_delete(queue=queue)
        tag = yield withTimeout(consumers.whenCancelled, 5, "basic.cancel from the broker")
        assert tag == consumer.consumer_tag
    finally:
        yield client.close(within=2)


# 9. A consumer's queue and a channel closed at our request.

def closeOk(client, channelId):
    fromBroker(client, channelId, Method(method("channel", "close-ok")))


def test_txamqp_keeps_a_closed_channel_open_and_its_consumer_queues_still_needed():
    client, _ = plainClient()
    channel = client.channel(3).result
    messages = client.queue("ctag-3").result
    closing = channel.channel_close(reply_code=200, reply_text="", class_id=0, method_id=0)
    closeOk(client, 3)
    assert closing.called and channel.closed is False
    assert client.queues["ctag-3"] is messages and not messages.pending


def test_a_closed_channel_is_closed_and_a_forgotten_consumer_queue_ends():
    client, _ = plainClient()
    channel = client.channel(3).result
    messages = client.queue("ctag-3").result
    ended = []
    messages.get().addErrback(lambda f: ended.append(f.type))
    closing = workarounds.closeChannel(channel, "consumer cancelled")
    closeOk(client, 3)
    assert closing.called and channel.closed is True
    workarounds.forgetConsumer(client, "ctag-3")
    assert "ctag-3" not in client.queues and ended == [QueueClosed]


# 10. An empty body.

def deliverEmpty(client):
    client.channel(1)
    fromBroker(client, 1, Method(method("basic", "deliver"), "ctag", 1, False, "ex", "h.measure"))
    client.dataReceived(headerFrame(client, contentHeader(0, {})))
    return client.queues["ctag"].get()


def test_txamqp_hands_an_empty_body_over_as_str_still_needed():
    client, _ = plainClient()
    message = deliverEmpty(client).result
    assert message.content.body == "" and not isinstance(message.content.body, bytes)


def test_an_empty_body_is_handed_over_as_bytes():
    client, _ = resmonClient()
    message = deliverEmpty(client).result
    assert workarounds.bodyBytes(message.content.body) == b""
    assert workarounds.bodyBytes(BODY) is BODY
    # What a handler receives.
    from test_units_mutants_amqp_service import RecordingChannel, RecordingClient
    bus = AMQPBus(parseBrokerURL("amqp://localhost/"), "ex", Clock())
    recording = RecordingClient()
    bus.useConnection(recording, RecordingChannel(recording, 1))
    bodies = []
    bus.subscribe(["#"], lambda key, body: bodies.append(body), queue="q")
    recording.queues["ctag-q"].put(message)
    assert bodies == [b""]


# 11. Why the connection was lost.

def test_txamqp_does_not_say_why_the_connection_was_lost_still_needed():
    client, _ = plainClient()
    said = []
    client.disconnected.wait().addCallback(said.append)
    client.connectionLost(Failure(ConnectionLost("reset by peer")))
    assert said == [True] and not hasattr(client, "lostReason")


def test_the_client_keeps_why_the_connection_was_lost():
    client, _ = resmonClient()
    reason = Failure(ConnectionLost("reset by peer"))
    client.connectionLost(reason)
    assert client.lostReason is reason


# 12. ClientService and a connection whose preparation failed.

def serviceWithFailingPreparation(workaround):
    reactor = MemoryReactorClock()

    def prepare(client):
        if workaround:
            workarounds.abandonConnection(client)
        return defer.fail(RuntimeError("handshake failed"))
    service = ClientService(TCP4ClientEndpoint(reactor, "127.0.0.1", 5672),
                            protocol.Factory.forProtocol(protocol.Protocol), clock=reactor,
                            prepareConnection=prepare)
    service.startService()
    _, _, factory, _, _ = reactor.tcpClients[-1]
    connection = factory.buildProtocol(None)
    transport = StringTransport()
    connection.makeConnection(transport)
    return service, reactor, connection, transport


def test_client_service_leaves_a_failed_preparation_open_and_chokes_on_its_loss_still_needed():
    service, reactor, connection, transport = serviceWithFailingPreparation(False)
    assert not transport.disconnecting
    with pytest.raises(NoTransition):
        connection.connectionLost(Failure(ConnectionLost()))


def test_a_connection_whose_preparation_failed_is_closed_and_retried():
    service, reactor, connection, transport = serviceWithFailingPreparation(True)
    assert transport.disconnecting
    connection.connectionLost(Failure(ConnectionLost()))
    reactor.advance(5)
    assert len(reactor.tcpClients) == 2  # tried again
    service.stopService()


# 13. The AMQP spec.

def test_txamqp_ships_no_amqp_spec_still_needed():
    import txamqp
    package = os.path.dirname(txamqp.__file__)
    assert not [name for _, _, names in os.walk(package) for name in names if name.endswith(".xml")]


def test_the_spec_resmon_carries_has_publisher_confirms_and_consumer_cancel():
    assert (SPEC.major, SPEC.minor) == (0, 9)
    assert "select" in [m.name for m in SPEC.classes.byname["confirm"].methods]
    assert {"nack", "cancel"} <= {m.name for m in SPEC.classes.byname["basic"].methods}


# 14. A channel the broker closed, opened again under its number.

def test_txamqp_hands_back_a_channel_the_broker_closed_still_needed():
    client, transport = plainClient()
    brokerClosesChannel(client)
    again = []
    client.channel(1).addCallback(again.append)
    assert again[0] is client.channels[1] and again[0].closed


def test_a_channel_the_broker_closed_is_opened_again_as_a_new_one():
    client, transport = resmonClient()
    handled = []
    client.channel(1).addCallback(lambda channel: setattr(
        channel, workarounds.CLOSE_HANDLER, lambda reason: handled.append(reason) or True))
    closed = client.channels[1]
    brokerClosesChannel(client)
    # Its close handler recovered: the connection stays.
    assert closed.closed and len(handled) == 1 and not transport.disconnecting
    assert handled[0].value.reply_code == 404
    again = []
    workarounds.reopenChannel(client, 1).addCallback(again.append)
    assert again[0] is not closed and not again[0].closed and client.channels[1] is again[0]


@pytest_twisted.inlineCallbacks
def test_a_connection_the_broker_closes_as_resmon_closes_it_is_no_failure():
    """
    Stopping while the broker closes the connection itself (its user was
    deleted, the broker is stopping): an info line, not a logged failure,
    which would fail a supervisor's health check for nothing; any other
    error closing it still is one.
    """
    from twisted.internet.task import Clock
    from twisted.logger import LogLevel, Logger
    from txamqp.client import ConnectionClosed
    from resmon.bus.connection import BrokerConnection

    class Closing:
        closed = False

        def __init__(self, error):
            self.error = error

        def close(self, within):
            return defer.fail(self.error)

    class Service:
        def stopService(self):
            return defer.succeed(None)
    for error, level in ((ConnectionClosed("CONNECTION_FORCED - user 'agent' is deleted"), LogLevel.info),
                         (RuntimeError("something else"), LogLevel.critical)):
        events = []
        connection = BrokerConnection(None, Clock(), None, None, None, {})
        connection.log = Logger(observer=events.append)
        connection.client = Closing(error)
        connection.clientService = Service()
        yield connection.stop()
        assert [(e["log_level"], "log_failure" in e) for e in events] == [
            (level, level is LogLevel.critical)]
