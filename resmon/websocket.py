"""
The dashboard's WebSocket endpoint: pushes a snapshot on connect, then every
matching event from the fan-out; a client may change what it receives with
a C{subscribe} message (see C{docs/protocol.md}).
"""

import json

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny

from resmon.fanout import ClientFlow, encodeJSON
from resmon.subscriptions import InvalidSubscription, parseQuery, parseSubscribe

# A client only ever sends small control messages; cap what it may send.
MAX_INCOMING_MESSAGE = 64 * 1024


def errorBody(text):
    return encodeJSON({"kind": "error", "error": text})


class DashboardProtocol(WebSocketServerProtocol):
    """
    One connected dashboard or program.
    """

    # self.log is Autobahn's txaio logger, filtered by level: do not shadow it.

    def onConnect(self, request):
        # The first snapshot may be narrowed in the URL (/ws?hosts=...), so a
        # client that wants less need not receive everything first.
        try:
            self.initialSubscription = parseQuery(request.params)
        except InvalidSubscription as e:
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, str(e))
        return None

    def onOpen(self):
        self.flow = ClientFlow(
            lambda body: self.sendMessage(body, isBinary=False),
            lambda: self.dropConnection(abort=True),
            self.factory.clock, self.factory.stallTimeout)
        transport = self.transport
        if getattr(transport, "producer", None) is not None:
            # twisted.web's HTTP channel was the producer before the upgrade.
            transport.unregisterProducer()
        transport.registerProducer(self.flow, True)
        self.subscribe(self.initialSubscription)

    def subscribe(self, subscription):
        self.flow.restart(self.factory.fanout.subscribe(self, subscription))

    def sendEvent(self, document, body):
        self.flow.send((document["kind"], document["host"]), body)

    def onMessage(self, payload, isBinary):
        if isBinary:
            # sendClose() only takes application codes (1000, 3000-4999);
            # 1003 "unsupported data" is a protocol code, sent this way.
            self._fail_connection(
                self.CLOSE_STATUS_CODE_UNSUPPORTED_DATA, "resmon accepts text messages only")
            return
        try:
            message = json.loads(payload.decode("utf-8"))
        except ValueError:
            self._error("not a JSON text message")
            return
        if not isinstance(message, dict):
            self._error("a message must be a JSON object")
            return
        if message.get("kind") != "subscribe":
            self._error(f"unknown message kind {str(message.get('kind'))[:40]!r}; expected 'subscribe'")
            return
        try:
            subscription = parseSubscribe(message)
        except InvalidSubscription as e:
            self._error(str(e))
            return
        self.subscribe(subscription)

    def _error(self, text):
        self.flow.send(("error", None), errorBody(text))

    def onClose(self, wasClean, code, reason):
        self.factory.fanout.detach(self)
        flow = getattr(self, "flow", None)
        if flow is not None:
            flow.stopProducing()


class DashboardFactory(WebSocketServerFactory):
    """
    Builds L{DashboardProtocol}s attached to C{fanout}.

    @param stallTimeout: seconds a client may stop reading before it is
        disconnected.
    """

    protocol = DashboardProtocol

    def __init__(self, fanout, clock, stallTimeout, pingInterval=20.0):
        WebSocketServerFactory.__init__(self)
        self.fanout = fanout
        self.clock = clock
        self.stallTimeout = stallTimeout
        self.setProtocolOptions(
            maxFramePayloadSize=MAX_INCOMING_MESSAGE,
            maxMessagePayloadSize=MAX_INCOMING_MESSAGE,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
            # Protocol errors (invalid UTF-8: 1007, too big: 1009, binary:
            # 1003) get a closing handshake with their code, not a bare drop.
            failByDrop=False,
            autoPingInterval=pingInterval,
            autoPingTimeout=pingInterval,
        )
