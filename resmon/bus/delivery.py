"""
What both buses do with a delivered message: call the handler, then
acknowledge, whatever the handler did, unless it asks for a retry.
"""

from inspect import iscoroutine

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class Retry(Exception):
    """
    Raised (or failed with) by a handler that could not finish with a message
    for a passing reason, typically because publishing its result failed: the
    message is returned to its queue instead of being acknowledged.
    """


class Discard(Exception):
    """
    Raised by a handler for a message that must not be processed: it is
    rejected without requeueing, which dead-letters it where the queue has a
    dead-letter exchange (see L{IBus.subscribe}'s C{deadLetter}).
    """


# What a handler of settlesLater returns once it took on settling its message.
LATER = object()


def settlesLater(handler):
    """
    Mark C{handler} (a function or method) as one that may settle its
    message itself, later, without a L{Deferred}: the RabbitMQ bus calls it
    with a C{settle} keyword argument, a L{Settle}, and the handler returns
    L{LATER} once it took that on (then it must call C{settle.done()} or
    C{settle.fail(failure)} exactly once); whatever else it returns or
    raises is dealt with as L{deliver} says. Other buses call it without
    C{settle}. The analyzer's handler settles a measure when the broker
    confirms its analysis this way: a L{Deferred} per message cost about as
    much as the measure's decoding (docs/performance.md).
    """
    handler.settlesLater = True
    return handler


class Settle:
    """
    Settles one message for a handler of L{settlesLater}, as L{deliver}
    would once the handler's L{Deferred} fired.
    """

    __slots__ = ("handler", "routingKey", "acknowledger", "settled", "called")

    def __init__(self, handler, routingKey, acknowledger, settled):
        self.handler = handler
        self.routingKey = routingKey
        self.acknowledger = acknowledger
        self.settled = settled
        self.called = False

    def done(self):
        """
        The handler is done with the message: acknowledge it. Only the first
        of L{done} and L{fail} settles; a later call is logged and ignored.
        """
        if self._first():
            _done(None, self.acknowledger, self.settled)

    def fail(self, failure):
        """
        The handler failed with C{failure} (a L{Failure}): requeue the message
        for L{Retry}, discard it for L{Discard}, acknowledge it (logged)
        otherwise.
        """
        if self._first():
            _failed(failure, self.handler, self.routingKey, self.acknowledger, self.settled)

    def _first(self):
        if self.called:
            log.error("a message under {routingKey} was settled twice by {handler!r}; "
                      "the second time is ignored", routingKey=self.routingKey,
                      handler=self.handler)
            return False
        self.called = True
        return True


def deliver(handler, routingKey, body, acknowledger, *extra, settled=None, settles=False):
    """
    Call C{handler(routingKey, body, *extra)} (C{extra}: the publisher, for
    a subscription that asked for it), and once its result (possibly a
    L{Deferred}) is final, call C{acknowledger()}, or C{acknowledger.retry()}
    if the handler failed with L{Retry}, or C{acknowledger.discard()} if it
    failed with L{Discard}; then C{settled()}, if given, whatever happened.

    Any other handler failure is logged and the message acknowledged all the
    same: a message that makes a handler fail would fail again on redelivery
    and stall the queue.

    A handler that returns at once is settled at once, without a
    L{Deferred}; one that returns a L{Deferred} (or a coroutine) is settled
    by the two callbacks added to it. With C{settles} (the handler is one
    of L{settlesLater}), it is called with a C{settle} keyword argument too,
    and left to settle the message itself if it returns L{LATER}.
    """
    try:
        if settles:
            result = handler(routingKey, body, *extra,
                             settle=Settle(handler, routingKey, acknowledger, settled))
            if result is LATER:
                return
        else:
            result = handler(routingKey, body, *extra)
    except BaseException:
        _failed(Failure(), handler, routingKey, acknowledger, settled)
        return
    if isinstance(result, defer.Deferred):
        pass
    elif iscoroutine(result):
        result = defer.Deferred.fromCoroutine(result)
    elif isinstance(result, Failure):
        _failed(result, handler, routingKey, acknowledger, settled)
        return
    else:
        _done(result, acknowledger, settled)
        return
    result.addCallbacks(_done, _failed, callbackArgs=(acknowledger, settled),
                        errbackArgs=(handler, routingKey, acknowledger, settled))


def _done(result, acknowledger, settled):
    try:
        acknowledger()
    except Exception:
        log.failure("acknowledging failed")
    if settled is not None:
        settled()


def _failed(failure, handler, routingKey, acknowledger, settled):
    try:
        if failure.check(Retry):
            acknowledger.retry()
        elif failure.check(Discard):
            acknowledger.discard()
        else:
            log.failure("handler {handler!r} failed on a message under {routingKey}",
                        failure, handler=handler, routingKey=routingKey)
            acknowledger()
    except Exception:
        log.failure("acknowledging failed")
    if settled is not None:
        settled()
