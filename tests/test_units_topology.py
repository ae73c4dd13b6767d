"""
Unit tests of the RabbitMQ bus's periodic topology check, with fake channels.
"""

from twisted.internet import defer
from twisted.internet.task import Clock

from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.amqp import AMQPBus


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
