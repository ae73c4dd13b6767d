"""
Replacing the proof of concept one module at a time (issue 11), on the real
RabbitMQ: for each of its three modules (tracker, analyzer, web), that module
as a small pika client (L{pocclients}) and the rest as real C{twistd resmon}
processes, started in both orders, on the proof of concept's non-durable
exchange; measures must become analyses that reach the browser side (a
WebSocket client of resmon's web, or the proof-of-concept web's queue) with
the right level. Plus an exchange resmon cannot use: one error line, no
reconnect loop.
"""

import json

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.client import Agent, readBody

from pocclients import (
    PocAnalyzer,
    Recorder,
    PocTracker,
    PocWeb,
    declareExchange,
    deleteExchange,
    pocLevel,
    waitUntil,
)
from resmon.topics import hostWord
from support import connectWebSocket, freePort, uniqueName

LEVELS = ("LOW", "MEDIUM", "HIGH")


@pytest.fixture
def names(broker):
    """
    Fresh exchange and queue names; the exchange (which the proof of
    concept declares non-durable, so nothing else removes it) is deleted
    afterwards.
    """
    names = {"exchange": uniqueName("resmon.test.poc"), "queue": uniqueName("resmon.test.poc.analyzer")}
    yield names
    deleteExchange(broker, names["exchange"])


@pytest.fixture
def poc():
    """
    Starts proof-of-concept modules: C{poc(module)}; every one is stopped at
    the end.
    """
    modules = []

    def start(module):
        modules.append(module)
        return module.started()
    yield start
    for module in modules:
        module.stop()


def _common(broker, names, resmonFirst):
    # Started first, resmon creates the exchange: non-durable, as the proof
    # of concept's modules declare it, or they would be refused. Started
    # second, it joins the proof of concept's exchange as it is, with the
    # default --exchange-durable=yes.
    args = [f"--broker={broker}", f"--exchange={names['exchange']}", "--stats-interval=2"]
    if resmonFirst:
        args.append("--exchange-durable=no")
    return args


def _server(names, role, port):
    analyzer = [] if role == "web" else [
        f"--queue={names['queue']}", "--dead-letter-queue=", "--analyzers=usage"]
    return [f"--role={role}", *analyzer, f"--port={port}", "--interface=127.0.0.1"]


@defer.inlineCallbacks
def _started(process, *texts):
    for text in texts:
        yield process.waitForOutput(text, timeout=20)
    return process


def _analyses(client, host):
    return [m for m in client.events() if m.get("kind") == "analysis" and m.get("host") == host]


@defer.inlineCallbacks
def _getJSON(port, path):
    response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
    return json.loads((yield readBody(response)))


@defer.inlineCallbacks
def _apiHosts(port):
    return (yield _getJSON(port, "/api/hosts"))["hosts"]


@defer.inlineCallbacks
def _joinedOnce(process):
    """
    The process connected once and never met a refusal of the exchange.
    """
    yield process.waitForOutput(b"(connection #1)")
    assert b"(connection #2)" not in process.output
    assert b"PRECONDITION_FAILED" not in process.output
    assert b"Traceback" not in process.output


@pytest.mark.parametrize("resmonFirst", [False, True], ids=["poc-first", "resmon-first"])
@pytest_twisted.inlineCallbacks
def test_a_poc_tracker_feeds_resmons_analyzer_and_web(broker, names, twistd, poc, resmonFirst):
    port = freePort()
    tracker = PocTracker(broker, names["exchange"], "poc-tracker-host", cpu=80.0)
    if not resmonFirst:
        yield poc(tracker)
    server = yield _started(
        twistd("server", *_common(broker, names, resmonFirst), *_server(names, "server", port)),
        b"dashboard listening", b"consuming #.measure", b"consuming #.analysis")
    if resmonFirst:
        yield poc(tracker)
    assert tracker.error is None, tracker.error
    client, _ = yield connectWebSocket(port)
    yield client.waitFor(lambda m: len(_analyses(client, "poc-tracker-host")) >= 3, 20,
                         "3 analyses of the proof-of-concept tracker's measures")
    for analysis in _analyses(client, "poc-tracker-host"):
        assert analysis["cpu_result"] == analysis["level"] == "HIGH"
        assert analysis["metrics"]["cpu"]["percent"] == 80.0 and analysis["seq"] is None
    assert tracker.error is None and tracker.is_alive()
    yield _joinedOnce(server)


@pytest.mark.parametrize("resmonFirst", [False, True], ids=["poc-first", "resmon-first"])
@pytest_twisted.inlineCallbacks
def test_a_poc_analyzer_between_resmons_agent_and_web(broker, names, twistd, poc, resmonFirst):
    port = freePort()
    host = "resmon-agent-host"
    analyzer = PocAnalyzer(broker, names["exchange"])
    if not resmonFirst:
        yield poc(analyzer)
    web = yield _started(
        twistd("web", *_common(broker, names, resmonFirst), *_server(names, "web", port)),
        b"dashboard listening", b"consuming #.analysis")
    client, _ = yield connectWebSocket(port)
    agent = yield _started(
        twistd("agent", *_common(broker, names, resmonFirst), "--role=agent", f"--name={host}",
               "--interval=0.2"),
        b"(connection #1)")
    if resmonFirst:
        yield poc(analyzer)
    assert analyzer.error is None, analyzer.error
    yield client.waitFor(lambda m: len(_analyses(client, host)) >= 3, 20,
                         "3 analyses of the proof-of-concept analyzer")
    yield waitUntil(lambda: len(analyzer.published) >= 3, 10, "the PoC analyzer's analyses")
    # The PoC analyzer read every resmon measure (a measure without a
    # cpu_percentage would have crashed it), and only measures.
    assert analyzer.error is None and analyzer.is_alive(), analyzer.error
    for key, measure in analyzer.received:
        assert key == f"{host}.measure"
        assert measure["cpu_percentage"] == measure["metrics"]["cpu"]["percent"]
    # What the browser got is what the PoC analyzer published, in order,
    # as v1 analyses marked as a legacy analyzer's.
    published = [level for machine, level in analyzer.published if machine == host]
    received = [a["level"] for a in _analyses(client, host)]
    assert any(published[i:i + len(received)] == received for i in range(len(published))), (
        received, published)
    for analysis in _analyses(client, host):
        assert analysis["legacy"] is True and analysis["analyzer"] == "legacy"
        assert analysis["cpu_result"] == analysis["levels"]["cpu"] == analysis["level"]
        assert analysis["level"] in LEVELS
    # /api/hosts has the host too, with its legacy analysis.
    hosts = yield _apiHosts(port)
    [entry] = [h for h in hosts if h["host"] == host]
    assert entry["legacy"] is True and entry["level"] in LEVELS
    history = yield _getJSON(port, f"/api/hosts/{host}/history")
    assert history["host"] == host and len(history["points"]) >= 3
    assert b"rejected an event" not in web.output
    yield _joinedOnce(web)
    yield _joinedOnce(agent)


@pytest.mark.parametrize("resmonFirst", [False, True], ids=["poc-first", "resmon-first"])
@pytest_twisted.inlineCallbacks
def test_resmons_agent_and_analyzer_feed_a_poc_web(broker, names, twistd, poc, resmonFirst):
    port = freePort()
    host = "resmon-agent-for-poc-web"
    web = PocWeb(broker, names["exchange"])
    if not resmonFirst:
        yield poc(web)
    server = yield _started(
        twistd("server", *_common(broker, names, resmonFirst), *_server(names, "server", port)),
        b"consuming #.measure")
    agent = yield _started(
        twistd("agent", *_common(broker, names, resmonFirst), "--role=agent", f"--name={host}",
               "--interval=0.2"),
        b"(connection #1)")
    if resmonFirst:
        yield poc(web)
    assert web.error is None, web.error

    def mine():
        return [a for a in web.received if a["machine"] == host]
    yield waitUntil(lambda: len(mine()) >= 3, 20, "3 analyses in the proof-of-concept web's queue")
    assert web.error is None and web.is_alive()
    # Only analyses reach its *.analysis queue, each with the level the
    # proof of concept gives the measure's CPU.
    assert {a["kind"] for a in web.received} == {"analysis"}
    for analysis in mine():
        assert analysis["cpu_result"] == pocLevel(analysis["metrics"]["cpu"]["percent"])
    yield _joinedOnce(server)
    yield _joinedOnce(agent)


@pytest_twisted.inlineCallbacks
def test_resmon_joins_an_exchange_declared_non_durable_and_leaves_it_so(broker, names, twistd):
    declareExchange(broker, names["exchange"], "topic", durable=False)
    port = freePort()
    server = yield _started(
        twistd("server", f"--broker={broker}", f"--exchange={names['exchange']}",
               *_server(names, "server", port)),
        b"consuming #.measure", b"consuming #.analysis", b"dashboard listening")
    # The proof of concept's modules, restarted now, still declare it as they do.
    declareExchange(broker, names["exchange"], "topic", durable=False)
    yield _joinedOnce(server)


@pytest_twisted.inlineCallbacks
def test_an_exchange_resmon_cannot_use_is_one_error_line_and_no_reconnect_loop(broker, names, twistd):
    declareExchange(broker, names["exchange"], "direct", durable=False)
    agent = twistd("agent", "--role=agent", f"--broker={broker}", f"--exchange={names['exchange']}",
                   "--name=unusable").expectUncleanExit()
    expected = (f"exchange {names['exchange']!r} cannot be used: resmon expected type 'topic', "
                f"the broker has type 'direct'; stopping").encode()
    yield agent.waitForOutput(expected, timeout=15)
    yield waitUntil(lambda: agent.ended_, 10, "the agent to stop on its own")
    assert agent.exitCode == 1  # systemd and scripts see it failed
    assert agent.output.count(expected) == 1
    assert agent.output.count(names["exchange"].encode() + b"' cannot be used") == 1
    assert b"(connection #1)" not in agent.output
    assert b"handshake" not in agent.output and b"reconnecting" not in agent.output
    assert b"Scheduling retry 2" not in agent.output
    assert b"Traceback" not in agent.output


@pytest_twisted.inlineCallbacks
def test_a_hash_consumer_sees_only_host_traffic_and_resmons_marked_internal_ticks(broker, names, twistd, poc):
    """
    Everything resmon publishes on the user's exchange, as a consumer bound
    to '#' sees it: host traffic under <host>.<kind>, and the liveness ticks
    under a four-word key no host binding matches.
    """
    everything = yield poc(Recorder(broker, names["exchange"], "#"))
    measures = yield poc(Recorder(broker, names["exchange"], "*.measure"))
    analyses = yield poc(Recorder(broker, names["exchange"], "*.analysis"))
    port = freePort()
    yield _started(twistd("server", *_common(broker, names, True), *_server(names, "server", port)),
                   b"consuming #.measure")
    yield _started(twistd("agent", *_common(broker, names, True), "--role=agent", "--name=tapped",
                          "--interval=0.2"), b"(connection #1)")
    ticks = f"resmon.internal.{hostWord(names['queue'] + '.liveness')}.liveness-tick"

    def seen(key):
        return any(k == key for k, _ in everything.received)
    yield waitUntil(lambda: seen("tapped.analysis") and seen("tapped.status") and seen(ticks), 20,
                    "an analysis, a status and a liveness tick on '#'")
    # Each recorder is a consumer of its own: the narrower ones may get theirs a moment later.
    yield waitUntil(lambda: measures.received and analyses.received, 10,
                    "a measure on '*.measure' and an analysis on '*.analysis'")
    for key, body in everything.received:
        document = json.loads(body)
        if key == ticks:
            assert document["kind"] == "liveness-tick"
            continue
        host, kind = key.split(".")
        assert (host, kind) in {("tapped", "measure"), ("tapped", "analysis"), ("tapped", "status")}, key
        assert document["kind"] == kind and document["host"] == "tapped"
    assert {key for key, _ in measures.received} == {"tapped.measure"}
    assert {key for key, _ in analyses.received} == {"tapped.analysis"}


@pytest_twisted.inlineCallbacks
def test_why_exchange_durable_no_a_poc_module_after_a_durable_exchange_exits(broker, names, twistd, poc):
    # resmon first with the default --exchange-durable=yes: the exchange is
    # durable, and a proof-of-concept module started then is refused and
    # exits, as the proof of concept does (docs/migrating-from-poc.md).
    port = freePort()
    yield _started(twistd("server", f"--broker={broker}", f"--exchange={names['exchange']}",
                          *_server(names, "server", port)), b"consuming #.measure")
    tracker = yield poc(PocTracker(broker, names["exchange"], "refused", cpu=1.0))
    yield waitUntil(tracker.done.is_set, 10, "the PoC tracker to stop")
    assert "PRECONDITION_FAILED" in str(tracker.error) and "durable" in str(tracker.error)
