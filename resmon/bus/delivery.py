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


def deliver(handler, routingKey, body, acknowledger, *extra, settled=None):
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
    by the two callbacks added to it.
    """
    try:
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
