"""
The RabbitMQ bus's consumers: subscriptions, and the pump that hands each
delivery to its handler.

Each subscription consumes on a channel of its own, with its own prefetch.
resmon's client (L{resmon.bus.frames.FastFrames}) hands each delivery
straight from its frames to L{resmon.bus.delivery.deliver}, settled through
the channel's L{resmon.bus.acks.BatchedAcks}; with a client without it, a
pump per consumer reads txAMQP's queue of deliveries and hands each over
with an L{Acknowledger}. A delivery the bus
cannot hand over (undecodable properties, a routing key that is not UTF-8)
is rejected without requeueing and counted. When the broker cancels a
consumer (its queue was deleted), the subscription's queue and bindings are
declared again and consumed, on the same connection
(L{Consumers.consumerCancelled}).
"""

from collections import Counter
from functools import partial
from itertools import count

from twisted.internet import defer
from twisted.logger import Logger
from txamqp.client import Closed
from txamqp.queue import Closed as QueueClosed
from zope.interface import implementer

from resmon.bus.acks import BatchedAcks
from resmon.bus.connection import describe
from resmon.bus.delivery import deliver
from resmon.bus.properties import REFUSED
from resmon.bus.workarounds import bodyBytes, closeChannel, forgetConsumer
from resmon.interfaces import ISubscription
from resmon.ratelimit import LimitedLog

# The reasons the bus rejects a delivery under, before any handler sees it:
# properties it cannot decode, a routing key that is not UTF-8.
PROPERTIES = "properties"
ROUTING_KEY = "routing-key"
# The channel the bus publishes on; consumers take the next ones.
PUBLISH_CHANNEL = 1


@implementer(ISubscription)
class AMQPSubscription:
    """
    A subscription on the RabbitMQ bus: what it was asked for, and where it
    consumes (its channel, consumer tags and queues) while it does.
    """

    def __init__(self, consumers, patterns, handler, queue, durable, prefetch, partitions,
                 deadLetter=None, singleActive=False, rejected=None, publisher=False):
        self._consumers = consumers
        self.publisher = publisher
        self.patterns = tuple(patterns)
        self.handler = handler
        self.queue = queue
        self.durable = durable
        self.prefetch = prefetch
        self.partitions = partitions
        self.deadLetter = deadLetter
        self.singleActive = singleActive
        # Deliveries the bus itself rejected, by reason (the subscriber's
        # own counter when it gave one, so its stats line shows them).
        self.rejected = rejected if rejected is not None else Counter()
        # (channel, [(method name, arguments)]) of the bindings to renew.
        self.bindings = None
        self.channelId = None
        self.consumerTags = []
        # The txAMQP queues the pumps read, one per consumer tag.
        self.messageQueues = []
        # The channel's BatchedAcks, with a client that delivers straight
        # from the frames.
        self.acks = None
        self.queueNames = []
        self.inFlight = 0
        # A handler marked with resmon.bus.delivery.settlesLater.
        self.settlesLater = bool(getattr(handler, "settlesLater", False))
        self._idleWaiters = []
        self.consuming = False
        self._readyWaiters = []

    def whenReady(self):
        """
        See L{ISubscription.whenReady}.
        """
        if self.consuming:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._readyWaiters.append(waiter)
        return waiter

    def ready(self):
        """
        The subscription consumes (again): fire L{whenReady}'s waiters.
        """
        self.consuming = True
        waiters, self._readyWaiters = self._readyWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def stopped(self):
        """
        The subscription no longer consumes (connection lost, consumer
        cancelled, or cancelled by its owner).
        """
        self.consuming = False

    def settled(self):
        self.inFlight -= 1
        if self.inFlight == 0:
            waiters, self._idleWaiters = self._idleWaiters, []
            for waiter in waiters:
                waiter.callback(None)

    def whenIdle(self):
        """
        A L{Deferred} that fires once no delivery is being handled.
        """
        if self.inFlight == 0:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._idleWaiters.append(waiter)
        return waiter

    def cancel(self):
        self.stopped()
        waiters, self._readyWaiters = self._readyWaiters, []
        for waiter in waiters:
            waiter.errback(defer.CancelledError("the subscription was cancelled"))
        return self._consumers.cancel(self)


class Consumers:
    """
    The live subscriptions of a bus, and their consumers on the current
    connection.

    @param topology: the L{resmon.bus.topology.Topology} that declares each
        subscription's queues.
    @param counters: the bus's counters (C{delivered}, C{rejected},
        C{consumer-cancels}).
    @param rejected: the bus's L{Counter} of rejections by reason.
    @param clock: an L{IReactorTime}.
    @param drainTimeout: seconds a cancelled subscription waits for its
        deliveries being handled before closing its channel.

    @ivar subscriptions: the live L{AMQPSubscription}s, in order.
    @ivar client: the connection consumed on, or L{None}.
    """

    log = Logger()

    def __init__(self, topology, counters, rejected, clock, drainTimeout):
        self.topology = topology
        self.counters = counters
        self.rejected = rejected
        self._clock = clock
        self.drainTimeout = drainTimeout
        self.subscriptions = []
        self.client = None
        self.channelIds = count(PUBLISH_CHANNEL + 1)
        self._refusalWarnings = {}

    def subscribe(self, patterns, handler, queue=None, durable=False, prefetch=100,
                  partitions=None, deadLetter=None, singleActive=False, rejected=None,
                  publisher=False):
        """
        See L{resmon.interfaces.IBus.subscribe}: consume at once if
        connected, else once connected.
        """
        subscription = AMQPSubscription(
            self, patterns, handler, queue, durable, prefetch, partitions, deadLetter,
            singleActive, rejected, publisher)
        self.subscriptions.append(subscription)
        if self.client is not None:
            self.consume(self.client, subscription).addErrback(
                lambda f: self.log.failure("subscribing failed", f))
        return subscription

    def newConnection(self):
        """
        A new connection starts: its channels are numbered again from the
        first after L{PUBLISH_CHANNEL}, in L{channelIds}, which the
        exchange's declarations (L{resmon.bus.exchange}) draw from too.
        """
        self.channelIds = count(PUBLISH_CHANNEL + 1)

    @defer.inlineCallbacks
    def consumeAll(self, client):
        """
        Declare and consume every subscription on the connection
        L{newConnection} announced.
        """
        for subscription in self.subscriptions:
            yield self.consume(client, subscription)

    def lost(self):
        """
        The connection is lost: nothing consumes until the next.
        """
        self.client = None
        for subscription in self.subscriptions:
            subscription.stopped()

    @defer.inlineCallbacks
    def consume(self, client, subscription):
        """
        Open a channel for C{subscription} on C{client}, declare its queues
        and consume them, one pump per queue.
        """
        channelId = next(self.channelIds)
        channel = yield client.channel(channelId)
        yield channel.channel_open()
        yield channel.basic_qos(prefetch_count=subscription.prefetch)
        queueNames = yield self.topology.declareQueues(channel, subscription)
        subscription.consumerTags = []
        subscription.messageQueues = []
        consumeInto = getattr(client, "consumeInto", None)
        if consumeInto is not None:
            # Deliveries straight from the frames to the handler, settled in
            # batches (resmon.bus.frames, resmon.bus.acks).
            acks = subscription.acks = BatchedAcks(channel, client, self._clock)
            consumeInto(channelId, partial(self._received, subscription, acks))
        for queueName in queueNames:
            reply = yield channel.basic_consume(queue=queueName, no_ack=False)
            subscription.consumerTags.append(reply.consumer_tag)
            if consumeInto is not None:
                continue
            messages = yield client.queue(reply.consumer_tag)
            subscription.messageQueues.append(messages)
            self._pump(channel, messages, subscription).addErrback(
                lambda f: self.log.failure("the consumer of {queue} stopped", f, queue=queueName))
        subscription.channelId = channelId
        subscription.queueNames = queueNames
        self.log.info("consuming {patterns} from queue {queue}",
                      patterns=",".join(subscription.patterns), queue=",".join(queueNames))
        subscription.ready()

    @defer.inlineCallbacks
    def consumerCancelled(self, client, channel, consumerTag):
        """
        The broker cancelled a consumer (basic.cancel, sent because resmon
        advertises C{consumer_cancel_notify}): someone deleted its queue.
        Close the subscription's channel (deliveries in flight on it are
        requeued or, with their queue, gone) and declare and consume again
        on a fresh one; if that fails, reconnect, which declares everything.
        """
        subscription = next(
            (s for s in self.subscriptions if consumerTag in s.consumerTags), None)
        # self.client is ClientService's proxy of the protocol the delegate knows.
        current = self.client
        if subscription is None or current is None or current.transport is not client.transport:
            return  # cancelled by its owner meanwhile, or an older connection
        client = current
        self.counters["consumer-cancels"] += 1
        self.log.warn("the broker cancelled the consumer of {patterns} on queue {queue} "
                      "(queue deleted?); declaring and consuming again",
                      patterns=",".join(subscription.patterns),
                      queue=",".join(subscription.queueNames))
        subscription.stopped()
        stopConsuming = getattr(client, "stopConsuming", None)
        if stopConsuming is not None and subscription.channelId is not None:
            stopConsuming(subscription.channelId)
        for tag in subscription.consumerTags:
            forgetConsumer(client, tag)  # ends its pump
        subscription.consumerTags, subscription.messageQueues = [], []
        try:
            if not channel.closed:
                yield closeChannel(channel, "consumer cancelled by the broker")
            if subscription in self.subscriptions and client is self.client:
                yield self.consume(client, subscription)
        except Exception as e:
            if client is self.client and client.transport is not None:
                self.log.warn("consuming again failed ({error}); reconnecting", error=describe(e))
                client.transport.loseConnection()

    @defer.inlineCallbacks
    def _pump(self, channel, messages, subscription):
        """
        Hand the deliveries txAMQP queued for one consumer over, one by one:
        the path of a client without L{resmon.bus.frames.FastFrames}.
        """
        while True:
            try:
                message = yield messages.get()
            except (QueueClosed, Closed):
                return
            if subscription not in self.subscriptions:
                return
            self._handOver(subscription, message.routing_key, message.content.properties,
                           bodyBytes(message.content.body),
                           Acknowledger(channel, message.delivery_tag))

    def _received(self, subscription, acks, tag, routingKey, properties, body):
        """
        A delivery straight from L{resmon.bus.frames.FastFrames}: settled
        through the channel's L{BatchedAcks}. Never raises: it runs in the
        connection's C{dataReceived}.
        """
        settlement = acks.received(tag)
        if subscription not in self.subscriptions:
            return  # cancelled: left unsettled, the broker redelivers it
        try:
            self._handOver(subscription, routingKey, properties, body, settlement)
        except Exception:
            self.log.failure("handing a delivery over failed")

    def _handOver(self, subscription, routingKey, properties, body, acknowledger):
        """
        Refuse a delivery the bus cannot hand over, or hand it to the
        subscription's handler through L{deliver}.
        """
        self.counters["delivered"] += 1
        refused = properties.get(REFUSED)
        if refused is not None:
            self._refuse(subscription, routingKey, PROPERTIES, refused, acknowledger)
            return
        if not isinstance(routingKey, str):
            # txAMQP hands over a routing key that is not UTF-8 as bytes.
            self._refuse(subscription, routingKey, ROUTING_KEY, "not UTF-8", acknowledger)
            return
        subscription.inFlight += 1
        # The user_id RabbitMQ verified, for a subscriber that asked for it.
        extra = (properties.get("user-id"),) if subscription.publisher else ()
        deliver(subscription.handler, routingKey, body, acknowledger, *extra,
                settled=subscription.settled, settles=subscription.settlesLater)

    def _refuse(self, subscription, routingKey, reason, why, acknowledger):
        """
        Reject, without requeueing, a delivery the bus cannot hand over (its
        properties or its routing key could not be decoded), and count it
        under C{reason}: redelivered, it would be refused again.
        """
        self.counters["rejected"] += 1
        self.rejected[reason] += 1
        subscription.rejected[reason] += 1
        warnings = self._refusalWarnings.get(reason)
        if warnings is None:
            warnings = self._refusalWarnings[reason] = LimitedLog(self._clock)
        if isinstance(routingKey, bytes):
            routingKey = routingKey.decode("utf-8", "backslashreplace")
        warnings.warn(
            self.log,
            "rejected a message under {routingKey} from {patterns}: {reason}: {why} "
            "({count} for this reason){deadLettered}",
            routingKey=routingKey[:80], patterns=",".join(subscription.patterns),
            reason=reason, why=why[:200], count=self.rejected[reason],
            deadLettered=f", dead-lettered to {subscription.deadLetter}"
            if subscription.deadLetter else "")
        acknowledger.discard()

    @defer.inlineCallbacks
    def cancel(self, subscription):
        """
        Stop consuming, let the deliveries being handled finish and be
        acknowledged (up to C{drainTimeout}), then close the channel: a
        process stopped under load hands back only what it had not started.
        """
        if subscription in self.subscriptions:
            self.subscriptions.remove(subscription)
        client = self.client
        if client is None or subscription.channelId is None:
            return
        try:
            channel = yield client.channel(subscription.channelId)
            for tag in subscription.consumerTags:
                yield channel.basic_cancel(consumer_tag=tag)
            idle = subscription.whenIdle()
            idle.addTimeout(self.drainTimeout, self._clock)
            try:
                yield idle
            except defer.TimeoutError:
                self.log.warn("{count} message(s) still being handled; the broker will redeliver them",
                              count=subscription.inFlight)
            if subscription.acks is not None:
                subscription.acks.flush()  # what was settled, before the channel closes
            yield channel.channel_close()
        except Exception:
            pass  # the connection is going or gone: the broker redelivers what was not acked


class Acknowledger:
    """
    Acknowledges or requeues one delivery, if its channel is still open: a
    delivery from a channel that closed since is redelivered by the broker.
    """

    __slots__ = ("channel", "tag")

    def __init__(self, channel, tag):
        self.channel = channel
        self.tag = tag

    def __call__(self):
        if not self.channel.closed:
            self.channel.basic_ack(delivery_tag=self.tag).addErrback(lambda f: None)

    def retry(self):
        if not self.channel.closed:
            self.channel.basic_reject(delivery_tag=self.tag, requeue=True).addErrback(lambda f: None)

    def discard(self):
        if not self.channel.closed:
            self.channel.basic_reject(delivery_tag=self.tag, requeue=False).addErrback(lambda f: None)
