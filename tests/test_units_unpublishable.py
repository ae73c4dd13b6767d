"""
A message that cannot be published, and the hot path's defences (found by a
review of the analyzer's hot path): a host whose analysis' routing key would
be over AMQP's 255 bytes is rejected with its measure; the outbox drops a
message it cannot publish without numbering it, so the broker's confirms
keep matching; one failing acknowledgement flush does not stall the
connection; a message settled twice is settled once.
"""

import pytest
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from resmon import topics, wire
from resmon.bus.delivery import Discard, Settle
from resmon.bus.outbox import Unpublishable
from resmon.tap import Options
from test_units_amqp import _fastChannel
from test_units_fastpath import Channel, confirm, delivery, wiredAnalyzer, written
from test_units_settle_later import Acknowledger, fastBus
from resmon.bus.acks import BatchedAcks


def measureOf(host, seq=1):
    return wire.encodeMeasure(host, seq, 1000.0 + seq, 1.0, {"cpu": {"percent": 50.0}})


def test_a_host_whose_analysis_key_would_be_over_255_bytes_is_rejected_with_its_measure():
    longest = "h" * topics.MAX_HOST_WORD
    assert len(f"{longest}.{topics.ANALYSIS}") == 255
    assert wire.decodeMeasure(longest + ".measure", measureOf(longest)).host == longest
    tooLong = longest + "h"
    with pytest.raises(wire.Rejected) as caught:
        wire.decodeMeasure(tooLong + ".measure", measureOf(tooLong))
    assert caught.value.reason == "routing-key"
    assert "is 247 bytes as a routing word; at most 246 fit in the routing key of its analysis" in (
        str(caught.value))
    # A proof-of-concept measure takes its host from the routing key: the
    # same bound, in bytes (its word may hold any UTF-8).
    for word, accepted in [(tooLong, False), (longest, True), ("\u00e9" * 123, True),
                           ("\u00e9" * 123 + "a", False)]:
        key = word + ".measure"
        assert len(key.encode()) <= 255
        if accepted:
            assert wire.decodeMeasure(key, b'{"cpu_percentage": 5}').host == word
        else:
            with pytest.raises(wire.Rejected, match="at most 246 fit"):
                wire.decodeMeasure(key, b'{"cpu_percentage": 5}')


def test_a_queue_name_too_long_for_what_is_made_of_it_stops_twistd_naming_the_option():
    from resmon.services.liveness import HostLiveness
    from resmon.tap import MAX_QUEUE_NAME
    longest = "q" * MAX_QUEUE_NAME
    Options().parseOptions(["--role=analyzer", "--queue=" + longest])
    judge = HostLiveness(None, None, queue=longest + ".liveness")
    assert len(judge.tickKey) <= 255 and len(longest + ".liveness") <= 255
    with pytest.raises(SystemExit) as stopped:
        Options().parseOptions(["--role=analyzer", "--queue=" + longest + "q"])
    assert "error: --queue: must be 1 to 200 bytes" in str(stopped.value)


def test_an_agent_name_too_long_for_its_analysis_key_stops_twistd_naming_the_option():
    options = Options()
    options.parseOptions(["--role=agent", "--name=" + "n" * 246])
    with pytest.raises(SystemExit) as stopped:
        Options().parseOptions(["--role=agent", "--name=" + "n" * 247])
    assert "error: --name: at most 246 characters" in str(stopped.value)
    assert "\n" not in str(stopped.value)


def test_an_analysis_that_cannot_be_published_leaves_its_neighbours_confirms_matching():
    bus, client, transport, clock = wiredAnalyzer()
    [subscription] = bus.subscriptions
    analyzer = subscription.handler.__self__
    publishFrames = client.publishFrames

    def failsFor(channelId, exchange, routingKey, body, userId=None):
        if routingKey == "bad-host.analysis":
            raise ValueError("its frames cannot be made")
        publishFrames(channelId, exchange, routingKey, body, userId)

    client.publishFrames = failsFor
    bus.outbox.useChannel(bus.outbox.channel)
    client.dataReceived(delivery(client, 2, 1, measureOf("bad-host"), routingKey="bad-host.measure")
                        + delivery(client, 2, 2, measureOf("web-01", 2)))
    frames = written(client, transport.value())
    # The first was rejected (acknowledged: no dead-letter queue) and counted; only web-01's went out.
    assert [f[2]["routing-key"] for f in frames if len(f) == 3 and f[1] == "publish"] == [
        "web-01.analysis"]
    assert analyzer.rejected["unpublishable"] == 1
    transport.clear()
    client.dataReceived(confirm(client, 1))  # the broker's first: web-01's analysis
    assert written(client, transport.value()) == [(2, "ack", {"delivery-tag": 2, "multiple": True})]
    assert subscription.inFlight == 0 and bus.outbox.unconfirmed == {}


def test_the_outbox_drops_what_it_cannot_publish_without_numbering_it():
    bus, client = fastBus()
    fates = []
    bus.publishThen("k" * 256, b"{}", fates.append, lambda c, e: fates.append((c, e)), "long")
    bus.publishThen("ok.analysis", b"{}", fates.append, lambda c, e: fates.append((c, e)), "ok")
    [(context, error)] = fates
    assert context == "long" and isinstance(error, Unpublishable)
    assert "routing key is over 255 bytes" in str(error)
    assert list(bus.outbox.unconfirmed) == [1] and bus.counters["dropped"] == 1
    client.confirmed(1, False, True)
    assert fates[1:] == ["ok"]
    # And a Deferred's publish fails at once the same way, as does a key
    # that is not UTF-8 (a lone surrogate), which txAMQP could not encode.
    failures = []
    bus.publish("k" * 256, b"{}").addErrback(failures.append)
    bus.publish("h\ud800.analysis", b"{}").addErrback(failures.append)
    assert [f.check(Unpublishable) for f in failures] == [Unpublishable] * 2
    assert "not valid UTF-8" in failures[1].getErrorMessage()
    assert list(bus.outbox.unconfirmed) == []


def test_a_message_whose_frames_cannot_be_made_is_dropped_and_takes_no_number():
    bus, client = fastBus()

    def refuses(channelId, exchange, routingKey, body, userId=None):
        if routingKey == "bad.analysis":
            raise ValueError("no")
        client.published.append((routingKey, body))

    client.publishFrames = refuses
    bus.useConnection(client, _fastChannel(client))
    failures = []
    bus.publish("bad.analysis", b"{}").addErrback(failures.append)
    bus.publish("good.analysis", b"{}")
    assert failures[0].check(Unpublishable) and list(bus.outbox.unconfirmed) == [1]
    # Waiting in the outbox, then sent on a new connection: the same.
    bus.connection.disconnected(client)
    bus.publish("bad.analysis", b"{}").addErrback(failures.append)
    bus.publish("later.analysis", b"{}")
    client.published.clear()
    bus.useConnection(client, _fastChannel(client))
    assert failures[1].check(Unpublishable)
    assert [key for key, _ in client.published] == ["good.analysis", "later.analysis"]
    assert list(bus.outbox.unconfirmed) == [1, 2]


def test_the_analyzer_rejects_a_measure_whose_analysis_is_unpublishable_instead_of_retrying():
    bus, client, transport, clock = wiredAnalyzer()
    analyzer = bus.subscriptions[0].handler.__self__
    for deadLetter, expected in [(None, "ack"), ("resmon.dead", "discard")]:
        analyzer.deadLetter = deadLetter
        acknowledger, settled = Acknowledger(), []
        settle = Settle(analyzer.measureReceived, "web-01.measure", acknowledger,
                        lambda: settled.append(True))
        analyzer._droppedThen((("web-01", 1, 1.0), settle),
                              Unpublishable("cannot be published: test"))
        assert acknowledger.outcome == [expected] and settled == [True]
    assert analyzer.rejected["unpublishable"] == 2


def test_a_flush_that_raises_is_logged_and_the_reads_writes_still_go_out():
    bus, client, transport, clock = wiredAnalyzer()
    good = BatchedAcks(Channel(3), client, clock)

    def sink(tag, key, props, body):
        client.atEndOfRead(lambda: 1 / 0)
        good.received(tag)()
        client.publishFrames(1, "resmon", "web-01.analysis", b"{}")

    client.consumeInto(3, sink)
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        client.dataReceived(delivery(client, 3, 5, b"{}"))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    frames = written(client, transport.value())
    assert frames[0] == (3, "ack", {"delivery-tag": 5, "multiple": True})
    assert frames[1][1] == "publish"
    assert [e["log_format"] for e in logged if e.get("log_failure")] == [
        "sending acknowledgements at the end of a read failed"]
    assert client._heldFrames is None
    transport.clear()
    client.dataReceived(delivery(client, 3, 6, b"{}"))  # later reads still write
    assert written(client, transport.value())[0] == (3, "ack", {"delivery-tag": 6, "multiple": True})


def test_a_message_settled_twice_is_settled_once_and_the_second_time_logged():
    acknowledger, settled, logged = Acknowledger(), [], []
    settle = Settle(len, "h.measure", acknowledger, lambda: settled.append(True))
    globalLogPublisher.addObserver(logged.append)
    try:
        settle.done()
        settle.done()
        settle.fail(Failure(Discard("late")))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert acknowledger.outcome == ["ack"] and settled == [True]
    assert len([e for e in logged if getattr(e.get("log_level"), "name", None) == "error"]) == 2


def test_a_delivery_acknowledged_twice_is_sent_once():
    bus, client, transport, clock = wiredAnalyzer()
    acks = BatchedAcks(Channel(3), client, clock)
    first, second = acks.received(1), acks.received(2)
    second()
    clock.advance(0)
    second()  # again, after it was sent alone
    first()
    clock.advance(0)
    assert [f[2] for f in written(client, transport.value())] == [
        {"delivery-tag": 2, "multiple": False}, {"delivery-tag": 1, "multiple": True}]
