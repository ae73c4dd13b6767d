"""
Real parts for integration tests: a RabbitMQ connection check, real
C{twistd resmon} processes, a real Autobahn WebSocket client, and a plain
txAMQP client that publishes like a third party would.
"""

import base64
import json
import os
import signal
import socket
import sys
import time
import uuid

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from txamqp.client import TwistedDelegate
from txamqp.connection import Body, Frame, Method
from txamqp.content import Content
from txamqp.protocol import AMQClient
from txamqp.spec import load as loadSpec

from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.amqp import SPEC_PATH
from resmon.deferreds import observe

DEFAULT_TEST_BROKER = "amqp://guest:guest@127.0.0.1:5672/"
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
LOG_DIR = os.environ.get("RESMON_TEST_LOGS", os.path.join(os.getcwd(), "artifacts", "logs"))


def brokerURL():
    return os.environ.get("RESMON_TEST_BROKER", DEFAULT_TEST_BROKER)


def brokerUnreachableReason(url):
    """
    L{None} if a TCP connection to the broker succeeds, else why not and how
    to start one.
    """
    broker = parseBrokerURL(url)
    try:
        socket.create_connection((broker.host, broker.port), timeout=3).close()
        return None
    except OSError as e:
        return (
            f"RabbitMQ is not reachable at {broker.host}:{broker.port} ({e}). "
            "The integration tests need a real broker: start one with "
            "'rabbitmq-server -detached' (install it with 'apt-get install -y rabbitmq-server'), "
            "or point RESMON_TEST_BROKER at one (amqp://user:pass@host:port/vhost)."
        )


def uniqueName(prefix):
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


def freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rawWebSocket(port, receiveBuffer=None, timeout=None):
    """
    A blocking socket that has completed the WebSocket handshake with the
    web role on C{port}, then is left to its caller: it never answers pings
    and reads only if told to. C{receiveBuffer} shrinks its receive buffer
    (so the server's send buffers fill at once).

    @raise ConnectionError: if the handshake is closed or refused.
    """
    sock = socket.socket()
    if receiveBuffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
    if timeout is not None:
        sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed during the WebSocket handshake")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(response.split(b"\r\n")[0].decode(errors="replace"))
    return sock


def withTimeout(d, seconds, what):
    """
    C{d}, failing with a message naming C{what} after C{seconds}.
    """
    def timedOut(failure):
        failure.trap(defer.TimeoutError, defer.CancelledError)
        raise AssertionError(f"timed out after {seconds} s waiting for {what}")
    return d.addTimeout(seconds, reactor).addErrback(timedOut)


@defer.inlineCallbacks
def subscriptionsReady(bus, timeout=5):
    """
    Wait until every subscription of an L{IBus} is consuming: they are
    declared asynchronously after connecting.
    """
    yield withTimeout(bus.whenConnected(), timeout, "the broker")
    yield withTimeout(defer.gatherResults([s.whenReady() for s in bus.subscriptions]),
                      timeout, "the subscriptions to be declared")


def catchesSIGTERM(pid):
    """
    Whether process C{pid} has a handler for SIGTERM (Linux: read from
    C{/proc}). twistd starts its services, and logs that they listen,
    before the reactor runs and installs its handler: a SIGTERM sent in
    between kills the process without a shutdown.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


class TwistdProcess(protocol.ProcessProtocol):
    """
    A real C{twistd -n resmon ...} child process. Its output goes to a log
    file under L{LOG_DIR} (kept as a CI artifact) and can be waited on.
    """

    def __init__(self, label, args, env=None):
        self.label = label
        self.args = list(args)
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        # A bytearray: appending to bytes copies all of it, which makes a
        # process that logs a line per host (20,000 hosts) quadratic to read.
        self.output = bytearray()
        self._waiters = []
        self.ended = defer.Deferred()
        self.exitCode = None
        self.exitSignal = None
        os.makedirs(LOG_DIR, exist_ok=True)
        self.logPath = os.path.join(LOG_DIR, f"{label}-{uuid.uuid4().hex[:6]}.log")
        self._log = open(self.logPath, "wb")

    def start(self):
        argv = [TWISTD, "-n", "--pidfile=", "resmon"] + self.args
        self._log.write(("$ " + " ".join(argv) + "\n").encode())
        reactor.spawnProcess(self, TWISTD, argv, env=self.env)
        return self

    def outReceived(self, data):
        self._received(data)

    def errReceived(self, data):
        self._received(data)

    def _received(self, data):
        self.output += data
        self._log.write(data)
        self._log.flush()
        for waiter in list(self._waiters):
            text, times, d = waiter
            if self.output.count(text) >= times:
                self._waiters.remove(waiter)
                d.callback(None)

    def waitForOutput(self, text, timeout=15):
        """
        Fire once C{text} (bytes) has appeared in the process's output.
        """
        return self.waitForOutputCount(text, 1, timeout)

    def waitForOutputCount(self, text, times, timeout=15):
        """
        Fire once C{text} (bytes) has appeared C{times} times in the process's output.
        """
        if self.output.count(text) >= times:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append((text, times, d))
        what = f"{text!r} in the output of {self.label}" + (f" {times} times" if times > 1 else "")
        return withTimeout(d, timeout, f"{what} ({self.logPath})")

    def processEnded(self, reason):
        self.exitCode = reason.value.exitCode
        self.exitSignal = reason.value.signal
        self._log.close()
        self.ended.callback(self.exitCode)

    def signal(self, name):
        if not self.ended_:
            self.transport.signalProcess(name)

    @property
    def ended_(self):
        return self.exitCode is not None or self.exitSignal is not None

    uncleanExitExpected = False
    _stoppedAt = None
    _hung = False

    def expectUncleanExit(self):
        """
        The test kills or crashes this process on purpose (or checks how it
        ended itself): the C{twistd} fixture will not fail the test for how
        it ends.

        @return: C{self}
        """
        self.uncleanExitExpected = True
        return self

    def cleanExit(self):
        """
        Whether the process shut down cleanly: twistd, stopped by SIGTERM,
        stops its services, logs "Server Shut Down." and then exits by
        re-raising SIGTERM so its parent sees the signal.
        """
        shutDown = b"Server Shut Down." in self.output
        return shutDown and (self.exitCode == 0 or self.exitSignal == signal.SIGTERM)

    @defer.inlineCallbacks
    def stop(self, timeout=10):
        """
        SIGTERM, then wait for the exit; SIGKILL if it does not come in time.

        @return: whether the shutdown was clean (see L{cleanExit}).
        """
        if self.ended_:
            return self.cleanExit()
        # A SIGTERM before twistd's reactor runs kills it without a shutdown.
        deadline = reactor.seconds() + timeout
        while not self.ended_ and not catchesSIGTERM(self.transport.pid) and reactor.seconds() < deadline:
            yield deferLater(reactor, 0.02, lambda: None)
        self._stoppedAt = len(self.output)
        self.signal("TERM")
        try:
            yield withTimeout(observe(self.ended), timeout, f"{self.label} to exit on SIGTERM")
        except AssertionError:
            self._hung = True
            self.signal("KILL")
            yield observe(self.ended)
            raise
        return self.cleanExit()

    @defer.inlineCallbacks
    def stopAndCheck(self, timeout=10):
        """
        Stop the process if it still runs (see L{stop}) and judge how it
        ended.

        @return: L{None} if it shut down cleanly on SIGTERM without logging a
            traceback on the way, or if L{expectUncleanExit} was called; else
            what went wrong, with the log's path and its last lines.
        """
        try:
            yield self.stop(timeout)
        except AssertionError:
            pass
        if self.uncleanExitExpected:
            return None
        if self._hung:
            return self._problem(f"hung: still running {timeout} s after SIGTERM, killed")
        if not self.cleanExit():
            return self._problem(f"ended without a clean shutdown ({self._howEnded()})")
        if self._stoppedAt is not None:
            shutdown = self.output[self._stoppedAt:]
            if b"Traceback (most recent call last)" in shutdown or b"Unhandled error" in shutdown:
                return self._problem("logged an error while shutting down")
        return None

    def _howEnded(self):
        if self.exitSignal is not None:
            return f"killed by signal {self.exitSignal}"
        return f"exit code {self.exitCode}"

    def _problem(self, what, lines=40):
        tail = b"\n".join(self.output.splitlines()[-lines:]).decode("utf-8", "replace")
        return f"twistd process {self.label!r} {what}; log: {self.logPath}\n--- last {lines} lines ---\n{tail}"


class RecordingClient(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.factory.received(json.loads(payload))

    def onClose(self, wasClean, code, reason):
        self.factory.closed.append((wasClean, code, reason))


class WebSocketRecorder(WebSocketClientFactory):
    """
    A real Autobahn WebSocket client that records every message and lets a
    test wait for one that satisfies a predicate.
    """

    protocol = RecordingClient

    def __init__(self, url):
        WebSocketClientFactory.__init__(self, url)
        self.messages = []
        self.opened = defer.Deferred()
        self.closed = []
        self._waiters = []

    def received(self, message):
        self.messages.append(message)
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(message):
                self._waiters.remove(waiter)
                d.callback(message)

    def waitFor(self, predicate, timeout, what):
        for message in self.messages:
            if predicate(message):
                return defer.succeed(message)
        d = defer.Deferred()
        self._waiters.append((predicate, d))
        return withTimeout(d, timeout, what)

    def events(self):
        """
        Every event received, snapshot contents included, in order.
        """
        for message in self.messages:
            if message.get("kind") in ("snapshot", "batch"):
                yield from message["events"]
            else:
                yield message


@defer.inlineCallbacks
def connectWebSocket(port, timeout=10, path="/ws"):
    factory = WebSocketRecorder(f"ws://127.0.0.1:{port}{path}")
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=timeout)
    proto = yield endpoint.connect(factory)
    yield withTimeout(factory.opened, timeout, "the WebSocket handshake")
    return factory, proto


class PlainAMQPClient:
    """
    A bare txAMQP client, independent of resmon's bus: publishes raw bodies
    and deletes test topology.
    """

    def __init__(self, url):
        self.broker = parseBrokerURL(url)
        self.client = None
        self.channel = None

    @defer.inlineCallbacks
    def connect(self):
        spec = loadSpec(SPEC_PATH)
        endpoint = TCP4ClientEndpoint(reactor, self.broker.host, self.broker.port, timeout=5)
        self.client = yield endpoint.connect(_PlainFactory(spec, self.broker.vhost))
        # As resmon's bus does: without it Nagle's algorithm holds a small
        # publish up to the peer's delayed acknowledgement (40 ms on Linux).
        self.client.transport.setTcpNoDelay(True)
        yield self.client.authenticate(self.broker.username, self.broker.password)
        self.channel = yield self.client.channel(1)
        yield self.channel.channel_open()
        return self

    def publish(self, exchange, routingKey, body):
        return self.channel.basic_publish(
            exchange=exchange, routing_key=routingKey, content=Content(body))

    @defer.inlineCallbacks
    def publishRaw(self, exchange, routingKey, body, header):
        """
        Publish C{body} with C{header} as its content-header payload, bytes
        written as they are (see L{amqpfields.contentHeader}), then make a
        round trip on the channel: fails if the broker refused the frames.
        """
        channel = self.channel
        method = self.client.spec.classes.byname["basic"].methods.byname["publish"]
        arguments = {"reserved-1": 0, "exchange": exchange, "routing-key": routingKey,
                     "mandatory": False, "immediate": False}
        self.client.outgoing.put(Frame(channel.id, Method(method, *[
            arguments.get(f.name, 0) for f in method.fields])))
        self.client.outgoing.put(Frame(channel.id, _RawHeader(header)))
        chunk = self.client.MAX_LENGTH - 8
        for start in range(0, len(body), chunk):
            self.client.outgoing.put(Frame(channel.id, Body(body[start:start + chunk])))
        yield channel.exchange_declare(exchange=exchange, type="topic", durable=True, passive=True)

    @defer.inlineCallbacks
    def drain(self, queue):
        """
        Take every message waiting in C{queue}: their bodies, in order.
        """
        bodies = []
        while True:
            reply = yield self.channel.basic_get(queue=queue, no_ack=True)
            if reply.method.name == "get-empty":
                return bodies
            bodies.append(reply.content.body)

    @defer.inlineCallbacks
    def declareExchange(self, exchange):
        yield self.channel.exchange_declare(exchange=exchange, type="topic", durable=True)

    @defer.inlineCallbacks
    def cleanUp(self, exchanges=(), queues=()):
        for queue in queues:
            yield self.channel.queue_delete(queue=queue)
        for exchange in exchanges:
            yield self.channel.exchange_delete(exchange=exchange)

    @defer.inlineCallbacks
    def close(self):
        if self.client is not None:
            yield self.client.close(within=2)


class _RawHeader:
    """
    A content-header frame payload given as bytes.
    """

    type = Frame.HEADER

    def __init__(self, payload):
        self.payload = payload

    def encode(self, encoder):
        encoder.encode_long(len(self.payload))
        encoder.write(self.payload)


class _PlainFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, spec, vhost):
        self.spec = spec
        self.vhost = vhost

    def buildProtocol(self, addr):
        return AMQClient(TwistedDelegate(), self.vhost, self.spec)


# Shared by the integration tests and the benchmarks (bench/ puts tests/ on its path).


@defer.inlineCallbacks
def waitUntil(condition, timeout, what, interval=0.1):
    """
    Poll C{condition()} (a value, or a Deferred of one) until it is true.

    @return: a Deferred of that true value.
    @raise AssertionError: naming C{what}, after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = yield condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        yield deferLater(reactor, interval, lambda: None)


@defer.inlineCallbacks
def startedWeb(twistd, label, *args, ready=b"dashboard listening"):
    """
    A C{twistd resmon} started by C{twistd} (the fixture, or anything that
    starts a L{TwistdProcess} from a label and arguments) with a dashboard
    on a free local port, once it logged C{ready}.

    @return: a Deferred of the process and its port.
    """
    port = freePort()
    web = twistd(label, f"--port={port}", "--interface=127.0.0.1", *args)
    yield web.waitForOutput(ready)
    return web, port


def startedWebRole(twistd, label, broker, amqp, *args):
    """
    L{startedWeb} with C{--role=web} on the test's broker and exchange (the
    C{amqp} fixture's), once it consumes analyses.
    """
    return startedWeb(twistd, label, "--role=web", f"--broker={broker}",
                      f"--exchange={amqp.names['exchange']}", *args, ready=b"consuming #.analysis")


def analysisBody(host, seq, padding=4000):
    """
    An analysis of C{host} as the analyzer publishes it, analysed now,
    about C{padding} bytes long.
    """
    return json.dumps({"v": 1, "kind": "analysis", "host": host, "seq": seq, "ts": time.time(),
                       "analyzed_at": time.time(), "level": "LOW",
                       "levels": {"cpu": "LOW", "memory": "LOW"}, "cpu_result": "LOW",
                       "analyses": {}, "metrics": {"cpu": {"percent": 10.0, "per_core": [10.0] * 8},
                                                   "pad": "p" * padding}}).encode()


@defer.inlineCallbacks
def publishAnalysesAt(amqp, exchange, rate, count, start, hosts=10):
    """
    Publish C{count} analyses (seq C{start} on) at C{rate} per second, round
    robin over C{hosts} hosts C{h0}, C{h1}...
    """
    batch = max(1, int(rate / 50))
    for first in range(start, start + count, batch):
        for seq in range(first, min(first + batch, start + count)):
            yield amqp.publish(exchange, f"h{seq % hosts}.analysis", analysisBody(f"h{seq % hosts}", seq))
        yield deferLater(reactor, batch / rate, lambda: None)


def timeAnalyses(recorder):
    """
    Make a L{WebSocketRecorder} note, in C{recorder.timed}, every analysis it
    receives with the time it came (C{received}).
    """
    recorder.timed = []
    received = recorder.received

    def timestamp(message):
        if message.get("kind") == "analysis":
            recorder.timed.append(dict(message, received=time.time()))
        received(message)
    recorder.received = timestamp


def analysisLatencies(recorder, seqs):
    """
    Sorted seconds from C{analyzed_at} to arrival of the analyses in C{seqs}
    (see L{timeAnalyses}).
    """
    return sorted(m["received"] - m["analyzed_at"] for m in recorder.timed if m["seq"] in seqs)


def readUntilClosed(sock, timeout):
    """
    Everything the server sends on the blocking C{sock} until it closes (a
    reset counts as closed).

    @raise socket.timeout: if nothing comes for C{timeout} seconds.
    """
    sock.settimeout(timeout)
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def splitFrames(data):
    """
    The WebSocket frames a server sent (unmasked) in C{data}.

    @return: the (opcode, payload) of every whole frame, and the bytes left.
    """
    frames = []
    while len(data) >= 2:
        length, start = data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        if len(data) < start + length:
            break
        frames.append((data[0] & 0x0F, data[start:start + length]))
        data = data[start + length:]
    return frames, data


class SSEReader(protocol.Protocol):
    """
    Reads a streaming text/event-stream body into (event, data) pairs.
    """

    def __init__(self):
        self.buffer = b""
        self.events = []
        self.comments = []
        self._waiters = []
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.buffer += data
        while b"\n\n" in self.buffer:
            frame, self.buffer = self.buffer.split(b"\n\n", 1)
            kind, data = None, []
            for line in frame.split(b"\n"):
                if line.startswith(b":"):
                    self.comments.append(line)
                elif line.startswith(b"event: "):
                    kind = line[len(b"event: "):].decode()
                elif line.startswith(b"data: "):
                    data.append(line[len(b"data: "):])
            if kind is not None:
                self.events.append((kind, json.loads(b"\n".join(data))))
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(self.events):
                self._waiters.remove(waiter)
                d.callback(None)

    def waitFor(self, predicate, timeout, what):
        if predicate(self.events):
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append((predicate, d))
        return withTimeout(d, timeout, what)

    def connectionLost(self, reason):
        self.done.callback(None)


@defer.inlineCallbacks
def openEventStream(port, query="", headers=None):
    """
    C{GET /api/stream<query>} of the web role on C{port}, answered 200: an
    L{SSEReader} reading it (its C{response} the answer).
    """
    from twisted.web.client import Agent
    response = yield Agent(reactor).request(
        b"GET", f"http://127.0.0.1:{port}/api/stream{query}".encode(), headers)
    assert response.code == 200, response.code
    reader = SSEReader()
    response.deliverBody(reader)
    reader.response = response
    return reader
