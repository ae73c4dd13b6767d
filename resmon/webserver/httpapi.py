"""
The JSON HTTP API: C{GET /api/hosts}, C{/api/hosts/<host>},
C{/api/hosts/<host>/history}, and the event stream C{/api/stream}.
"""

import math

from twisted.web import resource, server

from resmon import wire
from resmon.auth.principal import principalOf
from resmon.webserver.fanout import DEFAULT_STALL_TIMEOUT, ClientFlow, Snapshot
from resmon.webserver.subscriptions import InvalidSubscription, parseStep
from resmon.webserver.visibility import visibleHosts


class JSONResource(resource.Resource):
    isLeaf = True

    def render(self, request):
        try:
            return resource.Resource.render(self, request)
        except resource.UnsupportedMethod as e:
            request.setHeader(b"allow", b", ".join(e.allowedMethods))
            return self.renderError(request, "method not allowed", 405)

    def renderError(self, request, text, code, **details):
        return self.renderBody(request, wire.errorBody(text, **details), code)

    def renderBody(self, request, body, code=200):
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return body

    def renderPieces(self, request, pieces, clock, stallTimeout, budget):
        """
        Answer with the body C{pieces()} makes (byte pieces), written as
        the client reads, within C{budget} (the bytes queued to all
        clients): a large answer is never made whole, nor queued whole to a
        client that does not read. Without a C{clock}, at once, whole.
        """
        self.renderBody(request, b"")
        if clock is None:
            return b"".join(pieces())
        _ResponseBody(request, clock, stallTimeout, budget).start(Snapshot(pieces))
        return server.NOT_DONE_YET


class HostsResource(JSONResource):
    """
    C{GET /api/hosts}: the latest analysis and status of every host seen.
    C{GET /api/hosts/<host>}: one host's latest analysis and status.
    C{GET /api/hosts/<host>/history[?since=TS][&step=S]}: one host's history
    points, at most one per C{S} seconds.
    C{<host>} is the host's name (URL-encoded) or its routing word.
    """

    def __init__(self, fanout, clock=None, stallTimeout=DEFAULT_STALL_TIMEOUT, budget=None):
        JSONResource.__init__(self)
        self.fanout = fanout
        self.clock = clock
        self.stallTimeout = stallTimeout
        self.budget = budget

    def render_GET(self, request):
        path = request.postpath
        if path and path[-1] == b"":
            path = path[:-1]
        if not path:
            return self._everyHost(request)
        if len(path) > 2 or (len(path) == 2 and path[1] != b"history"):
            return self.renderError(request, "not found", 404)
        try:
            wanted = path[0].decode("utf-8")
        except UnicodeDecodeError:
            return self.renderError(request, "host names are UTF-8", 404)
        # A host the user may not see is as unknown as one that never was.
        hosts = visibleHosts(principalOf(request), self.fanout.resolveHost(wanted))
        if not hosts:
            return self.renderError(request, "unknown host", 404, host=wanted)
        if len(hosts) > 1:
            return self.renderError(
                request, "several hosts have this routing word; use the name", 409,
                host=wanted, hosts=hosts)
        host = hosts[0]
        if len(path) == 2:
            return self._history(request, host)
        return self.renderBody(request, wire.hostBody(
            host, self.fanout.latest.body(host), self.fanout.statuses.body(host)))

    def _everyHost(self, request):
        """
        Every host's latest analysis and status, written as the client reads
        (the whole fleet can be tens of MB): the bodies are frozen now.
        """
        fanout = self.fanout
        hosts = visibleHosts(principalOf(request), fanout.knownHosts())
        analyses = [body for body in map(fanout.latest.body, hosts) if body is not None]
        statuses = [body for body in map(fanout.statuses.body, hosts) if body is not None]

        def pieces():
            return wire.hostsPieces(analyses, statuses)
        return self.renderPieces(request, pieces, self.clock, self.stallTimeout, self.budget)

    def _history(self, request, host):
        since = _number(request.args.get(b"since", [None])[0])
        if since is not None and not math.isfinite(since):
            return self.renderError(request, "since: expected a number", 400)
        try:
            step = parseStep(_number(request.args.get(b"step", [b"0"])[0]))
        except InvalidSubscription as e:
            return self.renderError(request, str(e), 400)
        history = self.fanout.history
        window = history.window if history is not None else 0
        points = history.pointsBody(host, since, step) if history is not None else b"[]"
        return self.renderBody(request, wire.hostHistoryBody(host, window, step, points))


class _ResponseBody:
    """
    Writes one response body through a L{ClientFlow}: in pieces, as the
    client reads, within the budget of bytes queued to clients.
    """

    def __init__(self, request, clock, stallTimeout, budget):
        self.request = request
        self.flow = ClientFlow(request.write, self._abort, clock, stallTimeout, budget=budget,
                               stream=self, name="HTTP client")

    def start(self, snapshot):
        self.request.notifyFinish().addErrback(lambda failure: self.flow.stopProducing())
        # Queued before the producer is registered, written after: a consumer
        # may pull from it as soon as it is registered (twisted.web's
        # DummyRequest does, until the body is finished).
        self.flow.pauseProducing()
        self.flow.restart(snapshot)
        self.request.registerProducer(self.flow, True)
        self.flow.resumeProducing()

    def begin(self):
        pass

    def write(self, chunk):
        self.request.write(chunk)

    def end(self):
        self.flow.stopProducing()
        self.request.unregisterProducer()
        self.request.finish()

    def _abort(self):
        transport = getattr(self.request.channel, "transport", None)
        if transport is not None:
            transport.abortConnection()


def _number(value):
    """
    A query parameter as a float (NaN if it is not a number), or L{None}.
    """
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return math.nan


class APIRoot(resource.Resource):
    """
    C{/api}: its children, and a JSON 404 for anything else.
    """

    def getChild(self, path, request):
        return _JSONNotFound()

    def render(self, request):
        return _JSONNotFound().render(request)


class _JSONNotFound(JSONResource):
    def render(self, request):
        return self.renderError(request, "not found", 404)


def apiResource(fanout, streams, clock=None, budget=None):
    """
    The C{/api} resource tree; C{streams} is the L{EventStreamResource}.
    With a C{clock}, C{/api/hosts} is written as the client reads, within
    C{budget}.
    """
    api = APIRoot()
    api.putChild(b"hosts", HostsResource(fanout, clock, streams.stallTimeout, budget))
    api.putChild(b"stream", streams)
    return api
