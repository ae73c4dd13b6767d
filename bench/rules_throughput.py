"""
Rule throughput: events per second through one `twistd resmon --role=rules`
process with 10 rules loaded (nine look at every event and decline, one
marks the first and the last), from its durable queue filled beforehand on
the real RabbitMQ; and the same engine in this process without the broker
(decoding and rules only), the ceiling.

Usage: python bench/rules_throughput.py [--broker URL] [--count N]
Goal (issue 12): >= 5,000 events/s on the 2-core test machine.
"""

import argparse
import json
import os
import sys
import time

import psutil
from twisted.internet import defer, task

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from support import PlainAMQPClient, TwistdProcess, uniqueName, withTimeout  # noqa: E402

from resmon import wire  # noqa: E402
from resmon.bus.amqp import AMQPBus  # noqa: E402
from resmon.bus.brokerurl import parseBrokerURL  # noqa: E402
from resmon.rules.discovery import configureRules, discoverRules  # noqa: E402
from resmon.rules.engine import RuleEngine  # noqa: E402

RULES = os.path.join(HERE, "rules")
SELECTED = ",".join([f"decline-{n}" for n in range(1, 10)] + ["mark"])


def event(seq, last):
    return wire.encodeEventFromBody(
        "bench", json.dumps({"seq": seq, "last": last, "note": "x" * 64}).encode(),
        "application/json", time.time(), f"e{seq}")


def inProcess(count):
    rules = configureRules(discoverRules([RULES]), SELECTED.split(","))
    engine = RuleEngine(rules, task.Clock())
    bodies = [event(seq, count - 1) for seq in range(count)]
    started = time.perf_counter()
    for body in bodies:
        engine.handle(wire.decodeBusEvent("bench.event", body))
    return count / (time.perf_counter() - started)


@defer.inlineCallbacks
def main(reactor, broker, count):
    print(f"in this process (decode + 10 rules, no broker): {inProcess(count):,.0f} events/s")
    exchange, queue = uniqueName("resmon.bench"), uniqueName("resmon.bench.q")
    args = ["--role=rules", f"--broker={broker}", f"--exchange={exchange}", f"--queue={queue}",
            f"--rules-dir={RULES}", f"--rules={SELECTED}", "--rule-rate=1000"]
    amqp = yield PlainAMQPClient(broker).connect()
    marks = []
    listener = AMQPBus(parseBrokerURL(broker), exchange, reactor)
    listener.subscribe(["bench.mark"], lambda key, body: marks.append(
        wire.decodeEventEnvelope(key, body).payload))
    listener.startService()
    try:
        # First run: declares the queue and its bindings; then stopped, the
        # queue is filled, and the second run drains it.
        first = TwistdProcess("bench-rules-declare", args).start()
        yield first.waitForOutput(b"ready: on")
        yield first.stop()
        for seq in range(count):
            yield amqp.publish(exchange, "bench.event", event(seq, count - 1))
        rules = TwistdProcess("bench-rules", args).start()
        try:
            yield rules.waitForOutput(b"ready: on")
            process = psutil.Process(rules.transport.pid)
            cpuBefore = sum(process.cpu_times()[:2])
            deadline = reactor.seconds() + 600
            while len(marks) < 2 and reactor.seconds() < deadline:
                yield task.deferLater(reactor, 0.1, lambda: None)
            assert len(marks) == 2, f"marks: {marks} (see {rules.logPath})"
            cpu = sum(process.cpu_times()[:2]) - cpuBefore
        finally:
            yield withTimeout(rules.stop(), 30, "the rules process to stop")
        first, last = sorted(marks, key=lambda m: m["seq"])
        rate = (count - 1) / (last["at"] - first["at"])
        print(f"one rules process, {count} events from its queue through 10 rules: "
              f"{rate:,.0f} events/s, {cpu / count * 1e6:.0f} µs of its CPU per event "
              f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    finally:
        yield listener.stopService()
        yield amqp.cleanUp(exchanges=[exchange], queues=[queue + ".rules"])
        yield amqp.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--count", type=int, default=20_000)
    arguments = parser.parse_args()
    task.react(main, (arguments.broker, arguments.count))
