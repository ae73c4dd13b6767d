"""
Whether a role works, as systemd and load balancers see it, with real
C{twistd resmon} processes: C{NOTIFY_SOCKET} points at a datagram socket of
the test, as systemd's would for C{Type=notify}; C{/healthz} and C{/readyz}
over real HTTP; a private RabbitMQ node is stopped and started under them.
"""

import json
import os
import shutil
import tempfile

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.web.client import Agent, readBody

from support import freePort, withTimeout


class NotifyRecorder(DatagramProtocol):
    """
    Records the notifications (one datagram of C{NAME=value} lines each)
    sent to C{path}, as systemd's notify socket does.
    """

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix="resmon-notify-")
        self.path = os.path.join(self.directory, "notify")
        self.received = []
        self._waiters = []
        self.port = reactor.listenUNIXDatagram(self.path, self)

    def datagramReceived(self, data, address):
        self.received.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        for waiter in list(self._waiters):
            predicate, count, d = waiter
            if self.count(predicate) >= count:
                self._waiters.remove(waiter)
                d.callback(None)

    def count(self, predicate):
        return sum(1 for message in self.received if predicate(message))

    def waitFor(self, predicate, what, count=1, timeout=30):
        if self.count(predicate) >= count:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append((predicate, count, d))
        return withTimeout(d, timeout, f"{what} on the notify socket (got {self.received})")

    def close(self):
        d = self.port.stopListening()
        shutil.rmtree(self.directory, ignore_errors=True)
        return d


@pytest_twisted.async_yield_fixture
async def notifySocket():
    recorder = NotifyRecorder()
    yield recorder
    await defer.maybeDeferred(recorder.close)


def ready(message):
    return message.get("READY") == "1"


def status(text):
    return lambda message: text in message.get("STATUS", "")


@pytest_twisted.inlineCallbacks
def test_ready_only_once_the_broker_is_reachable_then_status_on_each_change(
        privateBroker, twistd, notifySocket):
    notify = notifySocket
    port = freePort()
    yield privateBroker.ctl("stop_app")
    try:
        server = twistd("server", "--role=server", f"--broker={privateBroker.url}",
                        f"--port={port}", "--interface=127.0.0.1",
                        env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "300000"})
        yield server.waitForOutput(b" started: ")
        # Connections refused, retried; the watchdog is fed meanwhile (every 0.15 s).
        yield server.waitForOutputCount(b"Scheduling retry", 3)
        yield notify.waitFor(lambda m: m.get("WATCHDOG") == "1", "WATCHDOG=1", count=5)
        yield notify.waitFor(status("starting: connecting to broker amqp://guest:***@"),
                             "the starting status")
        assert notify.count(ready) == 0
        assert b"ready: " not in server.output
    finally:
        yield privateBroker.ctl("start_app")
    yield notify.waitFor(ready, "READY=1")
    message = [m for m in notify.received if ready(m)][0]
    # analyzer, liveness (measures and ticks), rules, web
    assert "5 subscription(s) consuming" in message["STATUS"], message
    assert f"dashboard at http://127.0.0.1:{port}/" in message["STATUS"]
    # Sent once the bus connected and every subscription consumes. The log
    # line comes through the process's pipe, which may be behind the datagram.
    yield server.waitForOutput(b"] ready: on amqp://")
    output = server.output.decode()
    assert output.index("connected to amqp://guest@") < output.index("] ready: on amqp://")
    assert output.count("consuming ") >= 4

    yield privateBroker.ctl("stop_app")
    try:
        yield notify.waitFor(status("not ready: broker connection lost"), "the lost status")
    finally:
        yield privateBroker.ctl("start_app")
    yield notify.waitFor(status("broker reconnected: on amqp://guest:***@"),
                         "the reconnected status")
    assert notify.count(ready) == 1

    assert (yield server.stop())
    assert notify.received[-1] == {"STOPPING": "1", "STATUS": "stopping"}
    assert notify.count(ready) == 1


@pytest_twisted.inlineCallbacks
def test_an_agent_is_ready_once_connected_and_without_watchdog_sends_none(
        broker, amqp, twistd, notifySocket):
    notify = notifySocket
    agent = twistd("agent", "--role=agent", f"--broker={broker}",
                   f"--exchange={amqp.names['exchange']}", "--name=notified",
                   env={"NOTIFY_SOCKET": notify.path})
    yield notify.waitFor(ready, "READY=1")
    message = [m for m in notify.received if ready(m)][0]
    assert "publishing" in message["STATUS"]
    yield agent.waitForOutput(b"sampling notified")
    assert (yield agent.stop())
    assert notify.count(lambda m: "WATCHDOG" in m) == 0
    assert notify.received[-1] == {"STOPPING": "1", "STATUS": "stopping"}


@defer.inlineCallbacks
def _get(port, path):
    response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
    body = yield readBody(response)
    return response.code, json.loads(body)


@defer.inlineCallbacks
def _pollUntil(port, path, code, timeout=30):
    """
    GET C{path} until it answers C{code}; fail after C{timeout} seconds.
    """
    deadline = reactor.seconds() + timeout
    while True:
        answer = yield _get(port, path)
        if answer[0] == code:
            return answer
        assert reactor.seconds() < deadline, f"{path} still answers {answer}, not {code}"
        yield deferLater(reactor, 0.1, lambda: None)


@pytest_twisted.inlineCallbacks
def test_healthz_and_readyz_follow_the_broker(privateBroker, twistd):
    port = freePort()
    server = twistd("server", "--role=server", f"--broker={privateBroker.url}",
                    f"--port={port}", "--interface=127.0.0.1")
    yield server.waitForOutput(b"] ready: ")
    assert (yield _get(port, "/healthz")) == (200, {"alive": True})
    assert (yield _get(port, "/readyz")) == (200, {"ready": True})

    yield privateBroker.ctl("stop_app")
    try:
        code, document = yield _pollUntil(port, "/readyz", 503)
        assert document == {"ready": False, "reason": "broker connection lost, reconnecting"}
        # Alive all the same, and the dashboard is still served.
        assert (yield _get(port, "/healthz")) == (200, {"alive": True})
    finally:
        yield privateBroker.ctl("start_app")
    yield _pollUntil(port, "/readyz", 200)
    yield server.waitForOutput(b"broker reconnected: ")


@pytest_twisted.inlineCallbacks
def test_readyz_is_503_until_the_broker_first_answers(twistd):
    # A closed port: nothing ever answers there.
    port, closed = freePort(), freePort()
    web = twistd("web", "--role=web", f"--broker=amqp://guest:guest@127.0.0.1:{closed}/",
                 f"--port={port}", "--interface=127.0.0.1")
    yield web.waitForOutput(b" started: ")
    yield web.waitForOutputCount(b"Scheduling retry", 2)
    assert (yield _get(port, "/readyz")) == (503, {"ready": False,
                                                   "reason": "connecting to the broker"})
    assert (yield _get(port, "/healthz")) == (200, {"alive": True})
