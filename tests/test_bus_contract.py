"""
One contract, two buses: the in-process bus and RabbitMQ (the real broker)
must deliver the same messages for the same bindings.
"""

import pytest_twisted
from twisted.internet import defer, reactor
from zope.interface.verify import verifyObject

from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.amqp import AMQPBus
from resmon.bus.local import LocalBus
from resmon.interfaces import IBus, ISubscription
from support import PlainAMQPClient, brokerURL, subscriptionsReady, uniqueName, withTimeout

KEYS = ["a.measure", "b.measure", "a.analysis", "a.b.measure", "measure", "x.y.z.status"]

# pattern -> keys it must receive, per AMQP topic semantics
EXPECTED = {
    "*.measure": ["a.measure", "b.measure"],
    "#.measure": ["a.measure", "b.measure", "a.b.measure", "measure"],
    "a.#": ["a.measure", "a.analysis", "a.b.measure"],
    "#": KEYS,
    "a.*": ["a.measure", "a.analysis"],
    "*.*.measure": ["a.b.measure"],
    "x.#.status": ["x.y.z.status"],
    "a.measure": ["a.measure"],
}


@pytest_twisted.async_yield_fixture(params=["local", "rabbitmq"])
async def bus(request):
    if request.param == "local":
        bus = LocalBus(reactor)
        bus.startService()
        yield bus
        await defer.maybeDeferred(bus.stopService)
        return
    broker = request.getfixturevalue("broker")
    bus = AMQPBus(parseBrokerURL(broker), uniqueName("resmon.test"), reactor)
    bus.startService()
    await withTimeout(bus.whenConnected(), 10, "the broker")
    yield bus
    await bus.stopService()


def _collector(expected):
    received = []
    done = defer.Deferred()

    def handler(routingKey, body):
        received.append(routingKey)
        if len(received) == expected and not done.called:
            done.callback(None)
    return received, done, handler


@pytest_twisted.inlineCallbacks
def test_topic_semantics(bus):
    # Each pattern's queue also gets its own sentinel, published last: a
    # queue is FIFO, so once a sentinel is in, everything before it is too.
    received = {pattern: [] for pattern in EXPECTED}
    done = {pattern: defer.Deferred() for pattern in EXPECTED}
    sentinels = {pattern: f"zz.sentinel.{i}" for i, pattern in enumerate(EXPECTED)}

    def handlerFor(pattern):
        def handler(routingKey, body):
            if routingKey == sentinels[pattern]:
                done[pattern].callback(None)
            elif not routingKey.startswith("zz.sentinel."):
                received[pattern].append(routingKey)
        return handler
    for pattern in EXPECTED:
        bus.subscribe([pattern, sentinels[pattern]], handlerFor(pattern))
    yield _settled(bus)
    for key in KEYS + list(sentinels.values()):
        yield bus.publish(key, key.encode())
    for pattern, keys in EXPECTED.items():
        yield withTimeout(done[pattern], 10, f"the sentinel of {pattern}")
        assert sorted(received[pattern]) == sorted(keys), pattern


@pytest_twisted.inlineCallbacks
def test_message_bound_twice_is_delivered_once(bus):
    received, done, handler = _collector(3)
    bus.subscribe(["a.*", "*.measure"], handler)
    yield _settled(bus)
    yield bus.publish("a.measure", b"1")
    yield bus.publish("b.measure", b"2")
    # One queue keeps order: once the marker is in, any duplicate would be too.
    yield bus.publish("a.end", b"3")
    yield withTimeout(done, 10, "three messages")
    assert received == ["a.measure", "b.measure", "a.end"]


@pytest_twisted.inlineCallbacks
def test_named_queue_is_shared_by_competing_consumers(bus):
    queue = uniqueName("resmon.test.shared")
    first, second = [], []
    done = defer.Deferred()

    def make(into):
        def handler(routingKey, body):
            into.append(body)
            if len(first) + len(second) == 20 and not done.called:
                done.callback(None)
        return handler
    subscriptions = [bus.subscribe(["#.measure"], make(first), queue=queue, prefetch=1),
                     bus.subscribe(["#.measure"], make(second), queue=queue, prefetch=1)]
    yield _settled(bus)
    for i in range(20):
        yield bus.publish("h.measure", str(i).encode())
    yield withTimeout(done, 10, "20 messages")
    assert sorted(first + second, key=int) == [str(i).encode() for i in range(20)]
    assert first and second  # both consumers got a share
    for subscription in subscriptions:
        yield subscription.cancel()
    if isinstance(bus, AMQPBus):
        yield _deleteQueue(queue)


@pytest_twisted.inlineCallbacks
def test_unbinding_a_named_queue_stops_what_only_those_patterns_routed(bus):
    # The documented way: subscribe again with fewer patterns, cancel the
    # old subscription, unbind what was dropped.
    queue = uniqueName("resmon.test.unbind")
    received, done, handler = _collector(3)
    old = bus.subscribe(["a.#", "b.#", "c.#"], handler, queue=queue)
    yield _settled(bus)
    new = bus.subscribe(["a.#"], handler, queue=queue)
    yield _settled(bus)
    yield old.cancel()
    yield bus.unbind(queue, ["b.#", "c.#", "never.bound.#"])
    for key in ("b.x", "a.x", "c.x", "b.y", "a.y", "a.end"):
        yield bus.publish(key, key.encode())
    # One queue keeps order: once a.end is in, b.* and c.* would be too.
    yield withTimeout(done, 10, "three messages")
    assert received == ["a.x", "a.y", "a.end"]
    yield new.cancel()
    # A queue that does not exist has nothing to unbind.
    yield bus.unbind(uniqueName("resmon.test.missing"), ["a.#"])
    if isinstance(bus, AMQPBus):
        yield _deleteQueue(queue)
        assert bus.counters["connections"] == 1


@pytest_twisted.inlineCallbacks
def test_a_failing_handler_does_not_block_the_queue(bus):
    received = []
    done = defer.Deferred()

    def handler(routingKey, body):
        if body == b"boom":
            raise ValueError("this handler fails on purpose")
        received.append(body)
        if body == b"after" and not done.called:
            done.callback(None)
    bus.subscribe(["t.*"], handler, prefetch=1)
    yield _settled(bus)
    yield bus.publish("t.x", b"boom")
    yield bus.publish("t.x", b"after")
    yield withTimeout(done, 10, "the message after the failing one")
    assert received == [b"after"]


@pytest_twisted.inlineCallbacks
def test_publish_fires_once_the_bus_took_the_message(bus):
    result = yield bus.publish("nobody.listens", b"{}")
    assert result is None


def _settled(bus):
    """
    Wait until subscriptions made so far are in place on the broker.
    """
    return subscriptionsReady(bus)


@defer.inlineCallbacks
def _deleteQueue(queue):
    client = yield PlainAMQPClient(brokerURL()).connect()
    try:
        yield client.cleanUp(queues=[queue])
    finally:
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_both_buses_provide_the_whole_interface(bus):
    verifyObject(IBus, bus)
    subscription = bus.subscribe(["iface.#"], lambda routingKey, body: None)
    verifyObject(ISubscription, subscription)
    assert bus.subscriptions == (subscription,)
    yield withTimeout(subscription.whenReady(), 10, "the subscription to consume")
    assert bus.connected and bus.counters["connections"] >= 1
    assert set(bus.counters) >= {"published", "confirmed", "nacked", "dropped", "connections",
                                 "delivered", "rejected", "consumer-cancels"}
    yield subscription.cancel()
    assert bus.subscriptions == ()
