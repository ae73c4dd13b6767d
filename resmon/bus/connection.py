"""
The RabbitMQ bus's connection to the broker, and its reconnection.

One connection per process, kept by a L{ClientService} with an exponential
backoff and jitter: after every (re)connect, L{BrokerConnection} authenticates
and hands the connection to its C{declare} callable (channels, exchange,
queues, consumers), all within a deadline; a failed handshake closes the
connection and ClientService tries again. The protocol it builds
(L{ResmonAMQClient}) gives up on a peer silent for two heartbeats.
"""

import random

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp.client import Closed

from resmon.bus.errors import ConnectionFailures
from resmon.bus.exchange import ExchangeUnusable
from resmon.bus.frames import FastFrames
from resmon.bus.workarounds import WorkaroundClient, WorkaroundDelegate, abandonConnection

# Reconnect backoff: 0.25 s doubling up to this cap, plus up to RETRY_JITTER
# at random, so a fleet does not reconnect in step and every process is back
# within two seconds of the broker accepting connections.
DEFAULT_MAX_RETRY_DELAY = 1.5
RETRY_JITTER = 0.5


class ResmonAMQClient(FastFrames, WorkaroundClient):
    """
    resmon's AMQP protocol: txAMQP's, with L{resmon.bus.workarounds} and the
    fast path of L{resmon.bus.frames} for deliveries, confirms, publications
    and acknowledgements, that
    gives up on a silent peer after two missed heartbeats (txAMQP waits
    three).
    """

    MAX_UNSEEN_HEARTBEAT = 2


class Delegate(WorkaroundDelegate):
    """
    Handles what the broker sends outside replies: publisher confirms (to
    C{outbox}, an L{resmon.bus.outbox.Outbox}), consumer cancellation (to
    C{consumers}, a L{resmon.bus.consumer.Consumers}) and returned messages.
    """

    log = Logger()

    def __init__(self, outbox, consumers):
        WorkaroundDelegate.__init__(self)
        self.outbox = outbox
        self.consumers = consumers

    def basic_ack(self, channel, message):
        self.outbox.confirmed(message.delivery_tag, message.multiple, True)

    def basic_nack(self, channel, message):
        self.outbox.confirmed(message.delivery_tag, message.multiple, False)

    def basic_return_(self, channel, message):
        # resmon publishes without 'mandatory', so the broker should never
        # return a message; if it does, say so (txAMQP would queue it unread).
        self.log.warn("broker returned a message under {routingKey}: {code} {text}",
                      routingKey=message.routing_key, code=message.reply_code,
                      text=message.reply_text)

    def consumerCancelled(self, channel, consumerTag):
        self.consumers.consumerCancelled(self.client, channel, consumerTag).addErrback(
            lambda f: self.log.failure("handling the broker's basic.cancel failed", f))


class ClientFactory(protocol.Factory):
    """
    Builds one L{ResmonAMQClient}, with its own L{Delegate}, per connection.
    """

    noisy = False

    def __init__(self, outbox, consumers, spec, vhost, heartbeat, clock, propertyLimits):
        self.outbox = outbox
        self.consumers = consumers
        self.spec = spec
        self.vhost = vhost
        self.heartbeat = heartbeat
        self.clock = clock
        self.propertyLimits = propertyLimits

    def buildProtocol(self, addr):
        return ResmonAMQClient(
            Delegate(self.outbox, self.consumers), vhost=self.vhost, spec=self.spec,
            heartbeat=self.heartbeat, clock=self.clock, propertyLimits=self.propertyLimits)


class BrokerConnection:
    """
    Keeps a connection to C{broker} up.

    @param broker: a L{resmon.bus.brokerurl.BrokerURL}.
    @param reactor: the reactor to connect with (and its clock).
    @param factory: the protocol factory (a L{ClientFactory}).
    @param declare: called with each new connection once authenticated;
        returns a L{Deferred} that fires once the connection is ready.
    @param lost: called with a connection that was ready, once it is lost.
    @param counters: the bus's counters, where C{connections} is counted.
    @param tls: TLS client options, or L{None} to connect in the clear.
    @param stopProcess: called with C{reactor} to stop the process when the
        connection gives up (an exchange it cannot use); by default it stops
        the reactor (C{twistd resmon} passes one that also exits non-zero).

    @ivar client: the connection that is up and declared, or L{None}.
    """

    log = Logger()

    def __init__(self, broker, reactor, factory, declare, lost, counters, connectTimeout=10,
                 handshakeTimeout=10, maxRetryDelay=DEFAULT_MAX_RETRY_DELAY, tls=None,
                 stopProcess=None):
        self.broker = broker
        self._stopProcess = stopProcess if stopProcess is not None else _stopReactor
        self._reactor = reactor
        self.factory = factory
        self._declare = declare
        self._lost = lost
        self.counters = counters
        self.connectTimeout = connectTimeout
        self.handshakeTimeout = handshakeTimeout
        self.maxRetryDelay = maxRetryDelay
        self.tls = tls
        self.client = None
        self.clientService = None

    def start(self):
        endpoint = HostnameEndpoint(
            self._reactor, self.broker.host, self.broker.port, timeout=self.connectTimeout)
        if self.tls is not None:
            endpoint = wrapClientTLS(self.tls, endpoint)
        # Says why connecting fails, and retries slowly after a refusal.
        self._failures = ConnectionFailures(
            self.broker, backoffPolicy(initialDelay=0.25, maxDelay=self.maxRetryDelay, factor=2.0,
                                       jitter=lambda: random.random() * RETRY_JITTER),
            self.maxRetryDelay + RETRY_JITTER, self._reactor, self.log)
        self.clientService = ClientService(
            self._failures.endpoint(endpoint), self.factory, retryPolicy=self._failures.retryDelay,
            clock=self._reactor,
            prepareConnection=self._prepare,
        )
        self.clientService.startService()

    @defer.inlineCallbacks
    def stop(self):
        """
        Close the connection (connection.close, so that the broker requeues
        unacknowledged deliveries at once) and stop reconnecting.
        """
        client = self.client
        if client is not None and not client.closed:
            try:
                yield client.close(within=2)
            except Closed as e:
                # The broker closed it first (its user deleted, the broker
                # stopping): closed all the same, nothing failed.
                self.log.info("the broker closed the AMQP connection as resmon closed it: {why}",
                              why=describe(e))
            except Exception:
                self.log.failure("closing the AMQP connection failed")
        yield self.clientService.stopService()

    def whenConnected(self):
        """
        See L{resmon.interfaces.IBus.whenConnected}.
        """
        return self.clientService.whenConnected().addCallback(lambda _: None)

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
                              broker=self.broker.redacted(), error=describe(e))
            abandonConnection(client)
            raise
        self.client = client
        self.counters["connections"] += 1
        self._failures.connected()
        self.log.info("connected to {broker} (connection #{count})",
                      broker=self.broker.redacted(), count=self.counters["connections"])
        client.disconnected.wait().addCallback(lambda _: self.disconnected(client)).addErrback(
            lambda f: self.log.failure("handling the lost connection failed", f))

    def _giveUp(self, error):
        """
        The exchange cannot be used (L{ExchangeUnusable}): say so in one line
        and stop the process (exit status 1 under twistd), rather than
        reconnect to meet the same refusal for ever.
        """
        self.log.critical("{error}; stopping", error=error)
        self._stopProcess(self._reactor)

    @defer.inlineCallbacks
    def _handshake(self, client):
        yield client.authenticate(self.broker.username, self.broker.password)
        yield self._declare(client)

    def disconnected(self, client):
        """
        C{client}'s connection is lost: if it was the one in use, tell
        C{lost}.
        """
        if client is not self.client:
            return
        self.client = None
        self._lost(client)


def _stopReactor(reactor):
    if getattr(reactor, "running", False):
        reactor.callLater(0, reactor.stop)


def describe(error):
    """
    One line saying why a connection or an operation failed: the innermost
    cause (a connection lost because of a TLS error carries it inside
    Failures and exceptions), with TLS failures said plainly.
    """
    error = innermost(error)
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


def innermost(error, depth=5):
    """
    The exception C{error} (an exception or a L{Failure}) was caused by,
    looking at most C{depth} levels into Failures and exception arguments.
    """
    for _ in range(depth):
        if isinstance(error, Failure):
            error = error.value
            continue
        inner = [a for a in getattr(error, "args", ()) if isinstance(a, (Failure, BaseException))]
        if not inner:
            break
        error = inner[0]
    return error
