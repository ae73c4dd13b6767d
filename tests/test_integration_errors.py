"""
The errors people meet first, with real twistd processes: each is one
line naming what to change, with no traceback, then the documented
behaviour (exit non-zero, retry quickly, or retry slowly).
"""

import socket
import subprocess
import time
import uuid

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from pocclients import declareExchange
from support import TWISTD, freePort


def _url(broker, user="guest", password="guest", vhost=""):
    return f"amqp://{user}:{password}@127.0.0.1:{broker.port}/{vhost}"


@defer.inlineCallbacks
def _ended(process, timeout=20):
    deadline = time.monotonic() + timeout
    while not process.ended_:
        assert time.monotonic() < deadline, f"{process.label} still runs after {timeout} s"
        yield deferLater(reactor, 0.05, lambda: None)


def _noTraceback(process):
    assert b"Traceback" not in process.output, process.logPath
    assert b"Unhandled error" not in process.output, process.logPath


@pytest_twisted.inlineCallbacks
def test_a_web_port_in_use_is_one_line_naming_port_and_option_and_exits_non_zero(twistd):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        web = twistd("web", f"--port={port}", "--interface=127.0.0.1").expectUncleanExit()
        yield _ended(web)
    assert web.exitCode == 1
    line = (f"twistd resmon: error: cannot listen on 127.0.0.1:{port}: Address already in use; "
            "choose another port with --port").encode()
    assert web.output.count(line) == 1, web.logPath
    _noTraceback(web)


@pytest_twisted.inlineCallbacks
def test_a_metrics_port_in_use_names_metrics_port(twistd):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = twistd("agent", "--role=agent", f"--broker=amqp://guest:guest@127.0.0.1:{freePort()}/",
                       f"--metrics-port={port}").expectUncleanExit()
        yield _ended(agent)
    assert agent.exitCode == 1
    assert (f"cannot listen on port {port}: Address already in use; choose another port with "
            "--metrics-port").encode() in agent.output
    _noTraceback(agent)


@pytest_twisted.inlineCallbacks
def test_a_broker_refusing_connections_is_said_once_with_host_port_and_retry_then_connects(
        privateBroker, twistd):
    yield privateBroker.ctl("stop_app")
    try:
        agent = twistd("agent", "--role=agent", f"--broker={_url(privateBroker)}",
                       "--name=refused")
        line = (f"cannot connect to the broker at 127.0.0.1:{privateBroker.port}: connection "
                "refused (is RabbitMQ running there, on that port?); retrying every 2 s "
                "(--broker sets host and port)").encode()
        yield agent.waitForOutput(line)
        # It keeps retrying quickly, without saying it again each time.
        yield agent.waitForOutput(b"Scheduling retry 3 ")
        assert agent.output.count(line) == 1
    finally:
        yield privateBroker.ctl("start_app")
    yield agent.waitForOutput(b"(connection #1)", timeout=30)
    _noTraceback(agent)


@pytest_twisted.inlineCallbacks
def test_refused_credentials_name_user_and_vhost_and_retry_slowly(privateBroker, twistd):
    agent = twistd("agent", "--role=agent",
                   f"--broker={_url(privateBroker, password='not-the-password')}", "--name=creds")
    line = (f"the broker at 127.0.0.1:{privateBroker.port} refused the credentials of user "
            "'guest' on vhost '/' (ACCESS_REFUSED); check the user and password of --broker; "
            "retrying every 30 s").encode()
    yield agent.waitForOutput(line)
    yield agent.waitForOutput(b"Scheduling retry 1 ")
    assert b"in 30.0 seconds" in agent.output
    # Not every 2 s: five seconds later, still the one attempt.
    yield deferLater(reactor, 5, lambda: None)
    assert agent.output.count(line) == 1
    assert b"Scheduling retry 2 " not in agent.output
    assert b"handshake" not in agent.output and b"Method(name=close" not in agent.output
    _noTraceback(agent)


@pytest_twisted.inlineCallbacks
def test_a_missing_vhost_is_named_retried_slowly_and_joined_once_created(privateBroker, twistd):
    vhost = f"resmon-{uuid.uuid4().hex[:8]}"
    agent = twistd("agent", "--role=agent", f"--broker={_url(privateBroker, vhost=vhost)}",
                   "--name=vhost")
    line = (f"vhost '{vhost}' does not exist on the broker at 127.0.0.1:{privateBroker.port} "
            "(NOT_ALLOWED); create it (rabbitmqctl add_vhost) or fix the vhost of --broker; "
            "retrying every 30 s").encode()
    yield agent.waitForOutput(line)
    assert b"Method(name=close" not in agent.output
    yield privateBroker.ctl("add_vhost", vhost)
    yield privateBroker.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    # The slow retry comes within 30 s (plus the connection's own time).
    yield agent.waitForOutput(b"(connection #1)", timeout=45)
    assert agent.output.count(line) == 1
    _noTraceback(agent)


@pytest_twisted.inlineCallbacks
def test_an_unusable_exchange_stops_the_process_with_a_non_zero_status(broker, amqp, twistd):
    exchange = amqp.names["exchange"]
    declareExchange(broker, exchange, "direct", durable=False)
    agent = twistd("agent", "--role=agent", f"--broker={broker}", f"--exchange={exchange}",
                   "--name=unusable").expectUncleanExit()
    yield agent.waitForOutput(b"cannot be used", timeout=15)
    yield _ended(agent)
    assert agent.exitCode == 1
    assert b"Server Shut Down." in agent.output
    _noTraceback(agent)


RAISING_PLUGIN = '''\
from zope.interface import implementer
from resmon.interfaces import IAnalyzer


@implementer(IAnalyzer)
class Raising:
    name = "raising"

    def configure(self, options):
        pass

    def analyze(self, measure, state):
        return {"values": {"x": 1 / 0}}
'''

SLOW_PLUGIN = '''\
import time
from zope.interface import implementer
from resmon.interfaces import IAnalyzer


@implementer(IAnalyzer)
class Slow:
    name = "slow"

    def configure(self, options):
        pass

    def analyze(self, measure, state):
        time.sleep(0.05)
        return {"level": "LOW"}
'''


@pytest_twisted.inlineCallbacks
def test_a_raising_plugin_is_named_with_file_and_line_once_and_a_slow_one_is_over_budget(
        tmp_path, twistd):
    (tmp_path / "raising.py").write_text(RAISING_PLUGIN)
    (tmp_path / "slow.py").write_text(SLOW_PLUGIN)
    standalone = twistd("plugin-errors", f"--plugin-dir={tmp_path}", f"--port={freePort()}",
                        "--interface=127.0.0.1", "--interval=0.2", "--name=faulty",
                        "--time-budget=0.01", "--analyzers=usage,raising,slow")
    where = f"(at {tmp_path / 'raising.py'}:13 in analyze)".encode()
    yield standalone.waitForOutput(
        b"analyzer raising raised on faulty (failure #1): ZeroDivisionError: division by zero "
        + where)
    yield standalone.waitForOutput(
        b"analyzer slow failed on faulty (failure #1): OverBudget: took ")
    yield standalone.waitForOutput(b"time budget (--time-budget)")
    yield standalone.waitForOutput(b"faulty is online")
    # Several measures later, the place is still said once.
    yield deferLater(reactor, 1.5, lambda: None)
    assert standalone.output.count(where) == 1
    assert b"InvalidFindings" not in standalone.output
    _noTraceback(standalone)


@pytest.mark.parametrize("argv, expected", [
    (["--role=agent", "--plugin-dir=/"],
     "--plugin-dir: means nothing for --role=agent; it is for roles with an analyzer "
     "(analyzer, server, standalone)"),
    (["--role=agent", "--analyzers=usage"], "--analyzers: means nothing for --role=agent"),
    (["--role=analyzer", "--port=9000"],
     "--port: means nothing for --role=analyzer; it is for roles with a web server "
     "(web, server, standalone)"),
    (["--role=server", "--plugin-dir=/nonexistent/plugins"],
     "--plugin-dir: /nonexistent/plugins does not exist"),
])
def test_options_that_mean_nothing_for_the_role_or_a_bad_plugin_dir_stop_twistd_with_one_line(
        argv, expected):
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "resmon"] + argv,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert lines[0].startswith("twistd resmon: error: --")


@pytest_twisted.inlineCallbacks
def test_a_config_file_shared_by_roles_may_hold_options_of_the_others(tmp_path, twistd):
    config = tmp_path / "shared.toml"
    config.write_text('port = 9000\nanalyzers = "usage"\nplugin-dir = ["/nonexistent"]\n')
    agent = twistd("shared-config", "--role=agent", f"--config={config}", "--name=shared",
                   f"--broker=amqp://guest:guest@127.0.0.1:{freePort()}/")
    yield agent.waitForOutput(b"resmon agent started: ")
    assert b"#error]" not in agent.output and b"#critical]" not in agent.output
