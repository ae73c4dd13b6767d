"""
The RabbitMQ bus's outbox and publisher confirms, pinned down where mutation
testing (tools/mutation.sh) found them unchecked: what is published and how,
what a confirm settles, what a full outbox drops, what a lost connection
logs and requeues, the defaults. A fake channel, as in test_units_amqp.py.
"""

from itertools import count

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock, LoopingCall
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure

from resmon.brokerurl import parseBrokerURL
from resmon.bus import amqp
from resmon.bus.amqp import AMQPBus, Dropped

BROKER = parseBrokerURL("amqp://user:secret@rabbit:5673/prod")


class Channel:
    def __init__(self, fails=False):
        self.closed = False
        self.published = []
        self.fails = fails

    def basic_publish(self, exchange, routing_key, content):
        self.published.append((exchange, routing_key, content.body, content.properties))
        if self.fails:
            return defer.fail(RuntimeError("channel closed"))
        return defer.succeed(None)


class Client:
    pass


def connected(**kwargs):
    bus = AMQPBus(BROKER, "ex", Clock(), **kwargs)
    events = []
    bus.log = Logger(observer=events.append)
    bus.running = True
    client, channel = Client(), Channel()
    bus._client, bus._publishChannel, bus._deliveryTags = client, channel, count(1)
    bus.connected = True
    return bus, client, channel, events


def outcomes(deferreds, out=None):
    out = [] if out is None else out
    for d in deferreds:
        d.addCallbacks(lambda _: out.append("ok"), lambda f: out.append(f"{f.type.__name__}: {f.value}"))
    return out


def test_the_defaults_and_the_settings_given():
    bus = AMQPBus(BROKER, "ex", Clock())
    assert (bus.broker, bus.exchange, bus.tls) == (BROKER, "ex", None)
    assert (bus.heartbeat, bus.connectTimeout, bus.handshakeTimeout, bus.maxRetryDelay) == (
        amqp.DEFAULT_HEARTBEAT, 10, 10, amqp.DEFAULT_MAX_RETRY_DELAY) == (10, 10, 10, 1.5)
    assert (bus.outboxLimit, bus.topologyInterval, bus.drainTimeout) == (10000, 10.0, 2.0)
    assert bus.connected is False and bus._client is None and bus._publishChannel is None
    assert bus.counters == {"published": 0, "confirmed": 0, "nacked": 0, "dropped": 0,
                            "connections": 0, "delivered": 0}
    assert list(bus._outbox) == [] and dict(bus._unconfirmed) == {} and bus._subscriptions == []
    assert next(bus._channelIds) == amqp.PUBLISH_CHANNEL + 1 == 2
    tls = object()
    bus = AMQPBus(BROKER, "ex", Clock(), heartbeat=3, connectTimeout=4, handshakeTimeout=5,
                  maxRetryDelay=6, outboxLimit=7, topologyInterval=8, drainTimeout=9, tls=tls)
    assert (bus.heartbeat, bus.connectTimeout, bus.handshakeTimeout, bus.maxRetryDelay, bus.outboxLimit,
            bus.topologyInterval, bus.drainTimeout, bus.tls) == (3, 4, 5, 6, 7, 8, 9, tls)


def test_a_message_is_published_persistent_json_to_the_exchange_under_its_key():
    bus, _, channel, _ = connected()
    bus.publish("h.analysis", b"{}")
    bus.publish("g.analysis", b"[]")
    assert [(e, k, b) for e, k, b, _ in channel.published] == [
        ("ex", "h.analysis", b"{}"), ("ex", "g.analysis", b"[]")]
    assert channel.published[0][3] == {"delivery-mode": 2, "content-type": "application/json"}
    assert bus.counters["published"] == 2
    assert [o.routingKey for o in bus._unconfirmed.values()] == ["h.analysis", "g.analysis"]


def test_a_publication_the_channel_fails_is_left_to_the_reconnection():
    bus, client, channel, _ = connected()
    channel.fails = True
    results = outcomes([bus.publish("k", b"1")])
    assert results == [] and list(bus._unconfirmed) == [1]  # no unhandled error either
    bus._lost(client)
    assert [o.body for o in bus._outbox] == [b"1"]


def test_nothing_is_sent_on_a_closed_channel():
    bus, _, channel, _ = connected()
    channel.closed = True
    bus.publish("k", b"1")
    assert channel.published == [] and bus.counters["published"] == 0 and len(bus._outbox) == 1


def test_a_confirm_settles_its_tag_or_every_tag_up_to_it():
    bus, _, _, events = connected()
    results = outcomes([bus.publish("k%d" % i, b"%d" % i) for i in range(1, 6)])
    bus._confirmed(9, False, True)  # not one of ours
    bus._confirmed(2, False, True)
    assert results == ["ok"] and list(bus._unconfirmed) == [1, 3, 4, 5]
    bus._confirmed(3, True, True)
    assert results == ["ok"] * 3 and list(bus._unconfirmed) == [4, 5]
    bus._confirmed(5, True, False)
    assert results == ["ok"] * 3 + ["Dropped: the broker refused the message (basic.nack)"] * 2
    assert bus.counters["confirmed"] == 3 and bus.counters["nacked"] == 2
    assert [formatEvent(e) for e in events] == [
        "broker refused a message under k4", "broker refused a message under k5"]


def test_a_full_outbox_drops_the_oldest_unsent_counting_those_in_flight():
    bus, _, channel, events = connected(outboxLimit=3)
    results = outcomes([bus.publish("k", b"0"), bus.publish("k", b"1")])  # in flight
    channel.closed = True
    outcomes([bus.publish("k", b"%d" % i) for i in range(2, 5)], results)
    assert [o.body for o in bus._outbox] == [b"4"]
    assert results == ["Dropped: outbox full"] * 2 and bus.counters["dropped"] == 2
    assert [formatEvent(e) for e in events] == ["outbox full (3): dropped the oldest message (1 so far)"]


def test_a_full_outbox_logs_the_first_drop_then_every_thousandth():
    bus, client, _, events = connected(outboxLimit=1)
    bus._lost(client)
    for i in range(2001):
        bus.publish("k", b"x").addErrback(lambda f: None)
    assert bus.counters["dropped"] == 2000
    assert [formatEvent(e) for e in events[1:]] == [
        f"outbox full (1): dropped the oldest message ({n} so far)" for n in (1, 1000, 2000)]


def test_a_lost_connection_requeues_and_says_why_and_how_many_wait():
    bus, client, _, events = connected()
    bus._topologyCheck = LoopingCall(lambda: None)
    bus._topologyCheck.clock = bus._reactor
    bus._topologyCheck.start(10)
    outcomes([bus.publish("k", b"1"), bus.publish("k", b"2")])
    client.lostReason = Failure(ConnectionError("reset by peer"))
    bus._lost(Client())  # an older connection: nothing happens
    assert bus.connected is True and bus._client is client
    bus._lost(client)
    assert bus.connected is False and bus._client is None and bus._publishChannel is None
    assert bus._topologyCheck is None and bus._reactor.getDelayedCalls() == []
    assert [o.body for o in bus._outbox] == [b"1", b"2"] and dict(bus._unconfirmed) == {}
    assert [formatEvent(e) for e in events] == [
        "lost the connection to amqp://user@rabbit:5673/prod (reset by peer); 2 message(s) wait "
        "to be resent; reconnecting"]


def test_a_connection_lost_for_no_known_reason_or_while_stopping():
    bus, client, _, events = connected()
    bus._lost(client)
    assert formatEvent(events[-1]) == (
        "lost the connection to amqp://user@rabbit:5673/prod (unknown); 0 message(s) wait "
        "to be resent; reconnecting")
    bus, client, _, events = connected()
    bus.running = False
    bus._lost(client)
    assert events == [] and bus.connected is False


def test_publishing_on_a_stopped_bus_and_failing_the_outbox_say_why():
    bus = AMQPBus(BROKER, "ex", Clock())
    assert outcomes([bus.publish("k", b"1")]) == ["Dropped: the bus is not running"]
    bus, _, channel, _ = connected()
    results = outcomes([bus.publish("k", b"1")])
    channel.closed = True
    outcomes([bus.publish("k", b"2")], results)
    bus._failOutbox("the bus stopped")
    assert results == ["Dropped: the bus stopped"] * 2
    assert list(bus._outbox) == [] and dict(bus._unconfirmed) == {}


def test_observing_a_deferred_leaves_its_result_alone():
    d = defer.Deferred()
    observed = amqp._observe(d)
    assert not observed.called
    d.callback("result")
    assert observed.result is None and d.result == "result"
    failed = defer.Deferred()
    observer = amqp._observe(failed)
    failed.errback(RuntimeError("x"))
    assert observer.result is None
    with pytest.raises(RuntimeError):
        failed.result.raiseException()
    failed.addErrback(lambda f: None)
