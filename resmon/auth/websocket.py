"""
The dashboard's WebSocket resource, giving each connection the
L{Principal} of its handshake (C{protocol.principal}) and, with C{--users},
closing it (1008) once its session or token ends.
"""

from autobahn.twisted.resource import WebSocketResource

from resmon.auth.guard import closeWebSocket
from resmon.auth.principal import principalOf


class _HandshakeFactory:
    """
    The factory of one handshake: builds the protocol with the request's
    principal, and has the Site's guard watch its credential.
    """

    def __init__(self, factory, request):
        self._factory = factory
        self._request = request

    def buildProtocol(self, address):
        protocol = self._factory.buildProtocol(address)
        if protocol is None:
            return None
        request = self._request
        protocol.principal = principalOf(request)
        guard = getattr(getattr(request, "site", None), "guard", None)
        credential = getattr(request, "resmonCredential", None)
        if guard is not None and credential is not None:
            guard.watch(protocol, credential, closeWebSocket)
        return protocol


class PrincipalWebSocketResource(WebSocketResource):
    def render(self, request):
        return WebSocketResource(_HandshakeFactory(self._factory, request)).render(request)
