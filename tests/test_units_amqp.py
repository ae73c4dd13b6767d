"""
Unit tests of the RabbitMQ bus's publishing state machine (outbox, publisher
confirms, resending after a lost connection), with a fake channel, and of
what it does when the broker cancels a consumer.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from txamqp.queue import Closed as QueueClosed

from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.amqp import AMQPBus, Dropped
from resmon.bus.connection import Delegate
from test_units_mutants_amqp_service import RecordingClient, Reply


class FakeChannel:
    def __init__(self):
        self.closed = False
        self.published = []

    def basic_publish(self, exchange, routing_key, content):
        self.published.append((routing_key, content.body, content.properties))
        return defer.succeed(None)


class FakeClient:
    pass


def _connectedBus(outboxLimit=100):
    bus = AMQPBus(parseBrokerURL("amqp://localhost/"), "ex", Clock(), outboxLimit=outboxLimit)
    bus.running = True
    client, channel = FakeClient(), FakeChannel()
    bus.useConnection(client, channel)
    return bus, client, channel


def _results(deferreds, out=None):
    out = [] if out is None else out
    for d in deferreds:
        d.addCallbacks(lambda _: out.append("ok"), lambda f: out.append(f.type.__name__))
    return out


def test_publish_is_persistent_and_fires_on_confirm_only():
    bus, client, channel = _connectedBus()
    results = _results([bus.publish(f"h.measure", b"%d" % i) for i in range(3)])
    assert [body for _, body, _ in channel.published] == [b"0", b"1", b"2"]
    assert channel.published[0][2]["delivery-mode"] == 2
    assert results == []
    bus.outbox.confirmed(2, True, True)  # basic.ack multiple: tags 1 and 2
    assert results == ["ok", "ok"]
    bus.outbox.confirmed(3, False, False)  # basic.nack
    assert results == ["ok", "ok", "Dropped"]
    assert bus.counters["confirmed"] == 2 and bus.counters["nacked"] == 1


def test_unconfirmed_messages_are_resent_first_and_in_order_after_a_reconnect():
    bus, client, channel = _connectedBus()
    results = _results([bus.publish("k", b"%d" % i) for i in range(3)])
    bus.outbox.confirmed(1, False, True)
    # The channel closes before the connection is seen lost: what is
    # published meanwhile waits in the outbox, newer than the unconfirmed.
    channel.closed = True
    _results([bus.publish("k", b"3")], results)
    bus.connection.disconnected(client)
    _results([bus.publish("k", b"4")], results)  # while disconnected
    assert channel.published[-1][1] == b"2"  # nothing sent on the dead channel
    newChannel = FakeChannel()
    bus.useConnection(FakeClient(), newChannel)
    bus.outbox.flush()
    # The unconfirmed first, in their order, then the newer ones, each under
    # the new channel's delivery tags.
    assert [body for _, body, _ in newChannel.published] == [b"1", b"2", b"3", b"4"]
    assert [o.body for o in bus.outbox.unconfirmed.values()] == [b"1", b"2", b"3", b"4"]
    assert list(bus.outbox.unconfirmed) == [1, 2, 3, 4]
    bus.outbox.confirmed(4, True, True)
    assert results == ["ok"] * 5


def test_a_full_outbox_drops_the_oldest_unsent_message_and_counts_it():
    bus, client, channel = _connectedBus(outboxLimit=3)
    bus.connection.disconnected(client)
    results = _results([bus.publish("k", b"%d" % i) for i in range(5)])
    assert results == ["Dropped", "Dropped"]
    assert [o.body for o in bus.outbox.unsent] == [b"2", b"3", b"4"]
    assert bus.counters["dropped"] == 2


class FastClient:
    """
    A client with resmon's fast path (resmon.bus.frames): publications
    written by publishFrames, confirms handed to confirmInto's callable.
    """

    def __init__(self):
        self.published = []

    def publishFrames(self, channelId, exchange, routingKey, body, userId=None):
        self.published.append((routingKey, body))

    def confirmInto(self, channelId, confirmed):
        self.confirmed = confirmed


def _fastChannel(client):
    channel = FakeChannel()
    channel.client, channel.id = client, 1
    return channel


def test_the_fast_path_keeps_the_outboxs_limit_and_order():
    bus = AMQPBus(parseBrokerURL("amqp://localhost/"), "ex", Clock(), outboxLimit=3)
    bus.running = True
    client = FastClient()
    bus.useConnection(client, _fastChannel(client))
    results = _results([bus.publish("k", b"%d" % i) for i in range(4)])
    # Three unconfirmed fill the outbox: the fourth is the oldest unsent, dropped.
    assert [body for _, body in client.published] == [b"0", b"1", b"2"]
    assert results == ["Dropped"] and bus.counters["dropped"] == 1
    client.confirmed(3, True, True)
    assert results == ["Dropped", "ok", "ok", "ok"]
    # Lost, then reconnected: what waits goes first, the next one after it.
    fourth = _results([bus.publish("k", b"4")])
    bus.connection.disconnected(client)
    bus.publish("k", b"5")
    newClient = FastClient()
    channel = _fastChannel(newClient)
    channel.closed = True  # not open yet: both wait
    bus.useConnection(newClient, channel)
    bus.publish("k", b"6")
    assert newClient.published == []
    channel.closed = False
    bus.publish("k", b"7")  # behind what waits, not before it
    # Four waiting for a limit of three: the oldest (4) is dropped, the rest sent in order.
    assert [body for _, body in newClient.published] == [b"5", b"6", b"7"]
    assert fourth == ["Dropped"]
    assert list(bus.outbox.unconfirmed) == [1, 2, 3]


def test_stopping_fails_what_is_still_pending():
    bus, client, channel = _connectedBus()
    results = _results([bus.publish("k", b"x")])
    bus.outbox.fail("the bus stopped")
    assert results == ["Dropped"]
    bus.running = False
    failures = []
    bus.publish("k", b"y").addErrback(failures.append)
    assert failures[0].check(Dropped)


def test_stopping_waits_for_confirms_in_flight_then_gives_up_on_the_rest():
    from twisted.internet.defer import succeed
    bus, client, channel = _connectedBus()
    clock = bus._reactor
    client.closed = False
    client.close = lambda within: succeed(None)

    class FakeClientService:
        def stopService(self):
            return succeed(None)
    bus.connection.clientService = FakeClientService()
    bus.drainTimeout = 2.0
    results = _results([bus.publish("k", b"1"), bus.publish("k", b"2")])
    stopped = bus.stopService()
    assert not stopped.called  # waiting for the broker
    bus.outbox.confirmed(1, False, True)
    assert results == ["ok"] and not stopped.called
    clock.advance(2.0)  # the second is never confirmed
    assert stopped.called
    assert results == ["ok", "Dropped"]


# What the bus does when the broker cancels a consumer (txAMQP's side of it:
# tests/test_bus_workarounds.py).


class CancelledChannel:
    """
    The channel whose consumer the broker cancelled.
    """

    def __init__(self):
        self.closed = False
        self.closedByUs = False

    def channel_close(self):
        self.closedByUs = True
        return defer.succeed(None)

    def close(self, reason):
        self.closed = True


def test_a_consumer_cancelled_by_the_broker_is_declared_and_consumed_again():
    bus = AMQPBus(parseBrokerURL("amqp://localhost/"), "ex", Clock())
    bus.running = True
    client = RecordingClient()
    bus.useConnection(client, FakeChannel())
    subscription = bus.subscribe(["#.measure"], lambda key, body: None, queue="analyzer",
                                 durable=True)
    assert subscription.whenReady().called
    oldQueue = client.queues["ctag-analyzer"]
    client.calls.clear()
    cancelled = CancelledChannel()
    delegate = Delegate(bus.outbox, bus.consumers)
    delegate.client = client
    delegate.basic_cancel(cancelled, Reply("analyzer"))
    assert cancelled.closedByUs and cancelled.closed
    ended = []
    oldQueue.get().addErrback(lambda f: ended.append(f.type))
    assert ended == [QueueClosed]  # its pump ended
    calls = [(name, arguments.get("queue")) for _, name, arguments in client.calls]
    assert ("queue_declare", "analyzer") in calls and ("basic_consume", "analyzer") in calls
    assert subscription.whenReady().called
    assert bus.counters["consumer-cancels"] == 1 and bus.counters["connections"] == 0
