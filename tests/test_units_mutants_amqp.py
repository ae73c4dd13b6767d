"""
The RabbitMQ bus's outbox and publisher confirms, pinned down where mutation
testing (.ci/mutation.sh) found them unchecked: what is published and how,
what a confirm settles, what a full outbox drops, what a lost connection
logs and requeues, the defaults. A fake channel, as in test_units_amqp.py.
"""

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure

from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus import amqp
from resmon.bus.amqp import AMQPBus, Dropped
from resmon.bus.connection import Delegate, describe, innermost
from resmon.bus.consumer import Acknowledger
from resmon.deferreds import observe

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


def logTo(events, bus):
    """
    Send what C{bus} and its parts log to C{events}.
    """
    log = Logger(observer=events.append)
    for part in (bus, bus.outbox, bus.topology, bus.consumers, bus.connection):
        part.log = log
    return log


def connected(**kwargs):
    bus = AMQPBus(BROKER, "ex", Clock(), **kwargs)
    events = []
    logTo(events, bus)
    bus.running = True
    client, channel = Client(), Channel()
    bus.useConnection(client, channel)
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
    assert bus.connected is False and bus.connection.client is None and bus.outbox.channel is None
    assert bus.counters == {"published": 0, "confirmed": 0, "nacked": 0, "dropped": 0,
                            "connections": 0, "delivered": 0, "rejected": 0, "consumer-cancels": 0,
                            "refused": 0}
    assert list(bus.outbox.unsent) == [] and dict(bus.outbox.unconfirmed) == {} and bus.subscriptions == ()
    assert next(bus.consumers.channelIds) == amqp.PUBLISH_CHANNEL + 1 == 2
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
    # user_id: the broker user of the URL, which RabbitMQ verifies.
    assert channel.published[0][3] == {"delivery-mode": 2, "content-type": "application/json",
                                       "user-id": "user"}
    assert bus.counters["published"] == 2
    assert [o.routingKey for o in bus.outbox.unconfirmed.values()] == ["h.analysis", "g.analysis"]


def test_a_publication_the_channel_fails_is_left_to_the_reconnection():
    bus, client, channel, _ = connected()
    channel.fails = True
    results = outcomes([bus.publish("k", b"1")])
    assert results == [] and list(bus.outbox.unconfirmed) == [1]  # no unhandled error either
    bus.connection.disconnected(client)
    assert [o.body for o in bus.outbox.unsent] == [b"1"]


def test_nothing_is_sent_on_a_closed_channel():
    bus, _, channel, _ = connected()
    channel.closed = True
    bus.publish("k", b"1")
    assert channel.published == [] and bus.counters["published"] == 0 and len(bus.outbox.unsent) == 1


def test_a_confirm_settles_its_tag_or_every_tag_up_to_it():
    bus, _, _, events = connected()
    results = outcomes([bus.publish("k%d" % i, b"%d" % i) for i in range(1, 6)])
    bus.outbox.confirmed(9, False, True)  # not one of ours
    bus.outbox.confirmed(2, False, True)
    assert results == ["ok"] and list(bus.outbox.unconfirmed) == [1, 3, 4, 5]
    bus.outbox.confirmed(3, True, True)
    assert results == ["ok"] * 3 and list(bus.outbox.unconfirmed) == [4, 5]
    bus.outbox.confirmed(5, True, False)
    assert results == ["ok"] * 3 + ["Dropped: the broker refused the message (basic.nack)"] * 2
    assert bus.counters["confirmed"] == 3 and bus.counters["nacked"] == 2
    assert [formatEvent(e) for e in events] == [
        "broker refused a message under k4", "broker refused a message under k5"]


def test_a_full_outbox_drops_the_oldest_unsent_counting_those_in_flight():
    bus, _, channel, events = connected(outboxLimit=3)
    results = outcomes([bus.publish("k", b"0"), bus.publish("k", b"1")])  # in flight
    channel.closed = True
    outcomes([bus.publish("k", b"%d" % i) for i in range(2, 5)], results)
    assert [o.body for o in bus.outbox.unsent] == [b"4"]
    assert results == ["Dropped: outbox full"] * 2 and bus.counters["dropped"] == 2
    assert [formatEvent(e) for e in events] == [
        f"outbox full (3): dropped the oldest message ({n} so far)" for n in (1, 2)]


def test_a_full_outbox_logs_ten_drops_at_once_then_one_in_six_seconds_saying_how_many_it_held_back():
    bus, client, _, events = connected(outboxLimit=1)
    bus.connection.disconnected(client)
    for i in range(2001):
        bus.publish("k", b"x").addErrback(lambda f: None)
    assert bus.counters["dropped"] == 2000
    assert [formatEvent(e) for e in events[1:]] == [
        f"outbox full (1): dropped the oldest message ({n} so far)" for n in range(1, 11)]
    bus._reactor.advance(6)
    bus.publish("k", b"x").addErrback(lambda f: None)
    assert formatEvent(events[-1]) == (
        "outbox full (1): dropped the oldest message (2001 so far) "
        "(1990 similar warnings not logged before this one)")


def test_a_lost_connection_requeues_and_says_why_and_how_many_wait():
    bus, client, _, events = connected()
    assert bus.topology.checking and bus._reactor.getDelayedCalls() != []
    outcomes([bus.publish("k", b"1"), bus.publish("k", b"2")])
    client.lostReason = Failure(ConnectionError("reset by peer"))
    bus.connection.disconnected(Client())  # an older connection: nothing happens
    assert bus.connected is True and bus.connection.client is client
    bus.connection.disconnected(client)
    assert bus.connected is False and bus.connection.client is None and bus.outbox.channel is None
    assert not bus.topology.checking and bus._reactor.getDelayedCalls() == []
    assert [o.body for o in bus.outbox.unsent] == [b"1", b"2"] and dict(bus.outbox.unconfirmed) == {}
    assert [formatEvent(e) for e in events] == [
        "lost the connection to amqp://user@rabbit:5673/prod (reset by peer); 2 message(s) wait "
        "to be resent; reconnecting"]


def test_a_connection_lost_for_no_known_reason_or_while_stopping():
    bus, client, _, events = connected()
    bus.connection.disconnected(client)
    assert formatEvent(events[-1]) == (
        "lost the connection to amqp://user@rabbit:5673/prod (unknown); 0 message(s) wait "
        "to be resent; reconnecting")
    bus, client, _, events = connected()
    bus.running = False
    bus.connection.disconnected(client)
    assert events == [] and bus.connected is False


def test_publishing_on_a_stopped_bus_and_failing_the_outbox_say_why():
    bus = AMQPBus(BROKER, "ex", Clock())
    assert outcomes([bus.publish("k", b"1")]) == ["Dropped: the bus is not running"]
    bus, _, channel, _ = connected()
    results = outcomes([bus.publish("k", b"1")])
    channel.closed = True
    outcomes([bus.publish("k", b"2")], results)
    bus.outbox.fail("the bus stopped")
    assert results == ["Dropped: the bus stopped"] * 2
    assert list(bus.outbox.unsent) == [] and dict(bus.outbox.unconfirmed) == {}


def test_observing_a_deferred_leaves_its_result_alone():
    d = defer.Deferred()
    observed = observe(d)
    assert not observed.called
    d.callback("result")
    assert observed.result == "result" and d.result == "result"
    failed = defer.Deferred()
    observer = observe(failed)
    failed.errback(RuntimeError("x"))
    assert observer.result.check(RuntimeError)
    observer.addErrback(lambda f: None)
    with pytest.raises(RuntimeError):
        failed.result.raiseException()
    failed.addErrback(lambda f: None)
    cancelled = defer.Deferred()
    observer = observe(cancelled)
    observer.cancel()  # a timeout on the observer
    assert not cancelled.called
    cancelled.callback("later")
    assert cancelled.result == "later"


class Message:
    def __init__(self, **fields):
        self.__dict__.update(fields)


def test_the_delegate_settles_confirms_and_reports_returned_messages():
    bus, _, _, events = connected()
    results = outcomes([bus.publish("k", b"%d" % i) for i in range(3)])
    delegate = Delegate(bus.outbox, bus.consumers)
    delegate.log = bus.log
    assert (delegate.outbox, delegate.consumers) == (bus.outbox, bus.consumers)
    delegate.basic_ack(None, Message(delivery_tag=2, multiple=True))
    delegate.basic_nack(None, Message(delivery_tag=3, multiple=False))
    assert results == ["ok", "ok", "Dropped: the broker refused the message (basic.nack)"]
    delegate.basic_return_(None, Message(routing_key="h.status", reply_code=312, reply_text="NO_ROUTE"))
    assert formatEvent(events[-1]) == "broker returned a message under h.status: 312 NO_ROUTE"


class AckChannel:
    def __init__(self, closed=False):
        self.closed = closed
        self.calls = []

    def basic_ack(self, **kwargs):
        self.calls.append(("ack", kwargs))
        return defer.fail(RuntimeError("channel closed meanwhile"))

    def basic_reject(self, **kwargs):
        self.calls.append(("reject", kwargs))
        return defer.fail(RuntimeError("channel closed meanwhile"))


def test_a_delivery_is_acknowledged_requeued_or_discarded_on_its_open_channel_only():
    channel = AckChannel()
    acknowledge = Acknowledger(channel, 7)
    acknowledge()
    acknowledge.retry()
    acknowledge.discard()
    assert channel.calls == [("ack", {"delivery_tag": 7}), ("reject", {"delivery_tag": 7, "requeue": True}),
                             ("reject", {"delivery_tag": 7, "requeue": False})]
    closed = AckChannel(closed=True)
    acknowledge = Acknowledger(closed, 7)
    acknowledge()
    acknowledge.retry()
    acknowledge.discard()
    assert closed.calls == []


def test_a_subscription_keeps_what_it_was_given_and_says_when_it_is_idle():
    bus = AMQPBus(BROKER, "ex", Clock())
    handler = object()
    subscription = bus.subscribe(["a.*", "b.#"], handler, queue="q", durable=True, prefetch=5,
                                 partitions=(4, [1]), deadLetter="dl", singleActive=True)
    assert bus.consumers.subscriptions == [subscription]
    assert (subscription.patterns, subscription.handler, subscription.queue, subscription.durable,
            subscription.prefetch, subscription.partitions, subscription.deadLetter,
            subscription.singleActive) == (("a.*", "b.#"), handler, "q", True, 5, (4, [1]), "dl", True)
    assert (subscription.bindings, subscription.channelId, subscription.consumerTags,
            subscription.inFlight) == (None, None, [], 0)
    defaults = bus.subscribe(["c"], handler)
    assert (defaults.queue, defaults.durable, defaults.prefetch, defaults.partitions, defaults.deadLetter,
            defaults.singleActive) == (None, False, 100, None, None, False)
    assert subscription.whenIdle().called
    subscription.inFlight = 2
    idle = [subscription.whenIdle(), subscription.whenIdle()]
    subscription.settled()
    assert not any(d.called for d in idle)
    subscription.settled()
    assert all(d.called for d in idle) and subscription.inFlight == 0
    subscription.cancel()
    assert bus.consumers.subscriptions == [defaults]


def failureFrom(error):
    try:
        raise error
    except BaseException:
        return Failure()


def test_a_failure_is_described_by_its_innermost_cause_on_one_line():
    from twisted.internet.error import ConnectionLost
    inner = ConnectionRefusedError("connection refused\nsecond line")
    wrapped = ConnectionLost(failureFrom(RuntimeError(failureFrom(inner))))
    assert describe(failureFrom(wrapped)) == "connection refused"
    assert describe(RuntimeError()) == "RuntimeError"
    assert describe(ValueError("x" * 300)) == "x" * 200
    deep = ValueError("deepest")
    for level in range(6):
        deep = RuntimeError(f"level {level}", deep)
    assert innermost(deep) is deep.args[1].args[1].args[1].args[1].args[1]
    assert innermost(deep, depth=1) is deep.args[1]


def test_tls_failures_are_said_plainly():
    from OpenSSL.SSL import Error as SSLError
    verify = SSLError([("SSL routines", "", "certificate verify failed"), ("x", "y", "bad record")])
    assert describe(verify) == (
        "TLS: certificate verify failed; bad record (the broker's certificate does not chain to "
        "--tls-ca or the system's authorities)")
    assert describe(SSLError([("SSL routines", "", "tlsv1 alert")])) == "TLS: tlsv1 alert"
    assert describe(SSLError()) == "TLS: Error"
    assert describe(SSLError([("a", "b", "c" * 400)])) == ("TLS: " + "c" * 400)[:300]
    from service_identity.exceptions import DNSMismatch, VerificationError
    mismatch = VerificationError(errors=[DNSMismatch("localhost"), DNSMismatch("other")])
    assert describe(mismatch) == (
        "TLS: certificate verify failed: the broker's certificate is not valid for the host of the "
        "URL (DNSMismatch)")
    assert describe(VerificationError(errors=[])).endswith("(VerificationError)")


def test_a_nack_through_the_delegate_settles_every_tag_up_to_it():
    bus, _, _, _ = connected()
    results = outcomes([bus.publish("k", b"%d" % i) for i in range(3)])
    Delegate(bus.outbox, bus.consumers).basic_nack(None, Message(delivery_tag=2, multiple=True))
    assert results == ["Dropped: the broker refused the message (basic.nack)"] * 2
    assert list(bus.outbox.unconfirmed) == [3]


def test_subscribing_while_connected_consumes_at_once_and_logs_a_failure():
    bus, _, _, events = connected()
    bus.subscribe(["a.*"], lambda key, body: None, queue="q")  # the fake client has no channels
    [failure] = events
    assert formatEvent(failure) == "subscribing failed" and failure["log_failure"] is not None
    disconnected = AMQPBus(BROKER, "ex", Clock())
    disconnected.log = Logger(observer=events.append)
    disconnected.subscribe(["a.*"], lambda key, body: None)
    assert len(events) == 1


def test_odd_errors_are_described_all_the_same():
    from OpenSSL.SSL import Error as SSLError
    from service_identity.exceptions import CertificateError, DNSMismatch, URIMismatch, VerificationError
    assert describe(SSLError(["not a tuple", ("a", "b", "handshake failure")])) == (
        "TLS: handshake failure")
    assert describe(VerificationError(errors=[URIMismatch("u"), DNSMismatch("d")])).endswith(
        "(DNSMismatch, URIMismatch)")
    assert describe(CertificateError("no")).endswith("(CertificateError)")
    thing = object()
    assert innermost(thing) is thing
