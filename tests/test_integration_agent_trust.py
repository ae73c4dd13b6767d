"""
Agents that cannot speak for other hosts, on the real broker: broker users
made by C{resmon-provision-agent}'s commands (through C{rabbitmqctl}), real
C{twistd resmon} agents and analyzers, and a plain client that forges.

 - an agent user publishing its own host's measure is analysed;
 - publishing another host's key is refused by the broker (topic
   permission), said in one line, and the agent keeps running on the same
   connection, publishing what it may;
 - a forged user_id is refused by the broker;
 - with --agent-users, a measure from a user whose patterns do not cover
   its host (or with no user_id) is rejected as forbidden, dead-lettered,
   counted and never analysed.
"""

import os
import re
import secrets
import shutil

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from txamqp.client import Closed
from txamqp.content import Content

from resmon import wire
from resmon.bus.amqp import AMQPBus, Refused
from resmon.bus.brokerurl import parseBrokerURL
from resmon.operations.provision import agentBrokerURL, provisionCommands
from support import PlainAMQPClient, waitUntil

RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


@defer.inlineCallbacks
def rabbitmqctl(*args):
    out, err, code = yield getProcessOutputAndValue(RABBITMQCTL, args, env=dict(os.environ))
    assert code == 0, f"rabbitmqctl {' '.join(args)} failed ({code}): {out!r} {err!r}"
    return out.decode()


@pytest_twisted.async_yield_fixture
async def brokerUsers(broker):
    """
    Makes broker users: C{await make(host, exchange, topicWrite=None)} runs
    the provisioning commands for an agent of C{host} (C{topicWrite}
    replaces its topic permission's write pattern), and returns
    C{(user, its broker URL)}. Every user is deleted afterwards.
    """
    made = []
    target = parseBrokerURL(broker)

    async def make(host, exchange, topicWrite=None, password=None):
        user = f"agent-test-{secrets.token_hex(6)}"
        password = password or secrets.token_urlsafe(16)
        for command in provisionCommands(host, user, password, exchange=exchange):
            if topicWrite is not None and command[1] == "set_topic_permissions":
                command[-2] = topicWrite
            await rabbitmqctl(*command[1:])
            if command[1] == "add_user":
                made.append(user)  # deleted afterwards
        return user, agentBrokerURL(user, password, f"{target.host}", "/").replace(
            ":5672/", f":{target.port}/")

    yield make
    for user in made:
        await rabbitmqctl("delete_user", user)


def hostName(prefix):
    return f"{prefix}{secrets.token_hex(4)}"


def measure(host, seq):
    return wire.encodeMeasure(host, seq, reactor.seconds(), 60.0, {"cpu": {"percent": 3.0}})


def agentUsersFile(tmp_path, mapping):
    path = tmp_path / "agent-users.toml"
    path.write_text("".join(f'"{user}" = {patterns!r}\n'.replace("'", '"')
                            for user, patterns in mapping.items()))
    return str(path)


@defer.inlineCallbacks
def startAnalyzer(twistd, broker, amqp, *extra):
    analyzer = twistd("trust-analyzer", "--role=analyzer", f"--broker={broker}",
                      f"--exchange={amqp.names['exchange']}", f"--queue={amqp.names['queue']}",
                      f"--dead-letter-queue={amqp.names['deadletter']}", "--stats-interval=1",
                      "--offline-after=600", *extra)
    yield analyzer.waitForOutput(b"consuming #.measure from")
    return analyzer


def statsOf(process, pattern):
    """
    The groups of the last match of C{pattern} (bytes) in the output.
    """
    found = re.findall(pattern, bytes(process.output))
    return found[-1] if found else None


@pytest_twisted.inlineCallbacks
def test_an_agent_user_publishes_its_own_host_and_is_analysed(
        broker, amqp, brokerUsers, twistd, tmp_path):
    exchange = amqp.names["exchange"]
    yield amqp.declareExchange(exchange)
    host = hostName("web")
    user, url = yield defer.ensureDeferred(brokerUsers(host, exchange))
    analyzer = yield startAnalyzer(
        twistd, broker, amqp, "--agent-users=" + agentUsersFile(tmp_path, {user: ["web*"]}))
    agent = twistd("trust-agent", "--role=agent", f"--broker={url}", f"--exchange={exchange}",
                   f"--name={host}", "--interval=0.2", "--stats-interval=1")
    yield waitUntil(lambda: statsOf(analyzer, rb"\n[^\n]* ([1-9]\d*) measures analyzed"), 30,
                    "the agent's measures analysed")
    assert b"refused" not in agent.output.replace(b"0 refused by", b"")
    assert b"forbidden" not in analyzer.output
    assert b"accepting measures only from the 1 broker users of --agent-users" in analyzer.output


@pytest_twisted.inlineCallbacks
def test_the_provisioning_commands_take_a_password_that_begins_with_a_dash(amqp, brokerUsers):
    """
    One generated password in 64 begins with C{-}: rabbitmqctl took it for
    an option and the user was not created.
    """
    exchange = amqp.names["exchange"]
    password = "-" + secrets.token_urlsafe(16)
    user, url = yield defer.ensureDeferred(brokerUsers(hostName("web"), exchange, password=password))
    assert "Success" in (yield rabbitmqctl("authenticate_user", "--", user, password))


@pytest_twisted.inlineCallbacks
def test_another_hosts_key_is_refused_by_the_broker_in_one_line_and_the_agent_runs_on(
        broker, amqp, brokerUsers, twistd):
    exchange = amqp.names["exchange"]
    yield amqp.declareExchange(exchange)
    user, url = yield defer.ensureDeferred(brokerUsers(hostName("web"), exchange))
    other = hostName("db")
    agent = twistd("trust-impersonator", "--role=agent", f"--broker={url}",
                   f"--exchange={exchange}", f"--name={other}", "--interval=0.1",
                   "--stats-interval=1")
    yield waitUntil(lambda: (statsOf(agent, rb"\((\d+) refused by the broker's permissions\)")
                             or b"0") not in (b"0", b"1", b"2", b"3", b"4"), 30,
                    "five measures refused")
    line = (f"the broker refused to let user {user!r} publish under routing key "
            f"'{other}.measure' to exchange {exchange!r} (ACCESS_REFUSED: a topic permission)")
    assert agent.output.count(line.encode()) == 1, agent.logPath
    assert agent.output.count(b"ACCESS_REFUSED") == 1, agent.logPath
    # The same connection all along: no reconnect, no flood.
    assert b"reconnecting" not in agent.output and b"lost the connection" not in agent.output
    assert not agent.ended_


@pytest_twisted.inlineCallbacks
def test_after_a_refused_key_the_bus_publishes_what_it_may_on_the_same_connection(
        broker, amqp, brokerUsers):
    exchange, queue = amqp.names["exchange"], amqp.names["queue"]
    yield amqp.declareExchange(exchange)
    yield amqp.channel.queue_declare(queue=queue, durable=True)
    yield amqp.channel.queue_bind(queue=queue, exchange=exchange, routing_key="#")
    host = hostName("web")
    user, url = yield defer.ensureDeferred(brokerUsers(host, exchange))
    bus = AMQPBus(parseBrokerURL(url), exchange, reactor)
    bus.startService()
    try:
        yield bus.whenConnected()
        refused = bus.publish("elsewhere.measure", measure("elsewhere", 0))
        allowed = bus.publish(f"{host}.measure", measure(host, 1))
        with pytest.raises(Refused):
            yield refused
        yield allowed
        for seq in range(2, 5):
            yield bus.publish(f"{host}.measure", measure(host, seq))
        assert bus.counters["refused"] == 1 and bus.counters["connections"] == 1
        assert bus.connected
    finally:
        yield bus.stopService()
    bodies = yield amqp.drain(queue)
    assert [wire.decodeMeasure(f"{host}.measure", b).seq for b in bodies] == [1, 2, 3, 4]


@pytest_twisted.inlineCallbacks
def test_a_forged_user_id_is_refused_by_the_broker(broker, amqp, brokerUsers):
    exchange = amqp.names["exchange"]
    yield amqp.declareExchange(exchange)
    host = hostName("web")
    user, url = yield defer.ensureDeferred(brokerUsers(host, exchange))
    forger = yield PlainAMQPClient(url).connect()
    try:
        forger.channel.basic_publish(
            exchange=exchange, routing_key=f"{host}.measure",
            content=Content(measure(host, 0), properties={"user-id": "agent-someone-else"}))
        with pytest.raises(Closed) as refused:
            # A round trip: the broker closed the channel before answering.
            yield forger.channel.exchange_declare(exchange=exchange, type="topic", passive=True)
        assert "PRECONDITION_FAILED" in str(refused.value)
        assert "user_id property set to 'agent-someone-else'" in str(refused.value)
    finally:
        yield forger.close()


@pytest_twisted.inlineCallbacks
def test_with_agent_users_a_host_outside_the_users_patterns_is_forbidden(
        broker, amqp, brokerUsers, twistd, tmp_path):
    exchange, deadLetter = amqp.names["exchange"], amqp.names["deadletter"]
    yield amqp.declareExchange(exchange)
    # The broker lets this user publish any host (topic permission '.*');
    # the analyzer's map lets it speak for web-* only.
    user, url = yield defer.ensureDeferred(brokerUsers("x", exchange, topicWrite=".*"))
    analyzer = yield startAnalyzer(
        twistd, broker, amqp, "--agent-users=" + agentUsersFile(tmp_path, {user: "web-*"}))
    ownHost, otherHost = hostName("web-"), hostName("db-")
    agentClient = yield PlainAMQPClient(url).connect()
    try:
        for seq in range(3):
            for host in (otherHost, ownHost):
                yield agentClient.channel.basic_publish(
                    exchange=exchange, routing_key=f"{host}.measure",
                    content=Content(measure(host, seq), properties={"user-id": user}))
        # The guest user's plain client sets no user_id at all.
        yield amqp.publish(exchange, f"{ownHost}.measure", measure(ownHost, 99))
        yield waitUntil(
            lambda: statsOf(analyzer, rb"3 measures analyzed, \d+ analyses published, "
                                      rb"\d+ redelivered measures not analysed again, "
                                      rb"4 rejected \(forbidden: 4\)"), 30,
            "3 measures analysed and 4 forbidden in the stats line")
    finally:
        yield agentClient.close()
    assert (f"forbidden: broker user {user!r} may speak for web-*, not for {otherHost!r}"
            .encode() in analyzer.output), analyzer.logPath
    assert f"a measure of {ownHost!r} carries no user_id".encode() in analyzer.output
    # Dead-lettered, all four (their x-death headers are beyond the plain client).
    yield waitUntil(lambda: amqp.channel.queue_declare(queue=deadLetter, passive=True).addCallback(
        lambda reply: reply.message_count == 4), 10, "4 forbidden measures dead-lettered")


@pytest_twisted.inlineCallbacks
def test_a_bad_agent_users_file_stops_twistd_with_one_line(broker, twistd, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('agent-web01 = 3\n')
    process = twistd("trust-bad-option", "--role=analyzer", f"--broker={broker}",
                     f"--agent-users={path}").expectUncleanExit()
    yield process.ended
    assert process.exitCode != 0
    assert f"--agent-users: {path}: 'agent-web01' must be a host pattern".encode() in process.output
    assert b"Traceback" not in process.output
