"""
The example rule distribution (examples/resmon-example-rules) installed next
to resmon: listed by --list-rules, its own tests pass, and in a real rules
process on the real broker a deploy posted over HTTP mutes one host while
another host's firing alert pages.
"""

import json
import os
import subprocess
import sys
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from resmon import wire
from resmon.bus.amqp import AMQPBus
from resmon.bus.brokerurl import parseBrokerURL
from support import PlainAMQPClient, freePort, subscriptionsReady, withTimeout
from test_integration_rules import postJSON

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(os.path.dirname(HERE), "examples", "resmon-example-rules")


@pytest.fixture(scope="module")
def exampleRules(tmp_path_factory):
    target = tmp_path_factory.mktemp("example-rules-env")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), EXAMPLE],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return str(target)


def test_the_example_is_listed_and_its_tests_pass(exampleRules):
    env = dict(os.environ, PYTHONPATH=exampleRules)
    listing = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "twistd"), "resmon", "--list-rules"],
        capture_output=True, text=True, timeout=60, env=env)
    assert listing.returncode == 0, listing.stderr
    [line] = [l for l in listing.stdout.splitlines() if l.startswith("page-unless-deploying")]
    assert "resmon-example-rules 0.1.0 (entry point page-unless-deploying)" in line
    assert "Pages on firing alerts" in line
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", EXAMPLE,
         os.path.join(EXAMPLE, "tests")],
        capture_output=True, text=True, timeout=120, env=env, cwd=EXAMPLE)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "6 passed" in tests.stdout


def alert(host, state="firing"):
    return json.dumps(wire.eventDocument(
        host, "alert", time.time(), f"alert-{host}", "application/json", "json",
        {"host": host, "check": "cpu", "state": state, "level": "HIGH", "since": 1.0,
         "value": 99.0}, wire.Chain(("alert",), 1))).encode()


@pytest_twisted.inlineCallbacks
def test_a_deploy_mutes_its_host_in_a_real_rules_process(exampleRules, broker, amqp, twistd):
    names = amqp.names
    common = [f"--broker={broker}", f"--exchange={names['exchange']}"]
    queue = f"--queue={names['queue']}"
    env = {"PYTHONPATH": exampleRules}
    port = freePort()
    web = twistd("example-rules-web", "--role=web", *common, f"--port={port}",
                 "--interface=127.0.0.1")
    rules = twistd("example-rules", "--role=rules", *common, queue,
                   "--rules=page-unless-deploying",
                   env=env)
    seen = []
    listener = AMQPBus(parseBrokerURL(broker), names["exchange"], reactor)
    listener.subscribe(["*.muted", "*.page"], lambda key, body: seen.append(
        (key, wire.decodeEventEnvelope(key, body).payload)))
    listener.startService()
    client = PlainAMQPClient(broker)
    yield client.connect()
    try:
        yield subscriptionsReady(listener)
        yield web.waitForOutput(b"ready: on")
        yield rules.waitForOutput(b"ready: on")
        code, _, _ = yield postJSON(port, "web-01", b'{"deploy": "1.2.3"}')
        assert code == 202
        yield withTimeout(_until(lambda: seen), 10, "the muted event")
        assert seen[0][0] == "web-01.muted" and seen[0][1]["version"] == "1.2.3"
        yield client.publish(names["exchange"], "web-01.alert", alert("web-01"))
        yield client.publish(names["exchange"], "db-02.alert", alert("db-02"))
        yield withTimeout(_until(lambda: len(seen) >= 2), 10, "the page of db-02")
        assert seen[1][0] == "db-02.page" and seen[1][1]["alert"]["host"] == "db-02"
    finally:
        yield client.close()
        yield listener.stopService()
    assert [key for key, _ in seen] == ["web-01.muted", "db-02.page"]
    assert b"Traceback" not in rules.output


@defer.inlineCallbacks
def _until(condition):
    while not condition():
        yield task.deferLater(reactor, 0.02, lambda: None)
