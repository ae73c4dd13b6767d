"""
A queue deleted under running processes: resmon advertises
C{consumer_cancel_notify}, so RabbitMQ cancels the consumer, and the bus
declares the queue and consumes again at once, without reconnecting.
"""

import os
import re
import time
import uuid

import pytest_twisted
from twisted.internet import defer, reactor, task, utils

from resmon import topics, wire
from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.amqp import AMQPBus, partitionQueue
from privatebroker import RABBITMQCTL
from support import PlainAMQPClient, connectWebSocket, freePort, subscriptionsReady, withTimeout

# "consuming <patterns> from queue <names>": the web role's queue is exclusive
# and named by the broker, so the log line is how a test learns its name.
CONSUMING = re.compile(rb"consuming (\S+) from queue (\S+)")


def deleteQueueAsOperator(queue):
    """
    Delete C{queue} with C{rabbitmqctl}, as an operator would; fires with
    its exit code.
    """
    return utils.getProcessValue(RABBITMQCTL, ["delete_queue", queue], env=os.environ)


def consumingLines(output):
    return CONSUMING.findall(output)


def queueOf(output, pattern):
    """
    The queue the server consumes C{pattern} from (the latest one logged).
    """
    queues = [queue for patterns, queue in consumingLines(output) if pattern in patterns.split(b",")]
    assert queues, f"no queue consuming {pattern!r} in the log"
    return queues[-1].decode()


@pytest_twisted.inlineCallbacks
def test_deleted_analyzer_and_web_queues_are_consumed_again_within_two_seconds(
        broker, amqp, twistd):
    exchange, queue = amqp.names["exchange"], amqp.names["queue"]
    port = freePort()
    server = twistd("queue-deleted-server", "--role=server", f"--broker={broker}",
                    f"--exchange={exchange}", f"--queue={queue}", "--dead-letter-queue=",
                    f"--port={port}", "--interface=127.0.0.1")
    yield server.waitForOutput(b"(connection #1)")
    yield server.waitForOutput(b"from queue " + queue.encode())
    client, _ = yield connectWebSocket(port)
    host = f"deleted-{uuid.uuid4().hex[:6]}.example.com"

    def publishMeasure(seq):
        return amqp.publish(exchange, f"{topics.hostWord(host)}.measure", wire.encodeMeasure(
            host, seq, time.time(), 60.0, {"cpu": {"percent": 10.0 + seq}}))

    def analysisOf(seq):
        return client.waitFor(
            lambda m: m.get("kind") == "analysis" and m.get("host") == host and m.get("seq") == seq,
            10, f"the analysis of measure {seq}")

    yield publishMeasure(0)
    yield analysisOf(0)
    analysisQueue = queueOf(server.output, b"#.analysis")
    assert analysisQueue != queue
    before = server.output.count(b" from queue ")

    # The analyzer's queue, deleted by another connection.
    before = server.output.count(b" from queue ")
    deletedAt = time.monotonic()
    deleter = yield PlainAMQPClient(broker).connect()
    try:
        yield deleter.channel.queue_delete(queue=queue)
    finally:
        yield deleter.close()
    yield server.waitForOutputCount(b" from queue ", before + 1, timeout=5)
    recovered = time.monotonic() - deletedAt
    assert recovered < 2, f"consuming the analyzer's queue again took {recovered:.2f} s"
    assert consumingLines(server.output)[-1] == (b"#.measure", queue.encode())

    # The web role's queue is exclusive to its connection: only the broker's
    # operator can delete it. rabbitmqctl has deleted it when it exits.
    before = server.output.count(b" from queue ")
    code = yield deleteQueueAsOperator(analysisQueue)
    deletedAt = time.monotonic()
    assert code == 0, "rabbitmqctl delete_queue failed"
    yield server.waitForOutputCount(b" from queue ", before + 1, timeout=5)
    recovered = time.monotonic() - deletedAt
    assert recovered < 2, f"consuming the web's analyses again took {recovered:.2f} s"
    newAnalysisQueue = queueOf(server.output, b"#.analysis")
    assert newAnalysisQueue != analysisQueue  # a fresh exclusive queue

    # A measure published after the deletion is analyzed and reaches the page.
    yield publishMeasure(1)
    yield analysisOf(1)
    assert b"broker cancelled the consumer" in server.output
    assert b"(connection #2)" not in server.output  # recovered without reconnecting
    assert b"Traceback" not in server.output
    assert (yield server.stop(timeout=5))


@pytest_twisted.inlineCallbacks
def test_a_deleted_partition_queue_is_declared_and_consumed_again(broker, amqp):
    # One partition of a partitioned subscription deleted: the whole
    # subscription (its channel holds every owned partition's consumer) is
    # declared and consumed again, and every host's measures flow again.
    exchange, queue = amqp.names["exchange"], amqp.names["queue"]
    bus = AMQPBus(parseBrokerURL(broker), exchange, reactor)
    bus.startService()
    received = []
    try:
        subscription = bus.subscribe(["#.measure"], lambda key, body: received.append(key),
                                     queue=queue, durable=True, partitions=(2, {0, 1}))
        yield subscriptionsReady(bus)
        deleter = yield PlainAMQPClient(broker).connect()
        try:
            yield deleter.channel.queue_delete(queue=partitionQueue(queue, 0))
        finally:
            yield deleter.close()
        yield until(lambda: bus.counters["consumer-cancels"] == 1, 5, "the consumer cancel")
        yield withTimeout(subscription.whenReady(), 2, "consuming again")
        keys = [f"host-{i}.measure" for i in range(20)]  # spread over both partitions
        for key in keys:
            yield bus.publish(key, b"{}")
        yield until(lambda: sorted(received) == sorted(keys), 5, "every measure")
        assert bus.counters["connections"] == 1
    finally:
        yield bus.stopService()
        cleaner = yield PlainAMQPClient(broker).connect()
        try:
            yield cleaner.cleanUp(exchanges=[f"{queue}.hash"],
                                  queues=[partitionQueue(queue, i) for i in range(2)])
        finally:
            yield cleaner.close()


@defer.inlineCallbacks
def until(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        yield task.deferLater(reactor, 0.02, lambda: None)
