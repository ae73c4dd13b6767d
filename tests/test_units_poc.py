"""
Unit tests of what lets resmon share an exchange with the proof of concept:
joining an existing exchange (L{resmon.bus.exchange}), the top-level
C{cpu_percentage} of measures and the web's acceptance of the proof of
concept's analyses (L{resmon.wire}).
"""

import json
from itertools import count

import pytest
from twisted.internet import defer
from txamqp.client import ChannelClosed

from resmon import wire
from resmon.bus import exchange
from resmon.bus.exchange import DECLARED, JOINED, ExchangeUnusable, joinExchange
from resmon.webserver.fanout import EventFanout


class _Close:
    """
    What txAMQP puts in a L{ChannelClosed}: the broker's channel.close.
    """

    def __init__(self, code, text):
        self.reply_code = code
        self.reply_text = text


class _Broker:
    """
    A broker holding at most one exchange, with RabbitMQ's rules for
    declaring it: passive needs it, active needs the same type, then
    durability, then auto-delete.
    """

    def __init__(self, existing=None):
        self.existing = existing  # {"type", "durable", "auto_delete"} or None
        self.declared = []
        self.channels = {}

    def channel(self, channelId):
        assert channelId not in self.channels, "a channel number used twice"
        self.channels[channelId] = _Channel(self)
        return defer.succeed(self.channels[channelId])


class _Channel:
    id = 2

    def __init__(self, broker):
        self.broker = broker
        self.open = False

    def channel_open(self):
        self.open = True
        return defer.succeed(None)

    def channel_close(self):
        self.open = False
        return defer.succeed(None)

    def exchange_declare(self, exchange, type, passive=False, durable=False, auto_delete=False):
        assert self.open and getattr(self, "probing", False)
        broker = self.broker
        broker.declared.append((exchange, type, passive, durable))
        if broker.existing is None:
            if passive:
                return self._refuse(404, f"NOT_FOUND - no exchange '{exchange}' in vhost '/'")
            broker.existing = {"type": type, "durable": durable, "auto_delete": auto_delete}
            return defer.succeed(None)
        if passive:
            return defer.succeed(None)
        for arg, asked in (("type", type), ("durable", durable), ("auto_delete", auto_delete)):
            current = broker.existing[arg]
            if current != asked:
                text = lambda v: v if isinstance(v, str) else str(v).lower()  # noqa: E731
                return self._refuse(406, (
                    f"PRECONDITION_FAILED - inequivalent arg '{arg}' for exchange '{exchange}' in "
                    f"vhost '/': received '{text(asked)}' but current is '{text(current)}'"))
        return defer.succeed(None)

    def _refuse(self, code, text):
        self.open = False
        return defer.fail(ChannelClosed(_Close(code, text)))


def _join(broker, durable=True):
    return joinExchange(broker, count(2), "my_exchange", durable)


@pytest.mark.parametrize("durable", [True, False])
def test_a_missing_exchange_is_declared_as_configured(durable):
    broker = _Broker()
    assert _join(broker, durable).result == DECLARED
    assert broker.existing == {"type": "topic", "durable": durable, "auto_delete": False}
    assert broker.declared[0] == ("my_exchange", "topic", True, False)  # passive first


@pytest.mark.parametrize("existing", [
    {"type": "topic", "durable": False, "auto_delete": False},  # the proof of concept's
    {"type": "topic", "durable": True, "auto_delete": False},
    {"type": "topic", "durable": False, "auto_delete": True},
    {"type": "topic", "durable": True, "auto_delete": True},
])
def test_an_existing_topic_exchange_is_used_as_it_is(existing):
    broker = _Broker(dict(existing))
    assert _join(broker, durable=True).result == JOINED
    assert broker.existing == existing


@pytest.mark.parametrize("durable", [True, False])
def test_an_exchange_of_another_type_is_one_clear_error(durable):
    broker = _Broker({"type": "direct", "durable": not durable, "auto_delete": False})
    failure = _join(broker, durable)
    error = failure.result.value
    failure.addErrback(lambda f: None)
    assert isinstance(error, ExchangeUnusable)
    assert str(error) == ("exchange 'my_exchange' cannot be used: resmon expected type 'topic', "
                          "the broker has type 'direct'")


def test_an_existing_exchange_a_user_may_not_declare_is_used_unchecked():
    class Refusing(_Channel):
        def exchange_declare(self, exchange, type, passive=False, durable=False):
            if passive:
                return defer.succeed(None)
            return self._refuse(403, "ACCESS_REFUSED - access to exchange 'my_exchange' refused")
    broker = _Broker()
    broker.channel = lambda channelId: defer.succeed(Refusing(broker))
    assert _join(broker).result == JOINED


def test_a_missing_exchange_a_user_may_not_declare_is_an_error():
    class Refusing(_Channel):
        def exchange_declare(self, exchange, type, passive=False, durable=False):
            if passive:
                return self._refuse(404, "NOT_FOUND - no exchange")
            return self._refuse(403, "ACCESS_REFUSED - access to exchange 'my_exchange' refused")
    broker = _Broker()
    broker.channel = lambda channelId: defer.succeed(Refusing(broker))
    failure = _join(broker)
    error = failure.result.value
    failure.addErrback(lambda f: None)
    assert isinstance(error, ChannelClosed) and "ACCESS_REFUSED" in str(error)


def test_a_refusal_other_than_not_found_is_raised_as_it_is():
    class Refusing(_Channel):
        def exchange_declare(self, **arguments):
            return self._refuse(403, "ACCESS_REFUSED - no configure permission")

    class Broker(_Broker):
        def channel(self, channelId):
            return defer.succeed(Refusing(self))
    failure = _join(Broker())
    error = failure.result.value
    failure.addErrback(lambda f: None)
    assert isinstance(error, ChannelClosed) and "ACCESS_REFUSED" in str(error)


def test_a_probe_channel_refused_by_the_broker_does_not_drop_the_connection():
    from twisted.internet.task import Clock
    from twisted.python.failure import Failure

    from resmon.bus.amqp import AMQPBus
    from resmon.bus.brokerurl import parseBrokerURL
    from resmon.bus.connection import Delegate, ResmonAMQClient

    class Transport:
        lost = 0

        def loseConnection(self):
            self.lost += 1
    bus = AMQPBus(parseBrokerURL("amqp://localhost/"), "ex", Clock(), exchangeDurable=False)
    assert bus.exchangeDurable is False
    client = ResmonAMQClient(Delegate(bus.outbox, bus.consumers), "/", bus.spec)
    client.transport = Transport()
    probe = _Channel(None)
    setattr(probe, exchange.PROBING, True)
    client.channel_failed(probe, Failure(RuntimeError("NOT_FOUND")))
    assert client.transport.lost == 0
    client.channel_failed(_Channel(None), Failure(RuntimeError("NOT_FOUND")))
    assert client.transport.lost == 1


def test_measures_carry_the_total_cpu_at_top_level_for_a_poc_analyzer():
    body = wire.encodeMeasure("h", 0, 1.0, 1.0, {"cpu": {"percent": 42.5}, "memory": {"percent": 1}})
    document = json.loads(body)
    assert document["cpu_percentage"] == 42.5
    assert wire.decodeMeasure("h.measure", body).metrics["cpu"]["percent"] == 42.5
    assert "cpu_percentage" not in json.loads(wire.encodeMeasure("h", 0, 1.0, 1.0, {}))


@pytest.mark.parametrize("level", wire.LEVELS)
def test_a_poc_analysis_becomes_a_v1_analysis_of_the_routing_keys_host(level):
    document = wire.decodeLegacyAnalysis("poc-host.analysis", json.dumps({"cpu_result": level}).encode(), 7.0)
    assert document == {
        "v": 1, "kind": "analysis", "host": "poc-host", "seq": None, "ts": None, "interval": None,
        "analyzed_at": 7.0, "analyzer": "legacy", "legacy": True, "level": level,
        "levels": {"cpu": level}, "cpu_result": level, "analyses": {}, "metrics": {}}


@pytest.mark.parametrize("key, body, reason", [
    ("h.analysis", b'{"cpu_result": "SEVERE"}', "version"),
    ("h.analysis", b'{"cpu_result": "LOW", "x": 1}', "version"),
    ("h.analysis", b'{"cpu_result": null}', "version"),
    ("h.analysis", b'{"level": "LOW"}', "version"),
    ("h.analysis", b'{}', "version"),
    ("h.status", b'{"cpu_result": "LOW"}', "version"),
    ("h.analysis", b'{"v": 2, "cpu_result": "LOW"}', "version"),
    ("h.analysis", b'[1]', "shape"),
])
def test_anything_else_without_v_is_still_rejected_and_counted(key, body, reason):
    fanout = EventFanout()
    fanout.eventReceived(key, body)
    assert dict(fanout.rejected) == {reason: 1}
    assert fanout.latest.get("h") is None


def test_the_web_keeps_and_sends_a_poc_analysis_in_v1_form():
    from twisted.internet.task import Clock
    from resmon.webserver.history import FleetHistory
    clock = Clock()
    clock.advance(1000)
    sent = []

    class Client:
        def sendEvent(self, document, body):
            sent.append((document, json.loads(body)))
    fanout = EventFanout(clock=clock, history=FleetHistory(clock))
    fanout.attach(Client())
    fanout.eventReceived("poc-host.analysis", b'{"cpu_result": "HIGH"}')
    fanout.eventReceived("poc-host.analysis", b'{"cpu_result": "LOW"}')
    assert not fanout.rejected
    assert [body["level"] for _, body in sent] == ["HIGH", "LOW"]
    assert all(body["legacy"] is True and body["host"] == "poc-host" for _, body in sent)
    assert fanout.latest.get("poc-host")["cpu_result"] == "LOW"
    assert json.loads(fanout.latest.body("poc-host"))["analyzed_at"] == 1000


def test_the_exchange_durable_option_is_yes_or_no_and_reaches_the_bus():
    from twisted.internet.task import Clock

    from resmon.tap import Options, _makeBus
    for value, durable in (("yes", True), ("no", False)):
        options = Options()
        options.parseOptions(["--role=agent", f"--exchange-durable={value}"])
        assert _makeBus(options, Clock()).exchangeDurable is durable
    options = Options()
    options.parseOptions(["--role=agent"])
    assert options["exchange-durable"] == "yes"
    with pytest.raises(SystemExit, match="--exchange-durable: must be yes or no"):
        Options().parseOptions(["--role=agent", "--exchange-durable=maybe"])
