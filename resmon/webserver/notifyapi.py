"""
C{POST /api/notify}: an operator's notification to one user or one group,
published on the bus under C{user.<name>.notify} or C{group.<group>.notify}
(every web process delivers it to its own clients of that user).
"""

import uuid

from twisted.logger import Logger
from twisted.web import server

from resmon import wire
from resmon.auth.principal import principalOf
from resmon.webserver.httpapi import JSONResource

DEFAULT_RETRY_AFTER = 5


class NotifyResource(JSONResource):
    """
    Takes a JSON body (L{wire.decodeNotifyRequest}, at most
    L{wire.MAX_NOTIFY_BODY} bytes) from an operator or an admin and answers
    C{202} with the notification's C{id} once the bus confirmed it; C{403}
    for a viewer, C{400} for a bad body, C{413} over the limit, C{503}
    while the bus is away.
    """

    log = Logger()
    allowedMethods = (b"POST",)

    def __init__(self, bus, clock, newId=None, retryAfter=DEFAULT_RETRY_AFTER):
        JSONResource.__init__(self)
        self.bus = bus
        self.clock = clock
        self.retryAfter = retryAfter
        self._newId = newId or (lambda: uuid.uuid4().hex)
        self.counters = {"accepted": 0, "refused": 0, "forbidden": 0, "unavailable": 0}

    def render_POST(self, request):
        if request.postpath not in ([], [b""]):
            return self.renderError(request, "not found", 404)
        if not principalOf(request).mayAct:
            self.counters["forbidden"] += 1
            return self.renderError(request, "only operators and admins may notify", 403)
        body = request.content.read(wire.MAX_NOTIFY_BODY + 1)
        if len(body) > wire.MAX_NOTIFY_BODY:
            self.counters["refused"] += 1
            return self.renderError(
                request, f"request body too large: at most {wire.MAX_NOTIFY_BODY} bytes", 413)
        try:
            notification = wire.decodeNotifyRequest(body, self.clock.seconds(), self._newId())
        except wire.Rejected as e:
            self.counters["refused"] += 1
            return self.renderError(request, e.detail, 400)
        if not self.bus.connected:
            return self._unavailable(request, "the bus is not connected")
        finished = []
        request.notifyFinish().addBoth(finished.append)
        d = self.bus.publish(notification.routingKey, wire.encodeNotification(notification))
        d.addCallbacks(self._confirmed, self._refused, callbackArgs=(request, notification.id, finished),
                       errbackArgs=(request, finished))
        return server.NOT_DONE_YET

    def _confirmed(self, _, request, notificationId, finished):
        self.counters["accepted"] += 1
        if not finished:
            request.write(self.renderBody(request, wire.encodeJSON({"id": notificationId}), 202))
            request.finish()

    def _refused(self, failure, request, finished):
        self.log.warn("the bus did not take a notification: {error}", error=failure.getErrorMessage())
        if not finished:
            request.write(self._unavailable(request, "the bus did not take the notification"))
            request.finish()

    def _unavailable(self, request, why):
        self.counters["unavailable"] += 1
        request.setHeader(b"retry-after", str(self.retryAfter).encode("ascii"))
        return self.renderError(request, f"{why}; try again later", 503)
