"""
C{GET /healthz} (the process is alive) and C{GET /readyz} (its role is
working: the broker connected and every subscription consuming), for load
balancers and orchestrators.
"""

from twisted.web import resource

from resmon import wire


class _HealthResource(resource.Resource):
    isLeaf = True

    def _answer(self, request, code, document):
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return wire.encodeJSON(document) + b"\n"


class AliveResource(_HealthResource):
    """
    C{/healthz}: 200 whenever the process answers at all.
    """

    def render_GET(self, request):
        return self._answer(request, 200, {"alive": True})


class ReadyResource(_HealthResource):
    """
    C{/readyz}: 200 while C{readiness} says the role works, else 503 with
    the reason.

    @param readiness: a L{resmon.services.readiness.RoleReadiness}.
    """

    def __init__(self, readiness):
        _HealthResource.__init__(self)
        self.readiness = readiness

    def render_GET(self, request):
        reason = self.readiness.notReadyReason()
        if reason is None:
            return self._answer(request, 200, {"ready": True})
        return self._answer(request, 503, {"ready": False, "reason": reason})


def addHealthResources(root, readiness):
    """
    Serve C{/healthz} and C{/readyz} under C{root}.
    """
    root.putChild(b"healthz", AliveResource())
    root.putChild(b"readyz", ReadyResource(readiness))
