"""
Whether a role is working, for the people and programs that run it: the
start log line (dashboard URL, broker, exchange), and the configuration
warnings.
"""

import ipaddress
import socket

from twisted.application import service
from twisted.logger import Logger


def dashboardURL(interface, port):
    """
    The URL of the dashboard listening on C{interface} (empty: all) and
    C{port}, as a person on this machine or another one would open it.
    """
    host = interface or socket.gethostname()
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{port}/"


def startLine(role, dashboard=None, interfaces=None, broker=None, brokerSource=None,
              exchange=None):
    """
    The start log line of a role: what runs, where its dashboard is, which
    broker (password masked) and exchange it uses.
    """
    parts = []
    if dashboard is not None:
        parts.append(f"dashboard at {dashboard}" + (" (all interfaces)" if not interfaces else ""))
    if broker is None:
        parts.append("in-process bus (no broker)")
    else:
        source = f" (from {brokerSource})" if brokerSource else ""
        parts.append(f"broker {broker}{source}, exchange {exchange}")
    return f"resmon {role} started: " + ", ".join(parts)


def listeningPort(top):
    """
    The TCP port number the first listening service under C{top} (an
    L{service.IServiceCollection}) listens on, or L{None}; with C{tcp:0},
    the one the system chose.
    """
    for child in top:
        waiting = getattr(child, "_waitingForPort", None)
        if waiting is not None and waiting.called:
            found = []
            waiting.addCallback(lambda port: found.append(port) or port)
            if found and found[0] is not None:
                return found[0].getHost().port
        if isinstance(child, service.MultiService):
            port = listeningPort(child)
            if port is not None:
                return port
    return None


class RoleReadiness(service.Service):
    """
    Says at start what the role runs and where, and logs the configuration's
    warnings. Added last to the role's services, so it starts once the
    others are (the web role is listening).

    @param role: the role's name.
    @param broker: the broker's URL with its password masked, or L{None}
        for the in-process bus; C{brokerSource}: where it came from.
    @param web: the web role's service, or L{None}; C{interface} and
        C{port}: where it listens.
    @param warnings: lines to log as warnings at start.
    """

    name = "readiness"
    log = Logger()

    def __init__(self, role, broker=None, brokerSource=None, exchange=None, web=None,
                 interface="", port=None, warnings=()):
        self.role = role
        self.broker = broker
        self.brokerSource = brokerSource
        self.exchange = exchange
        self.web = web
        self.interface = interface
        self.port = port
        self.warnings = list(warnings)

    def startLine(self):
        """
        The start log line (see L{startLine}).
        """
        dashboard = None
        if self.web is not None:
            port = (listeningPort(self.web) if not self.port else None) or self.port
            dashboard = dashboardURL(self.interface, port)
        return startLine(self.role, dashboard, self.interface, self.broker, self.brokerSource,
                         self.exchange)

    def startService(self):
        service.Service.startService(self)
        for warning in self.warnings:
            self.log.warn("{warning}", warning=warning)
        self.log.info("{message}", message=self.startLine())
