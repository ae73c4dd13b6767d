"""
resmon.bus.delivery.deliver: what each kind of handler result settles, and
that the subscription hears it was settled whatever happened.
"""

import pytest
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from resmon.bus.delivery import Discard, Retry, deliver


class Acknowledger:
    def __init__(self, raises=None):
        self.calls, self.raises = [], raises

    def __call__(self):
        self.calls.append("ack")
        if self.raises is not None:
            raise self.raises

    def retry(self):
        self.calls.append("retry")

    def discard(self):
        self.calls.append("discard")


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def run(handler, acknowledger=None):
    acknowledger = acknowledger or Acknowledger()
    settled = []
    deliver(handler, "h.measure", b"{}", acknowledger, settled=lambda: settled.append(True))
    return acknowledger.calls, settled


def raising(error):
    def handler(key, body):
        raise error
    return handler


async def coroutineHandler(key, body):
    return None


@pytest.mark.parametrize("handler, calls", [
    (lambda key, body: None, ["ack"]),
    (lambda key, body: defer.succeed(None), ["ack"]),
    (raising(Retry("later")), ["retry"]),
    (raising(Discard("bad")), ["discard"]),
    (lambda key, body: defer.fail(Retry("later")), ["retry"]),
    (lambda key, body: defer.fail(Discard("bad")), ["discard"]),
    (coroutineHandler, ["ack"]),
])
def test_each_result_is_settled_once(handler, calls):
    assert run(handler) == (calls, [True])


def test_a_handler_failing_otherwise_is_logged_and_acknowledged(logged):
    assert run(raising(ValueError("boom"))) == (["ack"], [True])
    failures = [e for e in logged if e.get("log_failure") is not None]
    assert [e["log_failure"].type for e in failures] == [ValueError]
    assert "failed on a message under h.measure" in failures[0]["log_format"].format(
        handler="h", routingKey="h.measure")


def test_a_pending_result_is_settled_when_it_fires():
    pending = defer.Deferred()
    calls, settled = run(lambda key, body: pending)
    assert (calls, settled) == ([], [])
    pending.callback(None)
    assert (calls, settled) == (["ack"], [True])


def test_an_acknowledgement_that_raises_is_logged_and_still_settles(logged):
    calls, settled = run(lambda key, body: None, Acknowledger(raises=RuntimeError("closed")))
    assert (calls, settled) == (["ack"], [True])
    assert [e["log_failure"].type for e in logged if e.get("log_failure")] == [RuntimeError]


def test_the_publisher_is_passed_on():
    seen = []
    deliver(lambda key, body, publisher: seen.append(publisher), "h.measure", b"{}",
            Acknowledger(), "agent-7")
    assert seen == ["agent-7"]
