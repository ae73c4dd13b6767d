"""
L{IBus} on a RabbitMQ topic exchange, through txAMQP.

One connection per process, kept by a L{ClientService}: after every
(re)connect, L{AMQPBus._prepare} authenticates, opens the channels, declares
the exchange and every subscription's queue and bindings again, then resends
whatever the broker had not confirmed. Publishing uses publisher confirms: a
publish's L{Deferred} fires only once the broker has taken the message.
A queue deleted under a running process: the broker cancels its consumer
(resmon advertises C{consumer_cancel_notify}, which txAMQP does not), and the
bus declares that subscription's queue and bindings again and consumes, on
the same connection (L{AMQPBus._consumerCancelled}).
"""

import os
import random
import struct
from collections import Counter, OrderedDict, deque
from itertools import count

from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp.client import Closed, TwistedDelegate
from txamqp.connection import Frame
from txamqp.content import Content
from txamqp.protocol import AMQClient, GarbageException
from txamqp.queue import Closed as QueueClosed
from txamqp.spec import load as loadSpec
from zope.interface import implementer

from resmon.bus import codec as _codecFix  # noqa: F401 (booleans in queue arguments)
from resmon.bus.delivery import deliver
from resmon.bus.errors import ConnectionFailures
from resmon.bus.exchange import PROBING, ExchangeUnusable, joinExchange
from resmon.bus.properties import FRAME_HEADER, REFUSED, PropertyLimits, decodeContentHeader
from resmon.defaults import DEFAULT_HEARTBEAT, DEFAULT_OUTBOX_LIMIT
from resmon.interfaces import IBus, ISubscription

SPEC_PATH = os.path.join(os.path.dirname(__file__), "amqp0-9-1.stripped.extended.xml")

# Reconnect backoff: 0.25 s doubling up to this cap, plus up to RETRY_JITTER
# at random, so a fleet does not reconnect in step and every process is back
# within two seconds of the broker accepting connections.
DEFAULT_MAX_RETRY_DELAY = 1.5
RETRY_JITTER = 0.5
DEAD_LETTER_LIMIT = 10000
PUBLISH_CHANNEL = 1
# Refused deliveries logged per reason before the log keeps to one line in a thousand.
LOGGED_REFUSALS = 10
# The reasons the bus rejects a delivery under, before any handler sees it:
# properties it cannot decode, a routing key that is not UTF-8.
PROPERTIES = "properties"
ROUTING_KEY = "routing-key"
# What resmon tells the broker in connection.start-ok. txAMQP sends no client
# properties at all, so RabbitMQ assumes a client without
# consumer_cancel_notify and never says when a queue resmon consumes from is
# deleted: the consumer would wait on a queue that no longer exists, for
# ever. Advertised, the broker sends basic.cancel (see _Delegate.basic_cancel).
CLIENT_PROPERTIES = {
    "product": "resmon",
    "capabilities": {
        "consumer_cancel_notify": True,
        "publisher_confirms": True,
        "basic.nack": True,
        # A refused login is a connection.close naming it, not a silent drop.
        "authentication_failure_close": True,
    },
}


class Dropped(Exception):
    """
    A message was dropped before the broker confirmed it: the outbox
    overflowed, the broker refused it, or the bus stopped.
    """


class ResmonAMQClient(AMQClient):
    """
    An L{AMQClient} that gives up on a silent peer after two missed
    heartbeats (txAMQP waits three), turns a channel closed by the broker
    into a reconnect, so declarations and consumers are all redone, and
    decodes content headers within C{propertyLimits} (a L{PropertyLimits}).
    """

    MAX_UNSEEN_HEARTBEAT = 2
    log = Logger()
    lostReason = None

    def __init__(self, *args, propertyLimits=None, **kwargs):
        AMQClient.__init__(self, *args, **kwargs)
        self.propertyLimits = propertyLimits if propertyLimits is not None else PropertyLimits()

    def _unpack_frame(self, data):
        # Content headers are decoded here, within bounds and without ever
        # raising for their properties: txAMQP's decoder raising in the frame
        # parser drops the connection, and the broker redelivers the same
        # message for ever (see resmon.bus.properties).
        if data[0] != FRAME_HEADER:
            return AMQClient._unpack_frame(self, data)
        channel, size = struct.unpack_from("!HI", data, 1)
        if data[7 + size] != self.FRAME_END:
            raise GarbageException(f"frame error: expected {self.FRAME_END!r}, got {data[7 + size]!r}")
        return Frame(channel, decodeContentHeader(self.spec, data[7:7 + size], self.propertyLimits))

    def connectionLost(self, reason):
        self.lostReason = reason
        AMQClient.connectionLost(self, reason)

    def channel_failed(self, channel, reason):
        if getattr(channel, PROBING, False):
            return  # a declaration the broker may refuse (resmon.bus.exchange)
        self.log.warn("broker closed channel {channel}: {reason}; reconnecting",
                      channel=channel.id, reason=reason.getErrorMessage())
        if self.transport is not None:
            self.transport.loseConnection()


class _Delegate(TwistedDelegate):
    """
    Handles what the broker sends outside replies: the connection's start
    (to advertise L{CLIENT_PROPERTIES}), publisher confirms and consumer
    cancellation.
    """

    def __init__(self, bus):
        TwistedDelegate.__init__(self)
        self.bus = bus

    def connection_start(self, channel, message):
        # TwistedDelegate.connection_start sends no client_properties.
        channel.connection_start_ok(
            client_properties=CLIENT_PROPERTIES, mechanism=self.client.mechanism,
            response=self.client.response, locale=self.client.locale)

    def basic_ack(self, channel, message):
        self.bus._confirmed(message.delivery_tag, message.multiple, True)

    def basic_nack(self, channel, message):
        self.bus._confirmed(message.delivery_tag, message.multiple, False)

    def basic_return_(self, channel, message):
        # resmon publishes without 'mandatory', so the broker should never
        # return a message; if it does, say so (txAMQP would queue it unread).
        self.bus.log.warn("broker returned a message under {routingKey}: {code} {text}",
                          routingKey=message.routing_key, code=message.reply_code,
                          text=message.reply_text)

    def basic_cancel(self, channel, message):
        # The broker cancelled one of our consumers (its queue was deleted,
        # or its node went away): declare and consume again.
        self.bus._consumerCancelled(self.client, channel, message.consumer_tag)


class _ClientFactory(protocol.Factory):
    noisy = False

    def __init__(self, bus, spec, vhost, heartbeat, clock, propertyLimits):
        self.bus = bus
        self.spec = spec
        self.vhost = vhost
        self.heartbeat = heartbeat
        self.clock = clock
        self.propertyLimits = propertyLimits

    def buildProtocol(self, addr):
        return ResmonAMQClient(
            _Delegate(self.bus), vhost=self.vhost, spec=self.spec,
            heartbeat=self.heartbeat, clock=self.clock, propertyLimits=self.propertyLimits)


class _Outgoing:
    __slots__ = ("routingKey", "body", "deferred")

    def __init__(self, routingKey, body, deferred):
        self.routingKey = routingKey
        self.body = body
        self.deferred = deferred


@implementer(ISubscription)
class _AMQPSubscription:
    def __init__(self, bus, patterns, handler, queue, durable, prefetch, partitions,
                 deadLetter=None, singleActive=False, rejected=None):
        self._bus = bus
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
        self.queueNames = []
        self.inFlight = 0
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
        return self._bus._cancel(self)


@implementer(IBus)
class AMQPBus(service.Service):
    """
    An L{IBus} on RabbitMQ.

    @param broker: a L{resmon.bus.brokerurl.BrokerURL}.
    @param exchange: the topic exchange's name; used as it is when it
        exists, declared when it is missing (see L{resmon.bus.exchange}).
    @param exchangeDurable: whether to declare the exchange durable when
        it is missing.
    @param reactor: the reactor to connect with (and its clock).
    @param heartbeat: AMQP heartbeat in seconds; a peer silent for two
        intervals is dropped and reconnected.
    @param connectTimeout: seconds for the TCP connection.
    @param handshakeTimeout: seconds for the AMQP handshake and
        declarations after TCP connects.
    @param maxRetryDelay: cap of the exponential reconnect backoff, before
        a random jitter of up to L{RETRY_JITTER} seconds.
    @param outboxLimit: how many messages may wait for the broker's
        confirmation; past that the oldest unsent is dropped and counted.
    @param topologyInterval: seconds between two checks that the exchange
        and the bindings still exist (see L{_refreshTopology}).
    @param drainTimeout: seconds L{stopService} waits for the broker to
        confirm what is in flight before closing the connection.
    @param tls: for an C{amqps://} broker, the TLS client options (an
        L{IOpenSSLClientConnectionCreator}, see L{resmon.bus.tls}); L{None}
        connects in the clear.
    @param stopProcess: called with C{reactor} to stop the process when the
        bus gives up (an exchange it cannot use); by default it stops the
        reactor (C{twistd resmon} passes one that also exits non-zero).
    @param propertyLimits: a L{PropertyLimits}: a delivery whose properties
        are over them, or cannot be decoded, is rejected without requeueing
        (dead-lettered where its queue has a dead-letter exchange) and
        counted under L{PROPERTIES}, in C{counters["rejected"]}, L{rejected}
        and the subscription's own C{rejected} counter.
    """

    name = "bus"
    log = Logger()

    def __init__(self, broker, exchange, reactor, heartbeat=DEFAULT_HEARTBEAT,
                 connectTimeout=10, handshakeTimeout=10, maxRetryDelay=DEFAULT_MAX_RETRY_DELAY,
                 outboxLimit=DEFAULT_OUTBOX_LIMIT, spec=SPEC_PATH, topologyInterval=10.0,
                 drainTimeout=2.0, tls=None, propertyLimits=None, exchangeDurable=True,
                 stopProcess=None):
        self.broker = broker
        self._stopProcess = stopProcess if stopProcess is not None else _stopReactor
        self.exchangeDurable = exchangeDurable
        self.propertyLimits = propertyLimits if propertyLimits is not None else PropertyLimits()
        self.tls = tls
        self.exchange = exchange
        self._reactor = reactor
        self.heartbeat = heartbeat
        self.connectTimeout = connectTimeout
        self.handshakeTimeout = handshakeTimeout
        self.maxRetryDelay = maxRetryDelay
        self.outboxLimit = outboxLimit
        self._spec = loadSpec(spec)
        self._subscriptions = []
        self._outbox = deque()
        self._unconfirmed = OrderedDict()
        self._client = None
        self._publishChannel = None
        self._deliveryTags = None
        self._channelIds = count(PUBLISH_CHANNEL + 1)
        self._clientService = None
        self._topologyCheck = None
        self.topologyInterval = topologyInterval
        self.drainTimeout = drainTimeout
        self.connected = False
        self.counters = {"published": 0, "confirmed": 0, "nacked": 0, "dropped": 0,
                         "connections": 0, "delivered": 0, "rejected": 0,
                         "consumer-cancels": 0}
        self.rejected = Counter()

    # IService

    def startService(self):
        service.Service.startService(self)
        endpoint = HostnameEndpoint(
            self._reactor, self.broker.host, self.broker.port, timeout=self.connectTimeout)
        if self.tls is not None:
            endpoint = wrapClientTLS(self.tls, endpoint)
        self._failures = ConnectionFailures(
            self.broker, backoffPolicy(initialDelay=0.25, maxDelay=self.maxRetryDelay, factor=2.0,
                                       jitter=lambda: random.random() * RETRY_JITTER),
            self.maxRetryDelay + RETRY_JITTER, self._reactor, self.log)
        factory = _ClientFactory(
            self, self._spec, self.broker.vhost, self.heartbeat, self._reactor,
            self.propertyLimits)
        self._clientService = ClientService(
            self._failures.endpoint(endpoint), factory, retryPolicy=self._failures.retryDelay,
            clock=self._reactor,
            prepareConnection=self._prepare,
        )
        self.log.info("connecting to {broker}, exchange {exchange}",
                      broker=self.broker.redacted(), exchange=self.exchange)
        self._clientService.startService()

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        self._stopTopologyCheck()
        client = self._client
        pending = [o.deferred for o in list(self._unconfirmed.values()) + list(self._outbox)]
        if client is not None and pending:
            # Give what is in flight a moment to be confirmed: an agent
            # stopped under load would otherwise drop its last samples.
            self.log.info("waiting up to {timeout} s for the broker to confirm {count} message(s)",
                          timeout=self.drainTimeout, count=len(pending))
            # Observers, so the timeout cancels only the waiting, not the messages.
            drained = defer.DeferredList([_observe(d) for d in pending])
            drained.addTimeout(self.drainTimeout, self._reactor)
            try:
                yield drained
            except defer.TimeoutError:
                self.log.warn("{count} message(s) not confirmed in time; dropping them",
                              count=len(self._unconfirmed) + len(self._outbox))
        if client is not None and not client.closed:
            try:
                # connection.close / close-ok: the broker requeues unacked
                # deliveries at once instead of waiting for a TCP timeout.
                yield client.close(within=2)
            except Exception:
                self.log.failure("closing the AMQP connection failed")
        yield self._clientService.stopService()
        self._failOutbox("the bus stopped")
        self.log.info("disconnected from {broker}", broker=self.broker.redacted())

    def whenConnected(self):
        """
        See L{IBus.whenConnected}: the connection is up, the exchange
        declared and the subscriptions made before this call are being
        declared (L{ISubscription.whenReady} says when each consumes).
        """
        return self._clientService.whenConnected().addCallback(lambda _: None)

    @property
    def subscriptions(self):
        """
        See L{IBus.subscriptions}.
        """
        return tuple(self._subscriptions)

    # Connection life cycle

    @defer.inlineCallbacks
    def _prepare(self, client):
        transport = client.transport
        if hasattr(transport, "setTcpNoDelay"):
            transport.setTcpNoDelay(True)
        handshake = self._handshake(client)
        handshake.addTimeout(self.handshakeTimeout, self._reactor)
        try:
            yield handshake
        except Exception as e:
            if isinstance(e, ExchangeUnusable):
                self._giveUp(e)
            elif not self._failures.handshakeFailed(e):
                self.log.warn("AMQP handshake with {broker} failed: {error}",
                              broker=self.broker.redacted(), error=_describe(e))
            # ClientService (Twisted 26.10) leaves a connection whose
            # preparation failed open, and the loss of it, whenever it comes,
            # hits its state machine in a state that has no transition for it
            # (automat NoTransition). Close it ourselves, unannounced.
            if hasattr(client, "_lostNotification"):
                client._lostNotification = lambda reason: None
            if client.transport is not None:
                client.transport.abortConnection()
            raise
        self.counters["connections"] += 1
        self.connected = True
        self._failures.connected()
        self.log.info("connected to {broker} (connection #{count}), {subscriptions} subscription(s)",
                      broker=self.broker.redacted(), count=self.counters["connections"],
                      subscriptions=len(self._subscriptions))
        client.disconnected.wait().addCallback(lambda _: self._lost(client))
        self._topologyCheck = LoopingCall(self._refreshTopology)
        self._topologyCheck.clock = self._reactor
        self._topologyCheck.start(self.topologyInterval, now=False)
        self._flush()

    @defer.inlineCallbacks
    def _handshake(self, client):
        yield client.authenticate(self.broker.username, self.broker.password)
        channel = yield client.channel(PUBLISH_CHANNEL)
        yield channel.channel_open()
        self._channelIds = count(PUBLISH_CHANNEL + 1)
        yield joinExchange(client, self._channelIds, self.exchange, self.exchangeDurable)
        yield channel.confirm_select()
        for subscription in self._subscriptions:
            yield self._consume(client, subscription)
        self.useConnection(client, channel)

    def _giveUp(self, error):
        """
        The exchange cannot be used (L{ExchangeUnusable}): say so in one line
        and stop the process with exit status 1, rather than reconnect to meet the same refusal
        for ever.
        """
        self.log.critical("{error}; stopping", error=error)
        self._stopProcess(self._reactor)

    def useConnection(self, client, publishChannel):
        """
        Publish through C{publishChannel} of C{client} from now on: an open
        channel in confirm mode, whose deliveries the broker numbers from 1.
        The handshake calls it once everything is declared; unit tests of
        the publishing state machine call it with fakes.
        """
        self._client = client
        self._publishChannel = publishChannel
        self._deliveryTags = count(1)

    def _lost(self, client):
        if client is not self._client:
            return
        self._client = None
        self._publishChannel = None
        self.connected = False
        for subscription in self._subscriptions:
            subscription.stopped()
        self._stopTopologyCheck()
        # Whatever the broker did not confirm goes out again, first and in order.
        self._outbox.extendleft(reversed(self._unconfirmed.values()))
        self._unconfirmed.clear()
        if self.running:
            lost = getattr(client, "lostReason", None)
            reason = lost.getErrorMessage() if lost is not None else "unknown"
            self.log.warn("lost the connection to {broker} ({reason}); {pending} message(s) wait "
                          "to be resent; reconnecting",
                          broker=self.broker.redacted(), reason=reason, pending=len(self._outbox))

    def _stopTopologyCheck(self):
        if self._topologyCheck is not None and self._topologyCheck.running:
            self._topologyCheck.stop()
        self._topologyCheck = None

    # Publishing

    def publish(self, routingKey, body):
        d = defer.Deferred()
        if not self.running:
            d.errback(Dropped("the bus is not running"))
            return d
        self._outbox.append(_Outgoing(routingKey, body, d))
        self._enforceLimit()
        self._flush()
        return d

    def _enforceLimit(self):
        while self._outbox and len(self._outbox) + len(self._unconfirmed) > self.outboxLimit:
            dropped = self._outbox.popleft()
            self.counters["dropped"] += 1
            if self.counters["dropped"] == 1 or self.counters["dropped"] % 1000 == 0:
                self.log.warn("outbox full ({limit}): dropped the oldest message ({count} so far)",
                              limit=self.outboxLimit, count=self.counters["dropped"])
            dropped.deferred.errback(Dropped("outbox full"))

    def _flush(self):
        channel = self._publishChannel
        while channel is not None and self._outbox and not channel.closed:
            outgoing = self._outbox.popleft()
            tag = next(self._deliveryTags)
            self._unconfirmed[tag] = outgoing
            content = Content(outgoing.body, properties={
                "delivery-mode": 2, "content-type": "application/json"})
            self.counters["published"] += 1
            channel.basic_publish(
                exchange=self.exchange, routing_key=outgoing.routingKey, content=content,
            ).addErrback(lambda f: None)  # a closed channel: _lost() requeues it

    def _confirmed(self, tag, multiple, ok):
        if multiple:
            tags = [t for t in self._unconfirmed if t <= tag]
        else:
            tags = [tag] if tag in self._unconfirmed else []
        for t in tags:
            outgoing = self._unconfirmed.pop(t)
            if ok:
                self.counters["confirmed"] += 1
                outgoing.deferred.callback(None)
            else:
                self.counters["nacked"] += 1
                self.log.warn("broker refused a message under {routingKey}",
                              routingKey=outgoing.routingKey)
                outgoing.deferred.errback(Dropped("the broker refused the message (basic.nack)"))

    def _failOutbox(self, why):
        pending = list(self._unconfirmed.values()) + list(self._outbox)
        self._unconfirmed.clear()
        self._outbox.clear()
        for outgoing in pending:
            outgoing.deferred.errback(Dropped(why))

    # Subscribing

    def subscribe(self, patterns, handler, queue=None, durable=False, prefetch=100,
                  partitions=None, deadLetter=None, singleActive=False, rejected=None):
        subscription = _AMQPSubscription(
            self, patterns, handler, queue, durable, prefetch, partitions, deadLetter,
            singleActive, rejected)
        self._subscriptions.append(subscription)
        if self._client is not None:
            self._consume(self._client, subscription).addErrback(
                lambda f: self.log.failure("subscribing failed", f))
        return subscription

    @defer.inlineCallbacks
    def _consume(self, client, subscription):
        channelId = next(self._channelIds)
        channel = yield client.channel(channelId)
        yield channel.channel_open()
        yield channel.basic_qos(prefetch_count=subscription.prefetch)
        arguments = {}
        if subscription.deadLetter:
            yield self._declareDeadLetter(channel, subscription.deadLetter)
            arguments["x-dead-letter-exchange"] = subscription.deadLetter
        if subscription.partitions is not None:
            queueNames = yield self._declarePartitions(channel, subscription, arguments)
        else:
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
            queueNames = [reply.queue]
            bindings = [("queue_bind", {"queue": reply.queue, "exchange": self.exchange,
                                        "routing_key": pattern})
                        for pattern in subscription.patterns]
            subscription.bindings = (channel, bindings)
            yield self._bind(channel, bindings)
        subscription.consumerTags = []
        subscription.messageQueues = []
        for queueName in queueNames:
            reply = yield channel.basic_consume(queue=queueName, no_ack=False)
            subscription.consumerTags.append(reply.consumer_tag)
            messages = yield client.queue(reply.consumer_tag)
            subscription.messageQueues.append(messages)
            self._pump(client, channel, messages, subscription)
        subscription.channelId = channelId
        subscription.queueNames = queueNames
        self.log.info("consuming {patterns} from queue {queue}",
                      patterns=",".join(subscription.patterns), queue=",".join(queueNames))
        subscription.ready()

    @defer.inlineCallbacks
    def _consumerCancelled(self, client, channel, consumerTag):
        """
        The broker cancelled a consumer (basic.cancel, sent because resmon
        advertises C{consumer_cancel_notify}): someone deleted its queue.
        Close the subscription's channel (deliveries in flight on it are
        requeued or, with their queue, gone) and declare and consume again
        on a fresh one; if that fails, reconnect, which declares everything.
        """
        subscription = next(
            (s for s in self._subscriptions if consumerTag in s.consumerTags), None)
        # self._client is ClientService's proxy of the protocol the delegate knows.
        current = self._client
        if subscription is None or current is None or current.transport is not client.transport:
            return  # cancelled by its owner meanwhile, or an older connection
        client = current
        self.counters["consumer-cancels"] += 1
        self.log.warn("the broker cancelled the consumer of {patterns} on queue {queue} "
                      "(queue deleted?); declaring and consuming again",
                      patterns=",".join(subscription.patterns),
                      queue=",".join(subscription.queueNames))
        subscription.stopped()
        for tag, messages in zip(subscription.consumerTags, subscription.messageQueues):
            client.queues.pop(tag, None)  # txAMQP keeps one queue per consumer tag
            messages.close()  # ends its pump
        subscription.consumerTags, subscription.messageQueues = [], []
        try:
            if not channel.closed:
                yield channel.channel_close()
                channel.close(Closed("consumer cancelled by the broker"))
            if subscription in self._subscriptions and client is self._client:
                yield self._consume(client, subscription)
        except Exception as e:
            if client is self._client and client.transport is not None:
                self.log.warn("consuming again failed ({error}); reconnecting", error=_describe(e))
                client.transport.loseConnection()

    @staticmethod
    @defer.inlineCallbacks
    def _bind(channel, bindings):
        for method, arguments in bindings:
            yield getattr(channel, method)(**arguments)

    @defer.inlineCallbacks
    def _refreshTopology(self):
        """
        Check that the exchange still exists and renew every binding to it.
        Someone deleting the exchange (or a binding) silently cuts a
        consumer off: the passive check turns that into a 404, which closes
        the channel and makes the bus reconnect and declare everything again;
        renewing the bindings (idempotent) heals a deleted binding.
        """
        channel = self._publishChannel
        if channel is None or channel.closed:
            return
        try:
            yield channel.exchange_declare(exchange=self.exchange, type="topic", passive=True)
            for subscription in list(self._subscriptions):
                if subscription.bindings is None:
                    continue
                subscriptionChannel, bindings = subscription.bindings
                for method, arguments in bindings:
                    # A subscription cancelled while this loop waited may have
                    # taken its auto-delete queue with it: binding that queue
                    # would get a 404, which closes the channel and costs a
                    # reconnect (and a resend of every unconfirmed message).
                    if subscription not in self._subscriptions or subscriptionChannel.closed:
                        break
                    yield getattr(subscriptionChannel, method)(**arguments)
        except Exception as e:
            self.log.warn("checking the exchange and bindings failed: {error}", error=_describe(e))

    @defer.inlineCallbacks
    def _declareDeadLetter(self, channel, name):
        """
        A fanout exchange and a durable queue, both named C{name}, holding at
        most L{DEAD_LETTER_LIMIT} discarded messages (the oldest go first).
        """
        yield channel.exchange_declare(exchange=name, type="fanout", durable=True)
        yield channel.queue_declare(
            queue=name, durable=True, arguments={"x-max-length": DEAD_LETTER_LIMIT})
        yield channel.queue_bind(queue=name, exchange=name, routing_key="")

    @defer.inlineCallbacks
    def _declarePartitions(self, channel, subscription, arguments):
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
        yield self._bind(channel, bindings)
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
    def _pump(self, client, channel, messages, subscription):
        while True:
            try:
                message = yield messages.get()
            except (QueueClosed, Closed):
                return
            if subscription not in self._subscriptions:
                return
            self.counters["delivered"] += 1
            refused = message.content.properties.get(REFUSED)
            if refused is not None:
                self._refuse(subscription, channel, message, PROPERTIES, refused)
                continue
            if not isinstance(message.routing_key, str):
                # txAMQP hands over a routing key that is not UTF-8 as bytes.
                self._refuse(subscription, channel, message, ROUTING_KEY, "not UTF-8")
                continue
            body = message.content.body
            if not isinstance(body, bytes):
                body = body.encode("utf-8")  # txAMQP hands an empty body over as ''
            subscription.inFlight += 1
            deliver(subscription.handler, message.routing_key, body,
                    _acknowledger(channel, message.delivery_tag)
                    ).addBoth(lambda _: subscription.settled())

    def _refuse(self, subscription, channel, message, reason, why):
        """
        Reject, without requeueing, a delivery the bus cannot hand over (its
        properties or its routing key could not be decoded), and count it
        under C{reason}: redelivered, it would be refused again.
        """
        self.counters["rejected"] += 1
        self.rejected[reason] += 1
        subscription.rejected[reason] += 1
        count = self.rejected[reason]
        if count <= LOGGED_REFUSALS or count % 1000 == 0:
            routingKey = message.routing_key
            if isinstance(routingKey, bytes):
                routingKey = routingKey.decode("utf-8", "backslashreplace")
            self.log.warn(
                "rejected a message under {routingKey} from {patterns}: {reason}: {why} "
                "({count} for this reason){deadLettered}",
                routingKey=routingKey[:80], patterns=",".join(subscription.patterns),
                reason=reason, why=why[:200], count=count,
                deadLettered=f", dead-lettered to {subscription.deadLetter}"
                if subscription.deadLetter else "")
        _acknowledger(channel, message.delivery_tag).discard()

    @defer.inlineCallbacks
    def _cancel(self, subscription):
        """
        Stop consuming, let the deliveries being handled finish and be
        acknowledged (up to C{drainTimeout}), then close the channel: a
        process stopped under load hands back only what it had not started.
        """
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
        client = self._client
        if client is None or subscription.channelId is None:
            return
        try:
            channel = yield client.channel(subscription.channelId)
            for tag in subscription.consumerTags:
                yield channel.basic_cancel(consumer_tag=tag)
            idle = subscription.whenIdle()
            idle.addTimeout(self.drainTimeout, self._reactor)
            try:
                yield idle
            except defer.TimeoutError:
                self.log.warn("{count} message(s) still being handled; the broker will redeliver them",
                              count=subscription.inFlight)
            yield channel.channel_close()
        except Exception:
            pass  # the connection is going or gone: the broker redelivers what was not acked


def partitionQueue(queue, index):
    """
    The name of partition C{index} of the partitioned queue C{queue}.
    """
    return f"{queue}.{index}"


class _acknowledger:
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


def _stopReactor(reactor):
    if getattr(reactor, "running", False):
        reactor.callLater(0, reactor.stop)


def _observe(d):
    """
    A L{Deferred} that fires (with L{None}) when C{d} does, leaving C{d}'s
    result to its own callbacks.
    """
    observer = defer.Deferred()

    def fire(result):
        observer.callback(None)
        return result
    d.addBoth(fire)
    return observer


def _describe(error):
    """
    One line saying why a connection or an operation failed: the innermost
    cause (a connection lost because of a TLS error carries it inside
    Failures and exceptions), with TLS failures said plainly.
    """
    error = _innermost(error)
    kind = type(error)
    if kind.__module__.startswith("OpenSSL"):
        # pyOpenSSL: [(library, function, reason), ...]
        reasons = [r[-1] for r in (error.args[0] if error.args else []) if isinstance(r, tuple) and r]
        text = "TLS: " + ("; ".join(reasons) or kind.__name__)
        if "certificate verify failed" in text:
            text += " (the broker's certificate does not chain to --tls-ca or the system's authorities)"
        return text[:300]
    if kind.__module__.startswith("service_identity"):
        mismatches = sorted({type(e).__name__ for e in getattr(error, "errors", [])})
        return ("TLS: certificate verify failed: the broker's certificate is not valid for the "
                f"host of the URL ({', '.join(mismatches) or kind.__name__})")
    text = str(error) or kind.__name__
    return text.splitlines()[0][:200]


def _innermost(error, depth=5):
    for _ in range(depth):
        if isinstance(error, Failure):
            error = error.value
            continue
        inner = [a for a in getattr(error, "args", ()) if isinstance(a, (Failure, BaseException))]
        if not inner:
            break
        error = inner[0]
    return error
