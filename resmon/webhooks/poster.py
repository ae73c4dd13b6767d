"""
One signed webhook POST: L{WebhookPoster} sends it with
L{twisted.web.client.Agent} and a persistent connection pool, follows no
redirect, reads at most L{MAX_RESPONSE_BODY} bytes of the answer, and
gives up after its timeout; L{describeError} says in a few words why an
attempt failed.
"""

from twisted.internet import defer, error, protocol
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from resmon.webhooks.addresses import PrivateAddress, WebhookEndpointFactory
from resmon.webhooks.resolver import NameResolver

MAX_RESPONSE_BODY = 64 * 1024


class _BoundedBody(protocol.Protocol):
    """
    Reads a response body up to C{limit} bytes, then drops the connection.
    """

    def __init__(self, limit, finished):
        self.limit = limit
        self.finished = finished
        self.received = []
        self.length = 0

    def dataReceived(self, data):
        room = self.limit - self.length
        if room > 0:
            self.received.append(data[:room])
            self.length += min(room, len(data))
        if len(data) >= room:
            self.transport.stopProducing()

    def connectionLost(self, reason):
        if not self.finished.called:
            self.finished.callback(b"".join(self.received))


class WebhookPoster:
    """
    POSTs with L{twisted.web.client.Agent} and a persistent connection
    pool. Redirects are not followed (a 3xx is an answer like any other
    non-2xx), response bodies are read up to L{MAX_RESPONSE_BODY} bytes.

    @param timeout: seconds to connect, and then to receive the answer's
        status and headers; the body gets as long again.
    @param allowPrivate: let requests reach loopback, link-local and private
        addresses.
    @param resolver: the L{NameResolver} of the targets' names (default:
        one of its own, giving up a lookup after C{timeout}).
    """

    def __init__(self, reactor, timeout=10.0, allowPrivate=False, maxBody=MAX_RESPONSE_BODY,
                 agent=None, resolver=None):
        self.reactor = reactor
        self.timeout = timeout
        self.maxBody = maxBody
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        # One connection per hook in use at most (deliveries to a hook are
        # sequential): keep them all when many hooks share a receiver.
        self.pool.maxPersistentPerHost = 64
        self.pool.retryAutomatically = False
        self.resolver = resolver or NameResolver(reactor, timeout=timeout)
        self.agent = agent or Agent.usingEndpointFactory(
            reactor, WebhookEndpointFactory(reactor, timeout, self.resolver.resolve, allowPrivate),
            pool=self.pool)

    def post(self, url, headers, body):
        """
        @return: a L{Deferred} of the answer's status code.
        """
        d = self.agent.request(b"POST", url.encode("ascii"), Headers(
            {name.encode("ascii"): [value.encode("ascii")] for name, value in headers.items()}),
            _BytesProducer(body))
        d.addTimeout(self.timeout, self.reactor)
        return d.addCallback(self._readAnswer)

    def _readAnswer(self, response):
        """
        Read the answer's body (up to L{maxBody} bytes, for as long again
        as the timeout), then give its status code.
        """
        finished = defer.Deferred(lambda d: reader.transport.stopProducing())
        reader = _BoundedBody(self.maxBody, finished)
        response.deliverBody(reader)
        finished.addTimeout(self.timeout, self.reactor)

        def slowBody(failure):
            failure.trap(defer.TimeoutError)
        return finished.addErrback(slowBody).addCallback(lambda _: response.code)

    def close(self):
        return self.pool.closeCachedConnections()


@implementer(IBodyProducer)
class _BytesProducer:
    """
    A request body already in memory, written at once.
    """

    def __init__(self, body):
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer):
        consumer.write(self.body)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


def describeError(failure):
    """
    A short text for a failed attempt: C{timeout}, C{connection refused},
    C{address not allowed}, C{tls: ...}, or the error's type and message.
    """
    value = failure.value
    if isinstance(value, ResponseNeverReceived) and value.reasons:
        return describeError(value.reasons[0])
    if isinstance(value, (defer.TimeoutError, error.TimeoutError, defer.CancelledError)):
        return "timeout"
    if isinstance(value, (error.ConnectionRefusedError, ConnectionRefusedError)):
        return "connection refused"
    if isinstance(value, PrivateAddress):
        return f"address not allowed: {value}"
    name = type(value).__name__
    if "SSL" in name or "TLS" in name or "OpenSSL" in type(value).__module__:
        return f"tls: {value}"[:200]
    return f"{name}: {value}"[:200]
