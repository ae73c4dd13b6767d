"""
Publisher confirms across a reconnect, through the real handshake path: a
real AMQPBus on the real broker loses its connection with messages in
flight, reconnects through ClientService and its own handshake, and every
message is confirmed as itself: the broker numbers the deliveries of a new
channel from 1 again, and so must the bus.
"""

import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ServerEndpoint

from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.amqp import AMQPBus
from support import subscriptionsReady, withTimeout
from test_integration_outages import SwallowingProxy


@defer.inlineCallbacks
def until(condition, seconds, what):
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        yield task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


@pytest_twisted.inlineCallbacks
def test_confirms_after_a_reconnect_confirm_the_right_messages(broker, amqp):
    exchange, queue = amqp.names["exchange"], amqp.names["queue"]
    yield amqp.declareExchange(exchange)
    yield amqp.channel.queue_declare(queue=queue, durable=True)
    yield amqp.channel.queue_bind(queue=queue, exchange=exchange, routing_key="c.#")
    # Through a proxy, so the test can cut the bus's connection from outside.
    target = parseBrokerURL(broker)
    proxy = SwallowingProxy(target.host, target.port)
    listening = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(proxy)
    proxied = f"amqp://{target.username}:{target.password}@127.0.0.1:{listening.getHost().port}/"
    bus = AMQPBus(parseBrokerURL(proxied), exchange, reactor, maxRetryDelay=0.5)
    bus.startService()
    try:
        yield subscriptionsReady(bus)
        for i in range(5):
            yield withTimeout(bus.publish("c.x", b"before-%d" % i), 5, f"the confirm of before-{i}")
        # Lost with five messages in flight: they go out again on the next connection.
        inFlight = [bus.publish("c.x", b"in-flight-%d" % i) for i in range(5)]
        proxy.close()
        yield until(lambda: bus.counters["connections"] == 2 and bus.connected, 10, "the reconnect")
        for i, confirmed in enumerate(inFlight):
            yield withTimeout(confirmed, 5, f"the confirm of in-flight-{i}, resent after the reconnect")
        for i in range(5):
            yield withTimeout(bus.publish("c.x", b"after-%d" % i), 5, f"the confirm of after-{i}")
        assert bus.counters["confirmed"] == 15 and bus.counters["nacked"] == 0
        assert bus.counters["dropped"] == 0
        # Confirmed means taken by the broker: every one is in the queue (an
        # in-flight one maybe twice, routed before the connection went).
        bodies = yield amqp.drain(queue)
        expected = {b"%s-%d" % (stage, i) for stage in (b"before", b"in-flight", b"after")
                    for i in range(5)}
        assert set(bodies) == expected
        assert len(bodies) <= 20
    finally:
        yield bus.stopService()
        proxy.close()
        yield listening.stopListening()
