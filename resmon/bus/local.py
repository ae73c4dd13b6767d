"""
An in-process bus with the topic semantics of a RabbitMQ topic exchange, for
standalone mode and for tests.
"""

from collections import deque
from itertools import count

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from resmon.bus.counters import busCounters
from resmon.bus.delivery import deliver
from resmon.interfaces import IBus, ISubscription
from resmon.topics import topicMatches


class _Queue:
    """
    A queue with its bindings and its consumers, as in AMQP: each message
    goes to one consumer, round robin, at most C{prefetch} unacknowledged.
    """

    def __init__(self, name, clock):
        self.name = name
        self.bindings = set()
        self.consumers = []
        self.messages = deque()
        self._clock = clock
        self._scheduled = None
        self._next = 0

    def put(self, routingKey, body):
        self.messages.append((routingKey, body))
        self.schedule()

    def schedule(self):
        # Deliver later, never from inside publish(): a handler that publishes
        # must not recurse into other handlers.
        if self._scheduled is None and self.messages and self.consumers:
            self._scheduled = self._clock.callLater(0, self._drain)

    def _drain(self):
        self._scheduled = None
        while self.messages:
            consumer = self._nextReady()
            if consumer is None:
                return
            routingKey, body = self.messages.popleft()
            consumer.receive(routingKey, body)

    def _nextReady(self):
        for i in range(len(self.consumers)):
            consumer = self.consumers[(self._next + i) % len(self.consumers)]
            if consumer.inFlight < consumer.prefetch:
                self._next = (self._next + i + 1) % len(self.consumers)
                return consumer
        return None


@implementer(ISubscription)
class _LocalSubscription:
    def __init__(self, bus, queue, patterns, handler, prefetch, publisher=False):
        self._bus = bus
        self._extra = (None,) if publisher else ()
        self.queue = queue
        self.patterns = tuple(patterns)
        self.handler = handler
        self.prefetch = prefetch
        self.inFlight = 0

    def whenReady(self):
        """
        See L{ISubscription.whenReady}: an in-process subscription consumes
        from the moment it is made.
        """
        return defer.succeed(None)

    def receive(self, routingKey, body):
        self.inFlight += 1
        self._bus.counters["delivered"] += 1
        deliver(self.handler, routingKey, body, _LocalAcknowledger(self, routingKey, body),
                *self._extra)

    def settled(self):
        self.inFlight -= 1
        self.queue.schedule()

    def cancel(self):
        self._bus._cancel(self)
        return defer.succeed(None)


class _LocalAcknowledger:
    def __init__(self, subscription, routingKey, body):
        self.subscription = subscription
        self.message = (routingKey, body)

    def __call__(self):
        self.subscription.settled()

    def retry(self):
        self.subscription.queue.messages.appendleft(self.message)
        self.subscription.settled()

    def discard(self):
        # Nothing outlives this process: a discarded message is dropped.
        self.subscription.settled()


@implementer(IBus)
class LocalBus(service.Service):
    """
    An in-process L{IBus}. Named queues are shared by their subscribers
    (competing consumers); an unnamed subscription gets a private queue.
    Nothing is kept across a restart of the process.

    There is no broker and no connection: the bus is always L{connected},
    L{whenConnected} fires at once, a subscription consumes at once, a
    publish is "confirmed" as soon as it is queued, and nothing is ever
    nacked, dropped or rejected (those counters stay at zero).

    Of L{subscribe}'s arguments, only C{patterns}, C{handler}, C{queue} and
    C{prefetch} mean something here. The others are accepted, so the
    services call both buses alike, and ignored:
      - C{durable}: nothing outlives the process, durable or not.
      - C{partitions}: one process holds every host, so there is nothing to
        spread; the subscription receives every partition's messages (the
        per-host order a partition guarantees holds anyway: one queue
        delivers in order).
      - C{singleActive}: there are no other processes to stand by.
      - C{deadLetter}: nothing outlives the process to be inspected; a
        discarded message is dropped.
      - C{rejected}: messages carry no AMQP properties and their routing
        keys are L{str}, so the bus never rejects one before the handler.
      - C{publisher}: accepted, but there are no broker users: the handler
        gets L{None} as the publisher.

    @param clock: an L{IReactorTime} used to deliver messages asynchronously.
    """

    name = "bus"
    log = Logger()

    def __init__(self, clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock
        self._queues = {}
        self._private = count()
        self._subscriptions = []
        self.connected = True
        self.waiting = 0
        self.counters, self.rejected = busCounters(connections=1)

    def startService(self):
        service.Service.startService(self)
        self.log.info("using the in-process bus: no broker, nothing leaves this process")

    def whenConnected(self):
        """
        See L{IBus.whenConnected}: always connected.
        """
        return defer.succeed(None)

    @property
    def subscriptions(self):
        """
        See L{IBus.subscriptions}.
        """
        return tuple(self._subscriptions)

    def publish(self, routingKey, body):
        self.counters["published"] += 1
        self.counters["confirmed"] += 1
        for queue in list(self._queues.values()):
            if any(topicMatches(pattern, routingKey) for pattern in queue.bindings):
                queue.put(routingKey, body)
        return defer.succeed(None)

    def subscribe(self, patterns, handler, queue=None, durable=False, prefetch=100,
                  partitions=None, deadLetter=None, singleActive=False, rejected=None,
                  publisher=False):
        # durable, partitions, deadLetter, singleActive and rejected mean
        # nothing in one process: see the class docstring.
        if queue is None:
            queue = f"local.private.{next(self._private)}"
        if queue not in self._queues:
            self._queues[queue] = _Queue(queue, self._clock)
        target = self._queues[queue]
        target.bindings.update(patterns)
        subscription = _LocalSubscription(self, target, patterns, handler, max(1, prefetch),
                                          publisher)
        target.consumers.append(subscription)
        self._subscriptions.append(subscription)
        target.schedule()
        return subscription

    def unbind(self, queue, patterns):
        """
        See L{IBus.unbind}.
        """
        target = self._queues.get(queue)
        if target is not None:
            target.bindings.difference_update(patterns)
        return defer.succeed(None)

    def _cancel(self, subscription):
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
        queue = subscription.queue
        if subscription in queue.consumers:
            queue.consumers.remove(subscription)
        if queue.name.startswith("local.private.") and not queue.consumers:
            self._queues.pop(queue.name, None)
