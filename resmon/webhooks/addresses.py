"""
Which webhook targets are public, and an L{IAgentEndpointFactory} that
connects only to those: the address is checked when the request is made,
not only when the hook is registered, so a name that later resolves to
an internal address (DNS rebinding) reaches nothing inside. Names are
resolved by L{resmon.webhooks.resolver.NameResolver}, never in the
reactor's thread pool.
"""

import ipaddress
import socket

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer


class PrivateAddress(Exception):
    """
    A target resolves to an address that is not public.
    """


def isPublic(address):
    """
    Whether C{address} (L{str}) is a public unicast address: not loopback,
    link-local, private, multicast, reserved or unspecified (IPv4-mapped
    IPv6 addresses are judged as the IPv4 address they map).
    """
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified or not ip.is_global)


def resolve(host, port):
    """
    Every address C{host} resolves to (a blocking C{getaddrinfo}: run it in
    a thread, as L{resmon.webhooks.resolver.NameResolver} does), as L{str}.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


# The addresses of a name tried in turn, at most, until one connects.
MAX_ADDRESSES = 4


@implementer(IAgentEndpointFactory)
class WebhookEndpointFactory:
    """
    Endpoints for L{twisted.web.client.Agent.usingEndpointFactory}: any
    address when C{allowPrivate}, else only public ones (the name is
    resolved at each connection, by C{resolve}, and its addresses tried in
    turn until one connects).

    @param resolve: C{(host, port)} to a L{Deferred} list of addresses (a
        L{resmon.webhooks.resolver.NameResolver}'s C{resolve}: lookups in
        threads of their own, with a timeout).
    """

    # Endpoints kept for reuse (Agent asks for one per request, and needs
    # it only to connect when its pool has no connection to that origin).
    maxCached = 1024

    def __init__(self, reactor, connectTimeout, resolve, allowPrivate=False, tlsPolicy=None):
        self.reactor = reactor
        self.connectTimeout = connectTimeout
        self.resolve = resolve
        self.allowPrivate = allowPrivate
        self.tlsPolicy = tlsPolicy or BrowserLikePolicyForHTTPS()
        self._endpoints = {}

    def endpointForURI(self, uri):
        origin = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(origin)
        if endpoint is None:
            if len(self._endpoints) >= self.maxCached:
                self._endpoints.clear()
            endpoint = self._endpoints[origin] = self._newEndpoint(uri)
        return endpoint

    def _newEndpoint(self, uri):
        """
        The endpoint of C{uri}'s origin: the name is resolved (and, unless
        C{allowPrivate}, checked) at each connection, not here.
        """
        host = uri.host.decode("ascii")
        endpoint = _ResolvingEndpoint(self.reactor, host.strip("[]"), uri.port,
                                      self.connectTimeout, self.resolve, not self.allowPrivate)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(
                self.tlsPolicy.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


class _ResolvingEndpoint:
    """
    Connects to the first of C{host}'s addresses (at most L{MAX_ADDRESSES},
    tried in turn, each for its share of C{timeout}) that accepts; with
    C{publicOnly}, to none unless every one is public.
    """

    def __init__(self, reactor, host, port, timeout, resolve, publicOnly):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.timeout = timeout
        self.resolve = resolve
        self.publicOnly = publicOnly

    @defer.inlineCallbacks
    def connect(self, factory):
        addresses = yield self.resolve(self.host, self.port)
        if not addresses:
            raise ConnectError(string=f"{self.host} has no address")
        if self.publicOnly and not all(isPublic(address) for address in addresses):
            raise PrivateAddress(f"{self.host} resolves to an address that is not public")
        candidates = addresses[:MAX_ADDRESSES]
        # The connect timeout shared out: an address that never answers
        # leaves the next ones their turn within it.
        timeout = max(1.0, self.timeout / len(candidates))
        for address in candidates[:-1]:
            try:
                return (yield self._connectTo(address, factory, timeout))
            except ConnectError:
                continue  # refused, unreachable or timed out: the next one
        return (yield self._connectTo(candidates[-1], factory, timeout))

    def _connectTo(self, address, factory, timeout):
        kind = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        return kind(self.reactor, address, self.port, timeout=timeout).connect(factory)
