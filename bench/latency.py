"""
End-to-end latency: measure published on RabbitMQ -> analysis received by a
WebSocket client of a real `twistd resmon --role=server`.

Usage: python bench/latency.py [--broker URL] [--count N] [--rate PER_SECOND]
Needs RabbitMQ and resmon installed (the twistd on this interpreter's PATH).
Prints p50/p90/p99/max in milliseconds.
"""

import json
import time

from twisted.internet import defer, task

from _common import argumentParser, runBenchmark
from support import connectWebSocket, withTimeout


@defer.inlineCallbacks
def main(reactor, arguments, rig):
    count, rate = arguments.count, arguments.rate
    amqp, exchange = rig.amqp, rig.exchange
    server, port = yield rig.startListening(
        "bench-server", "server", f"--queue={rig.queue('resmon.bench.q', ['.liveness'])}")
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


if __name__ == "__main__":
    runBenchmark(main, argumentParser(__doc__, count=500, rate=100.0))
