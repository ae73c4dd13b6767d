"""
What the RabbitMQ bus declares on the broker, and the periodic check that
it is all still there.

The topic exchange; for each subscription its queue (named and durable,
named and single-active, or private), its bindings, its dead-letter
exchange and queue, or its partitions behind a consistent-hash exchange.
Every few seconds, the exchange is checked and the bindings renewed
(L{Topology.refresh}).
"""

from twisted.internet import defer
from twisted.logger import Logger
from txamqp.client import ChannelClosed

from resmon.bus.connection import describe
from resmon.bus.exchange import NOT_FOUND, joinExchange, replyOf
from resmon.periodic import Periodic

DEAD_LETTER_LIMIT = 10000


def partitionQueue(queue, index):
    """
    The name of partition C{index} of the partitioned queue C{queue}.
    """
    return f"{queue}.{index}"


class Topology:
    """
    Declarations on the topic exchange C{exchange}.

    @param clock: an L{IReactorTime}, for the periodic check.
    @param interval: seconds between two checks (see L{refresh}).
    """

    log = Logger()

    def __init__(self, exchange, clock, interval, durable=True):
        self.exchange = exchange
        self.durable = durable
        self._clock = clock
        self.interval = interval
        self._check = None

    def joinExchange(self, client, channelIds):
        """
        Use the topic exchange as it is when it exists, declare it (durable
        or not, as L{durable} says) when it is missing: see
        L{resmon.bus.exchange.joinExchange}.

        @raise resmon.bus.exchange.ExchangeUnusable: it cannot be used.
        """
        return joinExchange(client, channelIds, self.exchange, self.durable)

    @defer.inlineCallbacks
    def declareQueues(self, channel, subscription):
        """
        Declare C{subscription}'s queues, bindings and dead-letter queue,
        and keep its bindings in C{subscription.bindings} for L{refresh}.

        @return: the names of the queues to consume from.
        """
        arguments = {}
        if subscription.deadLetter:
            yield self.declareDeadLetter(channel, subscription.deadLetter)
            arguments["x-dead-letter-exchange"] = subscription.deadLetter
        if subscription.partitions is not None:
            return (yield self.declarePartitions(channel, subscription, arguments))
        if subscription.queue and subscription.singleActive:
            # Gone with its last consumer: nobody stands by, nothing piles up.
            reply = yield channel.queue_declare(
                queue=subscription.queue, auto_delete=True,
                arguments=dict(arguments, **{"x-single-active-consumer": True}))
        elif subscription.queue:
            reply = yield channel.queue_declare(
                queue=subscription.queue, durable=subscription.durable, arguments=arguments)
        else:
            reply = yield channel.queue_declare(queue="", exclusive=True, auto_delete=True)
        bindings = [("queue_bind", {"queue": reply.queue, "exchange": self.exchange,
                                    "routing_key": pattern})
                    for pattern in subscription.patterns]
        subscription.bindings = (channel, bindings)
        yield bind(channel, bindings)
        return [reply.queue]

    @defer.inlineCallbacks
    def declareDeadLetter(self, channel, name):
        """
        A fanout exchange and a durable queue, both named C{name}, holding at
        most L{DEAD_LETTER_LIMIT} discarded messages (the oldest go first).
        """
        yield channel.exchange_declare(exchange=name, type="fanout", durable=True)
        yield channel.queue_declare(
            queue=name, durable=True, arguments={"x-max-length": DEAD_LETTER_LIMIT})
        yield channel.queue_bind(queue=name, exchange=name, routing_key="")

    @defer.inlineCallbacks
    def declarePartitions(self, channel, subscription, arguments):
        """
        Route the subscription's messages through a consistent-hash exchange
        into C{count} durable single-active-consumer queues: one routing key
        (one host) always lands in the same queue, and one process at a time
        consumes each queue. Every process declares every partition, so the
        hash ring does not depend on which processes run; each consumes only
        the partitions it owns.

        @return: the names of the owned partition queues.
        """
        count, owned = subscription.partitions
        hashExchange = f"{subscription.queue}.hash"
        yield channel.exchange_declare(
            exchange=hashExchange, type="x-consistent-hash", durable=True)
        bindings = [("exchange_bind", {"destination": hashExchange, "source": self.exchange,
                                       "routing_key": pattern})
                    for pattern in subscription.patterns]
        subscription.bindings = (channel, bindings)
        yield bind(channel, bindings)
        for index in range(count):
            yield channel.queue_declare(
                queue=partitionQueue(subscription.queue, index), durable=True,
                arguments=dict(arguments, **{"x-single-active-consumer": True}))
            # The binding key of a consistent-hash exchange is the queue's weight.
            yield channel.queue_bind(
                queue=partitionQueue(subscription.queue, index), exchange=hashExchange,
                routing_key="1")
        return [partitionQueue(subscription.queue, index) for index in sorted(owned)]

    @defer.inlineCallbacks
    def unbind(self, channel, queue, patterns):
        """
        Remove the bindings of C{queue} to C{patterns} on the exchange, on
        C{channel} (one the broker may close: a missing queue is a 404,
        which means there is nothing to unbind).
        """
        for pattern in patterns:
            try:
                yield channel.queue_unbind(queue=queue, exchange=self.exchange,
                                           routing_key=pattern)
            except ChannelClosed as e:
                if replyOf(e)[0] != NOT_FOUND:
                    raise
                return

    @defer.inlineCallbacks
    def refresh(self, channel, subscriptions):
        """
        Check on C{channel} that the exchange still exists and renew every
        binding of C{subscriptions} (the live list, which may shrink while
        this waits). Someone deleting the exchange (or a binding) silently
        cuts a consumer off: the passive check turns that into a 404, which
        closes the channel and makes the bus reconnect and declare
        everything again; renewing the bindings (idempotent) heals a deleted
        binding.
        """
        if channel is None or channel.closed:
            return
        try:
            yield channel.exchange_declare(exchange=self.exchange, type="topic", passive=True)
            for subscription in list(subscriptions):
                if subscription.bindings is None:
                    continue
                subscriptionChannel, bindings = subscription.bindings
                for method, arguments in bindings:
                    # A subscription cancelled while this loop waited may have
                    # taken its auto-delete queue with it: binding that queue
                    # would get a 404, which closes the channel and costs a
                    # reconnect (and a resend of every unconfirmed message).
                    if subscription not in subscriptions or subscriptionChannel.closed:
                        break
                    yield getattr(subscriptionChannel, method)(**arguments)
        except Exception as e:
            self.log.warn("checking the exchange and bindings failed: {error}", error=describe(e))

    def startChecking(self, channel, subscriptions):
        """
        Call L{refresh} every L{interval} seconds from now on.
        """
        self.stopChecking()
        self._check = Periodic(lambda: self.refresh(channel, subscriptions), self.interval,
                               self._clock, self.log, "the topology check stopped")
        self._check.start()

    def stopChecking(self):
        """
        Stop calling L{refresh}.
        """
        if self._check is not None:
            self._check.stop()
        self._check = None

    @property
    def checking(self):
        """
        Whether L{refresh} is called periodically.
        """
        return self._check is not None and self._check.running


@defer.inlineCallbacks
def bind(channel, bindings):
    """
    Make C{bindings}, C{[(method name, arguments)]}, on C{channel}, in order.
    """
    for method, arguments in bindings:
        yield getattr(channel, method)(**arguments)
