"""
The core pipeline end to end on the real RabbitMQ: real twistd processes for
the agent and the server, a real WebSocket client, a plain AMQP publisher.
"""

import json

import pytest_twisted
from twisted.internet import defer
from twisted.web.client import Agent, readBody
from twisted.internet import reactor

from support import connectWebSocket, freePort, withTimeout


def loadedLibraries(process, names):
    """
    Which of the packages C{names} have a compiled module mapped in
    C{process} (pure Python packages leave no trace there).
    """
    with open(f"/proc/{process.transport.pid}/maps") as maps:
        paths = {line.split()[-1] for line in maps if "/" in line}
    return {name for name in names if any(f"/{name}/" in path for path in paths)}


def _serverArgs(broker, amqp, port):
    return ["--role=server", f"--broker={broker}", f"--exchange={amqp.names['exchange']}",
            f"--queue={amqp.names['queue']}", f"--dead-letter-queue={amqp.names['deadletter']}",
            f"--port={port}", "--interface=127.0.0.1"]


@defer.inlineCallbacks
def _startServer(twistd, broker, amqp):
    port = freePort()
    server = twistd("server", *_serverArgs(broker, amqp, port))
    yield server.waitForOutput(b"dashboard listening")
    yield server.waitForOutput(b"consuming #.measure")
    yield server.waitForOutput(b"consuming #.analysis")
    return server, port


@pytest_twisted.inlineCallbacks
def test_agent_measures_reach_a_websocket_client_as_analyses(broker, amqp, twistd):
    server, port = yield _startServer(twistd, broker, amqp)
    client, _ = yield connectWebSocket(port)
    host = "it-agent.example.com"
    agent = twistd("agent", "--role=agent", f"--broker={broker}",
                   f"--exchange={amqp.names['exchange']}", f"--name={host}", "--interval=0.2")

    def isAnalysisOf(count):
        def predicate(message):
            seen = [m for m in client.events() if m.get("host") == host and m["kind"] == "analysis"]
            return len(seen) >= count
        return predicate

    yield withTimeout(client.waitFor(isAnalysisOf(5), 20, "5 analyses"), 25, "5 analyses")
    analyses = [m for m in client.events() if m.get("host") == host and m["kind"] == "analysis"]
    seqs = [a["seq"] for a in analyses]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    latest = analyses[-1]
    assert latest["interval"] == 0.2 and latest["seq"] >= 4
    assert latest["cpu_result"] in ("LOW", "MEDIUM", "HIGH")
    assert latest["levels"]["cpu"] == latest["cpu_result"]
    assert latest["levels"]["memory"] in ("LOW", "MEDIUM", "HIGH")
    assert latest["analyses"]["usage"]["status"] == "ok"
    assert len(latest["metrics"]["cpu"]["per_core"]) >= 1
    assert latest["metrics"]["load"] and latest["metrics"]["memory"]["total"] > 0

    # A page opened now gets the latest analysis of every host at once.
    late, _ = yield connectWebSocket(port)
    first = yield late.waitFor(lambda m: True, 5, "the snapshot")
    assert first["kind"] == "snapshot"
    assert host in [e["host"] for e in first["events"]]

    # And so does the JSON API.
    response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/api/hosts".encode())
    hosts = json.loads((yield readBody(response)))["hosts"]
    assert host in [h["host"] for h in hosts]

    # The agent that did all this did not load TLS (pyOpenSSL and the
    # compiled cryptography it needs): plain amqp://, 12 MiB less on every machine.
    assert loadedLibraries(agent, ("cryptography", "psutil")) == {"psutil"}

    # SIGTERM stops both roles cleanly within 5 s.
    assert (yield agent.stop(timeout=5)), agent.logPath
    assert (yield server.stop(timeout=5)), server.logPath
    assert b"Traceback" not in agent.output + server.output


@pytest_twisted.inlineCallbacks
def test_proof_of_concept_measure_yields_analysis_with_cpu_result(broker, amqp, twistd):
    server, port = yield _startServer(twistd, broker, amqp)
    client, _ = yield connectWebSocket(port)
    yield amqp.publish(amqp.names["exchange"], "poc-host.measure", b'{"cpu_percentage": 42.0}')
    analysis = yield client.waitFor(
        lambda m: m.get("host") == "poc-host" and m["kind"] == "analysis", 10, "the analysis of the PoC measure")
    assert analysis["cpu_result"] == "MEDIUM"
    assert analysis["seq"] is None
    assert analysis["metrics"]["cpu"]["percent"] == 42.0


@pytest_twisted.inlineCallbacks
def test_bad_measures_are_rejected_and_counted_and_good_ones_still_flow(broker, amqp, twistd):
    port = freePort()
    server = twistd("server", *_serverArgs(broker, amqp, port), "--stats-interval=1")
    yield server.waitForOutput(b"(connection #1)")
    client, _ = yield connectWebSocket(port)
    exchange = amqp.names["exchange"]
    bad = [
        ("bad.measure", b"{not json"),
        ("bad.measure", b"\xff\xfe"),
        ("bad.measure", b""),
        ("bad.measure", b'{"cpu_percentage": 142}'),
        ("bad.measure", b'{"cpu_percentage": NaN}'),
        ("bad.measure", b'[1, 2]'),
        ("bad.measure", b'{"v": 1, "host": "bad", "seq": "x", "ts": 1, "interval": 1, "metrics": {}}'),
        ("a.b.measure", b'{"cpu_percentage": 1}'),
        ("bad.measure", b"[" * 100000 + b"]" * 100000),
        ("bad.measure", b'{"cpu_percentage": 1, "pad": "' + b"x" * 300000 + b'"}'),
    ]
    for key, body in bad:
        yield amqp.publish(exchange, key, body)
    yield amqp.publish(exchange, "good.measure", b'{"cpu_percentage": 80}')
    analysis = yield client.waitFor(
        lambda m: m.get("host") == "good" and m["kind"] == "analysis", 10, "the good measure's analysis")
    assert analysis["cpu_result"] == "HIGH"
    # The analyzer's stats line counts each bad measure for its own reason.
    yield server.waitForOutput(
        b"not analysed again, 10 rejected (empty: 1, encoding: 1, json: 1, non-finite: 1, range: 1, "
        b"routing-key: 1, shape: 1, too-deep: 1, too-large: 1, type: 1)", timeout=5)
    assert not server.ended_
