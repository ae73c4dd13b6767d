"""
Third-party analyzers end to end: an example distribution installed next to
resmon, a single-file drop-in, a broken plugin; and two partitioned analyzer
processes on the real broker keeping per-host state right.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from resmon import wire
from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.amqp import AMQPBus
from resmon.analysis.pipeline import AnalysisPipeline
from resmon.analysis.plugins import loadAnalyzers
from support import connectWebSocket, freePort, subscriptionsReady, withTimeout

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")


@pytest.fixture(scope="module")
def exampleEnvironment(tmp_path_factory):
    """
    The example analyzer distribution, pip-installed into its own directory
    beside resmon's environment; twistd sees it through PYTHONPATH.
    """
    target = tmp_path_factory.mktemp("example-env")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         os.path.join(EXAMPLES, "resmon-example-analyzer")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return str(target)


@pytest.fixture
def pluginDir(tmp_path):
    shutil.copy(os.path.join(EXAMPLES, "dropin", "loadpercore.py"), tmp_path)
    (tmp_path / "broken.py").write_text("import this_module_does_not_exist\n")
    return tmp_path


@pytest_twisted.inlineCallbacks
def test_installed_dropin_and_broken_plugins(exampleEnvironment, pluginDir, broker, amqp, twistd):
    port = freePort()
    env = {"PYTHONPATH": exampleEnvironment}
    listing = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "twistd"), "resmon",
         f"--plugin-dir={pluginDir}", "--list-analyzers"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, **env))
    assert listing.returncode == 0, listing.stderr
    assert "resmon-example-analyzer 0.1.0" in listing.stdout
    assert str(pluginDir / "loadpercore.py") in listing.stdout
    assert "REFUSED" in listing.stdout and "broken.py" in listing.stdout

    # On the bus: a plain consumer of <host>.analysis.
    analyses = []
    listener = AMQPBus(parseBrokerURL(broker), amqp.names["exchange"], reactor)
    listener.subscribe(["plug.analysis"], lambda key, body: analyses.append(json.loads(body)))
    listener.startService()
    try:
        yield subscriptionsReady(listener)
        # Standalone mode on RabbitMQ: agent, analyzer and web in one process.
        standalone = twistd(
            "plugins", f"--broker={broker}", f"--exchange={amqp.names['exchange']}",
            f"--queue={amqp.names['queue']}", f"--port={port}", "--interface=127.0.0.1",
            "--name=plug", f"--plugin-dir={pluginDir}", env=env)
        yield standalone.waitForOutput(b"dashboard listening")
        client, _ = yield connectWebSocket(port)
        pushed = yield client.waitFor(
            lambda m: m.get("kind") == "analysis" and m.get("host") == "plug", 10,
            "an analysis with the plugins' findings on the WebSocket")
        yield withTimeout(_until(lambda: analyses), 10, "the analysis on plug.analysis")
    finally:
        yield listener.stopService()
    for analysis in (pushed, analyses[0]):
        for name in ("usage", "sustained", "disk", "swap", "loadpercore"):
            assert analysis["analyses"][name]["status"] == "ok", (name, analysis["analyses"][name])
        assert "broken" not in analysis["analyses"]
        # The plugins judged this machine (they return nothing without their metrics).
        assert "swap" in analysis["analyses"]["swap"]["checks"], analysis["analyses"]["swap"]
        assert "load_per_core" in analysis["analyses"]["loadpercore"]["checks"], analysis["analyses"]
    refused = [line for line in standalone.output.splitlines() if b"refused analyzer" in line]
    assert len(refused) == 1 and b"broken.py" in refused[0]


@defer.inlineCallbacks
def _until(condition):
    from twisted.internet import task
    while not condition():
        yield task.deferLater(reactor, 0.02, lambda: None)


def _measure(host, seq, cpu, used):
    metrics = {
        "cpu": {"percent": cpu, "per_core": [cpu]},
        "memory": {"total": 100, "used": 50, "available": 50, "percent": 50.0},
        "disks": [{"mount": "/data", "device": "/dev/x", "fstype": "ext4", "total": 1000,
                   "used": used, "free": 1000 - used, "percent": used / 10}],
    }
    return wire.encodeMeasure(host, seq, 1_000_000.0 + 60 * seq, 60.0, metrics)


def _inputs(hosts, samples):
    # A CPU trace that crosses the sustained analyzer's thresholds back and
    # forth, and disks that fill at different rates.
    trace = [10, 90, 90, 90, 90, 90, 90, 85, 75, 60, 40, 30, 90, 20, 20, 20, 20, 20, 20, 20]
    for seq in range(samples):
        for i, host in enumerate(hosts):
            yield host, _measure(host, seq, float(trace[(seq + i) % len(trace)]), 100 + (i + 1) * seq)


@pytest_twisted.inlineCallbacks
def test_two_partitioned_analyzers_keep_each_host_in_one_process(broker, amqp, twistd):
    exchange, queue = amqp.names["exchange"], amqp.names["queue"]
    hosts = [f"host-{i:02d}" for i in range(16)]
    samples = 20
    # What is compared is state, not speed: a budget that a loaded machine
    # cannot exceed, here and in the reference pipeline below.
    budget = 60
    common = [f"--broker={broker}", f"--exchange={exchange}", f"--queue={queue}",
              "--partitions=4", "--role=analyzer", f"--time-budget={budget}"]
    first = twistd("analyzer-a", *common, "--own-partitions=0-1")
    second = twistd("analyzer-b", *common, "--own-partitions=2-3")
    for process in (first, second):
        yield process.waitForOutput(b"consuming #.measure")

    received = {}
    done = defer.Deferred()

    def collect(routingKey, body):
        document = json.loads(body)
        received[(document["host"], document["seq"])] = document
        if len(received) == len(hosts) * samples and not done.called:
            done.callback(None)
    listener = AMQPBus(parseBrokerURL(broker), exchange, reactor)
    listener.subscribe(["#.analysis"], collect)
    listener.startService()
    try:
        yield subscriptionsReady(listener)
        inputs = list(_inputs(hosts, samples))
        for host, body in inputs:
            yield amqp.publish(exchange, f"{host}.measure", body)
        yield withTimeout(done, 30, f"{len(hosts) * samples} analyses")
    finally:
        yield listener.stopService()
        yield amqp.cleanUp(exchanges=[f"{queue}.hash"],
                           queues=[f"{queue}.{i}" for i in range(4)])

    # Every host's analyses come from one process, and both processes worked.
    owners = {}
    for (host, seq), analysis in received.items():
        owners.setdefault(host, set()).add(analysis["analyzer"])
    assert all(len(o) == 1 for o in owners.values()), owners
    assert len(set().union(*owners.values())) == 2, owners

    # Stateful results equal those of one process on the same input.
    reference = AnalysisPipeline(loadAnalyzers(options={"usage": {}}), timeBudget=budget)
    for host, body in inputs:
        measure = wire.decodeMeasure(f"{host}.measure", body)
        expected = reference.analyze(measure)["analyses"]
        got = received[(host, measure.seq)]["analyses"]
        for name in ("sustained", "disk", "usage"):
            assert expected[name]["status"] == "ok", (host, measure.seq, name, expected[name])
            assert got[name] == expected[name], (host, measure.seq, name)
