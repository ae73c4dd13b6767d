"""
L{IBus} on a RabbitMQ topic exchange, through txAMQP: the service that
composes the bus's parts.

 - L{resmon.bus.connection}: one connection per process, kept by a
   L{ClientService}; after every (re)connect, L{AMQPBus} opens the publish
   channel, declares the exchange and every subscription again, then resends
   whatever the broker had not confirmed.
 - L{resmon.bus.outbox}: publishing with publisher confirms: a publish's
   L{Deferred} fires only once the broker has taken the message.
 - L{resmon.bus.topology}: the exchange, queues, bindings, dead-letter
   queues and partitions, and the periodic check that they still exist.
 - L{resmon.bus.consumer}: subscriptions and the pumps that hand deliveries
   to handlers; a queue deleted under a running process is declared and
   consumed again on the same connection.
 - L{resmon.bus.refusals}: a publish the broker refuses (the user's
   permissions, its user_id) is dropped, counted and said in one line; the
   bus opens a new publish channel on the same connection and carries on.
 - L{resmon.bus.workarounds}: what txAMQP 0.8.2 and Twisted get wrong.
"""

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from txamqp.spec import load as loadSpec
from zope.interface import implementer

from resmon.bus.connection import (
    DEFAULT_MAX_RETRY_DELAY, RETRY_JITTER, BrokerConnection, ClientFactory, Delegate,
    ResmonAMQClient)
from resmon.bus.consumer import PROPERTIES, PUBLISH_CHANNEL, ROUTING_KEY, Consumers
from resmon.bus.counters import busCounters
from resmon.bus.exchange import PROBING
from resmon.bus.outbox import Dropped, Outbox, Refused
from resmon.bus.properties import PropertyLimits
from resmon.bus.refusals import RefusalLog, publishRefusal
from resmon.bus.topology import DEAD_LETTER_LIMIT, Topology, partitionQueue
from resmon.bus.workarounds import CLIENT_PROPERTIES, CLOSE_HANDLER, SPEC_PATH, reopenChannel
from resmon.defaults import DEFAULT_HEARTBEAT, DEFAULT_OUTBOX_LIMIT
from resmon.deferreds import observe
from resmon.interfaces import IBus

__all__ = [
    "AMQPBus", "Dropped", "Refused", "SPEC_PATH", "partitionQueue", "ResmonAMQClient", "Delegate",
    "ClientFactory", "CLIENT_PROPERTIES", "PROPERTIES", "ROUTING_KEY", "PUBLISH_CHANNEL",
    "DEAD_LETTER_LIMIT", "DEFAULT_MAX_RETRY_DELAY", "RETRY_JITTER",
]


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
        and the bindings still exist (see L{Topology.refresh}).
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

    Every message published carries the AMQP C{user_id} property: the user
    of C{broker}, which RabbitMQ checks against the connection's user, so a
    consumer may trust it (C{--agent-users}, see C{docs/security.md}). A
    publish the broker refuses for the user's permissions fails with
    L{Refused} and is counted in C{counters["refused"]}.

    @ivar outbox: the L{Outbox}.
    @ivar topology: the L{Topology}.
    @ivar consumers: the L{Consumers}.
    @ivar connection: the L{BrokerConnection}.
    """

    name = "bus"
    log = Logger()

    def __init__(self, broker, exchange, reactor, heartbeat=DEFAULT_HEARTBEAT,
                 connectTimeout=10, handshakeTimeout=10, maxRetryDelay=DEFAULT_MAX_RETRY_DELAY,
                 outboxLimit=DEFAULT_OUTBOX_LIMIT, spec=SPEC_PATH, topologyInterval=10.0,
                 drainTimeout=2.0, tls=None, propertyLimits=None, exchangeDurable=True,
                 stopProcess=None):
        self.broker = broker
        self.exchange = exchange
        self._reactor = reactor
        self.heartbeat = heartbeat
        self.connectTimeout = connectTimeout
        self.handshakeTimeout = handshakeTimeout
        self.maxRetryDelay = maxRetryDelay
        self.outboxLimit = outboxLimit
        self.topologyInterval = topologyInterval
        self.drainTimeout = drainTimeout
        self.tls = tls
        self.propertyLimits = propertyLimits if propertyLimits is not None else PropertyLimits()
        self.spec = loadSpec(spec)
        self.connected = False
        self.counters, self.rejected = busCounters()
        self.outbox = Outbox(exchange, outboxLimit, self.counters, reactor,
                             userId=broker.username)
        self.refusals = RefusalLog(reactor, self.log)
        # (connection, channel number, channel) used by unbind().
        self._unbinding = None
        self._unbindLock = defer.DeferredLock()
        self.exchangeDurable = exchangeDurable
        self.topology = Topology(exchange, reactor, topologyInterval, durable=exchangeDurable)
        self.consumers = Consumers(self.topology, self.counters, self.rejected, reactor,
                                   drainTimeout)
        factory = ClientFactory(self.outbox, self.consumers, self.spec, broker.vhost, heartbeat,
                                reactor, self.propertyLimits)
        self.connection = BrokerConnection(
            broker, reactor, factory, self._declare, self._lost, self.counters,
            connectTimeout=connectTimeout, handshakeTimeout=handshakeTimeout,
            maxRetryDelay=maxRetryDelay, tls=tls, stopProcess=stopProcess)

    # IService

    def startService(self):
        service.Service.startService(self)
        self.log.info("connecting to {broker}, exchange {exchange}",
                      broker=self.broker.redacted(), exchange=self.exchange)
        self.connection.start()

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        self.topology.stopChecking()
        pending = self.outbox.pending()
        if self.connection.client is not None and pending:
            # Give what is in flight a moment to be confirmed: an agent
            # stopped under load would otherwise drop its last samples.
            self.log.info("waiting up to {timeout} s for the broker to confirm {count} message(s)",
                          timeout=self.drainTimeout, count=len(pending))
            # Observers, so the timeout cancels only the waiting, not the messages.
            drained = defer.DeferredList([observe(d) for d in pending], consumeErrors=True)
            drained.addTimeout(self.drainTimeout, self._reactor)
            try:
                yield drained
            except defer.TimeoutError:
                self.log.warn("{count} message(s) not confirmed in time; dropping them",
                              count=len(self.outbox))
        yield self.connection.stop()
        self.outbox.fail("the bus stopped")
        self.log.info("disconnected from {broker}", broker=self.broker.redacted())

    # IBus

    def whenConnected(self):
        """
        See L{IBus.whenConnected}: the connection is up, the exchange
        declared and the subscriptions made before this call are being
        declared (L{ISubscription.whenReady} says when each consumes).
        """
        return self.connection.whenConnected()

    @property
    def waiting(self):
        """
        See L{IBus.waiting}: the outbox's unsent and unconfirmed messages.
        """
        return len(self.outbox)

    @property
    def subscriptions(self):
        """
        See L{IBus.subscriptions}.
        """
        return tuple(self.consumers.subscriptions)

    def publish(self, routingKey, body):
        if not self.running:
            return defer.fail(Dropped("the bus is not running"))
        return self.outbox.publish(routingKey, body)

    def publishThen(self, routingKey, body, confirmed, dropped, context):
        """
        L{publish} without a L{Deferred} (see L{Outbox.publishThen}): once
        the broker confirmed the message, C{confirmed(context)}; if it is
        dropped, C{dropped(context, error)}.
        """
        if not self.running:
            dropped(context, Dropped("the bus is not running"))
            return
        self.outbox.publishThen(routingKey, body, confirmed, dropped, context)

    def subscribe(self, patterns, handler, queue=None, durable=False, prefetch=100,
                  partitions=None, deadLetter=None, singleActive=False, rejected=None,
                  publisher=False):
        return self.consumers.subscribe(
            patterns, handler, queue=queue, durable=durable, prefetch=prefetch,
            partitions=partitions, deadLetter=deadLetter, singleActive=singleActive,
            rejected=rejected, publisher=publisher)

    def unbind(self, queue, patterns):
        """
        See L{IBus.unbind}: C{queue.unbind} on a channel of its own, which
        the broker may close without costing the connection; one call at a
        time.
        """
        return self._unbindLock.run(self._unbind, queue, list(patterns))

    @defer.inlineCallbacks
    def _unbind(self, queue, patterns):
        client = self.connection.client
        if client is None or not self.running:
            raise Dropped("the bus is not connected")
        channel = yield self._unbindChannel(client)
        yield self.topology.unbind(channel, queue, patterns)

    @defer.inlineCallbacks
    def _unbindChannel(self, client):
        """
        The channel of this connection for unbinding: one per connection,
        opened again under the same number after the broker closed it.
        """
        if self._unbinding is None or self._unbinding[0] is not client:
            self._unbinding = (client, next(self.consumers.channelIds), None)
        _, channelId, channel = self._unbinding
        if channel is None or channel.closed:
            channel = yield reopenChannel(client, channelId)
            setattr(channel, PROBING, True)
            yield channel.channel_open()
            self._unbinding = (client, channelId, channel)
        return channel

    # Connection life cycle

    @defer.inlineCallbacks
    def _declare(self, client):
        channel = yield client.channel(PUBLISH_CHANNEL)
        yield channel.channel_open()
        self._handleRefusals(client, channel)
        self.consumers.newConnection()
        yield self.topology.joinExchange(client, self.consumers.channelIds)
        yield channel.confirm_select()
        yield self.consumers.consumeAll(client)
        self.useConnection(client, channel)

    def useConnection(self, client, publishChannel):
        """
        Use C{client} from now on: subscribe on it, check the topology
        through C{publishChannel} and publish through it: an open channel in
        confirm mode, whose deliveries the broker numbers from 1. The
        handshake calls it once everything is declared; unit tests call it
        with fakes.
        """
        self.connected = True
        self.connection.client = client
        self.consumers.client = client
        self.topology.startChecking(publishChannel, self.consumers.subscriptions)
        self.outbox.useChannel(publishChannel)

    def _handleRefusals(self, client, channel):
        setattr(channel, CLOSE_HANDLER,
                lambda reason: self.publishChannelClosed(client, channel, reason))

    def publishChannelClosed(self, client, channel, reason):
        """
        The broker closed the publish channel C{channel} of C{client}
        (C{reason}: a L{Failure} of its channel.close). If it refused a
        publish (L{resmon.bus.refusals}), drop and count what it refused,
        say it, and publish the rest on a new publish channel: no reconnect
        would change a permission.

        @return: whether it was a refused publish; if not, the caller
            reconnects.
        """
        if channel is not self.outbox.channel or self.connection.client is not client:
            return False
        reply = reason.value
        refusal = publishRefusal(getattr(reply, "reply_code", None),
                                 getattr(reply, "reply_text", ""))
        if refusal is None:
            return False
        count = self.outbox.refused(refusal.routingKey, refusal.text)
        self.refusals.refused(refusal, count, self.broker.username, self.exchange,
                              self.broker.vhost)
        self.topology.stopChecking()
        self.outbox.channelLost()
        self._reopenPublishChannel(client, channel.id).addErrback(
            self._reopenFailed, client)
        return True

    @defer.inlineCallbacks
    def _reopenPublishChannel(self, client, channelId):
        channel = yield reopenChannel(client, channelId)
        yield channel.channel_open()
        self._handleRefusals(client, channel)
        yield channel.confirm_select()
        if self.connection.client is client:
            self.topology.startChecking(channel, self.consumers.subscriptions)
            self.outbox.useChannel(channel)

    def _reopenFailed(self, failure, client):
        self.log.warn("opening a new publish channel failed ({error}); reconnecting",
                      error=failure.getErrorMessage())
        if client.transport is not None:
            client.transport.loseConnection()

    def _lost(self, client):
        """
        C{client}'s connection, which was in use, is lost.
        """
        self.connected = False
        self.consumers.lost()
        self.topology.stopChecking()
        self.outbox.channelLost()
        if self.running:
            lost = getattr(client, "lostReason", None)
            reason = lost.getErrorMessage() if lost is not None else "unknown"
            self.log.warn("lost the connection to {broker} ({reason}); {pending} message(s) wait "
                          "to be resent; reconnecting",
                          broker=self.broker.redacted(), reason=reason,
                          pending=len(self.outbox.unsent))

