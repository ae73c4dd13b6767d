"""
The web role: one bus subscription fanned out to every WebSocket and
Server-Sent Events client, the dashboard's static files and the JSON API, on
one twisted.web Site.
"""

import ctypes
import ctypes.util
import os

from twisted.application import internet, service, strports
from twisted.internet import defer
from twisted.logger import Logger

from resmon import topics, wire
from resmon.auth.websocket import PrincipalWebSocketResource
from resmon.webserver.fanout import DEFAULT_STALL_TIMEOUT, EventFanout
from resmon.webserver.history import DEFAULT_MAX_POINTS, DEFAULT_WINDOW, FleetHistory
from resmon.webserver.events import mountEvents
from resmon.webserver.httpapi import apiResource
from resmon.webserver.notifications import NotificationCenter, isNotifyKey, notifyPatterns
from resmon.webserver.notifyapi import NotifyResource
from resmon.webserver.httplimits import (
    DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_CLIENTS_PER_ADDRESS, ConnectionLimits,
    LimitedSite, WebRootFile)
from resmon.webserver.sendbudget import DEFAULT_MAX_QUEUED, SendBudget
from resmon.webserver.sse import DEFAULT_KEEPALIVE, EventStreamResource
from resmon.webserver.websocket import DashboardFactory

# Seconds between two checks whether clients left (and their memory can go back).
TRIM_INTERVAL = 10.0

# Most seconds between two sweeps for hosts no longer seen.
MAX_EXPIRE_INTERVAL = 60.0


DEFAULT_PING_INTERVAL = 20.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MAX_HOSTS = 10_000

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


def _mallocTrim():
    """
    glibc's C{malloc_trim}, or L{None} elsewhere.
    """
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def buildSite(fanout, clock, stallTimeout=DEFAULT_STALL_TIMEOUT, root=None,
              keepAlive=DEFAULT_KEEPALIVE, pingInterval=DEFAULT_PING_INTERVAL,
              idleTimeout=DEFAULT_IDLE_TIMEOUT, origins=None, budget=None,
              headerTimeout=DEFAULT_HEADER_TIMEOUT):
    """
    The Site: static files at C{/}, the WebSocket at C{/ws}, the API and
    the event stream at C{/api}. Its C{eventStreams} is the
    L{EventStreamResource} of C{/api/stream}, its C{websockets} the
    L{DashboardFactory} of C{/ws}.

    @param pingInterval: seconds between WebSocket pings; a client that
        does not answer one within as long is dropped.
    @param idleTimeout: seconds an HTTP connection may stay silent before
        its request is complete (a handshake that never finishes).
    @param origins: the L{resmon.webserver.origins.OriginPolicy} of WebSocket
        handshakes and of every request's C{Host} (default: the dashboard's
        own origin, addresses and C{localhost} only).
    @param budget: the L{SendBudget} of bytes queued to all WebSocket and
        event stream clients (default: L{DEFAULT_MAX_QUEUED}); the Site's
        C{budget}.
    @param headerTimeout: seconds a client has to send each request.
    """
    budget = budget if budget is not None else SendBudget(DEFAULT_MAX_QUEUED, clock)
    streams = EventStreamResource(fanout, clock, stallTimeout, keepAlive, budget=budget)
    top = WebRootFile(root or webRoot())
    websockets = DashboardFactory(fanout, clock, stallTimeout, pingInterval=pingInterval,
                                  origins=origins, budget=budget)
    top.putChild(b"ws", PrincipalWebSocketResource(websockets))
    top.putChild(b"api", apiResource(fanout, streams, clock, budget))
    site = LimitedSite(top, websockets.origins, clock, headerTimeout=headerTimeout,
                       timeout=idleTimeout)
    site.budget = budget
    site.displayTracebacks = False
    site.eventStreams = streams
    site.websockets = websockets
    return site


class WebService(service.MultiService):
    """
    Subscribes once to C{#.analysis}, C{#.status}, C{*.event}, C{*.alert}, C{user.*.notify} and
    C{group.*.notify} (a private queue per web
    process, never one per browser) and serves the dashboard on C{listen}
    (a Twisted server endpoint description such as C{tcp:8080}, or a list
    of them, all serving one Site).

    @param historyWindow: seconds of history kept per host (0: none).
    @param historyPoints: most history points kept per host.
    @param origins: the L{resmon.webserver.origins.OriginPolicy} of WebSocket
        handshakes (default: the dashboard's own origin only).
    @param maxClockSkew: seconds an analysis's C{ts} may be ahead of C{clock}.
    @param maxClients: connections served at once (HTTP, event streams and
        WebSockets); C{maxClientsPerAddress}: from one address.
    @param maxQueued: bytes queued to all clients that stopped reading.
    @param headerTimeout: seconds a client has to send each request.
    @param maxHosts: hosts the web role keeps; events of new ones beyond are
        rejected (C{max-hosts}).
    @param forgetAfter: seconds a host may stay silent before it is
        forgotten (see L{EventFanout.forgetSilent}).
    @param maxBody: the largest body of a message from the bus (the payload of an
        event), and of C{POST /api/events/<source>}.
    @param directory: every user's L{resmon.auth.principal.Principal} (its
        C{principals()}), from C{--users}, for notifications; or L{None}.
    """

    name = "web"
    log = Logger()

    def __init__(self, bus, listen, clock, stallTimeout=DEFAULT_STALL_TIMEOUT,
                 historyWindow=DEFAULT_WINDOW, historyPoints=DEFAULT_MAX_POINTS,
                 pingInterval=DEFAULT_PING_INTERVAL, idleTimeout=DEFAULT_IDLE_TIMEOUT,
                 statsInterval=60.0, origins=None, maxClockSkew=wire.DEFAULT_MAX_CLOCK_SKEW,
                 maxClients=DEFAULT_MAX_CLIENTS,
                 maxClientsPerAddress=DEFAULT_MAX_CLIENTS_PER_ADDRESS,
                 maxQueued=DEFAULT_MAX_QUEUED, headerTimeout=DEFAULT_HEADER_TIMEOUT,
                 maxHosts=DEFAULT_MAX_HOSTS,
                 forgetAfter=wire.DEFAULT_FORGET_AFTER, maxBody=wire.DEFAULT_MAX_BODY,
                 directory=None):
        service.MultiService.__init__(self)
        self.bus = bus
        self.listen = [listen] if isinstance(listen, str) else list(listen)
        self.history = FleetHistory(clock, historyWindow, historyPoints)
        self.fanout = EventFanout(history=self.history, clock=clock, maxClockSkew=maxClockSkew,
                                  maxHosts=maxHosts,
                                  forgetAfter=forgetAfter, maxBody=maxBody)
        self.site = buildSite(self.fanout, clock, stallTimeout, pingInterval=pingInterval,
                              idleTimeout=idleTimeout, origins=origins,
                              budget=SendBudget(maxQueued, clock), headerTimeout=headerTimeout)
        self.connections = ConnectionLimits(self.site, clock, maxClients, maxClientsPerAddress)
        mountEvents(self.site, bus, clock, maxBody, self.fanout)
        self.notifications = NotificationCenter(self.fanout, clock, directory,
                                                maxClockSkew=maxClockSkew)
        self.fanout.alertListener = self.notifications.alertReceived
        self.site.websockets.notifications = self.notifications
        self.site.eventStreams.notifications = self.notifications
        self.mountAPI("notify", NotifyResource(bus, clock))
        self._subscription = None
        expiry = internet.TimerService(
            min(MAX_EXPIRE_INTERVAL, max(historyWindow, 1.0), wire.forgetSweepInterval(forgetAfter)),
            self.expire)
        expiry.clock = clock
        expiry.setServiceParent(self)
        # The buffers of many clients that left are freed among long-lived
        # objects: glibc keeps those pages unless asked to give them back.
        self._mallocTrim = _mallocTrim()
        self._connectionsSeen = 0
        trim = internet.TimerService(TRIM_INTERVAL, self.releaseMemoryOfClientsGone)
        trim.clock = clock
        trim.setServiceParent(self)
        stats = internet.TimerService(statsInterval, self.logStats)
        stats.clock = clock
        stats.setServiceParent(self)
        for description in self.listen:
            strports.service(description, self.connections).setServiceParent(self)

    def mountAPI(self, name, resource):
        """
        Serve C{resource} at C{/api/<name>} (the webhook registry's API).
        """
        self.site.resource.children[b"api"].putChild(name.encode("ascii"), resource)

    def startService(self):
        self._subscription = self.bus.subscribe(
            ["#." + topics.ANALYSIS, "#." + topics.STATUS, "*." + topics.EVENT,
             "*." + topics.ALERT] + notifyPatterns(), self._received,
            prefetch=1000, rejected=self.fanout.rejected)
        service.MultiService.startService(self)
        self.log.info("dashboard listening on {listen}", listen=", ".join(self.listen))

    def _received(self, routingKey, body):
        if isNotifyKey(routingKey):
            return self.notifications.received(routingKey, body)
        return self.fanout.eventReceived(routingKey, body)

    def releaseMemoryOfClientsGone(self):
        """
        Give freed memory back to the system once connections have closed.
        """
        connections = self.connections.connections
        if connections < self._connectionsSeen and self._mallocTrim is not None:
            self._mallocTrim(0)
        self._connectionsSeen = connections

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
        budget, connections = self.site.budget, self.connections
        refused = connections.refused + self.site.refused
        self.log.info(
            "{connections} connections, {hosts} hosts; {queued} bytes queued to clients (peak {peak}, "
            "budget {limit}); {waited} snapshot pieces waited for room, {dropped} clients dropped at "
            "the budget, {stalled} for not reading; refused: {refusedReasons}",
            connections=connections.connections, hosts=len(fanout.hostIndex), queued=budget.queued,
            peak=budget.peak, limit=budget.limit, refusedReasons=", ".join(
                f"{k}: {v}" for k, v in sorted(refused.items())) or "none", **budget.counters)

    def stopService(self):
        # End event streams first, so `curl -N` sees the end of the response.
        self.site.eventStreams.closeAll()
        stopped = [service.MultiService.stopService(self)]
        if self._subscription is not None:
            stopped.append(defer.maybeDeferred(self._subscription.cancel))
        return defer.gatherResults(stopped, consumeErrors=True).addCallback(lambda _: None)
