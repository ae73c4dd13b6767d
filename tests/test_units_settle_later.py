"""
Settling a message without a Deferred (resmon.bus.delivery.settlesLater,
resmon.bus.outbox.Outbox.publishThen): the analyzer's measure is settled
when the broker confirms its analysis, as it was through a Deferred, with
the same outcomes for every fate of the analysis.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from resmon.analysis.pipeline import AnalysisPipeline
from resmon.bus.amqp import AMQPBus
from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.delivery import LATER, Discard, Retry, deliver, settlesLater
from resmon.services.analyzer import AnalyzerService
from test_units_amqp import FastClient, _fastChannel
from test_units_fastpath import measureBody


class Acknowledger:
    def __init__(self):
        self.outcome = []

    def __call__(self):
        self.outcome.append("ack")

    def retry(self):
        self.outcome.append("retry")

    def discard(self):
        self.outcome.append("discard")


def delivered(handler, settles=True):
    acknowledger, settled = Acknowledger(), []
    deliver(handler, "h.measure", b"{}", acknowledger, settled=lambda: settled.append(True),
            settles=settles)
    return acknowledger.outcome, settled


def laterHandler(taken):
    """
    A handler that takes on settling every message, its Settle in C{taken}.
    """
    @settlesLater
    def handler(routingKey, body, settle=None):
        taken.append(settle)
        return LATER
    return handler


def test_a_handler_that_settles_later_is_settled_when_it_says_and_only_then():
    taken = []
    outcome, settled = delivered(laterHandler(taken))
    assert outcome == [] and settled == []
    taken[0].done()
    assert outcome == ["ack"] and settled == [True]


def test_its_failures_requeue_discard_or_acknowledge_as_a_deferreds_would():
    for error, expected in [(Retry("again"), "retry"), (Discard("bad"), "discard"),
                            (ValueError("bug"), "ack")]:
        taken = []
        outcome, settled = delivered(laterHandler(taken))
        taken[0].fail(Failure(error))
        assert outcome == [expected] and settled == [True]


def test_whatever_else_it_returns_or_raises_is_settled_as_before():
    @settlesLater
    def raises(routingKey, body, settle=None):
        raise Discard("bad")

    @settlesLater
    def returns(routingKey, body, settle=None):
        return None

    waiter = defer.Deferred()

    @settlesLater
    def waits(routingKey, body, settle=None):
        return waiter

    assert delivered(raises) == (["discard"], [True])
    assert delivered(returns) == (["ack"], [True])
    outcome, settled = delivered(waits)
    assert outcome == []
    waiter.errback(Retry("later"))
    assert (outcome, settled) == (["retry"], [True])


def test_a_bus_that_does_not_settle_later_calls_the_handler_as_before():
    calls = []

    @settlesLater
    def handler(routingKey, body, settle=None):
        calls.append(settle)

    assert delivered(handler, settles=False) == (["ack"], [True])
    assert calls == [None]


# The outbox's publishThen.

def fastBus(limit=100):
    bus = AMQPBus(parseBrokerURL("amqp://localhost/"), "ex", Clock(), outboxLimit=limit)
    bus.running = True
    client = FastClient()
    bus.useConnection(client, _fastChannel(client))
    return bus, client


def test_publish_then_calls_back_on_confirm_and_on_every_way_of_being_dropped():
    bus, client = fastBus(limit=3)
    fates = []

    def then(name):
        bus.publishThen("h.analysis", name.encode(), lambda c: fates.append(("ok", c)),
                        lambda c, error: fates.append((type(error).__name__, c)), name)

    for name in ("a", "b", "c", "d"):  # d: the outbox is full
        then(name)
    assert fates == [("Dropped", "d")]
    client.confirmed(1, False, True)
    client.confirmed(2, False, False)  # basic.nack
    assert fates[1:] == [("ok", "a"), ("Dropped", "b")]
    bus.outbox.refused("h.analysis", "ACCESS_REFUSED")
    assert fates[3:] == [("Refused", "c")]
    then("e")
    bus.outbox.fail("the bus stopped")
    assert fates[4:] == [("Dropped", "e")]
    bus.running = False
    then("f")
    assert fates[5:] == [("Dropped", "f")]


def test_stopping_waits_for_messages_published_then_and_logs_no_unhandled_error():
    bus, client = fastBus()
    fates, logged = [], []
    for name in ("a", "b"):
        bus.publishThen("h.analysis", b"{}", fates.append, lambda c, e: fates.append(("x", c)),
                        name)
    pending = bus.outbox.pending()
    assert len(pending) == 2 and not any(d.called for d in pending)
    client.confirmed(1, False, True)
    globalLogPublisher.addObserver(logged.append)
    try:
        bus.outbox.fail("the bus stopped")
        del pending[:]  # an unhandled failure would be logged when collected
        import gc
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert fates == ["a", ("x", "b")]
    assert not [e for e in logged if e.get("isError")]


def test_a_callback_that_raises_is_logged_and_the_others_still_run():
    bus, client = fastBus()
    fates, logged = [], []

    def boom(context):
        raise RuntimeError("bug")

    bus.publishThen("h.analysis", b"1", boom, lambda c, e: None, None)
    bus.publishThen("h.analysis", b"2", fates.append, lambda c, e: None, "second")
    globalLogPublisher.addObserver(logged.append)
    try:
        client.confirmed(2, True, True)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert fates == ["second"]
    assert [e["log_format"] for e in logged if e.get("log_failure")] == [
        "handling the confirm of a message under {routingKey} failed"]


# The analyzer on the RabbitMQ bus: settled by the broker's confirm, without a Deferred.

def wired(publishThen=True):
    clock = Clock()
    clock.advance(2000)
    bus, client = fastBus()
    bus._reactor = clock
    if not publishThen:
        bus.publishThen = None  # as the in-process bus and the tests' fakes
    analyzer = AnalyzerService(bus, AnalysisPipeline([]), clock)
    return analyzer, bus, client


def received(analyzer, seq):
    acknowledger, settled = Acknowledger(), []
    deliver(analyzer.measureReceived, "web-01.measure", measureBody(seq), acknowledger,
            settled=lambda: settled.append(True), settles=True)
    return acknowledger.outcome, settled


def test_the_analyzers_measure_is_acknowledged_on_its_analysis_confirm_requeued_on_its_nack():
    analyzer, bus, client = wired()
    first, second = received(analyzer, 1), received(analyzer, 2)
    assert [body[:1] for _, body in client.published] == [b"{", b"{"]
    assert first == ([], []) and second == ([], [])
    client.confirmed(1, False, True)
    assert first == (["ack"], [True])
    client.confirmed(2, False, False)
    assert second == (["retry"], [True])
    assert analyzer.counters["published"] == 1
    # Confirmed, then delivered again: acknowledged at once, not analysed again.
    assert received(analyzer, 1) == (["ack"], [True])
    assert analyzer.counters["redelivered"] == 1


def test_a_redelivery_while_the_first_waits_for_its_confirm_is_settled_with_it():
    analyzer, bus, client = wired()
    first = received(analyzer, 7)
    again = received(analyzer, 7)
    assert len(client.published) == 1 and again == ([], [])
    client.confirmed(1, False, True)
    assert first == (["ack"], [True]) and again == (["ack"], [True])
    third, fourth = received(analyzer, 8), received(analyzer, 8)
    client.confirmed(2, False, False)
    assert third == (["retry"], [True]) and fourth == (["retry"], [True])


def test_on_a_bus_without_publish_then_the_analyzer_returns_its_deferred():
    analyzer, bus, client = wired(publishThen=False)
    outcome = received(analyzer, 3)
    assert outcome == ([], [])
    client.confirmed(1, False, True)
    assert outcome == (["ack"], [True])
