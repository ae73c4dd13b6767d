"""
Junk on the bus: ten thousand generated bad messages, interleaved with good
ones, into a real server on the real broker. Every good measure is analyzed,
every bad one rejected, counted by reason and dead-lettered, nothing crashes.
(The server's memory under this stream: bench/badinput_memory.py.)
"""

import json
import random
import re
import string
from collections import Counter

import pytest_twisted
from twisted.internet import defer, reactor

from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.amqp import AMQPBus
from support import connectWebSocket, freePort, subscriptionsReady, withTimeout

BAD_PER_ROUND = 5000
GOOD_EVERY = 50


def badMessageMakers(rng):
    """
    Functions, each returning a C{(routingKey, body, reason)} that the
    analyzer must reject for C{reason}, together covering every way a
    measure can be wrong; C{rng} varies the details.
    """
    good = {"v": 1, "host": "h", "seq": 1, "ts": 1.0, "interval": 1.0,
            "metrics": {"cpu": {"percent": 1.0}}}

    def mutated(**changes):
        document = json.loads(json.dumps(good))
        document.update(changes)
        return json.dumps(document).encode()

    def junk(alphabet, length):
        return "".join(rng.choice(alphabet) for _ in range(length)).encode()

    return [
        # Random bytes with a byte that is never UTF-8 in them.
        lambda: ("h.measure", bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64))) + b"\xff{", "encoding"),
        lambda: ("h.measure", junk(string.ascii_letters + ' :,"', rng.randint(0, 64)) + b"{", "json"),
        lambda: ("h.measure", b'{"cpu_percentage": "\xff\xfe"}', "encoding"),
        lambda: ("h.measure", b"", "empty"),
        lambda: ("h.measure", b"[" * 5000 + b"]" * 5000, "too-deep"),
        lambda: ("h.measure", b'{"cpu_percentage": NaN}', "non-finite"),
        lambda: ("h.measure", b'{"cpu_percentage": -Infinity}', "non-finite"),
        lambda: ("h.measure", b'{"cpu_percentage": 1e400}', "non-finite"),
        lambda: ("h.measure", b'{"cpu_percentage": 1' + b"0" * 5000 + b"}", "json"),
        lambda: ("h.measure", b'{"cpu_percentage": %d}' % rng.randint(101, 10**9), "range"),
        lambda: ("h.measure", mutated(seq=str(rng.random())), "type"),
        lambda: ("h.measure", mutated(host=rng.randint(0, 9)), "type"),
        lambda: ("h.measure", mutated(metrics=[]), "type"),
        lambda: ("h.measure", mutated(metrics={"cpu": {"percent": rng.choice([-1, 100.5])}}), "range"),
        lambda: ("h.measure", mutated(metrics={"cpu": {"percent": rng.choice(["5", None])}}), "type"),
        lambda: ("h.measure", mutated(v=rng.randint(2, 99)), "version"),
        lambda: ("h.measure", mutated(interval=rng.choice([0, 0.0, -1, -1e-9])), "range"),
        lambda: ("h.measure", mutated(kind=rng.choice(["analysis", "status", ""])), "kind"),
        lambda: ("h.measure", b"[%d]" % rng.randint(0, 9), "shape"),
        lambda: ("a.b.c.measure", mutated(), "routing-key"),
        lambda: (".measure", mutated(), "routing-key"),
        lambda: ("measure", mutated(), "routing-key"),
        lambda: ("h.measure", mutated(host="hôte-" + chr(rng.randint(0x100, 0x2FFF))), "routing-key"),
        lambda: ("h.measure", mutated(**{"metrics": {"load": [1] * rng.randint(4, 9)}}), "type"),
    ]


HUGE = ("h.measure", b'{"cpu_percentage": 1, "x": "' + b"x" * (10 * 1024 * 1024) + b'"}', "too-large")


def badMessages(rng, count, huge=False):
    """
    A seeded stream of C{count} C{(routingKey, body, reason)}, drawn from
    L{badMessageMakers}; the first one is L{HUGE} if C{huge}.
    """
    makers = badMessageMakers(rng)
    if huge:
        yield HUGE
        count -= 1
    for _ in range(count):
        yield rng.choice(makers)()


def goodMeasure(host, seq):
    return json.dumps({"v": 1, "host": host, "seq": seq, "ts": 1000.0 + seq, "interval": 1.0,
                       "metrics": {"cpu": {"percent": 50.0, "per_core": [50.0]}}}).encode()


@pytest_twisted.inlineCallbacks
def test_ten_thousand_bad_messages_are_rejected_counted_and_dead_lettered(broker, amqp, twistd):
    exchange, deadLetter = amqp.names["exchange"], amqp.names["deadletter"]
    port = freePort()
    server = twistd("badinput-server", "--role=server", f"--broker={broker}",
                    f"--exchange={exchange}", f"--queue={amqp.names['queue']}",
                    f"--dead-letter-queue={deadLetter}", f"--port={port}",
                    "--interface=127.0.0.1", "--stats-interval=1")
    yield server.waitForOutput(b"consuming #.measure")
    yield server.waitForOutput(b"consuming #.analysis")
    client, _ = yield connectWebSocket(port)

    analyses = {}
    listener = AMQPBus(parseBrokerURL(broker), exchange, reactor)
    listener.subscribe(["#.analysis"], lambda key, body: _record(analyses, key, body))
    listener.startService()
    rng = random.Random(20261123)
    sent = {"good": 0, "bad": 0}
    reasons = Counter()
    try:
        yield subscriptionsReady(listener)
        for round in range(2):
            for key, body, reason in badMessages(rng, BAD_PER_ROUND, huge=round == 0):
                yield amqp.publish(exchange, key, body)
                sent["bad"] += 1
                reasons[reason] += 1
                if sent["bad"] % GOOD_EVERY == 0:
                    seq = sent["good"]
                    yield amqp.publish(exchange, f"good-{seq % 7}.measure", goodMeasure(f"good-{seq % 7}", seq))
                    sent["good"] += 1
                if sent["bad"] % 300 == 0:
                    # Junk for the web role too, on the analysis and status keys.
                    yield amqp.publish(exchange, "junk.analysis", b'{"v": 1, "kind": "analysis"}')
                    yield amqp.publish(exchange, "junk.status", b"\x00" * 100)
            yield server.waitForOutput(f"not analysed again, {sent['bad']} rejected (".encode(), timeout=60)
            yield withTimeout(_until(lambda: len(analyses) == sent["good"]), 30,
                              f"{sent['good']} analyses of good measures")
    finally:
        yield listener.stopService()

    assert sorted(seq for _, seq in analyses) == list(range(sent["good"]))
    # The web role still pushes to its clients.
    last = sent["good"] - 1
    yield client.waitFor(lambda m: m.get("seq") == last, 10, "the last good analysis on the WebSocket")
    # Every bad one is dead-lettered (the queue keeps the newest 10000).
    reply = yield amqp.channel.queue_declare(queue=deadLetter, passive=True)
    assert reply.message_count == min(sent["bad"], 10000)
    # Counted by reason in the stats line: as many of each reason as were sent.
    [counted] = re.findall(rb"not analysed again, %d rejected \(([^)]*)\)" % sent["bad"], server.output)[-1:]
    assert counted.decode() == ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
    assert set(reasons) == {"encoding", "empty", "too-deep", "non-finite", "json", "range", "type",
                            "version", "kind", "shape", "routing-key", "too-large"}, reasons
    assert not server.ended_ and b"Traceback" not in server.output


def _record(analyses, key, body):
    if key == "junk.analysis":  # the test's own junk for the web role
        return
    document = json.loads(body)
    analyses[(document["host"], document["seq"])] = document


@defer.inlineCallbacks
def _until(condition):
    from twisted.internet import task
    while not condition():
        yield task.deferLater(reactor, 0.02, lambda: None)


REJECTION_LOGGED = b"] rejected a message under "


@pytest_twisted.inlineCallbacks
def test_each_bad_message_is_rejected_for_its_own_reason(broker, amqp, twistd):
    """
    One bad message at a time, each one's rejection is logged with its own
    reason and counted for it (the first ten of a reason are all logged).
    """
    exchange = amqp.names["exchange"]
    analyzer = twistd("badinput-each", "--role=analyzer", f"--broker={broker}",
                      f"--exchange={exchange}", f"--queue={amqp.names['queue']}",
                      "--dead-letter-queue=")
    yield analyzer.waitForOutput(b"consuming #.measure")
    rng = random.Random(20261202)
    messages = [HUGE] + [make() for make in badMessageMakers(rng) for _ in range(2)]
    perReason = Counter()
    for number, (key, body, reason) in enumerate(messages, 1):
        yield amqp.publish(exchange, key, body)
        perReason[reason] += 1
        assert perReason[reason] <= 10, f"only the first ten rejections of {reason} are logged"
        yield analyzer.waitForOutputCount(REJECTION_LOGGED, number, timeout=10)
        line = [line for line in analyzer.output.splitlines() if REJECTION_LOGGED in line][-1].decode()
        assert f"{REJECTION_LOGGED.decode()}{key}: {reason}: " in line, (body[:100], line)
        assert line.endswith(f"({perReason[reason]} for this reason)"), (body[:100], line)
    yield analyzer.stop()
    counted = ", ".join(f"{k}: {v}" for k, v in sorted(perReason.items()))
    assert f"{len(messages)} rejected ({counted})".encode() in analyzer.output
    assert b"Traceback" not in analyzer.output
