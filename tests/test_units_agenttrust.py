"""
Agents that cannot speak for other hosts, with fakes: the broker's
refusals recognised and said once, the refused messages dropped and the
rest published on a new channel, the C{--agent-users} map, the analyzer's
C{forbidden} rejections, and C{resmon-provision-agent}.
"""

import io

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.python import usage
from twisted.python.failure import Failure

from resmon import wire
from resmon.analysis.builtin.usage import UsageAnalyzer
from resmon.analysis.pipeline import AnalysisPipeline
from resmon.auth.agents import AgentUsersError, hostPatternMatches, loadAgentUsers, parseAgentUsers
from resmon.bus.amqp import AMQPBus, Refused
from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.delivery import Discard
from resmon.bus.refusals import REPEAT_AFTER, RefusalLog, publishRefusal
from resmon.bus.workarounds import CLOSE_HANDLER
from resmon.operations import provision
from resmon.services.analyzer import AnalyzerService
from resmon.tap import Options

from fakebus import FakeBus

BROKER = parseBrokerURL("amqp://agent-web01:secret@rabbit:5672/")
TOPIC_REFUSAL = ("ACCESS_REFUSED - write access to topic 'db01.measure' in exchange 'resmon' "
                 "in vhost '/' refused for user 'agent-web01'")


class Channel:
    def __init__(self, id=1):
        self.id = id
        self.closed = False
        self.published = []
        self.calls = []

    def basic_publish(self, exchange, routing_key, content):
        self.published.append((routing_key, content.properties))
        return defer.succeed(None)

    def channel_open(self):
        self.calls.append("open")
        return defer.succeed(None)

    def confirm_select(self):
        self.calls.append("confirm")
        return defer.succeed(None)


class Client:
    def __init__(self, old):
        self.channels = {old.id: old}
        self.transport = None

    def channel(self, id):
        channel = self.channels.setdefault(id, Channel(id))
        return defer.succeed(channel)


def connectedBus():
    bus = AMQPBus(BROKER, "resmon", Clock())
    events = []
    bus.refusals.log = Logger(observer=events.append)
    bus.running = True
    channel = Channel()
    client = Client(channel)
    bus._handleRefusals(client, channel)
    bus.useConnection(client, channel)
    return bus, client, channel, events


def test_refusals_are_recognised_from_the_brokers_close():
    topic = publishRefusal(403, TOPIC_REFUSAL)
    assert (topic.kind, topic.routingKey) == ("topic", "db01.measure")
    exchange = publishRefusal(403, "ACCESS_REFUSED - access to exchange 'resmon' in vhost '/' "
                                   "refused for user 'agent-web01'")
    assert (exchange.kind, exchange.routingKey) == ("exchange", None)
    userId = publishRefusal(406, "PRECONDITION_FAILED - user_id property set to 'x' but "
                                 "authenticated user was 'agent-web01'")
    assert (userId.kind, userId.routingKey) == ("user_id", None)
    assert publishRefusal(404, "NOT_FOUND - no exchange 'resmon' in vhost '/'") is None
    assert publishRefusal(406, "PRECONDITION_FAILED - inequivalent arg 'durable'") is None
    assert publishRefusal(403, "ACCESS_REFUSED - something else") is None


def test_a_refused_key_is_dropped_counted_said_once_and_the_rest_goes_out_on_a_new_channel():
    bus, client, channel, events = connectedBus()
    results = []
    for key in ("web01.measure", "db01.measure", "web01.measure", "db01.measure"):
        bus.publish(key, b"{}").addCallbacks(lambda _: results.append("ok"),
                                             lambda f: results.append(f.type.__name__))
    assert [k for k, _ in channel.published] == ["web01.measure", "db01.measure"] * 2
    assert all(p["user-id"] == "agent-web01" for _, p in channel.published)
    channel.closed = True
    handled = getattr(channel, CLOSE_HANDLER)(Failure(_AsException(403, TOPIC_REFUSAL)))
    assert handled is True
    assert results == ["Refused", "Refused"]
    assert bus.counters["refused"] == 2
    new = client.channels[1]
    assert new is not channel and new.calls == ["open", "confirm"]
    # The others go out again, first and in order, on the new channel.
    assert [k for k, _ in new.published] == ["web01.measure", "web01.measure"]
    assert bus.outbox.channel is new and bus.topology.checking
    # Refused again: dropped and counted, but said once per REPEAT_AFTER.
    bus.publish("db01.measure", b"{}")
    new.closed = True
    getattr(new, CLOSE_HANDLER)(Failure(_AsException(403, TOPIC_REFUSAL)))
    said = [formatEvent(e) for e in events]
    assert len(said) == 1 and bus.counters["refused"] == 3
    assert said[0].startswith("the broker refused to let user 'agent-web01' publish under routing "
                              "key 'db01.measure' to exchange 'resmon' (ACCESS_REFUSED: a topic "
                              "permission); dropped; check 'rabbitmqctl list_topic_permissions")
    assert said[0].endswith("(2 refused so far)")


def test_another_close_of_the_publish_channel_is_left_to_the_reconnection():
    bus, client, channel, events = connectedBus()
    handler = getattr(channel, CLOSE_HANDLER)
    assert handler(Failure(_AsException(404, "NOT_FOUND - no exchange 'resmon'"))) is False
    assert client.channels[1] is channel and events == []


def test_a_refusal_is_said_again_after_a_while_with_its_count():
    clock, events = Clock(), []
    log = RefusalLog(clock, Logger(observer=events.append))
    refusal = publishRefusal(403, TOPIC_REFUSAL)
    for _ in range(3):
        log.refused(refusal, 1, "u", "resmon", "/")
    clock.advance(REPEAT_AFTER)
    log.refused(refusal, 2, "u", "resmon", "/")
    said = [formatEvent(e) for e in events]
    assert len(said) == 2 and said[1].endswith("(5 refused so far)")


class _AsException(Exception):
    """
    What txAMQP's channel close carries: an object with the reply code and
    text (here an exception, so that a L{Failure} can hold it).
    """

    def __init__(self, code, text):
        Exception.__init__(self, text)
        self.reply_code = code
        self.reply_text = text


def test_host_patterns():
    assert hostPatternMatches("web01", "web01")
    assert hostPatternMatches("web-*", "web-02") and not hostPatternMatches("web-*", "db-02")
    assert hostPatternMatches("*", "anything") and hostPatternMatches("#", "any.thing")
    assert not hostPatternMatches("web01", "web011")


def test_the_agent_users_file(tmp_path):
    users = parseAgentUsers('agent-web01 = "web01"\nagent-web = ["web-*", "www"]\n', "f")
    assert users.maySpeakFor("agent-web01", "web01")
    assert not users.maySpeakFor("agent-web01", "web02")
    assert users.maySpeakFor("agent-web", "web-9") and users.maySpeakFor("agent-web", "www")
    assert not users.maySpeakFor(None, "web01") and not users.maySpeakFor("nobody", "web01")
    assert users.whyNot("agent-web01", "db01") == (
        "broker user 'agent-web01' may speak for web01, not for 'db01'")
    assert "not in --agent-users" in users.whyNot("nobody", "db01")
    assert "carries no user_id" in users.whyNot(None, "db01")
    for text, message in [("a = 3", "'a' must be a host pattern"), ("a = []", "must be"),
                          ("a = [\"\"]", "must be"), ("", "no broker user"),
                          ("a = ", "not valid TOML")]:
        with pytest.raises(AgentUsersError, match=message):
            parseAgentUsers(text, "f")
    with pytest.raises(AgentUsersError, match="cannot read"):
        loadAgentUsers(str(tmp_path / "missing.toml"))


def test_the_option_is_read_at_start_and_refused_in_one_line(tmp_path):
    good = tmp_path / "users.toml"
    good.write_text('agent-web01 = "web01"\n')
    options = Options()
    options.parseOptions(["--role=analyzer", f"--agent-users={good}"])
    assert options["agent-users-map"].maySpeakFor("agent-web01", "web01")
    bad = tmp_path / "bad.toml"
    bad.write_text("agent-web01 = 3\n")
    with pytest.raises(SystemExit, match=r"--agent-users: .*'agent-web01' must be a host pattern"):
        Options().parseOptions(["--role=analyzer", f"--agent-users={bad}"])
    with pytest.raises(SystemExit, match="--agent-users: needs a --broker"):
        Options().parseOptions(["--role=standalone", f"--agent-users={good}"])
    with pytest.raises(SystemExit, match="--agent-users: means nothing for --role=agent"):
        Options().parseOptions(["--role=agent", f"--agent-users={good}"])


def analyzer(**kwargs):
    usage = UsageAnalyzer()
    usage.configure({})
    bus, clock, events = FakeBus(), Clock(), []
    clock.advance(10**6)
    service = AnalyzerService(bus, AnalysisPipeline([usage]), clock, **kwargs)
    service.log = Logger(observer=events.append)
    return service, bus, events


def measure(host):
    return wire.encodeMeasure(host, 0, 1000.0, 1.0, {"cpu": {"percent": 5.0}})


def test_the_analyzer_rejects_a_measure_its_publisher_may_not_speak_for():
    users = parseAgentUsers('agent-web = "web-*"\n')
    service, bus, events = analyzer(agentUsers=users, deadLetter="dl")
    service.startService()
    assert bus.last.options["publisher"] is True
    handler = bus.last.handler
    handler("web-1.measure", measure("web-1"), "agent-web")
    with pytest.raises(Discard):
        handler("db-1.measure", measure("db-1"), "agent-web")
    with pytest.raises(Discard):
        handler("web-1.measure", measure("web-1"), None)
    assert service.counters["analyzed"] == 1 and service.rejected == {"forbidden": 2}
    said = [formatEvent(e) for e in events]
    assert ("rejected a message under db-1.measure: forbidden: broker user 'agent-web' may speak "
            "for web-*, not for 'db-1' (1 for this reason)") in said
    service.stopService()


def test_without_agent_users_the_analyzer_does_not_ask_for_the_publisher():
    service, bus, _ = analyzer()
    service.startService()
    assert bus.last.options["publisher"] is False
    service.stopService()


def test_provision_prints_the_commands_and_how_to_use_the_user():
    out = io.StringIO()
    assert provision.main(["web01", "--broker-host=mq", "--exchange=ex"], stdout=out) == 0
    text = out.getvalue()
    commandLines = [line for line in text.splitlines() if line.startswith("rabbitmqctl")]
    password = commandLines[0].split()[-1]
    assert len(password) >= 24
    assert commandLines == [
        f"rabbitmqctl add_user -- agent-web01 {password}",
        "rabbitmqctl set_permissions -p / -- agent-web01 '^$' '^ex$' '^$'",
        "rabbitmqctl set_topic_permissions -p / -- agent-web01 ex '^web01\\.measure$' '^$'"]
    assert f"--broker=amqp://agent-web01:{password}@mq:5672/" in text
    assert '#   agent-web01 = "web01"' in text


def test_a_generated_password_never_begins_with_a_dash():
    tokens = iter(["-first", "-second", "third-"])
    assert provision.generatedPassword(lambda size: next(tokens)) == "third-"
    assert not any(provision.generatedPassword().startswith("-") for _ in range(500))


def test_provision_prompts_for_the_password_and_escapes_names():
    out = io.StringIO()
    answers = iter(["p@ss word", "p@ss word"])
    assert provision.main(["web.01", "--prompt-password", "--vhost=prod", "--user=a b"],
                          stdout=out, prompt=lambda _: next(answers)) == 0
    text = out.getvalue()
    assert "rabbitmqctl add_user -- 'a b' 'p@ss word'" in text
    assert "rabbitmqctl set_topic_permissions -p prod -- 'a b' resmon '^web_01\\.measure$' '^$'" in text
    assert "amqp://a%20b:p%40ss%20word@BROKER-HOST:5672/prod" in text
    differing = iter(["one", "two"])
    assert provision.main(["web01", "--prompt-password"], stdout=io.StringIO(),
                          prompt=lambda _: next(differing)) == 2


def test_liveness_keeps_no_host_alive_on_a_forbidden_measure():
    from resmon.services.liveness import HostLiveness
    bus, clock = FakeBus(), Clock()
    clock.advance(10**6)
    liveness = HostLiveness(bus, clock, agentUsers=parseAgentUsers('agent-web = "web-*"\n'))
    liveness.startService()
    try:
        measures = [s for s in bus.made if "#.measure" in s.patterns]
        assert measures[0].options["publisher"] is True
        handler = measures[0].handler
        handler("db-1.measure", measure("db-1"), "agent-web")
        handler("web-2.measure", measure("web-2"), None)
        handler("web-1.measure", measure("web-1"), "agent-web")
        assert set(liveness.hosts) == {"web-1"}
    finally:
        liveness.stopService()
