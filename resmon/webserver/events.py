"""
C{POST /api/events/<source>}: events from outside (deploy tools, cron jobs,
other systems), in whatever format they come, published on the bus under
C{<source>.event} in resmon's event envelope (L{resmon.wire}). C{GET
/api/events[?since=TS]}: the recent events and alerts; C{GET /api/alerts}:
the alerts firing now.
"""

import math
import uuid

from twisted.logger import Logger
from twisted.web import resource, server

from resmon import topics, wire
from resmon.auth.principal import principalOf
from resmon.webserver.fanout import DEFAULT_STALL_TIMEOUT
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
    @param fanout: the L{resmon.webserver.fanout.EventFanout} whose
        C{recentEvents} C{GET} lists, or L{None} (C{GET} answers 405).
    @param budget: the L{resmon.webserver.sendbudget.SendBudget} of bytes
        queued to clients, within which C{GET} is written as the client
        reads; L{None}: written whole.
    """

    log = Logger()

    def __init__(self, bus, clock, maxBody=wire.DEFAULT_MAX_BODY, retryAfter=DEFAULT_RETRY_AFTER,
                 newId=None, fanout=None, budget=None):
        JSONResource.__init__(self)
        self.fanout = fanout
        if fanout is None:
            self.allowedMethods = (b"POST",)
        self.bus = bus
        self.clock = clock
        self.maxBody = maxBody
        self.retryAfter = retryAfter
        self._newId = newId or (lambda: uuid.uuid4().hex)
        # With a budget (the site's, mountEvents), GET answers are written as
        # the client reads, within that budget of bytes queued to clients.
        self.budget = budget
        self.counters = {"accepted": 0, "refused": 0, "unavailable": 0}

    def render_GET(self, request):
        if self.fanout is None:
            raise resource.UnsupportedMethod(self.allowedMethods)
        if request.postpath not in ([], [b""]):
            return self.renderError(request, "not found", 404)
        since = request.args.get(b"since")
        if since is not None:
            try:
                since = float(since[0])
            except ValueError:
                since = math.nan
            if not math.isfinite(since):
                return self.renderError(
                    request, "since: expected a number (seconds since the epoch)", 400)
        unknown = set(request.args) - {b"since"}
        if unknown:
            return self.renderError(
                request, f"unknown parameter {sorted(unknown)[0][:40].decode('utf-8', 'replace')!r}", 400)
        principal = principalOf(request)
        wanted = None if principal.seesEverything else principal.maySee
        bodies = self.fanout.recentEvents.since(since, wanted)
        # Up to 1,000 events of up to --max-body each: within the budget.
        return self.renderPieces(request, lambda: wire.eventsPieces(bodies),
                                 None if self.budget is None else self.clock,
                                 DEFAULT_STALL_TIMEOUT, self.budget)

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


class AlertsResource(JSONResource):
    """
    C{GET /api/alerts}: C{{"alerts": [<the latest firing alert event of each
    host and check>]}}, in the order they fired.
    """

    def __init__(self, fanout):
        JSONResource.__init__(self)
        self.fanout = fanout

    def render_GET(self, request):
        if request.postpath not in ([], [b""]):
            return self.renderError(request, "not found", 404)
        principal = principalOf(request)
        wanted = None if principal.seesEverything else principal.maySee
        return self.renderBody(request, wire.alertsBody(self.fanout.firingAlerts.bodies(wanted)))


def mountEvents(site, bus, clock, maxBody, fanout=None):
    """
    Mount L{EventsResource} at C{/api/events} of C{site} (a
    L{resmon.webserver.httplimits.LimitedSite} from
    L{resmon.services.web.buildSite}), taking bodies up to C{maxBody} there,
    and with a C{fanout}, L{AlertsResource} at C{/api/alerts}.
    """
    from resmon.webserver.httplimits import MAX_REQUEST_BODY
    api = site.resource.children[b"api"]
    api.putChild(b"events", EventsResource(bus, clock, maxBody, fanout=fanout,
                                           budget=getattr(site, "budget", None)))
    if fanout is not None:
        api.putChild(b"alerts", AlertsResource(fanout))
    site.bodyLimit = bodyLimitFor(maxBody, MAX_REQUEST_BODY)
