"""
The base of the unit tests' fake buses: an L{IBus} with no broker, whose
subscriptions record how they were made. A fake overrides L{publish} (and
whatever else its test drives); every fake is checked with
L{zope.interface.verify.verifyObject} against L{IBus}, so a fake cannot
drift from what the services may use.
"""

import json

from twisted.internet import defer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from resmon.bus.counters import busCounters
from resmon.interfaces import IBus, ISubscription


@implementer(ISubscription)
class FakeSubscription:
    """
    A subscription that consumes at once. C{options} holds every argument
    of L{IBus.subscribe} after the handler, by name.
    """

    def __init__(self, bus, patterns, handler, options):
        self.bus = bus
        self.patterns = patterns
        self.handler = handler
        self.options = options
        self.cancelled = False

    def whenReady(self):
        return defer.succeed(None)

    def cancel(self):
        self.cancelled = True
        if self in self.bus.made:
            self.bus.made.remove(self)
        return defer.succeed(None)


@implementer(IBus)
class FakeBus:
    """
    Always connected; L{publish} confirms at once. It checks itself
    against L{IBus} when made, and each subscription against
    L{ISubscription}.
    """

    connected = True
    waiting = 0

    def __init__(self):
        self.counters, self.rejected = busCounters(connections=1)
        self.made = []
        self.last = None
        self.unbound = []
        verifyObject(IBus, self)

    @property
    def subscriptions(self):
        return tuple(self.made)

    def whenConnected(self):
        return defer.succeed(None)

    def publish(self, routingKey, body):
        self.counters["published"] += 1
        return defer.succeed(None)

    def unbind(self, queue, patterns):
        self.unbound.append((queue, sorted(patterns)))
        return defer.succeed(None)

    def subscribe(self, patterns, handler, queue=None, durable=False, prefetch=100,
                  partitions=None, deadLetter=None, singleActive=False, rejected=None,
                  publisher=False):
        subscription = FakeSubscription(self, patterns, handler, {
            "queue": queue, "durable": durable, "prefetch": prefetch, "partitions": partitions,
            "deadLetter": deadLetter, "singleActive": singleActive, "rejected": rejected,
            "publisher": publisher})
        verifyObject(ISubscription, subscription)
        self.made.append(subscription)
        self.last = subscription
        return subscription


class ConfirmingBus(FakeBus):
    """
    Confirms every publication at once, and records it, decoded, in
    C{published}; C{handler} and C{patterns} are the last subscription's.
    """

    def __init__(self):
        FakeBus.__init__(self)
        self.published = []

    def publish(self, routingKey, body):
        self.published.append((routingKey, json.loads(body)))
        return FakeBus.publish(self, routingKey, body)

    @property
    def handler(self):
        return self.last.handler

    @property
    def patterns(self):
        return self.last.patterns


class SettlingBus(FakeBus):
    """
    Records each publication with its Deferred in C{published}, as
    C{(routingKey, body, deferred)}, for the test to settle (confirm or fail).
    """

    def __init__(self):
        FakeBus.__init__(self)
        self.published = []

    def publish(self, routingKey, body):
        d = defer.Deferred()
        self.published.append((routingKey, body, d))
        return d
