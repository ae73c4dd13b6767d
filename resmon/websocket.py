"""
The dashboard's WebSocket endpoint: pushes a snapshot on connect, then every
event from the fan-out.
"""

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

from resmon.fanout import ClientFlow

# A client only ever sends small control messages; cap what it may send.
MAX_INCOMING_MESSAGE = 64 * 1024


class DashboardProtocol(WebSocketServerProtocol):
    """
    One connected dashboard or program.
    """

    # self.log is Autobahn's txaio logger, filtered by level: do not shadow it.

    def onOpen(self):
        fanout = self.factory.fanout
        self.flow = ClientFlow(
            lambda body: self.sendMessage(body, isBinary=False),
            lambda: self.dropConnection(abort=True),
            self.factory.clock, self.factory.stallTimeout)
        transport = self.transport
        if getattr(transport, "producer", None) is not None:
            # twisted.web's HTTP channel was the producer before the upgrade.
            transport.unregisterProducer()
        transport.registerProducer(self.flow, True)
        self.sendMessage(fanout.latest.snapshotBody(), isBinary=False)
        fanout.attach(self)

    def sendEvent(self, document, body):
        self.flow.send(document["host"], body)

    def onMessage(self, payload, isBinary):
        if isBinary:
            self.sendClose(code=1003, reason="resmon accepts text messages only")
            return
        # Subscriptions are not implemented yet; other messages are ignored.

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
            autoPingInterval=pingInterval,
            autoPingTimeout=pingInterval,
        )
