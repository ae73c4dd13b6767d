"""
The dashboard's WebSocket endpoint: pushes a snapshot on connect, then every
matching event from the fan-out; a client may change what it receives with
a C{subscribe} message, and ask for one host's full history with a
C{history} message (see C{docs/protocol.md}).
"""

from twisted.internet.interfaces import ISSLTransport
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.logger import Logger

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.types import ConnectionDeny

from resmon import wire
from resmon.auth.principal import UNRESTRICTED
from resmon.webserver.batches import BATCH_KEY
from resmon.webserver.eagerwrite import EagerWriter
from resmon.webserver.fanout import ClientFlow
from resmon.webserver.origins import OriginPolicy
from resmon.ratelimit import LimitedLog, TokenBucket
from resmon.webserver.subscriptions import InvalidSubscription, Subscription, parseQuery
from resmon.webserver.visibility import visibleHosts, visibleTo

# A client only ever sends small control messages; cap what it may send.
# Checked here, not with Autobahn's maxMessagePayloadSize, which would also
# refuse to send a fleet's snapshot or a many-core host's history.
MAX_INCOMING_MESSAGE = 64 * 1024

# A dashboard sends a message on a user's action (subscribe, open a host's
# details); a subscribe costs a snapshot of the whole fleet (milliseconds
# of the reactor for 1,000 hosts), so a client sending more than this many
# at once, or more than this many a second after that, is disconnected.
MESSAGE_BURST = 30
MESSAGE_RATE = 10.0

# Pings and pongs a client may send at once, and a second after that: a
# dashboard sends none, a program one every few seconds; each ping costs a
# pong, which a flooder need not even read.
PING_BURST = 10
PING_RATE = 1.0

# Fragments one message may come in: browsers send a message whole, and
# 64 KiB in 4 KiB fragments is 16.
MAX_FRAGMENTS = 64


def _tlsProtocolUnder(transport):
    """
    The L{TLSMemoryBIOProtocol} under C{transport} and the protocol wrappers
    around it, or L{None} for a connection without TLS.
    """
    for _ in range(8):
        if isinstance(transport, TLSMemoryBIOProtocol):
            return transport
        if not isinstance(transport, ProtocolWrapper):
            return None
        transport = transport.transport
    return None


# The key of history replies in a client's flow (resmon.webserver.fanout.ClientFlow).
HISTORY_REPLY = ("history", None)


class DashboardProtocol(WebSocketServerProtocol):
    """
    One connected dashboard or program.
    """

    # self.log is Autobahn's txaio logger, filtered by level: do not shadow it.
    eventLog = Logger()

    flooded = False
    # Whether the client asked for several events per message (/ws?batch=1):
    # the fan-out then gives it batches (sendBatch), not events.
    batching = False
    # The EagerWriter that sends a batch at once (resmon.webserver.eagerwrite),
    # made for the connection's own transport; used while _writingBatch.
    _eagerWriter = None
    _writingBatch = False

    # Autobahn reads a TLS connection's details (tls-unique) from Twisted's TLS
    # protocol itself, and raises when the connection counter wraps it (which
    # only forwards): let it see that protocol when it looks.
    def connectionMade(self):
        self._underTLS(WebSocketServerProtocol.connectionMade)

    def _onOpen(self):
        # The connection's own transport (with its wrappers), not the TLS
        # protocol _underTLS shows Autobahn while onOpen runs.
        self._eagerWriter = EagerWriter(self.transport)
        self._underTLS(WebSocketServerProtocol._onOpen)

    def _underTLS(self, method):
        counted = self.transport
        self.transport = _tlsProtocolUnder(counted) or counted
        try:
            method(self)
        finally:
            self.transport = counted

    def onConnect(self, request):
        # request.host has lost the Host header's port; the origin check needs it.
        host = request.headers.get("host")
        secure = ISSLTransport.providedBy(self.transport)
        if not self.factory.origins.accepts(request.origin, host, secure):
            self.factory.originsRefused += 1
            self.factory.warnings.warn(
                self.eventLog,
                "refused a WebSocket handshake from {peer}: a page of {origin} may not open it "
                "(served as {host}; see --allowed-origin and --allowed-host)",
                peer=self.peer, origin=str(request.origin)[:200], host=str(host)[:200])
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "this page's origin may not open the WebSocket")
        params = dict(request.params)
        batch = params.pop("batch", None)
        if batch is not None:
            if batch not in (["0"], ["1"]):
                raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, "batch: expected 0 or 1")
            self.batching = batch == ["1"]
        # The first snapshot may be narrowed in the URL (/ws?hosts=...), so a
        # client that wants less need not receive everything first.
        try:
            self.initialSubscription = parseQuery(params)
        except InvalidSubscription as e:
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, str(e))
        return None

    def onOpen(self):
        self.budget = TokenBucket(self.factory.clock, self.factory.messageRate, self.factory.messageBurst)
        self.pingBudget = TokenBucket(self.factory.clock, self.factory.pingRate, self.factory.pingBurst)
        self.flow = ClientFlow(
            self._sendIfOpen,
            lambda: self.dropConnection(abort=True),
            self.factory.clock, self.factory.stallTimeout,
            budget=self.factory.budget, stream=_MessageFrames(self), name="WebSocket client")
        transport = self.transport
        if getattr(transport, "producer", None) is not None:
            # twisted.web's HTTP channel was the producer before the upgrade.
            transport.unregisterProducer()
        transport.registerProducer(self.flow, True)
        # Each event is written as it comes, without Nagle's delay: twisted.web
        # set TCP_NODELAY on the connection this one upgraded; Autobahn's own
        # attempt comes before its options are read, and fails silently.
        setNoDelay = getattr(transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            setNoDelay(True)
        self.subscribe(self.initialSubscription)
        if self.factory.notifications is not None:
            self.factory.notifications.sendKept(self, self._principal())

    @property
    def _open(self):
        # A connection dropped (ping timeout, stall) stays attached until
        # onClose runs; events for it in the meantime go nowhere.
        return getattr(self, "state", self.STATE_OPEN) == self.STATE_OPEN

    def _sendIfOpen(self, message):
        if self._open:
            if isinstance(message, PreparedMessage):
                self.sendPreparedMessage(message)
            else:
                self.sendMessage(message, isBinary=False)

    def sendData(self, data, sync=False, chopsize=None):
        # Autobahn's, less its debug log line, whose arguments (hltype,
        # hlval) are computed even with debug off: a third of what a frame
        # written to each of 1,000 clients cost. The rest as Autobahn does.
        if sync or chopsize or self.send_queue or self.state != self.STATE_OPEN or self.logOctets:
            WebSocketServerProtocol.sendData(self, data, sync, chopsize)
            return
        if self._writingBatch:
            self._eagerWriter(data)
        else:
            self.transport.write(data)
        self.trafficStats.outgoingOctetsWireLevel += len(data)

    def _principal(self):
        # Set at the handshake by the authentication guard (resmon.auth).
        return getattr(self, "principal", UNRESTRICTED)

    def subscribe(self, subscription):
        # What the user may see, composed into the one filter of the fan-out.
        subscription = visibleTo(self._principal(), subscription)
        self.flow.restart(self.factory.fanout.subscribeStreamed(self, subscription))

    def sendEvent(self, document, body):
        # The frame is made once for every client the event goes to.
        self.flow.send(*self.factory.prepareEvent(document, body))

    def sendBatch(self, batch):
        """
        Send the events of a L{resmon.webserver.batches.EventBatch} (a
        batching client's): in one message if it would be written at once,
        else each event to the flow, which holds back the latest of each
        host and kind, as for any client.
        """
        if not self._open:
            return
        flow = self.flow
        if flow.writesAtOnce:
            # A batch is, as a rule, this client's one write of the turn: it
            # goes out now, not on the reactor's next turn (eagerwrite).
            self._writingBatch = True
            try:
                flow.send(BATCH_KEY, batch.message(PreparedEvent))
            finally:
                self._writingBatch = False
            return
        for key, message in batch.separately(PreparedEvent):
            flow.send(key, message)

    def onMessage(self, payload, isBinary):
        if isBinary:
            # sendClose() only takes application codes (1000, 3000-4999);
            # 1003 "unsupported data" is a protocol code, sent this way.
            self._fail_connection(
                self.CLOSE_STATUS_CODE_UNSUPPORTED_DATA, "resmon accepts text messages only")
            return
        if self.flooded:
            return  # the rest of a flood, read before the connection closed
        if not self.budget.take():
            self._closeFlood("messages", self.budget)
            return
        try:
            request = wire.decodeClientMessage(payload)
        except wire.InvalidRequest as e:
            self._error(str(e))
            return
        if isinstance(request, wire.HistoryRequest):
            self.sendHistory(request)
        else:
            self.subscribe(Subscription.fromRequest(request))

    def onMessageBegin(self, isBinary):
        WebSocketServerProtocol.onMessageBegin(self, isBinary)
        self.messageFrames = 0

    def onMessageFrameBegin(self, length):
        WebSocketServerProtocol.onMessageFrameBegin(self, length)
        if self.failedByMe or self.flooded:
            return
        # From the frame's header, before its payload is read; the total
        # counts every fragment of the message so far.
        limit = self.factory.maxIncomingMessage
        if self.message_data_total_length > limit:
            self.wasMaxMessagePayloadSizeExceeded = True
            self._max_message_size_exceeded(
                self.message_data_total_length, limit,
                f"a message may be at most {limit} bytes")
            self._stopReading()
            return
        # Each frame costs as much as a ping: a message cut in thousands of
        # one-byte fragments is a flood.
        self.messageFrames += 1
        if self.messageFrames > MAX_FRAGMENTS:
            self._closeFlood(f"fragments in one message (at most {MAX_FRAGMENTS})", None)

    def onPing(self, payload):
        if self._controlFrameAllowed():
            WebSocketServerProtocol.onPing(self, payload)

    def onPong(self, payload):
        self._controlFrameAllowed()

    def _controlFrameAllowed(self):
        if self.flooded:
            return False
        if not self.pingBudget.take():
            self._closeFlood("pings or pongs", self.pingBudget)
            return False
        return True

    def _closeFlood(self, what, budget):
        """
        Close with 1008 (policy violation) a client that sent too many
        C{what}, and read nothing more from it.
        """
        self.flooded = True
        self.factory.floodsClosed += 1
        if budget is None:
            self.factory.warnings.warn(
                self.eventLog, "WebSocket client {peer} sent too many {what}; disconnecting it",
                peer=self.peer, what=what)
        else:
            self.factory.warnings.warn(
                self.eventLog, "WebSocket client {peer} sent more than {burst} {what} at once or "
                "{rate:g} a second; disconnecting it", peer=self.peer, burst=budget.burst, what=what,
                rate=budget.rate)
        self._fail_connection(self.CLOSE_STATUS_CODE_POLICY_VIOLATION, f"too many {what}"[:120])
        self._stopReading()

    def _stopReading(self):
        # The close frame is on its way; the rest of a flood or of a huge
        # message is not worth reading (the closing handshake times out and
        # drops the connection).
        pause = getattr(self.transport, "pauseProducing", None)
        if pause is not None:
            pause()

    def sendHistory(self, request):
        """
        Answer a L{HistoryRequest}: the host's points, or an error naming the
        host for an unknown or ambiguous one.
        """
        fanout = self.factory.fanout
        # A host the user may not see is as unknown as one that never was.
        hosts = visibleHosts(self._principal(), fanout.resolveHost(request.host))
        if not hosts:
            self._error("unknown host", host=request.host)
        elif len(hosts) > 1:
            self._error("several hosts have this routing word; use the name",
                        host=request.host, hosts=hosts[:100])
        else:
            # One key for every history reply: a client that does not read
            # holds at most one (the last it asked for), not one per host
            # (310 replies, 49 MiB, within the message rate). A batching
            # client may get it before events of the same turn (the reply
            # has their points; the dashboard leaves out a point it has).
            self.flow.send(HISTORY_REPLY, fanout.historyReplyBody(hosts[0], request.step))

    def _error(self, text, **details):
        self.flow.send(("error", None), wire.errorMessage(text, **details))

    def onClose(self, wasClean, code, reason):
        self.factory.fanout.detach(self)
        flow = getattr(self, "flow", None)
        if flow is not None:
            flow.stopProducing()


class PreparedEvent(PreparedMessage):
    """
    An event framed once as a WebSocket text message (unmasked, as a server
    sends), sent as is to every client it matches, or held back by their
    L{ClientFlow}s in the meantime; its C{len} is the bytes it writes.
    """

    def __init__(self, body):
        PreparedMessage.__init__(self, body, isBinary=False, applyMask=False, doNotCompress=False)

    def __len__(self):
        return len(self.payloadHybi)


class _MessageFrames:
    """
    Writes a snapshot as one text message in several frames, as the client
    reads (the frames of one message cannot be interleaved with others).
    """

    def __init__(self, protocol):
        self._protocol = protocol

    def begin(self):
        self._protocol.beginMessage(isBinary=False)

    def write(self, chunk):
        self._protocol.sendMessageFrame(chunk)

    def end(self):
        self._protocol.endMessage()


class DashboardFactory(WebSocketServerFactory):
    """
    Builds L{DashboardProtocol}s attached to C{fanout}.

    @param stallTimeout: seconds a client may stop reading before it is
        disconnected.
    @param messageRate: messages a second a client may send, after a burst
        of C{messageBurst}; a client sending more is disconnected (1008).
    @param pingRate: pings and pongs a second a client may send, after a
        burst of C{pingBurst}; a client sending more is disconnected (1008).
    @param maxIncomingMessage: the most bytes of one message from a client
        (all its fragments); a bigger one closes the connection (1009).
        What the server sends is not capped, only flow-controlled.
    @param origins: the L{OriginPolicy} of the handshakes (default: same
        origin, or no origin, only).
    """

    protocol = DashboardProtocol

    def __init__(self, fanout, clock, stallTimeout, pingInterval=20.0,
                 messageRate=MESSAGE_RATE, messageBurst=MESSAGE_BURST, origins=None,
                 pingRate=PING_RATE, pingBurst=PING_BURST,
                 maxIncomingMessage=MAX_INCOMING_MESSAGE, budget=None):
        WebSocketServerFactory.__init__(self)
        self.budget = budget
        self.maxIncomingMessage = maxIncomingMessage
        self.pingRate = pingRate
        self.pingBurst = pingBurst
        # Warnings about bad clients (floods, refused origins), rate limited.
        self.warnings = LimitedLog(clock)
        self.origins = origins if origins is not None else OriginPolicy()
        self.originsRefused = 0
        self.fanout = fanout
        self.clock = clock
        self.stallTimeout = stallTimeout
        self.messageRate = messageRate
        self.messageBurst = messageBurst
        self.floodsClosed = 0
        # The resmon.webserver.notifications.NotificationCenter, or None.
        self.notifications = None
        # The last event framed: the fan-out gives every client the same
        # document and body, one client after another.
        self._lastEvent = (None, None, None)
        self.setProtocolOptions(
            # No cap here: Autobahn applies it to sent messages too (see
            # DashboardProtocol.onMessageFrameBegin for what clients send).
            maxFramePayloadSize=0,
            maxMessagePayloadSize=0,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
            # Protocol errors (invalid UTF-8: 1007, too big: 1009, binary:
            # 1003) get a closing handshake with their code, not a bare drop.
            failByDrop=False,
            autoPingInterval=pingInterval,
            autoPingTimeout=pingInterval,
        )

    def prepareEvent(self, document, body):
        """
        The key and the L{PreparedEvent} of an event of the fan-out, made
        once for all the clients it is sent to (the fan-out sends one event
        to every client before the next).

        @return: C{(key, PreparedEvent)}, for L{ClientFlow.send}.
        """
        lastDocument, lastBody, prepared = self._lastEvent
        if document is not lastDocument or body is not lastBody:
            prepared = (self.fanout.eventKey(document), PreparedEvent(body))
            self._lastEvent = (document, body, prepared)
        return prepared
