"""
Which webhook targets are public, and an L{IAgentEndpointFactory} that
connects only to those: the address is checked when the request is made,
not only when the hook is registered, so a name that later resolves to
an internal address (DNS rebinding) reaches nothing inside.
"""

import ipaddress
import socket

from twisted.internet import defer, threads
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.endpoints import wrapClientTLS
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
    a thread), as L{str}.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


def resolveInThread(reactor, host, port):
    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), resolve, host, port)


@implementer(IAgentEndpointFactory)
class WebhookEndpointFactory:
    """
    Endpoints for L{twisted.web.client.Agent.usingEndpointFactory}: any
    address when C{allowPrivate}, else only public ones (the name is
    resolved once and the connection made to that address).
    """

    # Endpoints kept for reuse (Agent asks for one per request, and needs
    # it only to connect when its pool has no connection to that origin).
    maxCached = 1024

    def __init__(self, reactor, connectTimeout, allowPrivate=False, tlsPolicy=None):
        self.reactor = reactor
        self.connectTimeout = connectTimeout
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
        if self.allowPrivate:
            endpoint = HostnameEndpoint(self.reactor, host.strip("[]"), uri.port,
                                        timeout=self.connectTimeout)
        else:
            endpoint = _PublicEndpoint(self.reactor, host.strip("[]"), uri.port,
                                       self.connectTimeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(
                self.tlsPolicy.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


class _PublicEndpoint:
    def __init__(self, reactor, host, port, timeout):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.timeout = timeout

    @defer.inlineCallbacks
    def connect(self, factory):
        addresses = yield resolveInThread(self.reactor, self.host, self.port)
        public = [address for address in addresses if isPublic(address)]
        if not public or len(public) != len(addresses):
            raise PrivateAddress(f"{self.host} resolves to an address that is not public")
        address = public[0]
        kind = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        return (yield kind(self.reactor, address, self.port, timeout=self.timeout).connect(factory))
