"""
Event latency: HTTP POST /api/events/bench on a real `twistd resmon
--role=web` -> the `echo` rule in a real `--role=rules` process -> its
echo.event received by an SSE client of /api/stream, on the real RabbitMQ,
at a steady rate.

Usage: python bench/rules_latency.py [--broker URL] [--count N] [--rate PER_SECOND]
Prints p50/p90/p99/max in milliseconds. Goal (issue 12): p99 <= 20 ms at 100 events/s.
"""

import argparse
import json
import os
import sys
import time
from io import BytesIO

from twisted.internet import defer, task
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from support import PlainAMQPClient, TwistdProcess, freePort, uniqueName, withTimeout  # noqa: E402
from test_web_integration import SSEReader  # noqa: E402

RULES = os.path.join(HERE, "rules")


@defer.inlineCallbacks
def main(reactor, broker, count, rate):
    exchange, queue, port = uniqueName("resmon.bench"), uniqueName("resmon.bench.q"), freePort()
    common = [f"--broker={broker}", f"--exchange={exchange}"]
    web = TwistdProcess("bench-events-web", ["--role=web", *common, f"--port={port}",
                                             "--interface=127.0.0.1"]).start()
    rules = TwistdProcess("bench-events-rules", ["--role=rules", *common, f"--queue={queue}",
                                                 f"--rules-dir={RULES}",
                                                 "--rules=echo", "--rule-rate=10000"]).start()
    amqp = yield PlainAMQPClient(broker).connect()
    pool = HTTPConnectionPool(reactor)
    agent = Agent(reactor, pool=pool)
    try:
        yield web.waitForOutput(b"ready: on")
        yield rules.waitForOutput(b"ready: on")
        response = yield Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{port}/api/stream?events=event&hosts=echo,bench&history=0".encode())
        sent, latencies, posted = {}, [], []
        done = defer.Deferred()

        class Timed(SSEReader):
            def dataReceived(self, data):
                SSEReader.dataReceived(self, data)
                for kind, event in self.events:
                    if kind != "event":
                        continue
                    took = time.perf_counter() - sent[event["payload"]["seq"]]
                    (latencies if event["source"] == "echo" else posted).append(took)
                del self.events[:]
                if len(latencies) >= count and not done.called:
                    done.callback(None)
        stream = Timed()
        response.deliverBody(stream)
        url = f"http://127.0.0.1:{port}/api/events/bench".encode()
        headers = Headers({b"content-type": [b"application/json"]})
        posts = []
        for seq in range(count):
            sent[seq] = time.perf_counter()
            d = agent.request(b"POST", url, headers,
                              FileBodyProducer(BytesIO(json.dumps({"seq": seq}).encode())))
            posts.append(d.addCallback(readBody))
            yield task.deferLater(reactor, 1.0 / rate, lambda: None)
        yield withTimeout(done, 60, "every echo on the stream")
        yield defer.gatherResults(posts)
        print(f"{count} events at {rate}/s (load average {os.getloadavg()[0]:.1f}):")
        for what, times in (("POST -> the posted event on the SSE client", posted),
                            ("POST -> rule -> emitted event -> SSE client", latencies)):
            times.sort()
            pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000
            print(f"  {what}: p50 {pick(0.5):.2f} ms  p90 {pick(0.9):.2f} ms  "
                  f"p99 {pick(0.99):.2f} ms  max {times[-1] * 1000:.2f} ms")
    finally:
        yield pool.closeCachedConnections()
        yield rules.stop()
        yield web.stop()
        yield amqp.cleanUp(exchanges=[exchange], queues=[queue + ".rules"])
        yield amqp.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    arguments = parser.parse_args()
    task.react(main, (arguments.broker, arguments.count, arguments.rate))
