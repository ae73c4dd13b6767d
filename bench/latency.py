"""
End-to-end latency: measure published on RabbitMQ -> analysis received by a
WebSocket client of a real `twistd resmon --role=server`.

Usage: python bench/latency.py [--broker URL] [--count N] [--rate PER_SECOND]
Needs RabbitMQ and resmon installed (the twistd on this interpreter's PATH).
Prints p50/p90/p99/max in milliseconds.
"""

import argparse
import json
import os
import sys
import time

from twisted.internet import defer, task

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support import (  # noqa: E402
    PlainAMQPClient, TwistdProcess, connectWebSocket, freePort, uniqueName, withTimeout)


@defer.inlineCallbacks
def main(reactor, broker, count, rate):
    exchange, queue, port = uniqueName("resmon.bench"), uniqueName("resmon.bench.q"), freePort()
    amqp = yield PlainAMQPClient(broker).connect()
    server = TwistdProcess("bench-server", [
        "--role=server", f"--broker={broker}", f"--exchange={exchange}", f"--queue={queue}",
        f"--port={port}", "--interface=127.0.0.1"]).start()
    try:
        yield server.waitForOutput(b"consuming #.analysis")
        yield server.waitForOutput(b"consuming #.measure")
        client, _ = yield connectWebSocket(port)
        sent = {}
        latencies = []
        done = defer.Deferred()

        def received(message):
            if message.get("kind") == "analysis" and message.get("host") == "bench":
                latencies.append(time.perf_counter() - sent[message["seq"]])
                if len(latencies) == count and not done.called:
                    done.callback(None)
            return False
        client.waitFor(received, 3600, "never")
        for seq in range(count):
            body = json.dumps({"v": 1, "host": "bench", "seq": seq, "ts": time.time(),
                               "interval": 1.0, "metrics": {"cpu": {"percent": 50.0}}}).encode()
            sent[seq] = time.perf_counter()
            yield amqp.publish(exchange, "bench.measure", body)
            yield task.deferLater(reactor, 1.0 / rate, lambda: None)
        yield withTimeout(done, 60, "every analysis")
        latencies.sort()
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
        print(f"{count} measures at {rate}/s, measure published -> analysis on WebSocket:")
        print(f"  p50 {pick(0.5):.2f} ms  p90 {pick(0.9):.2f} ms  p99 {pick(0.99):.2f} ms  "
              f"max {latencies[-1] * 1000:.2f} ms")
    finally:
        yield server.stop()
        yield amqp.cleanUp(exchanges=[exchange], queues=[queue])
        yield amqp.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0)
    arguments = parser.parse_args()
    task.react(main, (arguments.broker, arguments.count, arguments.rate))
