"""
Unit tests of the RabbitMQ bus's periodic topology check, with fake channels.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.amqp import AMQPBus
from resmon.bus.topology import Topology


class BindingChannel:
    """
    A channel whose every call waits for the test to answer it.
    """

    def __init__(self):
        self.closed = False
        self.calls = []

    def _call(self, name, arguments):
        d = defer.Deferred()
        self.calls.append((name, arguments, d))
        return d

    def exchange_declare(self, **arguments):
        return self._call("exchange_declare", arguments)

    def queue_bind(self, **arguments):
        return self._call("queue_bind", arguments)


def _subscribe(bus, queue):
    channel = BindingChannel()
    subscription = bus.subscribe(["#.status"], lambda key, body: None)
    subscription.bindings = (channel, [("queue_bind", {"queue": queue, "routing_key": "#.status"})])
    return subscription, channel


def test_a_subscription_cancelled_during_the_check_is_not_bound_again():
    # Seen under load: a process stopping cancelled its private queue's
    # consumer while the check waited on another binding; the check then
    # re-bound the auto-deleted queue, got a 404, and the bus reconnected and
    # resent 200 unconfirmed analyses (duplicates downstream).
    bus = AMQPBus(parseBrokerURL("amqp://localhost/"), "ex", Clock())
    publishChannel = BindingChannel()
    bus.useConnection(None, publishChannel)
    first, firstChannel = _subscribe(bus, "first")
    second, secondChannel = _subscribe(bus, "amq.gen-private")
    checked = bus.topology.refresh(publishChannel, bus.consumers.subscriptions)
    publishChannel.calls[0][2].callback(None)  # the exchange exists
    assert [c[1]["queue"] for c in firstChannel.calls] == ["first"]
    second.cancel()  # no connection: only forgets the subscription
    firstChannel.calls[0][2].callback(None)
    assert secondChannel.calls == []
    assert checked.called


def test_the_check_renews_every_binding_of_live_subscriptions():
    bus = AMQPBus(parseBrokerURL("amqp://localhost/"), "ex", Clock())
    publishChannel = BindingChannel()
    bus.useConnection(None, publishChannel)
    subscriptions = [_subscribe(bus, f"q{i}") for i in range(3)]
    checked = bus.topology.refresh(publishChannel, bus.consumers.subscriptions)
    publishChannel.calls[0][2].callback(None)
    for i, (_, channel) in enumerate(subscriptions):
        assert [c[1]["queue"] for c in channel.calls] == [f"q{i}"]
        channel.calls[0][2].callback(None)
    assert checked.called


def test_the_check_runs_on_the_buses_clock_until_the_connection_is_lost():
    clock = Clock()
    bus = AMQPBus(parseBrokerURL("amqp://localhost/"), "ex", clock, topologyInterval=5)
    publishChannel = BindingChannel()
    bus.useConnection(object(), publishChannel)
    clock.advance(4.9)
    assert publishChannel.calls == []
    clock.advance(0.1)
    assert [c[0] for c in publishChannel.calls] == ["exchange_declare"]
    publishChannel.calls[0][2].callback(None)
    bus.connection.disconnected(bus.connection.client)
    assert not bus.topology.checking and clock.getDelayedCalls() == []


def test_a_check_that_fails_unexpectedly_is_logged_not_dropped():
    clock = Clock()
    topology = Topology("ex", clock, 5)
    events = []
    topology.log = Logger(observer=events.append)

    def broken(channel, subscriptions):
        raise RuntimeError("a bug")
    topology.refresh = broken
    topology.startChecking(BindingChannel(), [])
    clock.advance(5)
    [event] = events
    assert formatEvent(event) == "the topology check stopped"
    assert event["log_failure"].check(RuntimeError)
    assert not topology.checking
