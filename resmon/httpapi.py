"""
The JSON HTTP API: C{GET /api/hosts}, C{/api/hosts/<host>},
C{/api/hosts/<host>/history}, and the event stream C{/api/stream}.
"""

import math

from twisted.web import resource

from resmon.fanout import encodeJSON
from resmon.subscriptions import InvalidSubscription, parseStep


class JSONResource(resource.Resource):
    isLeaf = True

    def render(self, request):
        try:
            return resource.Resource.render(self, request)
        except resource.UnsupportedMethod as e:
            request.setHeader(b"allow", b", ".join(e.allowedMethods))
            return self.renderJSON(request, {"error": "method not allowed"}, 405)

    def renderJSON(self, request, document, code=200):
        return self.renderBody(request, encodeJSON(document), code)

    def renderBody(self, request, body, code=200):
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return body


class HostsResource(JSONResource):
    """
    C{GET /api/hosts}: the latest analysis and status of every host seen.
    C{GET /api/hosts/<host>}: one host's latest analysis and status.
    C{GET /api/hosts/<host>/history[?since=TS][&step=S]}: one host's history
    points, at most one per C{S} seconds.
    C{<host>} is the host's name (URL-encoded) or its routing word.
    """

    def __init__(self, fanout):
        JSONResource.__init__(self)
        self.fanout = fanout

    def render_GET(self, request):
        path = request.postpath
        if path and path[-1] == b"":
            path = path[:-1]
        if not path:
            return self.renderBody(
                request, b'{"hosts":' + self.fanout.latest.arrayBody()
                + b',"statuses":' + self.fanout.statuses.arrayBody() + b"}")
        if len(path) > 2 or (len(path) == 2 and path[1] != b"history"):
            return self.renderJSON(request, {"error": "not found"}, 404)
        try:
            wanted = path[0].decode("utf-8")
        except UnicodeDecodeError:
            return self.renderJSON(request, {"error": "host names are UTF-8"}, 404)
        hosts = self.fanout.resolveHost(wanted)
        if not hosts:
            return self.renderJSON(request, {"error": "unknown host", "host": wanted}, 404)
        if len(hosts) > 1:
            return self.renderJSON(
                request, {"error": "several hosts have this routing word; use the name",
                          "host": wanted, "hosts": hosts}, 409)
        host = hosts[0]
        if len(path) == 2:
            return self._history(request, host)
        return self.renderBody(request, b"".join([
            b'{"host":', encodeJSON(host),
            b',"analysis":', self.fanout.latest.body(host) or b"null",
            b',"status":', self.fanout.statuses.body(host) or b"null", b"}"]))

    def _history(self, request, host):
        since = _number(request.args.get(b"since", [None])[0])
        if since is not None and not math.isfinite(since):
            return self.renderJSON(request, {"error": "since: expected a number"}, 400)
        try:
            step = parseStep(_number(request.args.get(b"step", [b"0"])[0]))
        except InvalidSubscription as e:
            return self.renderJSON(request, {"error": str(e)}, 400)
        history = self.fanout.history
        window = history.window if history is not None else 0
        points = history.pointsBody(host, since, step) if history is not None else b"[]"
        return self.renderBody(request, b"".join([
            b'{"host":', encodeJSON(host), b',"window":', encodeJSON(window),
            b',"step":', encodeJSON(step), b',"points":', points, b"}"]))


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
        return self.renderJSON(request, {"error": "not found"}, 404)


def apiResource(fanout, streams):
    """
    The C{/api} resource tree; C{streams} is the L{EventStreamResource}.
    """
    api = APIRoot()
    api.putChild(b"hosts", HostsResource(fanout))
    api.putChild(b"stream", streams)
    return api
