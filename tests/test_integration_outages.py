"""
Failures end to end, with real twistd processes: a dead agent (host status
over WebSocket), a broker outage (stop_app, then every connection closed) on a
private RabbitMQ node started for these tests, the analyzer killed under load,
and a dead link behind a TCP proxy that swallows every byte.
"""

import re
import signal as signalModule
import time
import uuid
from collections import Counter

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from resmon import wire
from support import PlainAMQPClient, connectWebSocket, freePort, uniqueName

OUTAGE_SECONDS = 15


@defer.inlineCallbacks
def declareRecorder(url, exchange, pattern):
    """
    A plain client with a durable queue bound to C{pattern} that records
    what the pipeline publishes, across outages, for L{drain}.
    """
    client = yield PlainAMQPClient(url).connect()
    queue = uniqueName("resmon.test.recorder")
    yield client.declareExchange(exchange)
    yield client.channel.queue_declare(queue=queue, durable=True)
    yield client.channel.queue_bind(queue=queue, exchange=exchange, routing_key=pattern)
    yield client.close()
    return queue


@defer.inlineCallbacks
def drain(url, queue, delete=False):
    """
    Every message waiting in C{queue}, decoded, in order.
    """
    client = yield PlainAMQPClient(url).connect()
    try:
        documents = [wire.loadJSON(body, 2 ** 20) for body in (yield client.drain(queue))]
        if delete:
            yield client.channel.queue_delete(queue=queue)
    finally:
        yield client.close()
    return documents


def seqsOf(documents, host):
    return [d["seq"] for d in documents if d.get("host") == host and d.get("kind") == "analysis"]


def assertEveryOnce(seqs, first, last, what):
    counts = Counter(seqs)
    missing = [s for s in range(first, last + 1) if s not in counts]
    twice = sorted(s for s, n in counts.items() if n > 1 and first <= s <= last)
    assert not missing and not twice, f"{what}: missing {missing[:50]}, twice {twice[:50]}"


def serverArgs(url, exchange, queue, port, *extra):
    return ["--role=server", f"--broker={url}", f"--exchange={exchange}", f"--queue={queue}",
            "--dead-letter-queue=", f"--port={port}", "--interface=127.0.0.1", *extra]


def agentArgs(url, exchange, host, *extra):
    return ["--role=agent", f"--broker={url}", f"--exchange={exchange}", f"--name={host}",
            "--interval=0.2", *extra]


# Dead agents


@pytest_twisted.inlineCallbacks
def test_a_stopped_agent_turns_stale_then_offline_and_online_when_it_returns(broker, amqp, twistd):
    exchange, queue = amqp.names["exchange"], amqp.names["queue"]
    port = freePort()
    server = twistd("server", *serverArgs(broker, exchange, queue, port,
                                          "--offline-after=3", "--liveness-grace=1"))
    yield server.waitForOutput(b"(connection #1)")
    yield server.waitForOutput(b"judging host liveness")
    client, _ = yield connectWebSocket(port)
    host = f"dying-{uuid.uuid4().hex[:6]}.example.com"

    def status(expected, after=0):
        def predicate(message):
            statuses = [m for m in client.messages if m.get("kind") == "status" and m["host"] == host]
            return len(statuses) > after and statuses[after]["status"] == expected
        return predicate

    agent = twistd("agent", *agentArgs(broker, exchange, host))
    yield client.waitFor(status("online"), 20, f"{host} online")
    yield client.waitFor(lambda m: m.get("host") == host and m.get("kind") == "analysis",
                         10, "an analysis")
    assert (yield agent.stop(timeout=5)), agent.logPath
    stoppedAt = time.time()
    stale = yield client.waitFor(status("stale", 1), 5, f"{host} stale")
    # Three intervals of 0.2 s, plus the half-second check period and slack.
    assert time.time() - stoppedAt < 2.5
    offline = yield client.waitFor(status("offline", 2), 8, f"{host} offline")
    assert offline["since"] - offline["last_seen"] >= 3
    assert offline["last_seen"] == stale["last_seen"] and offline["seq"] == stale["seq"]

    twistd("agent-again", *agentArgs(broker, exchange, host))
    online = yield client.waitFor(status("online", 3), 20, f"{host} online again")
    assert online["seq"] == 0 and online["v"] == 1
    statuses = [m["status"] for m in client.messages if m.get("kind") == "status" and m["host"] == host]
    assert statuses == ["online", "stale", "offline", "online"]

    # A page opened now gets the latest status of every host in its snapshot.
    late, _ = yield connectWebSocket(port)
    snapshot = yield late.waitFor(lambda m: m.get("kind") == "snapshot", 5, "the snapshot")
    assert [s["status"] for s in snapshot["statuses"] if s["host"] == host] == ["online"]
    assert b"Traceback" not in server.output


@pytest_twisted.inlineCallbacks
def test_an_analyzer_that_lost_the_liveness_queue_stands_by_and_never_declares_live_hosts_offline(
        broker, amqp, twistd):
    """
    Two analyzers; the judging one freezes (SIGSTOP) until the broker drops
    it and hands the liveness queue to the other, then thaws and reconnects
    as the one standing by. Its host table is old, but it must not declare
    the hosts that still send offline; the new judge carries on.
    """
    exchange, queue = amqp.names["exchange"], amqp.names["queue"]
    common = [f"--broker={broker}", f"--exchange={exchange}", f"--queue={queue}",
              "--dead-letter-queue=", "--liveness-grace=1", "--stale-after=1"]
    port = freePort()
    web = twistd("takeover-web", "--role=web", f"--broker={broker}", f"--exchange={exchange}",
                 f"--port={port}", "--interface=127.0.0.1")
    # The first judge would declare a host offline 3 s after its reconnection,
    # the second only 8 s after the host's last measure.
    first = twistd("takeover-first", "--role=analyzer", "--heartbeat=1", "--offline-after=3", *common)
    yield first.waitForOutput(b"judging host liveness: this process receives")
    second = twistd("takeover-second", "--role=analyzer", "--offline-after=8", *common)
    yield second.waitForOutput(b"standing by: another analyzer process receives")
    yield web.waitForOutput(b"dashboard listening")
    client, _ = yield connectWebSocket(port)
    alive, dying = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("alive", "dying"))

    def statuses(host):
        return [m["status"] for m in client.messages if m.get("kind") == "status" and m["host"] == host]
    twistd("takeover-alive", *agentArgs(broker, exchange, alive))
    dyingAgent = twistd("takeover-dying", *agentArgs(broker, exchange, dying))
    yield client.waitFor(lambda m: statuses(alive) == ["online"] and statuses(dying) == ["online"], 20,
                         "both hosts online")

    # Frozen: no heartbeat for 1 s, the broker closes its connection and the
    # second analyzer becomes the judge (and meets both hosts: online).
    first.signal(signalModule.SIGSTOP)
    try:
        yield second.waitForOutput(b"judging host liveness: this process receives", 20)
    finally:
        first.signal(signalModule.SIGCONT)
    yield first.waitForOutput(b"(connection #2)", 20)
    yield first.waitForOutput(b"standing by: another analyzer process receives", 10)
    reconnected = time.time()

    # A host that really stops is judged by the second analyzer alone, 8 s
    # after its last measure: later than the first would have judged the live
    # host offline, had it judged from its old table.
    assert (yield dyingAgent.stop(timeout=5)), dyingAgent.logPath
    yield client.waitFor(lambda m: statuses(dying)[-1:] == ["offline"], 20, f"{dying} offline")
    assert time.time() - reconnected > 3 + 1 + 1
    assert all(s == "online" for s in statuses(alive)), statuses(alive)
    assert statuses(dying).count("offline") == 1, statuses(dying)
    assert b"is offline" not in first.output.split(b"(connection #2)")[1]
    assert b"Traceback" not in first.output + second.output


@pytest_twisted.inlineCallbacks
def test_a_host_that_died_just_before_the_judge_did_is_declared_offline_by_the_next_judge(
        broker, amqp, twistd):
    exchange, queue = amqp.names["exchange"], amqp.names["queue"]
    common = [f"--broker={broker}", f"--exchange={exchange}", f"--queue={queue}",
              "--dead-letter-queue=", "--liveness-grace=1", "--stale-after=3", "--offline-after=6"]
    port = freePort()
    web = twistd("handover-web", "--role=web", f"--broker={broker}", f"--exchange={exchange}",
                 f"--port={port}", "--interface=127.0.0.1")
    judge = twistd("handover-judge", "--role=analyzer", *common)
    yield judge.waitForOutput(b"judging host liveness: this process receives")
    successor = twistd("handover-successor", "--role=analyzer", *common)
    yield successor.waitForOutput(b"standing by: another analyzer process receives")
    yield web.waitForOutput(b"dashboard listening")
    client, _ = yield connectWebSocket(port)
    host = f"handover-{uuid.uuid4().hex[:6]}"

    def statuses():
        return [m["status"] for m in client.messages if m.get("kind") == "status" and m["host"] == host]
    agent = twistd("handover-agent", *agentArgs(broker, exchange, host))
    yield client.waitFor(lambda m: statuses() == ["online"], 20, f"{host} online")

    # The host stops, and the judge dies before the host is 3 s silent: the
    # successor never hears from the host, only of it (its "online" status).
    assert (yield agent.stop(timeout=5)), agent.logPath
    judge.expectUncleanExit().signal("KILL")
    yield successor.waitForOutput(b"judging host liveness: this process receives", 10)
    yield client.waitFor(lambda m: statuses() == ["online", "stale", "offline"], 20,
                         f"{host} stale, then offline, from the successor")
    assert b"is offline" in successor.output and b"Traceback" not in successor.output


# Broker outages


@pytest_twisted.inlineCallbacks
def test_every_role_rides_through_a_broker_outage_and_closed_connections(privateBroker, twistd):
    url = privateBroker.url
    exchange, queue = uniqueName("resmon.test"), uniqueName("resmon.test.analyzer")
    host = f"outage-{uuid.uuid4().hex[:6]}"
    recorder = yield declareRecorder(url, exchange, "#.analysis")
    port = freePort()
    server = twistd("outage-server", *serverArgs(url, exchange, queue, port, "--liveness-grace=3",
                                                 "--stats-interval=1"))
    yield server.waitForOutput(b"(connection #1)")
    agent = twistd("outage-agent", *agentArgs(url, exchange, host))
    yield agent.waitForOutput(b"(connection #1)")
    client, _ = yield connectWebSocket(port)
    yield client.waitFor(lambda m: m.get("host") == host and m.get("seq", -1) >= 5, 15, "5 analyses")

    # 1. The broker's application stops for OUTAGE_SECONDS.
    stoppedAt = time.time()
    yield privateBroker.ctl("stop_app")
    yield agent.waitForOutput(b"lost the connection", 10)
    yield server.waitForOutput(b"lost the connection", 10)
    yield task.deferLater(reactor, OUTAGE_SECONDS, lambda: None)
    accepting = privateBroker.whenAccepting()
    yield privateBroker.ctl("start_app")
    yield accepting
    startedAt = time.time()
    yield defer.gatherResults([
        agent.waitForOutput(b"(connection #2)", 10), server.waitForOutput(b"(connection #2)", 10)])
    reconnected = time.time() - startedAt
    # Backoff capped at 1.5 s plus up to 0.5 s of jitter, then the handshake.
    assert reconnected < 2.5, f"reconnected {reconnected:.1f} s after the broker accepted connections"

    # The backlog sampled during the outage reaches the page in order, none
    # twice. (Not necessarily all of it: the web keeps only the latest
    # analysis per host for a client whose connection's buffer is full, and
    # this burst can fill it. Completeness is checked on the bus below.)
    def sampledAfter(t):
        return lambda m: m.get("host") == host and m.get("kind") == "analysis" and m["ts"] > t
    yield client.waitFor(sampledAfter(startedAt + 1), 20, "an analysis sampled after the outage")
    seen = [m["seq"] for m in client.events() if m.get("host") == host and m.get("kind") == "analysis"]
    assert seen == sorted(set(seen)), seen
    outage = [m for m in client.events()
              if m.get("host") == host and m.get("kind") == "analysis" and stoppedAt <= m["ts"] <= startedAt]
    assert outage, "no analysis of a measure sampled during the outage reached the page"

    # 2. The broker closes every connection. Each process is back within
    # 2.5 s of noticing (counted from then: rabbitmqctl itself takes seconds
    # to start on a loaded machine).
    @defer.inlineCallbacks
    def reconnection(process):
        lost = process.output.count(b"lost the connection")
        yield process.waitForOutputCount(b"lost the connection", lost + 1, 20)
        lostAt = time.time()
        yield process.waitForOutput(b"(connection #3)", 10)
        return time.time() - lostAt
    reconnections = defer.gatherResults([reconnection(agent), reconnection(server)])
    yield privateBroker.ctl("close_all_connections", "test: every connection closed")
    reconnected = yield reconnections
    assert max(reconnected) < 2.5, f"reconnected {reconnected} s after losing the connection"
    last = yield client.waitFor(sampledAfter(time.time() + 1), 20, "an analysis after the closing")
    assert not agent.ended_
    # What the page heard about the host while its agent ran (once stopped,
    # it goes stale, rightly, as soon as the liveness grace is over).
    heardWhileRunning = list(client.messages)
    assert (yield agent.stop(timeout=5))
    # Every analysis the analyzer made was confirmed by the broker as itself
    # (publisher-confirm tags start at 1 again on each new connection).
    # The agent stopped: wait for two stats lines in a row that agree.
    statsLine = re.compile(rb"(\d+) measures analyzed, (\d+) analyses published")
    deadline = time.monotonic() + 15
    while True:
        lines = statsLine.findall(server.output)[-2:]
        analyzed, published = map(int, lines[-1])
        if (lines[0] == lines[-1] and analyzed == published) or time.monotonic() > deadline:
            break
        yield server.waitForOutputCount(b"measures analyzed", len(statsLine.findall(server.output)) + 1)
    assert analyzed == published, f"{analyzed} measures analyzed but {published} analyses published"

    # Across both: every seq analyzed once. The bus may carry an analysis
    # twice only as the very same message resent, because its confirm was
    # lost with the connection (at-least-once); never analysed twice.
    analyses = [d for d in (yield drain(url, recorder, delete=True)) if d.get("host") == host]
    analysedAt = {}
    for d in analyses:
        analysedAt.setdefault(d["seq"], set()).add((d["analyzer"], d["analyzed_at"]))
    assertEveryOnce(sorted(analysedAt), 0, last["seq"], "on the bus")
    sampledDuringOutage = [d["seq"] for d in analyses if stoppedAt <= d["ts"] <= startedAt]
    assert len(set(sampledDuringOutage)) >= OUTAGE_SECONDS * 4, len(set(sampledDuringOutage))
    twice = {seq: runs for seq, runs in analysedAt.items() if len(runs) > 1}
    assert not twice, f"measures analysed twice: {twice}"
    assert analyzed == len(analysedAt), f"{analyzed} analyzed, {len(analysedAt)} seqs on the bus"
    assert not server.ended_
    assert b"(connection #4)" not in agent.output + server.output
    # The analyzer did not judge the agent while cut off from the broker.
    # (Its "online" came live or, if it was first seen before the client
    # connected, in the snapshot's statuses: either way exactly once.)
    statuses = [m["status"] for m in heardWhileRunning if m.get("kind") == "status" and m["host"] == host]
    statuses += [e["status"] for m in heardWhileRunning if m.get("kind") == "snapshot"
                 for e in m.get("statuses", []) if e["host"] == host]
    assert statuses == ["online"], statuses
    assert b"Traceback" not in agent.output + server.output
    assert (yield server.stop(timeout=5))


@pytest.mark.parametrize("signal", ["KILL", "TERM"])
@pytest_twisted.inlineCallbacks
def test_an_analyzer_stopped_under_load_loses_nothing(privateBroker, twistd, signal):
    url = privateBroker.url
    exchange, queue = uniqueName("resmon.test"), uniqueName("resmon.test.analyzer")
    recorder = yield declareRecorder(url, exchange, "#.analysis")
    args = ["--role=analyzer", f"--broker={url}", f"--exchange={exchange}", f"--queue={queue}",
            "--dead-letter-queue="]
    # Declared as the analyzer declares it; the backlog then waits in it whole.
    declaring = twistd("declaring-analyzer", *args)
    yield declaring.waitForOutput(b"consuming #.measure")
    assert (yield declaring.stop())
    # Enough that the analyzer is still busy when it is stopped: it drains
    # several thousand measures a second (bench/analyzer_throughput.py).
    hosts, perHost = [f"load-{i}" for i in range(4)], 6000
    publisher = yield PlainAMQPClient(url).connect()
    for seq in range(perHost):
        for host in hosts:
            publisher.publish(exchange, f"{host}.measure", wire.encodeMeasure(
                host, seq, time.time(), 0.1, {"cpu": {"percent": 50.0}}))
    # A round trip after the last publication: every one was written out before close().
    yield publisher.channel.exchange_declare(exchange=exchange, type="topic", durable=True,
                                             passive=True)
    yield publisher.close()

    analyzer = twistd("killed-analyzer", *args)
    # Counted, not drained: draining one message a round trip would fall
    # behind the analyzer.
    watcher = yield PlainAMQPClient(url).connect()
    deadline = time.monotonic() + 20
    while True:
        reply = yield watcher.channel.queue_declare(queue=recorder, passive=True)
        if reply.fields[1] >= 1000:
            break
        assert time.monotonic() < deadline, f"only {reply.fields[1]} analyses in 20 s"
        yield task.deferLater(reactor, 0.01, lambda: None)
    yield watcher.close()
    if signal == "KILL":
        analyzer.expectUncleanExit()
    analyzer.signal(signal)
    yield analyzer.ended
    assert analyzer.exitSignal == getattr(signalModule, f"SIG{signal}")
    if signal == "TERM":
        assert analyzer.cleanExit(), analyzer.logPath
    received = yield drain(url, recorder)
    assert len(received) < len(hosts) * perHost, "the analyzer was done before it was killed"

    twistd("restarted-analyzer", *args)
    deadline = time.monotonic() + 30
    while len({(d["host"], d["seq"]) for d in received}) < len(hosts) * perHost:
        assert time.monotonic() < deadline, "not every measure was analyzed after the restart"
        received += yield drain(url, recorder)
        yield task.deferLater(reactor, 0.1, lambda: None)
    for host in hosts:
        seqs = seqsOf(received, host)
        assert set(seqs) == set(range(perHost)), host
    # At least once: only what the stopped process had analysed but not yet
    # acknowledged comes twice (its analyses were published before it
    # stopped), at most its prefetch.
    twice = sum(Counter((d["host"], d["seq"]) for d in received).values()) - len(hosts) * perHost
    assert twice <= 200, twice
    yield drain(url, recorder, delete=True)


# A dead link


class _Pipe(protocol.Protocol):
    """
    One side of a proxied connection: forwards to its peer unless frozen.
    """

    peer = None
    frozen = False

    def dataReceived(self, data):
        if not self.frozen and self.peer is not None:
            self.peer.transport.write(data)

    def connectionLost(self, reason):
        if not self.frozen and self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()


class _Inbound(_Pipe):
    def connectionMade(self):
        self.factory.connected(self)


class SwallowingProxy(protocol.Factory):
    """
    A TCP proxy to C{target}. L{freeze} makes every open connection swallow
    what it receives in both directions, and keeps it open: the link is dead
    but nothing says so. New connections are forwarded normally.
    """

    def __init__(self, host, port):
        self.target = TCP4ClientEndpoint(reactor, host, port, timeout=5)
        self.pipes = []

    def buildProtocol(self, addr):
        inbound = _Inbound()
        inbound.factory = self
        self.pipes.append(inbound)
        return inbound

    def connected(self, inbound):
        inbound.transport.pauseProducing()
        outbound = _Pipe()
        self.pipes.append(outbound)

        def linked(_):
            inbound.peer, outbound.peer = outbound, inbound
            inbound.transport.resumeProducing()

        d = self.target.connect(protocol.Factory.forProtocol(lambda: outbound))
        d.addCallbacks(linked, lambda f: inbound.transport.loseConnection())

    def freeze(self):
        for pipe in self.pipes:
            pipe.frozen = True

    def close(self):
        for pipe in self.pipes:
            if pipe.transport is not None:
                pipe.transport.abortConnection()


@pytest_twisted.inlineCallbacks
def test_a_dead_link_is_detected_within_two_heartbeats_and_reconnected(broker, amqp, twistd):
    from resmon.bus.brokerurl import parseBrokerURL
    target = parseBrokerURL(broker)
    proxy = SwallowingProxy(target.host, target.port)
    listening = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(proxy)
    proxied = f"amqp://{target.username}:{target.password}@127.0.0.1:{listening.getHost().port}/"
    exchange = amqp.names["exchange"]
    recorder = yield declareRecorder(broker, exchange, "#.measure")
    host = f"deadlink-{uuid.uuid4().hex[:6]}"
    heartbeat = 2
    try:
        agent = twistd("deadlink-agent", *agentArgs(proxied, exchange, host, f"--heartbeat={heartbeat}"))
        yield agent.waitForOutput(b"(connection #1)")
        # A few measures through the live link first.
        seqs = []
        deadline = time.monotonic() + 10
        while len(seqs) < 3:
            assert time.monotonic() < deadline, f"only {len(seqs)} measures through the live link"
            yield task.deferLater(reactor, 0.1, lambda: None)
            seqs += [d["seq"] for d in (yield drain(broker, recorder)) if d.get("host") == host]
        proxy.freeze()
        frozenAt = time.time()
        yield agent.waitForOutput(b"lost the connection", 3 * heartbeat + 2)
        detected = time.time() - frozenAt
        assert detected <= 2 * heartbeat + 1.5, f"dead link detected after {detected:.1f} s"
        yield agent.waitForOutput(b"(connection #2)", 5)
        deadline = time.monotonic() + 15
        while not seqs or max(seqs) < 30:
            assert time.monotonic() < deadline, f"measures stopped at {max(seqs, default=None)}"
            seqs += [d["seq"] for d in (yield drain(broker, recorder)) if d.get("host") == host]
            yield task.deferLater(reactor, 0.2, lambda: None)
        # What the dead link swallowed was resent: every seq arrived.
        assert set(range(max(seqs) + 1)) <= set(seqs)
        assert not agent.ended_
        assert b"Traceback" not in agent.output
    finally:
        yield drain(broker, recorder, delete=True)
        proxy.close()
        yield listening.stopListening()
