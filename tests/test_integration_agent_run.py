"""
C{resmon-agent}, the agent without C{twistd} (L{resmon.agent.run}): real
processes of the installed console script on the real broker. It publishes
what C{twistd resmon --role=agent} publishes, under C{python -OO} and
without the C{ssl} module for a plain C{amqp://} broker, starts itself again
with TLS for C{amqps://}, refuses other roles' options in one line, stops
cleanly on SIGTERM and exits non-zero when it gives up.
"""

import os
import sys

import pytest_twisted
from twisted.internet import defer, reactor

from pocclients import declareExchange
from resmon import topics, wire
from resmon.agent.run import PROGRAM, TLS_ENVIRONMENT, wantsDocstringsDropped
from support import TwistdProcess, uniqueName, waitUntil
from test_integration_systemd import NotifyRecorder, ready

AGENT = os.path.join(os.path.dirname(sys.executable), PROGRAM)


class AgentProcess(TwistdProcess):
    """
    A real C{resmon-agent} process.
    """

    def start(self):
        argv = [AGENT] + self.args
        self._log.write(("$ " + " ".join(argv) + "\n").encode())
        reactor.spawnProcess(self, AGENT, argv, env=self.env)
        return self

    def cleanExit(self):
        return b"Main loop terminated." in self.output and self.exitCode == 0


@pytest_twisted.async_yield_fixture
async def agents():
    started = []

    def start(label, *args, env=None):
        process = AgentProcess(label, args, env).start()
        started.append(process)
        return process
    yield start
    problems = []
    for process in started:
        problem = await defer.ensureDeferred(process.stopAndCheck())
        if problem:
            problems.append(problem)
    assert not problems, "\n\n".join(problems)


def mapped(pid, fragment):
    """
    Whether a file whose path holds C{fragment} is mapped in process C{pid}.
    """
    with open(f"/proc/{pid}/maps") as maps:
        return any(fragment in line for line in maps)


def commandLine(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")


def environment(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(entry.split(b"=", 1) for entry in f.read().split(b"\0") if b"=" in entry)


@pytest_twisted.inlineCallbacks
def test_the_agent_without_twistd_publishes_measures_under_OO_without_ssl(broker, amqp, agents):
    exchange, queue = amqp.names["exchange"], amqp.names["queue"]
    yield amqp.declareExchange(exchange)
    host = uniqueName("lean")
    yield amqp.channel.queue_declare(queue=queue, durable=False, auto_delete=False)
    yield amqp.channel.queue_bind(queue=queue, exchange=exchange,
                                  routing_key=f"{topics.hostWord(host)}.measure")
    agent = agents("lean-agent", f"--broker={broker}", f"--exchange={exchange}", f"--name={host}",
                   "--interval=0.2")
    yield agent.waitForOutput(b"publishing", timeout=20)
    received = []

    @defer.inlineCallbacks
    def take():
        received.extend((yield amqp.drain(queue)))
        return len(received) >= 3
    yield waitUntil(take, 15, "three measures of the agent")
    measure = wire.decodeMeasure(f"{topics.hostWord(host)}.measure", received[-1])
    assert measure.host == host and measure.metrics["cpu"]["percent"] is not None
    assert [m.seq for m in (wire.decodeMeasure(f"{topics.hostWord(host)}.measure", body)
                            for body in received[:3])] == [0, 1, 2]
    pid = agent.transport.pid
    assert b"-OO" in commandLine(pid)
    # No TLS for a plain broker: neither the ssl module nor pyOpenSSL is loaded.
    assert not mapped(pid, "_ssl.cpython") and not mapped(pid, "OpenSSL")
    assert TLS_ENVIRONMENT.encode() not in environment(pid)
    yield agent.stop()
    assert agent.cleanExit()
    assert b"measures sampled" in agent.output
    assert b"Traceback" not in agent.output


@pytest_twisted.inlineCallbacks
def test_an_amqps_broker_starts_the_agent_again_with_tls(agents):
    # Nothing listens there: the agent retries, with TLS loaded.
    agent = agents("lean-agent-tls", "--broker=amqps://guest:guest@127.0.0.1:1/",
                   "--name=tls-host")
    yield agent.waitForOutput(b"cannot connect to the broker at 127.0.0.1:1", timeout=20)
    pid = agent.transport.pid
    assert environment(pid).get(TLS_ENVIRONMENT.encode()) == b"1"
    assert b"-OO" in commandLine(pid)
    assert mapped(pid, "_ssl.cpython")
    assert b"connecting to amqps://guest@127.0.0.1:1/" in agent.output
    assert b"Traceback" not in agent.output


@pytest_twisted.inlineCallbacks
def test_another_roles_option_or_a_bad_one_stops_it_in_one_line(agents):
    for args, line in [
            (["--port=9000"], b"resmon-agent: error: --port: means nothing for --role=agent"),
            (["--role=web"], b"resmon-agent: error: --role: resmon-agent runs the agent alone"),
            (["--interval=0"], b"resmon-agent: error: --interval"),
            (["--bogus"], b"resmon-agent: error: option --bogus not recognized")]:
        agent = agents("lean-agent-bad", *args).expectUncleanExit()
        yield agent.ended
        assert agent.exitCode == 1, agent.output
        lines = agent.output.decode().splitlines()
        assert len(lines) == 1 and lines[0].encode().startswith(line), lines


@pytest_twisted.inlineCallbacks
def test_help_is_whole_and_names_the_program(agents):
    agent = agents("lean-agent-help", "--help").expectUncleanExit()
    yield agent.ended
    assert agent.exitCode == 0
    assert b"Usage: resmon-agent [options]" in agent.output
    assert b"--interval=" in agent.output and b"--broker=" in agent.output
    assert b"Run the resmon agent alone, without twistd" in agent.output


@pytest_twisted.inlineCallbacks
def test_an_unusable_exchange_stops_it_with_a_non_zero_status(broker, amqp, agents):
    exchange = amqp.names["exchange"]
    declareExchange(broker, exchange, "direct", durable=False)
    agent = agents("lean-agent-unusable", f"--broker={broker}", f"--exchange={exchange}",
                   "--name=unusable").expectUncleanExit()
    yield agent.waitForOutput(b"cannot be used", timeout=20)
    yield agent.ended
    assert agent.exitCode == 1
    assert b"Main loop terminated." in agent.output
    assert b"Traceback" not in agent.output


@pytest_twisted.inlineCallbacks
def test_systemd_is_told_it_is_ready_then_stopping_as_under_twistd(broker, amqp, agents):
    """
    The agent's unit runs C{resmon-agent} (C{Type=notify}): started again
    under C{-OO} by C{execve}, it keeps its pid, so the notifications come
    from the unit's main process.
    """
    notify = NotifyRecorder()
    try:
        agent = agents("lean-agent-notify", f"--broker={broker}",
                       f"--exchange={amqp.names['exchange']}", "--name=notified",
                       env={"NOTIFY_SOCKET": notify.path})
        yield notify.waitFor(ready, "READY=1")
        assert b"-OO" in commandLine(agent.transport.pid)
        message = [m for m in notify.received if ready(m)][0]
        assert "publishing" in message["STATUS"]
        assert (yield agent.stop())
        assert notify.received[-1] == {"STOPPING": "1", "STATUS": "stopping"}
    finally:
        yield defer.maybeDeferred(notify.close)


def test_it_starts_again_under_OO_unless_printing_or_asked_not_to():
    assert wantsDocstringsDropped(["--broker=amqp://x/"], {}, optimize=0)
    assert not wantsDocstringsDropped(["--broker=amqp://x/"], {}, optimize=2)
    assert not wantsDocstringsDropped(["--help"], {}, optimize=0)
    assert not wantsDocstringsDropped(["--version"], {}, optimize=0)
    assert not wantsDocstringsDropped([], {"RESMON_AGENT_KEEP_DOCSTRINGS": "1"}, optimize=0)
