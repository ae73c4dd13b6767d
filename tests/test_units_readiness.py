"""
Tests for L{resmon.services.readiness}: the start line, and (with fakes)
when a role says it is ready.
"""

import json
import os
import socket

from twisted.internet import defer
from twisted.internet.task import Clock

from fakebus import FakeBus, FakeSubscription
from resmon.operations.sdnotify import NullNotifier, SystemdNotifier, watchdogInterval
from resmon.services.readiness import RoleReadiness, dashboardURL, startLine


def test_dashboard_url():
    assert dashboardURL("127.0.0.1", 8080) == "http://127.0.0.1:8080/"
    assert dashboardURL("::1", 80) == "http://[::1]:80/"
    assert dashboardURL("", 8080).startswith("http://") and dashboardURL("", 8080).endswith(":8080/")


def test_start_line():
    assert startLine("agent", broker="amqp://u:***@h:5672/%2F", brokerSource="RESMON_BROKER",
                     exchange="resmon") == (
        "resmon agent started: broker amqp://u:***@h:5672/%2F (from RESMON_BROKER), exchange resmon")
    assert startLine("standalone", "http://vm:8080/", "") == (
        "resmon standalone started: dashboard at http://vm:8080/ (all interfaces), "
        "in-process bus (no broker)")


class RecordingNotifier:
    def __init__(self):
        self.sent = []

    def notify(self, **assignments):
        self.sent.append(assignments)
        return True


class SlowSubscription(FakeSubscription):
    """
    Consumes once L{consume} is called; L{stop} makes it wait again.
    """

    consuming = False

    def __init__(self, *args):
        FakeSubscription.__init__(self, *args)
        self.waiters = []

    def whenReady(self):
        if self.consuming:
            return defer.succeed(None)
        d = defer.Deferred()
        self.waiters.append(d)
        return d

    def consume(self):
        self.consuming = True
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.callback(None)


class ReconnectingBus(FakeBus):
    """
    Disconnected until L{connect}.
    """

    connected = False

    def __init__(self):
        FakeBus.__init__(self)
        self.counters["connections"] = 0
        self.connectWaiters = []

    def whenConnected(self):
        if self.connected:
            return defer.succeed(None)
        d = defer.Deferred()
        self.connectWaiters.append(d)
        return d

    def connect(self):
        self.connected = True
        self.counters["connections"] += 1
        waiters, self.connectWaiters = self.connectWaiters, []
        for d in waiters:
            d.callback(None)

    def subscribe(self, patterns, handler, queue=None, durable=False, prefetch=100,
                  partitions=None, deadLetter=None, singleActive=False, rejected=None,
                  publisher=False):
        subscription = SlowSubscription(self, patterns, handler, {})
        self.made.append(subscription)
        return subscription


def _readiness(bus, **kwargs):
    clock, notifier = Clock(), RecordingNotifier()
    readiness = RoleReadiness(bus, clock, "server", broker="amqp://u:***@h:5672/%2F",
                              exchange="resmon", notifier=notifier, **kwargs)
    return readiness, clock, notifier


def test_ready_once_connected_and_every_subscription_consumes():
    bus = ReconnectingBus()
    subscriptions = [bus.subscribe(["#.a"], None), bus.subscribe(["#.b"], None)]
    readiness, clock, notifier = _readiness(bus)
    readiness.startService()
    assert notifier.sent == [{"STATUS": "starting: connecting to broker amqp://u:***@h:5672/%2F"}]
    clock.advance(5)
    bus.connect()
    clock.advance(5)
    subscriptions[0].consume()
    clock.advance(5)
    assert not readiness.isReady()
    assert [m for m in notifier.sent if "READY" in m] == []
    subscriptions[1].consume()
    assert readiness.isReady()
    assert notifier.sent[-1] == {
        "READY": 1, "STATUS": "ready: on amqp://u:***@h:5672/%2F (connection #1), "
                              "2 subscription(s) consuming"}
    # Lost, then back.
    bus.connected = False
    for s in subscriptions:
        s.consuming = False
    clock.advance(1)
    assert not readiness.isReady()
    assert notifier.sent[-1] == {"STATUS": "not ready: broker connection lost, reconnecting"}
    clock.advance(10)
    bus.connect()
    clock.advance(1)
    assert notifier.sent[-1]["STATUS"].startswith("not ready: broker connection lost")
    for s in subscriptions:
        s.consume()
    assert notifier.sent[-1] == {
        "STATUS": "broker reconnected: on amqp://u:***@h:5672/%2F (connection #2), "
                  "2 subscription(s) consuming"}
    # Lost and back between two looks: still said.
    bus.counters["connections"] += 1
    clock.advance(1)
    assert "(connection #3)" in notifier.sent[-1]["STATUS"]
    assert len([m for m in notifier.sent if "READY" in m]) == 1
    # At most one waiter per subscription, however long the wait.
    subscriptions[0].consuming = False
    clock.advance(30)
    assert len(subscriptions[0].waiters) == 1
    readiness.stopService()
    assert notifier.sent[-1] == {"STOPPING": 1, "STATUS": "stopping"}
    assert clock.getDelayedCalls() == []


def test_an_agent_is_ready_once_connected_and_feeds_the_watchdog():
    bus = ReconnectingBus()
    readiness, clock, notifier = _readiness(bus, watchdogInterval=2.5)
    readiness.startService()
    clock.pump([2.5, 2.5])
    assert notifier.sent.count({"WATCHDOG": 1}) == 3
    bus.connect()
    assert notifier.sent[-1]["READY"] == 1 and notifier.sent[-1]["STATUS"].endswith(", publishing")
    readiness.stopService()
    clock.advance(10)
    assert notifier.sent.count({"WATCHDOG": 1}) == 3
    assert clock.getDelayedCalls() == []


def test_a_stop_before_the_broker_answers_leaves_no_unhandled_error():
    bus = ReconnectingBus()
    bus.subscribe(["#.a"], None)
    readiness, clock, notifier = _readiness(bus)
    readiness.startService()
    readiness.stopService()
    bus.connect()
    assert [m for m in notifier.sent if "READY" in m] == []


def test_notifier_sends_datagrams_and_survives_a_missing_socket(tmp_path):
    path = str(tmp_path / "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    with receiver:
        notifier = SystemdNotifier.fromEnvironment({"NOTIFY_SOCKET": path})
        assert notifier.notify(READY=1, STATUS="two\nlines")
        assert receiver.recv(100) == b"READY=1\nSTATUS=two lines\n"
    os.unlink(path)
    assert notifier.notify(STATUS="nobody listens") is False
    assert isinstance(SystemdNotifier.fromEnvironment({}), NullNotifier)
    assert SystemdNotifier("@abstract").address == "\0abstract"


def test_watchdog_interval():
    assert watchdogInterval({}) is None
    assert watchdogInterval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdogInterval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "7"}, pid=7) == 5.0
    assert watchdogInterval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdogInterval({"WATCHDOG_USEC": "soon"}) is None


def test_readyz_answers_from_the_readiness_and_healthz_always():
    from twisted.web.resource import Resource
    from twisted.web.test.requesthelper import DummyRequest

    from resmon.webserver.health import addHealthResources

    bus = ReconnectingBus()
    readiness, clock, notifier = _readiness(bus)
    root = Resource()
    addHealthResources(root, readiness)

    def get(name):
        request = DummyRequest([b""])
        body = root.children[name].render(request)
        return request.responseCode or 200, json.loads(body), request.responseHeaders

    assert get(b"readyz")[:2] == (503, {"ready": False, "reason": "starting"})
    readiness.startService()
    assert get(b"readyz")[:2] == (503, {"ready": False, "reason": "connecting to the broker"})
    bus.connect()
    code, document, headers = get(b"readyz")
    assert (code, document) == (200, {"ready": True})
    assert headers.getRawHeaders(b"cache-control") == [b"no-store"]
    bus.connected = False
    assert get(b"readyz")[:2] == (503, {"ready": False,
                                        "reason": "broker connection lost, reconnecting"})
    readiness.stopService()
    assert get(b"readyz")[:2] == (503, {"ready": False, "reason": "stopping"})
    assert get(b"healthz")[:2] == (200, {"alive": True})
