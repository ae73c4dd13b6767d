"""
The webhook registry's HTTP API (see C{docs/webhooks.md}):

  - C{POST /api/webhooks}: register C{{"key", "url", "secret"?}}: C{201}.
  - C{GET /api/webhooks[?key=K]}, C{GET /api/webhooks/<id>}.
  - C{DELETE /api/webhooks/<id>}, C{DELETE /api/webhooks?key=K}.
  - C{GET /api/webhooks/<id>/deliveries}: the last attempts.
  - C{POST /api/webhooks/<id>/ping}: queue a test delivery.

The registry (a L{resmon.webhooks.registry.WebhookRegistry}) is given;
what it refuses (a L{ValueError} with a C{field}) is a C{400} naming the
field.

Who may (L{resmon.auth.principal.principalOf} the request): viewers get
C{403} on every endpoint; operators register hooks they own and see, ping
and delete only those (another's id is a C{404}, as if it did not exist);
admins, and every request without C{--users}, see and manage all.
"""

import json

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import server

from resmon import wire
from resmon.auth.principal import principalOf
from resmon.webserver.httpapi import JSONResource

JSON_TYPE = b"application/json"


class WebhooksResource(JSONResource):
    log = Logger()

    def __init__(self, registry):
        JSONResource.__init__(self)
        self.registry = registry

    def _path(self, request):
        path = list(request.postpath)
        if path and path[-1] == b"":
            path.pop()
        try:
            return [part.decode("ascii") for part in path]
        except UnicodeDecodeError:
            return None

    def _key(self, request):
        values = request.args.get(b"key")
        if not values:
            return None
        return values[0].decode("utf-8", "replace")

    def _answer(self, request, d, code=200):
        """
        Write C{d}'s result (a JSON-able object, or L{None} for 404) once it
        fires; a refusal naming a field is a 400.
        """
        gone = []
        request.notifyFinish().addErrback(lambda failure: gone.append(True))

        def written(document):
            if request.finished or gone:
                return
            if document is None:
                body, status = wire.errorBody("no such webhook"), 404
            else:
                body, status = wire.encodeJSON(document), code
            request.write(self.renderBody(request, body, status))
            request.finish()

        def failed(failure):
            if request.finished or gone:
                return
            field = getattr(failure.value, "field", False)
            if isinstance(failure.value, ValueError) and field is not False:
                body = wire.errorBody(str(failure.value), field=field)
                request.write(self.renderBody(request, body, 400))
            else:
                self.log.failure("webhook registry request failed", failure)
                request.write(self.renderBody(request, wire.errorBody("registry unavailable"), 503))
            request.finish()
        d.addCallback(written).addErrback(failed)
        return server.NOT_DONE_YET

    def _call(self, function, *args, **kwargs):
        return defer.maybeDeferred(function, *args, **kwargs)

    def _refused(self, request):
        """
        The 403 of a principal that may not manage webhooks, or L{None}.
        """
        if principalOf(request).mayAct:
            return None
        return self.renderError(
            request, "managing webhooks needs the operator or admin role", 403)

    def _ownedBy(self, request):
        """
        The principal whose hooks the request may see (L{None}: every hook).
        """
        principal = principalOf(request)
        return None if principal.isAdmin else principal

    def render_GET(self, request):
        refused = self._refused(request)
        if refused is not None:
            return refused
        ownedBy = self._ownedBy(request)
        path = self._path(request)
        if path is None or len(path) > 2 or (len(path) == 2 and path[1] != "deliveries"):
            return self.renderError(request, "not found", 404)
        if not path:
            return self._answer(request, self._call(self.registry.list, self._key(request),
                                                    ownedBy=ownedBy)
                                .addCallback(lambda hooks: {"webhooks": hooks}))
        if len(path) == 2:
            return self._answer(request, self._deliveries(path[0], ownedBy))
        return self._answer(request, self._call(self.registry.get, path[0], ownedBy=ownedBy))

    def _deliveries(self, hookId, ownedBy):
        d = self._call(self.registry.get, hookId, ownedBy=ownedBy)

        def found(hook):
            if hook is None:
                return None
            return self.registry.deliveries(hookId).addCallback(
                lambda attempts: {"id": hookId, "deliveries": attempts})
        return d.addCallback(found)

    def render_POST(self, request):
        refused = self._refused(request)
        if refused is not None:
            return refused
        path = self._path(request)
        if path is None or len(path) not in (0, 2) or (len(path) == 2 and path[1] != "ping"):
            return self.renderError(request, "not found", 404)
        if len(path) == 2:
            return self._answer(request, self._call(
                self.registry.ping, path[0], ownedBy=self._ownedBy(request)).addCallback(
                lambda delivery: None if delivery is None else {"id": path[0],
                                                                "delivery": delivery}), 202)
        contentType = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if contentType != JSON_TYPE:
            # Also what keeps another site's page from registering a hook
            # with a plain form: a JSON body needs a CORS preflight.
            return self.renderError(request, "expected Content-Type: application/json", 415)
        try:
            document = json.loads(request.content.read().decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return self.renderError(request, "the body is not JSON", 400, field=None)
        return self._answer(request, self._call(
            self.registry.register, document, principal=principalOf(request)), 201)

    def render_DELETE(self, request):
        refused = self._refused(request)
        if refused is not None:
            return refused
        ownedBy = self._ownedBy(request)
        path = self._path(request)
        if path is None or len(path) > 1:
            return self.renderError(request, "not found", 404)
        if path:
            return self._answer(request, self._call(
                self.registry.remove, path[0], ownedBy=ownedBy).addCallback(
                lambda removed: {"deleted": [path[0]]} if removed else None))
        key = self._key(request)
        if key is None:
            return self.renderError(
                request, "DELETE /api/webhooks needs ?key= (or use /api/webhooks/<id>)", 400,
                field="key")
        return self._answer(request, self._call(
            self.registry.removeKey, key, ownedBy=ownedBy).addCallback(
            lambda removed: {"deleted": removed}))
