"""
AMQP properties and header tables on the real broker, into a real
C{--role=server}: every field type pika and other clients send is decoded
and the message analyzed; a header table nested thousands deep, one of
thousands of entries, or properties that cannot be decoded are rejected,
counted under C{properties} and dead-lettered, on one connection (no
reconnect loop), and after each the pipeline flows: a new host's measure is
analyzed by the analyzer, judged online by liveness, and both reach a
WebSocket client of the web role.
"""

import json
import re
from decimal import Decimal

import pytest_twisted
from twisted.internet import defer

from amqpfields import Field, Raw, contentHeader, nestedTable, shortstr
from support import connectWebSocket, freePort

# Every field type of AMQP 0-9-1 with RabbitMQ's errata, as clients send them.
FIELD_TYPES = {
    "A": [1, "two", None, [3.5, {"in": "table"}]],
    "l": 2 ** 40,
    "l-negative": Field("l", -2 ** 62),
    "V": None,
    "d": 0.1,
    "f": Field("f", 0.5),
    "T": Field("T", 1_700_000_000),
    "D": Decimal("12.345"),
    "b": Field("b", -7),
    "B": Field("B", 250),
    "s": Field("s", -30000),
    "u": Field("u", 65000),
    "I": -5,
    "i": Field("i", 2 ** 32 - 1),
    "t": True,
    "S": "text é",
    "S-binary": Field("S", b"\xff\xfe"),
    "x": b"\x00\xffbytes",
    "F": {"nested": {"deeper": {"x": 1}}},
    "x-death": [{"count": 1, "reason": "rejected", "queue": "q", "time": Field("T", 1),
                 "exchange": "e", "routing-keys": ["h.measure"]}],
}


def goodMeasure(host, seq=1):
    return json.dumps({"v": 1, "host": host, "seq": seq, "ts": 1000.0 + seq, "interval": 1.0,
                       "metrics": {"cpu": {"percent": 50.0, "per_core": [50.0]}}}).encode()


class Server:
    """
    A real C{--role=server} with a WebSocket client, and what a test needs
    to drive it.
    """

    def __init__(self, broker, amqp, twistd, label):
        self.amqp = amqp
        self.exchange = amqp.names["exchange"]
        self.deadLetter = amqp.names["deadletter"]
        self.port = freePort()
        self.process = twistd(label, "--role=server", f"--broker={broker}",
                              f"--exchange={self.exchange}", f"--queue={amqp.names['queue']}",
                              f"--dead-letter-queue={self.deadLetter}", f"--port={self.port}",
                              "--interface=127.0.0.1", "--stats-interval=1")
        self.client = None

    @defer.inlineCallbacks
    def start(self):
        # Logged once every subscription consumes.
        yield self.process.waitForOutput(b"connected to ")
        self.client, _ = yield connectWebSocket(self.port)
        return self

    def publish(self, routingKey, body, properties):
        return self.amqp.publishRaw(self.exchange, routingKey, body,
                                    contentHeader(len(body), properties))

    @defer.inlineCallbacks
    def assertFlows(self, host, what):
        """
        A plain measure of a new host is analyzed and judged online, and
        both reach the WebSocket client.
        """
        yield self.publish(f"{host}.measure", goodMeasure(host), {})
        yield self.client.waitFor(
            lambda m: m.get("kind") == "analysis" and m.get("host") == host, 20,
            f"the analysis of {host}, after {what}")
        yield self.client.waitFor(
            lambda m: m.get("kind") == "status" and m.get("host") == host
            and m.get("status") == "online", 20, f"{host} online, after {what}")

    @defer.inlineCallbacks
    def assertRejected(self, analyzer, web=0, reason=b"properties"):
        """
        The analyzer's and the web's stats lines count C{analyzer} and
        C{web} messages rejected for C{reason} (and nothing else), the
        dead-letter queue holds the analyzer's, and the process never lost
        its one connection.
        """
        yield self.assertStats(b"measures analyzed", reason, analyzer)
        yield self.assertStats(b"events received", reason, web)
        reply = yield self.amqp.channel.queue_declare(queue=self.deadLetter, passive=True)
        assert reply.message_count == analyzer
        self.assertOneConnection()

    @defer.inlineCallbacks
    def assertStats(self, marker, reason, count):
        """
        Wait for a stats line (the lines holding C{marker}) saying C{count}
        rejected for C{reason} only, then for the next one, which must say
        the same: the count has settled.
        """
        expected = b"%d rejected (%s)" % (count, b"%s: %d" % (reason, count) if count else b"none")
        yield self.process.waitForOutput(expected, timeout=20)
        lines = [line for line in self.process.output.splitlines() if marker in line]
        yield self.process.waitForOutputCount(marker, len(lines) + 1, timeout=10)
        last = [line for line in self.process.output.splitlines() if marker in line][-1]
        assert expected in last, last

    def assertOneConnection(self):
        output = self.process.output
        assert output.count(b"connected to ") == 1, "the server reconnected"
        assert b"lost the connection" not in output
        assert b"Traceback" not in output and not self.process.ended_


@pytest_twisted.inlineCallbacks
def test_a_header_table_nested_3000_deep_is_dead_lettered_and_the_pipeline_flows(broker, amqp, twistd):
    server = yield Server(broker, amqp, twistd, "properties-deep").start()
    # 21 KB: refused from the frame's size, before decoding.
    yield server.publish("deep.measure", goodMeasure("deep"), {"headers": nestedTable(3000)})
    yield server.assertFlows("after-deep", "a header table 3000 deep")
    # 14 KB: refused at depth 9, the rest never decoded.
    yield server.publish("deep2.measure", goodMeasure("deep2"), {"headers": nestedTable(2000)})
    yield server.assertFlows("after-deep2", "a header table 2000 deep")
    yield server.assertRejected(analyzer=2)
    output = server.process.output
    assert re.search(rb"rejected a message under deep\.measure from #\.measure: properties: "
                     rb"20999 bytes of properties, over 16384 .*dead-lettered", output)
    assert re.search(rb"rejected a message under deep2\.measure from #\.measure: properties: "
                     rb"header tables nested deeper than 8 .*dead-lettered", output)
    # Refused on the liveness queue too, which the measure also reached.
    assert re.search(rb"rejected a message under deep\.measure from #\.measure,\S+-tick: properties",
                     output)
    assert not [m for m in server.client.messages if m.get("host") in ("deep", "deep2")]


@pytest_twisted.inlineCallbacks
def test_a_header_table_of_5000_entries_is_dead_lettered_and_the_pipeline_flows(broker, amqp, twistd):
    server = yield Server(broker, amqp, twistd, "properties-huge").start()
    headers = {f"k{i}": i for i in range(5000)}
    yield server.publish("huge.measure", goodMeasure("huge"), {"headers": headers})
    yield server.assertFlows("after-huge", "a header table of 5000 entries")
    # Few bytes but too many fields: refused while decoding, at the first field over.
    yield server.publish("many.measure", goodMeasure("many"),
                         {"headers": {f"{i}": None for i in range(200)}})
    yield server.assertFlows("after-many", "a header table of 200 fields")
    yield server.assertRejected(analyzer=2)
    assert b"bytes of properties, over 16384" in server.process.output
    assert b"header tables with more than 128 fields" in server.process.output


@pytest_twisted.inlineCallbacks
def test_every_header_field_type_clients_send_is_decoded_and_the_measure_analyzed(
        broker, amqp, twistd):
    server = yield Server(broker, amqp, twistd, "properties-types").start()
    for index, (name, value) in enumerate(FIELD_TYPES.items()):
        host = f"typed-{index}"
        yield server.publish(f"{host}.measure", goodMeasure(host),
                             {"headers": {"a": "before", name: value, "z": 1}})
        yield server.client.waitFor(
            lambda m, host=host: m.get("kind") == "analysis" and m.get("host") == host, 20,
            f"the analysis of a measure with a header of type {name}")
        yield server.assertFlows(f"after-{index}", f"a header of type {name}")
    # All of them in one table, and each as the item of an array.
    everything = dict(FIELD_TYPES)
    yield server.publish("all.measure", goodMeasure("all"),
                         {"headers": dict(everything, array=list(everything.values()))})
    yield server.assertFlows("all", "every field type at once")
    yield server.assertRejected(analyzer=0)
    assert b"properties" not in server.process.output


# Property values a client may send that decode: analyzed like any measure
# (RabbitMQ itself refuses a delivery-mode other than 1 or 2).
ODD_BUT_DECODABLE = [
    {"priority": 255, "delivery-mode": 1, "timestamp": 2 ** 64 - 1},
    {"delivery-mode": 2, "timestamp": 0, "content-type": "", "message-id": ""},
    {"content-type": "x" * 255, "app-id": "é" * 127, "type": "\u2603", "reply-to": "q",
     "correlation-id": "c", "content-encoding": "gzip", "reserved": "r"},
    {"headers": {}},
    {"headers": {"": "empty key", "bin": Field("S", b"\x80\x81 not utf-8")}},
]

# Property values that do not decode: rejected, counted and dead-lettered.
UNDECODABLE = [
    {"content-type": Raw(shortstr(b"\xff\xfe text/plain"))},
    {"message-id": Raw(shortstr(b"id-\xc3"))},
    {"headers": {b"\xffkey": 1}},
    {"headers": {"deep": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}}},
    {"headers": {"arrays": [[[[[[[[1]]]]]]]]}},
]


@pytest_twisted.inlineCallbacks
def test_odd_property_values_are_analyzed_or_dead_lettered_and_the_pipeline_flows(
        broker, amqp, twistd):
    server = yield Server(broker, amqp, twistd, "properties-odd").start()
    for index, properties in enumerate(ODD_BUT_DECODABLE):
        host = f"odd-{index}"
        yield server.publish(f"{host}.measure", goodMeasure(host), properties)
        yield server.assertFlows(host, f"properties {properties!r}")
    for index, properties in enumerate(UNDECODABLE):
        yield server.publish(f"bad-{index}.measure", goodMeasure(f"bad-{index}"), properties)
        yield server.assertFlows(f"after-bad-{index}", f"properties {properties!r}")
    yield server.assertRejected(analyzer=len(UNDECODABLE))
    assert not [m for m in server.client.messages if str(m.get("host")).startswith("bad-")]


@pytest_twisted.inlineCallbacks
def test_the_web_role_rejects_and_counts_events_whose_headers_do_not_decode(broker, amqp, twistd):
    server = yield Server(broker, amqp, twistd, "properties-web").start()
    event = json.dumps({"v": 1, "kind": "status", "host": "w", "status": "online", "since": 1.0,
                        "last_seen": 1.0, "seq": 1}).encode()
    yield server.publish("w.status", event, {"headers": nestedTable(3000)})
    yield server.publish("w.analysis", event, {"headers": {f"k{i}": i for i in range(5000)}})
    yield server.assertFlows("after-web", "undecodable events for the web role")
    yield server.assertRejected(analyzer=0, web=2)
    assert not [m for m in server.client.messages if m.get("host") == "w"]


@pytest_twisted.inlineCallbacks
def test_a_routing_key_that_is_not_utf8_is_rejected_by_every_consumer(broker, amqp, twistd):
    server = yield Server(broker, amqp, twistd, "properties-routing-key").start()
    for index, key in enumerate((b"\xff.measure", b"\xc3.analysis", b"h\xfe.status")):
        body = goodMeasure("h")
        yield server.amqp.publishRaw(server.exchange, key, body, contentHeader(len(body), {}))
        yield server.assertFlows(f"after-key-{index}", f"the routing key {key!r}")
    # The analyzer: the measure; the web: the analysis and the status.
    yield server.assertRejected(analyzer=1, web=2, reason=b"routing-key")
    assert rb"rejected a message under \xff.measure from #.measure: routing-key: not UTF-8" \
        in server.process.output
    server.assertOneConnection()
