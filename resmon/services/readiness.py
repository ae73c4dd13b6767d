"""
Whether a role is working, for the people and programs that run it: the
start log line (dashboard URL, broker, exchange), the configuration
warnings, and systemd's notifications (C{READY=1} once the bus is connected
and every subscription consumes, C{STATUS=} on each change, C{STOPPING=1},
C{WATCHDOG=1}).
"""

import ipaddress
import socket

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from resmon.operations.sdnotify import NullNotifier
from resmon.periodic import Periodic

# Seconds between two looks at the bus's state (for STATUS= and /readyz's
# log lines; /readyz itself looks at every request).
CHECK_INTERVAL = 1.0


def dashboardURL(interface, port, scheme="http"):
    """
    The URL of the dashboard listening on C{interface} (empty: all) and
    C{port}, as a person on this machine or another one would open it
    (C{scheme} C{https} for a TLS endpoint).
    """
    host = interface or socket.gethostname()
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"{scheme}://{host}:{port}/"


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
                return getattr(found[0].getHost(), "port", None)
        if isinstance(child, service.MultiService):
            port = listeningPort(child)
            if port is not None:
                return port
    return None


class RoleReadiness(service.Service):
    """
    Whether the role works: its bus is connected and every subscription
    of it consumes (an agent's bus with none is ready once connected,
    since it then publishes), and the web role listens. Says at start what
    the role runs and where, logs the configuration's warnings, and tells
    systemd (C{READY=1} once, C{STATUS=} on every change, C{STOPPING=1})
    and feeds its watchdog. Added last to the role's services, so it
    starts once the others are and stops first.

    @param bus: the role's L{resmon.interfaces.IBus}.
    @param clock: an L{IReactorTime}.
    @param role: the role's name.
    @param broker: the broker's URL with its password masked, or L{None}
        for the in-process bus; C{brokerSource}: where it came from.
    @param web: the web role's service, or L{None}; C{interface} and
        C{port}: where it listens.
    @param warnings: lines to log as warnings at start; C{notices}: as
        information.
    @param scheme: C{http}, or C{https} for a dashboard on a TLS endpoint.
    @param notifier: a L{resmon.operations.sdnotify.SystemdNotifier}.
    @param watchdogInterval: seconds between two C{WATCHDOG=1}, or L{None}.
    """

    name = "readiness"
    log = Logger()

    def __init__(self, bus, clock, role, broker=None, brokerSource=None, exchange=None, web=None,
                 interface="", port=None, warnings=(), notifier=None, watchdogInterval=None,
                 checkInterval=CHECK_INTERVAL, notices=(), scheme="http"):
        self.bus = bus
        self.clock = clock
        self.role = role
        self.broker = broker
        self.brokerSource = brokerSource
        self.exchange = exchange
        self.web = web
        self.interface = interface
        self.port = port
        self.warnings = list(warnings)
        self.notices = list(notices)
        self.scheme = scheme
        self.notifier = notifier if notifier is not None else NullNotifier()
        self.watchdogInterval = watchdogInterval
        self.checkInterval = checkInterval
        # Whether READY=1 was sent, and the state STATUS= last said.
        self.readySent = False
        self._working = False
        self._connections = None
        self._waiting = {}
        self._loops = []
        self._firstWait = None

    def startLine(self):
        """
        The start log line (see L{startLine}).
        """
        dashboard = None
        if self.web is not None:
            dashboard = self._dashboard()
        return startLine(self.role, dashboard, self.interface, self.broker, self.brokerSource,
                         self.exchange)

    def _dashboard(self):
        port = (listeningPort(self.web) if not self.port else None) or self.port
        return dashboardURL(self.interface, port, self.scheme)

    def startService(self):
        service.Service.startService(self)
        for warning in self.warnings:
            self.log.warn("{warning}", warning=warning)
        for notice in self.notices:
            self.log.info("{notice}", notice=notice)
        self.log.info("{message}", message=self.startLine())
        where = f"broker {self.broker}" if self.broker else "the in-process bus"
        self.notifier.notify(STATUS=f"starting: connecting to {where}")
        if self.watchdogInterval:
            self._loop(lambda: self.notifier.notify(WATCHDOG=1), self.watchdogInterval)
        self._loop(self.check, self.checkInterval, now=False)
        self._firstWait = self.bus.whenConnected()
        self._firstWait.addCallback(lambda _: defer.gatherResults(
            [s.whenReady() for s in self.bus.subscriptions], consumeErrors=True))
        self._firstWait.addCallbacks(lambda _: self.check(), _ignoreCancel)

    def _loop(self, f, interval, now=True):
        loop = Periodic(f, interval, self.clock, self.log, "a readiness loop stopped", now=now)
        loop.start()
        self._loops.append(loop)

    def stopService(self):
        service.Service.stopService(self)
        for loop in self._loops:
            loop.stop()
        self._loops = []
        if self._firstWait is not None:
            self._firstWait.cancel()
        self.notifier.notify(STOPPING=1, STATUS="stopping")

    def isReady(self):
        """
        Whether the role works now: the bus is connected, every subscription
        consumes and the web role (if any) listens.
        """
        return self.notReadyReason() is None

    def notReadyReason(self):
        """
        Why the role does not work now, or L{None} if it does.
        """
        if not self.running:
            return "stopping" if self.readySent else "starting"
        if not self.bus.connected:
            return "broker connection lost, reconnecting" if self.readySent \
                else "connecting to the broker"
        if not self._subscriptionsReady():
            return "waiting for the subscriptions to consume"
        if self.web is not None and listeningPort(self.web) is None:
            return "the dashboard is not listening"
        return None

    def _subscriptionsReady(self):
        ready = True
        for subscription in self.bus.subscriptions:
            if subscription in self._waiting:
                ready = False
                continue
            d = subscription.whenReady()
            if d.called:
                d.addErrback(_ignoreCancel)
                continue
            # One waiter per subscription at most, however long it takes.
            ready = False
            self._waiting[subscription] = d
            d.addBoth(self._subscriptionSettled, subscription)
        return ready

    def _subscriptionSettled(self, result, subscription):
        self._waiting.pop(subscription, None)
        if self.running:
            self.check()
        if isinstance(result, Failure):
            return _ignoreCancel(result)

    def check(self):
        """
        Look at the role's state and say what changed: READY=1 the first
        time it works, STATUS= whenever it stops or starts working again.
        """
        if not self.running:
            return
        working = self.isReady()
        connections = self.bus.counters.get("connections")
        reconnected = working and self._working and connections != self._connections
        self._connections = connections
        if working == self._working and not reconnected:
            return
        self._working = working
        if working and not self.readySent:
            self.readySent = True
            status = self._workingStatus("ready")
            self.log.info("{status}", status=status)
            self.notifier.notify(READY=1, STATUS=status)
        elif working:
            status = self._workingStatus("broker reconnected")
            self.log.info("{status}", status=status)
            self.notifier.notify(STATUS=status)
        else:
            status = f"not ready: {self.notReadyReason()}"
            self.log.info("{status}", status=status)
            self.notifier.notify(STATUS=status)

    def _workingStatus(self, what):
        parts = [what]
        if self.broker:
            count = self.bus.counters.get("connections")
            parts.append(f"on {self.broker} (connection #{count})")
        else:
            parts.append("in-process bus")
        subscriptions = len(self.bus.subscriptions)
        if subscriptions:
            parts.append(f"{subscriptions} subscription(s) consuming")
        else:
            parts.append("publishing")
        if self.web is not None:
            parts.append(f"dashboard at {self._dashboard()}")
        return ": ".join(parts[:2]) + ", " + ", ".join(parts[2:])


def _ignoreCancel(failure):
    """
    Swallow the cancellation of a wait by a stopping bus or subscription.
    """
    if failure.check(defer.FirstError):
        failure = failure.value.subFailure
    failure.trap(defer.CancelledError)
