"""
The JSON HTTP API: C{GET /api/hosts}.
"""

import json

from twisted.web import resource


class JSONResource(resource.Resource):
    isLeaf = True

    def renderJSON(self, request, document):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(document, separators=(",", ":")).encode("utf-8")


class HostsResource(JSONResource):
    """
    C{GET /api/hosts}: the latest analysis of every host seen.
    """

    def __init__(self, latest):
        JSONResource.__init__(self)
        self.latest = latest

    def render_GET(self, request):
        return self.renderJSON(request, {"hosts": self.latest.documents()})


def apiResource(latest):
    """
    The C{/api} resource tree.
    """
    api = resource.Resource()
    api.putChild(b"hosts", HostsResource(latest))
    return api
