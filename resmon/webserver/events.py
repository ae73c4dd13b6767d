"""
C{POST /api/events/<source>}: events from outside (deploy tools, cron jobs,
other systems), in whatever format they come, published on the bus under
C{<source>.event} in resmon's event envelope (L{resmon.wire}).
"""

import uuid

from twisted.logger import Logger
from twisted.web import server

from resmon import topics, wire
from resmon.webserver.httpapi import JSONResource

DEFAULT_RETRY_AFTER = 5
# Where the web role takes request bodies up to --max-body (elsewhere, none).
PATH_PREFIX = b"/api/events/"


class EventsResource(JSONResource):
    """
    Takes any body up to C{maxBody} bytes and answers C{202} with the
    event's C{id} once the bus confirmed it; C{400} for a source that cannot
    be one routing-key word; C{413} over C{maxBody}; C{503} with
    C{Retry-After} while the bus is disconnected or when it refused the
    event (nothing answered C{202} is lost: the broker has it).

    @param bus: an L{resmon.interfaces.IBus}.
    @param clock: an L{IReactorTime}, dating the events.
    @param newId: returns a new unique event id.
    """

    log = Logger()

    def __init__(self, bus, clock, maxBody=wire.DEFAULT_MAX_BODY, retryAfter=DEFAULT_RETRY_AFTER,
                 newId=None):
        JSONResource.__init__(self)
        self.bus = bus
        self.clock = clock
        self.maxBody = maxBody
        self.retryAfter = retryAfter
        self._newId = newId or (lambda: uuid.uuid4().hex)
        self.counters = {"accepted": 0, "refused": 0, "unavailable": 0}

    def render_POST(self, request):
        path = request.postpath
        if len(path) != 1 or not path[0]:
            self.counters["refused"] += 1
            return self.renderError(request, "expected POST /api/events/<source>", 404)
        try:
            name = path[0].decode("utf-8")
            word = wire.eventSource(name)
        except UnicodeDecodeError:
            self.counters["refused"] += 1
            return self.renderError(request, "the source is not UTF-8", 400)
        except wire.Rejected as e:
            self.counters["refused"] += 1
            return self.renderError(request, f"source: {e.detail}", 400, source=name[:200])
        body = request.content.read()
        if len(body) > self.maxBody:
            self.counters["refused"] += 1
            return self.renderError(
                request, f"request body too large: at most {self.maxBody} bytes", 413)
        if not self.bus.connected:
            return self._unavailable(request, "the bus is not connected")
        eventId = self._newId()
        contentType = request.getHeader(b"content-type") or b"application/octet-stream"
        envelope = wire.encodeEventFromBody(
            word, body, contentType.decode("latin-1"), self.clock.seconds(), eventId)
        finished = []
        request.notifyFinish().addBoth(finished.append)
        d = self.bus.publish(f"{word}.{topics.EVENT}", envelope)
        d.addCallbacks(self._confirmed, self._refused, callbackArgs=(request, eventId, finished),
                       errbackArgs=(request, finished))
        return server.NOT_DONE_YET

    def _confirmed(self, _, request, eventId, finished):
        self.counters["accepted"] += 1
        if not finished:
            request.write(self.renderBody(request, wire.encodeJSON({"id": eventId}), 202))
            request.finish()

    def _refused(self, failure, request, finished):
        self.log.warn("the bus did not take an event: {error}", error=failure.getErrorMessage())
        if not finished:
            request.write(self._unavailable(request, "the bus did not take the event"))
            request.finish()

    def _unavailable(self, request, why):
        self.counters["unavailable"] += 1
        request.setHeader(b"retry-after", str(self.retryAfter).encode("ascii"))
        return self.renderError(request, f"{why}; try again later", 503)


def bodyLimitFor(maxBody, otherwise):
    """
    The request body limit of a path: C{maxBody} under C{/api/events/},
    C{otherwise} elsewhere (for L{resmon.webserver.httplimits.LimitedRequest}).
    """
    def limit(path):
        return maxBody if path.startswith(PATH_PREFIX) else otherwise
    return limit


def mountEvents(site, bus, clock, maxBody):
    """
    Mount L{EventsResource} at C{/api/events} of C{site} (a
    L{resmon.webserver.httplimits.LimitedSite} from
    L{resmon.services.web.buildSite}), taking bodies up to C{maxBody} there.
    """
    from resmon.webserver.httplimits import MAX_REQUEST_BODY
    site.resource.children[b"api"].putChild(b"events", EventsResource(bus, clock, maxBody))
    site.bodyLimit = bodyLimitFor(maxBody, MAX_REQUEST_BODY)
