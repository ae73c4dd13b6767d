"""
The RabbitMQ bus's connection wiring and declarations, pinned down where
mutation testing (.ci/mutation.sh) found them reached only by the
integration tests: where startService connects (host, port, timeout, TLS),
how fast it retries, the protocol its factory builds (vhost, heartbeat,
property limits, the delegate), the handshake deadline, and the queues and
exchanges a subscription declares (durable, auto-delete, dead-letter,
single-active-consumer, partitions): a queue declared non-durable by
mistake loses the measures waiting in it on a broker restart.

Twisted's MemoryReactorClock and StringTransport, and a fake client whose
channels record what they are asked.
"""

import random
import struct
from collections import Counter

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from txamqp.content import Content
from txamqp.protocol import GarbageException
from txamqp.queue import TimeoutDeferredQueue
from zope.interface import implementer

from amqpfields import contentHeader
from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus import amqp
from resmon.bus.amqp import AMQPBus
from test_units_mutants_amqp import logTo
from resmon.bus.consumer import Acknowledger
from resmon.bus.connection import ClientFactory, Delegate, ResmonAMQClient, describe
from resmon.bus.properties import REFUSED, PropertyLimits

BROKER = parseBrokerURL("amqp://user:secret@127.0.0.1:5673/prod")
# HostnameEndpoint's wait before it reports that every address failed.
ATTEMPT_DELAY = 0.3


def started(broker=BROKER, **kwargs):
    reactor = MemoryReactorClock()
    bus = AMQPBus(broker, "ex", reactor, **kwargs)
    events = []
    logTo(events, bus)
    bus.startService()
    return bus, reactor, events


def innerFactory(factory):
    """
    The resmon factory under the endpoint's (and TLS's) wrapping factories.
    """
    while not isinstance(factory, ClientFactory):
        [name] = {"_wrappedFactory", "wrappedFactory", "_protocolFactory"} & set(vars(factory))
        factory = vars(factory)[name]
    return factory


def test_starting_connects_to_the_brokers_host_and_port_within_the_connect_timeout():
    bus, reactor, events = started(connectTimeout=7)
    [(host, port, factory, timeout, _)] = reactor.tcpClients
    assert (host, port, timeout) == ("127.0.0.1", 5673, 7)
    assert not isinstance(factory._wrappedFactory, TLSMemoryBIOFactory)  # in the clear
    assert [formatEvent(e) for e in events] == [
        "connecting to amqp://user@127.0.0.1:5673/prod, exchange ex"]


@implementer(IOpenSSLClientConnectionCreator)
class ConnectionCreator:
    def __init__(self):
        self.asked = []

    def clientConnectionForTLS(self, tlsProtocol):
        self.asked.append(tlsProtocol)
        return TLSConnection()


class TLSConnection:
    client = None

    def set_connect_state(self):
        self.client = True

    def set_app_data(self, protocol):
        pass


def test_an_amqps_broker_is_connected_to_through_tls_with_the_options_given():
    tls = ConnectionCreator()
    bus, reactor, _ = started(parseBrokerURL("amqps://user:secret@127.0.0.1:5671/"), tls=tls)
    [(host, port, factory, timeout, _)] = reactor.tcpClients
    assert (host, port, timeout) == ("127.0.0.1", 5671, 10)
    tlsFactory = factory._wrappedFactory
    assert isinstance(tlsFactory, TLSMemoryBIOFactory)
    protocol = object()
    assert tlsFactory._creatorCallable(protocol).client is True
    assert tls.asked == [protocol]
    assert isinstance(innerFactory(tlsFactory), ClientFactory)


def retryDelays(reactor, failures):
    """
    Fail each connection attempt at once and return the seconds from one
    failure to the next attempt, less the endpoint's own attempt delay.
    """
    delays = []
    for _ in range(failures):
        _, _, factory, _, _ = reactor.tcpClients[-1]
        factory.clientConnectionFailed(reactor.connectors[-1], Failure(ConnectionRefusedError()))
        attempts, failedAt = len(reactor.tcpClients), reactor.seconds()
        while len(reactor.tcpClients) == attempts:
            reactor.advance(min(c.getTime() for c in reactor.getDelayedCalls()) - reactor.seconds())
        delays.append(round(reactor.seconds() - failedAt - ATTEMPT_DELAY, 6))
    return delays


def test_a_refused_connection_is_retried_doubling_from_half_a_second_up_to_the_cap_plus_jitter(
        monkeypatch):
    monkeypatch.setattr(random, "random", lambda: 0.5)  # jitter: half of RETRY_JITTER
    assert amqp.RETRY_JITTER == 0.5
    bus, reactor, _ = started()
    assert retryDelays(reactor, 5) == [0.5 + 0.25, 1.0 + 0.25, 1.5 + 0.25, 1.75, 1.75]
    bus, reactor, _ = started(maxRetryDelay=4)
    assert retryDelays(reactor, 5) == [0.75, 1.25, 2.25, 4.25, 4.25]
    monkeypatch.setattr(random, "random", lambda: 0.0)
    bus, reactor, _ = started()
    assert retryDelays(reactor, 2) == [0.5, 1.0]


def connectedProtocol(reactor):
    _, _, factory, _, _ = reactor.tcpClients[-1]
    wrapper = factory.buildProtocol(None)
    transport = StringTransport()
    wrapper.makeConnection(transport)
    return wrapper._wrappedProtocol._protocol, transport  # under ClientService's proxy


def test_the_connection_speaks_amqp_with_the_buses_vhost_heartbeat_clock_and_limits():
    limits = PropertyLimits()
    bus, reactor, _ = started(heartbeat=3, propertyLimits=limits)
    client, transport = connectedProtocol(reactor)
    assert type(client) is ResmonAMQClient
    assert (client.vhost, client.heartbeatInterval, client.clock) == ("prod", 3, reactor)
    assert client.spec is bus.spec and client.propertyLimits is limits
    assert type(client.delegate) is Delegate
    assert (client.delegate.outbox, client.delegate.consumers) == (bus.outbox, bus.consumers)
    assert transport.value().startswith(b"AMQP")  # the protocol header went out
    # A silent broker is given up after two heartbeats, not txAMQP's three.
    assert client.MAX_UNSEEN_HEARTBEAT == 2
    assert client.checkHB.getTime() == reactor.seconds() + 6


def test_the_handshake_gets_its_deadline_then_the_connection_is_aborted(monkeypatch):
    bus, reactor, events = started(handshakeTimeout=4)
    client, transport = connectedProtocol(reactor)  # the broker never answers
    reactor.advance(3.9)
    assert not transport.disconnecting and bus.connected is False
    reactor.advance(0.1)
    assert transport.disconnecting
    assert "AMQP handshake with amqp://user@127.0.0.1:5673/prod failed" in formatEvent(events[-1])
    assert bus.counters["connections"] == 0


def test_the_factory_keeps_its_settings_and_builds_one_client_per_connection():
    bus = AMQPBus(BROKER, "ex", Clock())
    clock, limits = Clock(), PropertyLimits()
    factory = ClientFactory(bus.outbox, bus.consumers, bus.spec, "/v", 5, clock, limits)
    assert factory.noisy is False
    first, second = factory.buildProtocol(None), factory.buildProtocol(None)
    assert first is not second and first.delegate is not second.delegate
    assert (first.vhost, first.heartbeatInterval, first.clock, first.propertyLimits) == (
        "/v", 5, clock, limits)
    assert first.delegate.client is first and first.delegate.outbox is bus.outbox
    defaults = ResmonAMQClient(Delegate(bus.outbox, bus.consumers), "/", bus.spec).propertyLimits
    assert vars(defaults) == vars(PropertyLimits())


class Transport:
    def __init__(self):
        self.lost = 0

    def loseConnection(self):
        self.lost += 1


class Chan:
    id = 3


def test_a_channel_the_broker_closes_drops_the_connection_so_everything_is_declared_again():
    bus = AMQPBus(BROKER, "ex", Clock())
    client = ResmonAMQClient(Delegate(bus.outbox, bus.consumers), "/", bus.spec)
    events = []
    client.log = Logger(observer=events.append)
    client.transport = Transport()
    client.channel_failed(Chan(), Failure(RuntimeError("NOT_FOUND - no queue 'q'")))
    assert client.transport.lost == 1
    assert [formatEvent(e) for e in events] == [
        "broker closed channel 3: NOT_FOUND - no queue 'q'; reconnecting"]
    client.transport = None  # already gone: nothing to drop
    client.channel_failed(Chan(), Failure(RuntimeError("x")))
    reason = Failure(ConnectionRefusedError())
    client.transport = Transport()
    client.connectionLost(reason)
    assert client.lostReason is reason


# Declarations, with a client whose channels record every call.

class Reply:
    def __init__(self, queue):
        self.queue = queue
        self.consumer_tag = f"ctag-{queue}"


class RecordingChannel:
    def __init__(self, client, channelId):
        self.client, self.id, self.closed = client, channelId, False

    def close(self, reason):
        self.closed = True

    def __getattr__(self, name):
        def call(**arguments):
            self.client.calls.append((self.id, name, arguments))
            return defer.succeed(Reply(arguments.get("queue") or "amq.gen-1"))
        return call


class RecordingClient:
    def __init__(self):
        self.transport = object()
        self.queues = {}
        self.calls = []

    def channel(self, channelId):
        return defer.succeed(RecordingChannel(self, channelId))

    def queue(self, tag):
        return defer.succeed(self.queues.setdefault(tag, TimeoutDeferredQueue()))


def subscribed(**kwargs):
    bus = AMQPBus(BROKER, "ex", Clock())
    bus.running = True
    client = RecordingClient()
    bus.useConnection(client, RecordingChannel(client, 1))
    subscription = bus.subscribe(["#.measure", "#.status"], lambda key, body: None, **kwargs)
    assert subscription.whenReady().called
    return subscription, [(name, arguments) for _, name, arguments in client.calls], client


def test_a_named_queue_is_declared_durable_as_asked_bound_to_every_pattern_and_consumed():
    subscription, calls, _ = subscribed(queue="analyzer", durable=True, prefetch=7)
    assert calls == [
        ("channel_open", {}),
        ("basic_qos", {"prefetch_count": 7}),
        ("queue_declare", {"queue": "analyzer", "durable": True, "arguments": {}}),
        ("queue_bind", {"queue": "analyzer", "exchange": "ex", "routing_key": "#.measure"}),
        ("queue_bind", {"queue": "analyzer", "exchange": "ex", "routing_key": "#.status"}),
        ("basic_consume", {"queue": "analyzer", "no_ack": False}),
    ]
    assert subscription.queueNames == ["analyzer"] and subscription.consumerTags == ["ctag-analyzer"]
    assert subscription.channelId == 2
    _, calls, _ = subscribed(queue="q")
    assert ("queue_declare", {"queue": "q", "durable": False, "arguments": {}}) in calls


def test_an_anonymous_queue_is_exclusive_and_goes_with_its_connection():
    subscription, calls, _ = subscribed()
    assert ("queue_declare", {"queue": "", "exclusive": True, "auto_delete": True}) in calls
    assert ("basic_consume", {"queue": "amq.gen-1", "no_ack": False}) in calls
    assert subscription.queueNames == ["amq.gen-1"]


def test_a_single_active_queue_goes_with_its_last_consumer_and_keeps_its_dead_letters():
    _, calls, _ = subscribed(queue="web", singleActive=True, deadLetter="resmon.dead")
    assert calls[2:6] == [
        ("exchange_declare", {"exchange": "resmon.dead", "type": "fanout", "durable": True}),
        ("queue_declare", {"queue": "resmon.dead", "durable": True,
                           "arguments": {"x-max-length": 10000}}),
        ("queue_bind", {"queue": "resmon.dead", "exchange": "resmon.dead", "routing_key": ""}),
        ("queue_declare", {"queue": "web", "auto_delete": True, "arguments": {
            "x-dead-letter-exchange": "resmon.dead", "x-single-active-consumer": True}}),
    ]


def test_partitions_are_durable_single_active_queues_behind_a_consistent_hash_exchange():
    subscription, calls, _ = subscribed(queue="analyzer", partitions=(3, [2, 0]),
                                        deadLetter="resmon.dead")
    partitioned = [call for call in calls if call[1].get("exchange") != "resmon.dead"
                   and call[1].get("queue") != "resmon.dead"]
    single = {"x-dead-letter-exchange": "resmon.dead", "x-single-active-consumer": True}
    assert partitioned[2:] == [
        ("exchange_declare", {"exchange": "analyzer.hash", "type": "x-consistent-hash",
                              "durable": True}),
        ("exchange_bind", {"destination": "analyzer.hash", "source": "ex", "routing_key": "#.measure"}),
        ("exchange_bind", {"destination": "analyzer.hash", "source": "ex", "routing_key": "#.status"}),
    ] + [call for index in range(3) for call in (
        ("queue_declare", {"queue": f"analyzer.{index}", "durable": True, "arguments": single}),
        ("queue_bind", {"queue": f"analyzer.{index}", "exchange": "analyzer.hash",
                        "routing_key": "1"}),
    )] + [
        ("basic_consume", {"queue": "analyzer.0", "no_ack": False}),
        ("basic_consume", {"queue": "analyzer.2", "no_ack": False}),
    ]
    assert subscription.queueNames == ["analyzer.0", "analyzer.2"]
    assert subscription.consumerTags == ["ctag-analyzer.0", "ctag-analyzer.2"]
    assert amqp.partitionQueue("analyzer", 4) == "analyzer.4"


def test_a_consumer_cancelled_on_an_older_connection_or_for_another_subscription_is_ignored():
    subscription, _, client = subscribed(queue="analyzer", durable=True)
    consumers = subscription._consumers
    delegate = Delegate(None, consumers)
    delegate.client = RecordingClient()  # another connection's protocol
    channel = RecordingChannel(client, 2)
    delegate.basic_cancel(channel, Reply("analyzer"))
    delegate.client = client
    delegate.basic_cancel(channel, Reply("someone-else"))
    assert consumers.counters["consumer-cancels"] == 0 and subscription.consuming
    client.calls.clear()
    delegate.basic_cancel(channel, Reply("analyzer"))
    assert consumers.counters["consumer-cancels"] == 1 and subscription.consuming
    assert [name for _, name, _ in client.calls] == [
        "channel_close", "channel_open", "basic_qos", "queue_declare", "queue_bind", "queue_bind",
        "basic_consume"]
    assert ("queue_declare", {"queue": "analyzer", "durable": True, "arguments": {}}) in [
        (name, arguments) for _, name, arguments in client.calls]


# Deliveries the bus refuses before any handler sees them (see
# docs/operations.md, "Bad input on the bus").

class Delivery:
    def __init__(self, routingKey, tag, properties):
        self.routing_key, self.delivery_tag = routingKey, tag
        self.content = Content(b"{}", properties=properties)


def connectedToRecordingClient():
    bus = AMQPBus(BROKER, "ex", Clock())
    events = []
    logTo(events, bus)
    bus.running = True
    client = RecordingClient()
    bus.useConnection(client, RecordingChannel(client, 1))
    return bus, client, events


def test_undecodable_deliveries_are_rejected_unrequeued_counted_and_logged_rate_limited():
    counter = Counter()
    handled = []
    bus, client, events = connectedToRecordingClient()
    subscription = bus.subscribe(["#.measure"], lambda key, body: handled.append(key),
                                 queue="analyzer", deadLetter="resmon.dead", rejected=counter)
    assert subscription.rejected is counter
    messages = client.queues["ctag-analyzer"]
    client.calls.clear()
    messages.put(Delivery("h." + "k" * 100, 1, {REFUSED: "w" * 300}))
    messages.put(Delivery(b"h\xff.measure", 2, {}))
    assert handled == []
    assert [(name, arguments) for _, name, arguments in client.calls] == [
        ("basic_reject", {"delivery_tag": 1, "requeue": False}),
        ("basic_reject", {"delivery_tag": 2, "requeue": False})]
    assert bus.counters["rejected"] == 2 and bus.counters["delivered"] == 2
    assert bus.rejected == counter == Counter({amqp.PROPERTIES: 1, amqp.ROUTING_KEY: 1})
    assert [formatEvent(e) for e in events[-2:]] == [
        f"rejected a message under {('h.' + 'k' * 100)[:80]} from #.measure: properties: "
        f"{'w' * 200} (1 for this reason), dead-lettered to resmon.dead",
        "rejected a message under h\\xff.measure from #.measure: routing-key: not UTF-8 "
        "(1 for this reason), dead-lettered to resmon.dead"]
    logged = len(events)
    for tag in range(3, 3001):
        messages.put(Delivery("h.measure", tag, {REFUSED: "bad"}))
    assert bus.rejected[amqp.PROPERTIES] == 2999 and counter[amqp.PROPERTIES] == 2999
    # Ten warnings per reason at once, then one every six seconds.
    assert [formatEvent(e).split(" (")[1] for e in events[logged:]] == [
        f"{n} for this reason), dead-lettered to resmon.dead" for n in range(2, 11)]
    bus._reactor.advance(6)
    messages.put(Delivery("h.measure", 3001, {REFUSED: "bad"}))
    assert formatEvent(events[-1]).endswith(
        "(3000 for this reason), dead-lettered to resmon.dead "
        "(2989 similar warnings not logged before this one)")
    messages.put(Delivery("h.measure", 3002, {}))
    assert handled == ["h.measure"]


def test_a_refusal_without_a_dead_letter_exchange_says_nothing_of_one():
    bus, client, events = connectedToRecordingClient()
    subscription = bus.subscribe(["a.#", "#.b"], lambda key, body: None)
    assert subscription.rejected == Counter() and subscription.rejected is not bus.rejected
    client.queues["ctag-amq.gen-1"].put(Delivery("a.b", 1, {REFUSED: "why"}))
    assert formatEvent(events[-1]) == (
        "rejected a message under a.b from a.#,#.b: properties: why (1 for this reason)")
    assert subscription.rejected == Counter({amqp.PROPERTIES: 1})


def test_a_subscription_is_ready_once_it_consumes_and_waits_again_once_it_stops():
    bus = AMQPBus(BROKER, "ex", Clock())
    subscription = bus.subscribe(["#"], lambda key, body: None)  # not connected
    assert subscription.consuming is False
    first, second = subscription.whenReady(), subscription.whenReady()
    assert not first.called and not second.called
    subscription.ready()
    assert first.called and second.called and first.result is None
    assert subscription.consuming is True and subscription.whenReady().called
    subscription.stopped()
    assert subscription.consuming is False
    waiting = subscription.whenReady()
    assert not waiting.called
    failures = []
    waiting.addErrback(failures.append)
    subscription.cancel()
    [failure] = failures
    assert failure.check(defer.CancelledError)
    assert str(failure.value) == "the subscription was cancelled"
    assert subscription.messageQueues == [] and subscription.queueNames == []


def test_the_client_reads_a_content_header_on_any_channel_and_checks_its_frame_end():
    bus = AMQPBus(BROKER, "ex", Clock())
    client = ResmonAMQClient(Delegate(bus.outbox, bus.consumers), "/", bus.spec)
    payload = contentHeader(5, {"content-type": "application/json"})
    frame = client._unpack_frame(struct.pack("!BHI", 2, 40000, len(payload)) + payload + b"\xce")
    assert frame.channel == 40000
    assert (frame.payload.size, frame.payload.properties) == (5, {"content-type": "application/json"})
    with pytest.raises(GarbageException, match="^frame error: expected 206, got 7$"):
        client._unpack_frame(struct.pack("!BHI", 2, 1, len(payload)) + payload + b"\x07\xce")


def test_a_handshake_waiting_on_a_lost_connection_fails_with_the_losses_reason():
    bus = AMQPBus(BROKER, "ex", Clock())
    client = ClientFactory(bus.outbox, bus.consumers, bus.spec, "/", 0, Clock(), None).buildProtocol(None)
    client.makeConnection(StringTransport())
    failures = []
    client.authenticate("guest", "guest").addErrback(failures.append)
    reason = Failure(ConnectionRefusedError("refused"))
    client.connectionLost(reason)
    [failure] = failures
    assert failure.value.args[0] is reason
    assert describe(failure) == "Connection was refused by other side: refused."


def test_the_start_ok_carries_the_credentials_and_locale():
    from test_bus_workarounds import clientOver, startOk as playStart
    bus = AMQPBus(BROKER, "ex", Clock())
    client, transport = clientOver(ClientFactory(bus.outbox, bus.consumers, bus.spec, "/", 0, Clock(), None))
    startOk = playStart(client, transport)
    # AMQPLAIN: a table of LOGIN and PASSWORD, as txAMQP encodes it.
    assert startOk.response == "\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDS\x00\x00\x00\x05guest"
    assert startOk.locale == "en_US"
    assert startOk.client_properties["product"] == "resmon"


def test_when_connected_fires_with_nothing_once_the_service_connects():
    bus = AMQPBus(BROKER, "ex", Clock())

    class Service:
        def whenConnected(self):
            return defer.succeed(object())
    bus.connection.clientService = Service()
    assert bus.whenConnected().result is None
    assert vars(bus.propertyLimits) == vars(PropertyLimits())


class FailingChannel:
    closed = False

    def __init__(self):
        self.returned = []

    def __getattr__(self, name):
        def call(**arguments):
            d = defer.fail(RuntimeError("channel closed meanwhile"))
            self.returned.append(d)
            return d
        return call


def test_a_publication_or_acknowledgement_failing_on_a_closing_channel_leaves_no_unhandled_error():
    bus = AMQPBus(BROKER, "ex", Clock())
    bus.running = True
    channel = FailingChannel()
    bus.useConnection(object(), channel)
    bus.publish("k", b"{}")
    acknowledge = Acknowledger(channel, 1)
    acknowledge()
    acknowledge.retry()
    acknowledge.discard()
    assert len(channel.returned) == 4
    assert [isinstance(d.result, Failure) for d in channel.returned] == [False] * 4
