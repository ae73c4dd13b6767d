"""
The web role: one bus subscription fanned out to every WebSocket and
Server-Sent Events client, the dashboard's static files and the JSON API, on
one twisted.web Site.
"""

import os

from autobahn.twisted.resource import WebSocketResource
from twisted.application import internet, service, strports
from twisted.logger import Logger
from twisted.web import static

from resmon import topics, wire
from resmon.fanout import DEFAULT_STALL_TIMEOUT, EventFanout
from resmon.history import DEFAULT_MAX_POINTS, DEFAULT_WINDOW, FleetHistory
from resmon.origins import HostCheckedSite
from resmon.httpapi import apiResource
from resmon.sse import DEFAULT_KEEPALIVE, EventStreamResource
from resmon.websocket import DashboardFactory

# Most seconds between two sweeps for hosts no longer seen.
MAX_EXPIRE_INTERVAL = 60.0


DEFAULT_PING_INTERVAL = 20.0
DEFAULT_IDLE_TIMEOUT = 60.0

def webRoot():
    """
    The directory of the dashboard's static files: installed inside the
    package as C{resmon/webroot}, or C{web/} beside a source checkout.
    """
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    installed = os.path.join(here, "webroot")
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(here), "web")


def buildSite(fanout, clock, stallTimeout=DEFAULT_STALL_TIMEOUT, root=None,
              keepAlive=DEFAULT_KEEPALIVE, pingInterval=DEFAULT_PING_INTERVAL,
              idleTimeout=DEFAULT_IDLE_TIMEOUT, origins=None):
    """
    The Site: static files at C{/}, the WebSocket at C{/ws}, the API and
    the event stream at C{/api}. Its C{eventStreams} is the
    L{EventStreamResource} of C{/api/stream}, its C{websockets} the
    L{DashboardFactory} of C{/ws}.

    @param pingInterval: seconds between WebSocket pings; a client that
        does not answer one within as long is dropped.
    @param idleTimeout: seconds an HTTP connection may stay silent before
        its request is complete (a handshake that never finishes).
    @param origins: the L{resmon.origins.OriginPolicy} of WebSocket
        handshakes and of every request's C{Host} (default: the dashboard's
        own origin, addresses and C{localhost} only).
    """
    streams = EventStreamResource(fanout, clock, stallTimeout, keepAlive)
    top = static.File(root or webRoot())
    websockets = DashboardFactory(fanout, clock, stallTimeout, pingInterval=pingInterval,
                                  origins=origins)
    top.putChild(b"ws", WebSocketResource(websockets))
    top.putChild(b"api", apiResource(fanout, streams))
    site = HostCheckedSite(top, websockets.origins, clock, timeout=idleTimeout)
    site.displayTracebacks = False
    site.eventStreams = streams
    site.websockets = websockets
    return site


class WebService(service.MultiService):
    """
    Subscribes once to C{#.analysis} and C{#.status} (a private queue per web
    process, never one per browser) and serves the dashboard on C{listen}
    (a Twisted server endpoint description such as C{tcp:8080}).

    @param historyWindow: seconds of history kept per host (0: none).
    @param historyPoints: most history points kept per host.
    @param origins: the L{resmon.origins.OriginPolicy} of WebSocket
        handshakes (default: the dashboard's own origin only).
    @param maxClockSkew: seconds an analysis's C{ts} may be ahead of C{clock}.
    @param forgetAfter: seconds a host may stay silent before it is
        forgotten (see L{EventFanout.forgetSilent}).
    """

    name = "web"
    log = Logger()

    def __init__(self, bus, listen, clock, stallTimeout=DEFAULT_STALL_TIMEOUT,
                 historyWindow=DEFAULT_WINDOW, historyPoints=DEFAULT_MAX_POINTS,
                 pingInterval=DEFAULT_PING_INTERVAL, idleTimeout=DEFAULT_IDLE_TIMEOUT,
                 statsInterval=60.0, origins=None, maxClockSkew=wire.DEFAULT_MAX_CLOCK_SKEW,
                 forgetAfter=wire.DEFAULT_FORGET_AFTER):
        service.MultiService.__init__(self)
        self.bus = bus
        self.listen = listen
        self.history = FleetHistory(clock, historyWindow, historyPoints)
        self.fanout = EventFanout(history=self.history, clock=clock, maxClockSkew=maxClockSkew,
                                  forgetAfter=forgetAfter)
        self.site = buildSite(self.fanout, clock, stallTimeout, pingInterval=pingInterval,
                              idleTimeout=idleTimeout, origins=origins)
        self._subscription = None
        expiry = internet.TimerService(
            min(MAX_EXPIRE_INTERVAL, max(historyWindow, 1.0), wire.forgetSweepInterval(forgetAfter)),
            self.expire)
        expiry.clock = clock
        expiry.setServiceParent(self)
        stats = internet.TimerService(statsInterval, self.logStats)
        stats.clock = clock
        stats.setServiceParent(self)
        strports.service(listen, self.site).setServiceParent(self)

    def startService(self):
        self._subscription = self.bus.subscribe(
            ["#." + topics.ANALYSIS, "#." + topics.STATUS], self.fanout.eventReceived,
            prefetch=1000, rejected=self.fanout.rejected)
        service.MultiService.startService(self)
        self.log.info("dashboard listening on {listen}", listen=self.listen)

    def expire(self):
        """
        Drop history past its window, and forget the hosts silent for
        C{forgetAfter}.
        """
        self.history.expire()
        count = self.fanout.forgetSilent()
        if count:
            self.log.info("forgot {count} hosts not heard of for {after} s",
                          count=count, after=self.fanout.forgetAfter)

    def logStats(self):
        fanout = self.fanout
        self.log.info(
            "{clients} clients, {received} events received, {sent} sent, {duplicates} duplicates "
            "dropped, {rejected} rejected ({reasons}), {floods} WebSocket clients closed for flooding, "
            "{refused} WebSocket handshakes refused for their origin, {hostsRefused} requests "
            "refused for their Host, {backOnline} hosts back online on an analysis, "
            "{unknownMetrics} analyses with unknown metrics over the bound, {forgotten} hosts forgotten",
            clients=len(fanout.clients), rejected=sum(fanout.rejected.values()),
            floods=self.site.websockets.floodsClosed, refused=self.site.websockets.originsRefused,
            hostsRefused=self.site.hostsRefused,
            reasons=", ".join(f"{k}: {v}" for k, v in sorted(fanout.rejected.items())) or "none",
            backOnline=fanout.counters["back-online"],
            unknownMetrics=fanout.counters["unknown-metrics"], **fanout.counters)

    def stopService(self):
        # End event streams first, so `curl -N` sees the end of the response.
        self.site.eventStreams.closeAll()
        d = service.MultiService.stopService(self)
        if self._subscription is not None:
            self._subscription.cancel()
        return d
