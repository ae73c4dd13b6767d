"""
C{GET /api/stream}: the fan-out as Server-Sent Events, for programs and
C{curl -N}: a snapshot event, then every matching event, with keep-alive
comments and the same per-client flow control as the WebSocket.
"""

from twisted.logger import Logger
from twisted.web import resource, server

from resmon import wire
from resmon.auth.principal import principalOf
from resmon.periodic import Periodic
from resmon.webserver.batches import BATCH_KEY
from resmon.webserver.fanout import DEFAULT_STALL_TIMEOUT, ClientFlow
from resmon.webserver.subscriptions import InvalidSubscription, parseQuery
from resmon.webserver.visibility import visibleTo

DEFAULT_KEEPALIVE = 15.0
# Milliseconds an EventSource waits before reconnecting.
RECONNECT_DELAY_MS = 2000
KEEPALIVE_COMMENT = wire.SSE_KEEPALIVE
# The frames are resmon.wire's; the name this module's callers know.
eventFrame = wire.sseFrame


def keyedEventFrame(key, body):
    """
    The SSE event of an event of the fan-out given its key (its kind, its
    host) and its body.
    """
    return wire.sseFrame(key[0], body)


class _SnapshotStream:
    """
    Writes the snapshot event in pieces: its JSON is one C{data:} line (the
    line breaks the bodies may hold are JSON white space, written as spaces).
    """

    def __init__(self, request):
        self._request = request

    def begin(self):
        self._request.write(wire.SSE_SNAPSHOT_BEGIN)

    def write(self, chunk):
        self._request.write(wire.sseData(chunk))

    def end(self):
        self._request.write(wire.SSE_SNAPSHOT_END)


class EventStream:
    """
    One SSE client: a fan-out client writing to one HTTP response, which it
    never finishes on its own. It takes the events of a reactor turn
    together (L{resmon.webserver.batches}): one write of them all, made once
    for every stream of its subscription; its client reads the same events
    as if each had been written alone.
    """

    log = Logger()
    # What the fan-out shares between the clients of one subscription.
    batching = "event-stream"

    def __init__(self, request, clock, stallTimeout, keepAlive, budget=None):
        self.request = request
        self.flow = ClientFlow(request.write, self._abort, clock, stallTimeout, budget=budget,
                               stream=_SnapshotStream(request), name="event stream client",
                               sendKeyed=self._writeEvent)
        self._keepAlive = Periodic(self._ping, keepAlive, clock, self.log,
                                   "the event stream's keep-alive stopped")
        self.finished = request.notifyFinish()
        self._fanout = None

    def start(self, fanout, subscription):
        self._fanout = fanout
        self.request.registerProducer(self.flow, True)
        self.request.write(wire.sseRetry(RECONNECT_DELAY_MS))
        self.flow.restart(fanout.subscribeStreamed(self, subscription))
        self._keepAlive.start()
        self.finished.addBoth(self._ended)

    def sendEvent(self, document, body):
        # What the fan-out does not send in batches: the user's notifications.
        if self._fanout is None:
            return  # ended (notifications kept may answer after the client left)
        # Held back as the bytes received, framed only when written.
        self.flow.send(self._fanout.eventKey(document), body)

    def sendBatch(self, batch):
        """
        Send the events of a L{resmon.webserver.batches.EventBatch}: in one
        write if it would be written at once, else each event to the flow,
        which holds back the latest of each host and kind.
        """
        if self._fanout is None:
            return
        flow = self.flow
        if flow.writesAtOnce:
            flow.send(BATCH_KEY, batch.joined(keyedEventFrame))
            return
        for key, body in batch.events:
            flow.send(key, body)

    def _writeEvent(self, key, body):
        if key is BATCH_KEY:
            self.request.write(body)  # events framed already
        else:
            self.request.write(wire.sseFrame(key[0], body))

    def close(self):
        """
        End the response (the server is stopping).
        """
        if self._fanout is None:
            return
        self._stop()
        self.request.unregisterProducer()
        self.request.finish()

    def _ping(self):
        # Never in the middle of the snapshot's data line.
        if not self.flow.paused and not self.flow.busy:
            self.request.write(KEEPALIVE_COMMENT)

    def _abort(self):
        transport = getattr(self.request.channel, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def _stop(self):
        if self._fanout is not None:
            self._fanout.detach(self)
            self._fanout = None
        self._keepAlive.stop()
        self.flow.stopProducing()

    def _ended(self, result):
        # The client went away (an errback) or close() finished the response.
        self._stop()
        return None


class EventStreamResource(resource.Resource):
    """
    C{GET /api/stream?hosts=...&events=...&history=0|1|overview&step=...&since=...}.
    """

    isLeaf = True

    def __init__(self, fanout, clock, stallTimeout=DEFAULT_STALL_TIMEOUT,
                 keepAlive=DEFAULT_KEEPALIVE, budget=None):
        resource.Resource.__init__(self)
        self.fanout = fanout
        self.budget = budget
        self.clock = clock
        self.stallTimeout = stallTimeout
        self.keepAlive = keepAlive
        self.streams = set()
        # The resmon.webserver.notifications.NotificationCenter, or None.
        self.notifications = None

    def render_HEAD(self, request):
        self._headers(request)
        return b""

    def render_GET(self, request):
        try:
            subscription = parseQuery(request.args)
        except InvalidSubscription as e:
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"application/json")
            return wire.errorBody(str(e))
        self._headers(request)
        stream = EventStream(request, self.clock, self.stallTimeout, self.keepAlive, self.budget)
        self.streams.add(stream)
        stream.finished.addBoth(lambda result: self.streams.discard(stream))
        principal = principalOf(request)
        stream.start(self.fanout, visibleTo(principal, subscription))
        if self.notifications is not None:
            self.notifications.sendKept(stream, principal)
        return server.NOT_DONE_YET

    def _headers(self, request):
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        # Tell reverse proxies (nginx) not to buffer the stream.
        request.setHeader(b"x-accel-buffering", b"no")

    def closeAll(self):
        # The events of this turn first: the streams end after them.
        self.fanout.sendBatches()
        for stream in list(self.streams):
            stream.close()
