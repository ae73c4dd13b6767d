"""
What both buses do with a delivered message: call the handler, then
acknowledge, whatever the handler did, unless it asks for a retry.
"""

from twisted.internet import defer
from twisted.logger import Logger

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


def deliver(handler, routingKey, body, acknowledger, *extra):
    """
    Call C{handler(routingKey, body, *extra)} (C{extra}: the publisher, for
    a subscription that asked for it), and once its result (possibly a
    L{Deferred}) is final, call C{acknowledger()}, or C{acknowledger.retry()}
    if the handler failed with L{Retry}, or C{acknowledger.discard()} if it
    failed with L{Discard}.

    Any other handler failure is logged and the message acknowledged all the
    same: a message that makes a handler fail would fail again on redelivery
    and stall the queue.
    """
    d = defer.maybeDeferred(handler, routingKey, body, *extra)

    def done(result):
        acknowledger()

    def failed(failure):
        if failure.check(Retry):
            acknowledger.retry()
            return
        if failure.check(Discard):
            acknowledger.discard()
            return
        log.failure("handler {handler!r} failed on a message under {routingKey}",
                    failure, handler=handler, routingKey=routingKey)
        acknowledger()

    d.addCallbacks(done, failed)
    d.addErrback(lambda f: log.failure("acknowledging failed", f))
    return d
