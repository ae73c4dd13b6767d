"""
The single-machine mode and the command line, as a user runs them: real
twistd processes, real HTTP and WebSocket clients, no broker.
"""

import subprocess

import pytest_twisted
from twisted.internet import reactor
from twisted.web.client import Agent, readBody

from support import TWISTD, connectWebSocket, freePort


@pytest_twisted.inlineCallbacks
def test_standalone_serves_the_dashboard_and_shows_this_machine(twistd):
    # How soon (the README says within two seconds): bench/standalone_startup.py.
    port = freePort()
    standalone = twistd("standalone", f"--port={port}", "--interface=127.0.0.1", "--name=solo")
    yield standalone.waitForOutput(b"dashboard listening", timeout=15)
    response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/".encode())
    page = yield readBody(response)
    assert response.code == 200 and b"<title>resmon</title>" in page
    for asset in (b"js/main.js", b"style.css"):
        response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/{asset.decode()}".encode())
        assert response.code == 200, asset
        yield readBody(response)
    client, _ = yield connectWebSocket(port)
    def analysisOfThisMachine(message):
        return any(e.get("host") == "solo" and e["kind"] == "analysis" for e in _events(message))
    yield client.waitFor(analysisOfThisMachine, 5, "an analysis of this machine")
    analysis = [e for e in client.events() if e.get("host") == "solo" and e["kind"] == "analysis"][0]
    assert analysis["cpu_result"] in ("LOW", "MEDIUM", "HIGH")
    assert (yield standalone.stop(timeout=5)), standalone.logPath
    assert b"Traceback" not in standalone.output
    assert b"in-process bus" in standalone.output


def _events(message):
    if message.get("kind") == "snapshot":
        return message["events"]
    return [message]


def test_bad_options_stop_twistd_with_one_line():
    for argv, expected in [
        (["--role=bogus"], "--role: unknown role 'bogus'"),
        (["--broker=amqp//nope"], "--broker:"),
        (["--interval=fast"], "--interval: expected a number"),
        (["--port=-1"], "--port: must be between"),
    ]:
        result = subprocess.run([TWISTD, "-n", "--pidfile=", "resmon"] + argv,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, (argv, result)
        lines = (result.stdout + result.stderr).strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (argv, lines)


def test_help_explains_every_option():
    result = subprocess.run([TWISTD, "resmon", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--role", "--broker", "--exchange", "--interval", "--port", "--name",
                   "--queue", "--prefetch", "--max-body", "--plugin-dir", "--analyzers",
                   "--list-analyzers"):
        assert option in result.stdout, option
