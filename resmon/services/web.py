"""
The web role: one bus subscription fanned out to every WebSocket client,
the dashboard's static files and the JSON API, on one twisted.web Site.
"""

import os

from autobahn.twisted.resource import WebSocketResource
from twisted.application import service, strports
from twisted.logger import Logger
from twisted.web import resource, server, static

from resmon import topics
from resmon.fanout import DEFAULT_STALL_TIMEOUT, EventFanout
from resmon.httpapi import apiResource
from resmon.websocket import DashboardFactory


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


def buildSite(fanout, clock, stallTimeout=DEFAULT_STALL_TIMEOUT, root=None):
    """
    The Site: static files at C{/}, the WebSocket at C{/ws}, the API at C{/api}.
    """
    top = static.File(root or webRoot())
    top.putChild(b"ws", WebSocketResource(DashboardFactory(fanout, clock, stallTimeout)))
    top.putChild(b"api", apiResource(fanout.latest))
    site = server.Site(top)
    site.displayTracebacks = False
    return site


class WebService(service.MultiService):
    """
    Subscribes once to C{#.analysis} and C{#.status} (a private queue per web
    process, never one per browser) and serves the dashboard on C{listen}
    (a Twisted server endpoint description such as C{tcp:8080}).
    """

    name = "web"
    log = Logger()

    def __init__(self, bus, listen, clock, stallTimeout=DEFAULT_STALL_TIMEOUT):
        service.MultiService.__init__(self)
        self.bus = bus
        self.listen = listen
        self.fanout = EventFanout()
        self.site = buildSite(self.fanout, clock, stallTimeout)
        self._subscription = None
        strports.service(listen, self.site).setServiceParent(self)

    def startService(self):
        self._subscription = self.bus.subscribe(
            ["#." + topics.ANALYSIS, "#." + topics.STATUS], self.fanout.eventReceived,
            prefetch=1000)
        service.MultiService.startService(self)
        self.log.info("dashboard listening on {listen}", listen=self.listen)

    def stopService(self):
        d = service.MultiService.stopService(self)
        if self._subscription is not None:
            self._subscription.cancel()
        return d
