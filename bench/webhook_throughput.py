"""
Webhook deliveries per second from one webhooks process to a local receiver,
and event -> POST latency: events published on RabbitMQ, delivered by a real
`twistd resmon --role=webhooks` (registry in SQLite, or PostgreSQL with
--database) to a twisted.web receiver in this process.

Usage: python bench/webhook_throughput.py [--broker URL] [--events N] [--hooks H]
       [--rate PER_SECOND] [--database postgresql://...]
Needs RabbitMQ and resmon installed (the twistd on this interpreter's PATH).
Prints deliveries/s and the latency p50/p99/max (ms): with --rate 0 (the
default) events are published as fast as possible (latency then includes
the queueing of the whole burst); give a rate below the throughput for the
latency of a steady flow.
"""

import argparse
import json
import os
import sys
import tempfile
import time

from twisted.internet import defer, task

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support import PlainAMQPClient, TwistdProcess, freePort, uniqueName, withTimeout  # noqa: E402
from webhooksupport import Receiver, api, listen  # noqa: E402


class TimingReceiver(Receiver):
    def __init__(self, expected):
        Receiver.__init__(self)
        self.expected = expected
        self.latencies = []
        self.done = defer.Deferred()
        self.last = None

    def render_POST(self, request):
        event = json.loads(request.content.read())["event"]
        now = time.time()
        self.latencies.append(now - event["sent"])
        self.last = now
        if len(self.latencies) == self.expected and not self.done.called:
            self.done.callback(None)
        return b""


@defer.inlineCallbacks
def main(reactor, broker, events, hooks, rate, database):
    exchange, queue, port = uniqueName("resmon.bench"), uniqueName("resmon.bench.q"), freePort()
    state = tempfile.mkdtemp(prefix="resmon-bench-")
    common = [f"--broker={broker}", f"--exchange={exchange}", f"--state-dir={state}",
              "--webhook-allow-private"] + ([f"--database={database}"] if database else [])
    receiver = TimingReceiver(events * hooks)
    listening = yield listen(receiver)
    url = f"http://127.0.0.1:{listening.getHost().port}/hook"
    amqp = yield PlainAMQPClient(broker).connect()
    web = TwistdProcess("bench-web", ["--role=web", f"--port={port}", "--interface=127.0.0.1"]
                        + common).start()
    webhooks = TwistdProcess("bench-webhooks", ["--role=webhooks", f"--webhook-queue={queue}"]
                             + common).start()
    try:
        yield web.waitForOutput(b"dashboard listening")
        yield webhooks.waitForOutput(b"now delivers webhooks", timeout=30)
        ids = []
        for n in range(hooks):
            code, hook = yield api(port, "POST", "/api/webhooks",
                                   {"key": "bench.event", "url": f"{url}?{n}"})
            ids.append(hook["id"])
        yield webhooks.waitForOutput(b"bound to 1 keys")
        started = time.time()
        for seq in range(events):
            body = json.dumps({"v": 1, "kind": "event", "seq": seq, "sent": time.time()})
            yield amqp.publish(exchange, "bench.event", body.encode())
            if rate:
                yield task.deferLater(reactor, 1.0 / rate, lambda: None)
        yield withTimeout(receiver.done, 600, "every delivery")
        elapsed = receiver.last - started
        latencies = sorted(receiver.latencies)
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
        print(f"{events} events x {hooks} hooks = {len(latencies)} deliveries in {elapsed:.2f} s: "
              f"{len(latencies) / elapsed:.0f} deliveries/s "
              f"({'as fast as possible' if not rate else f'{rate:g} events/s'}, "
              f"{'PostgreSQL' if database else 'SQLite'})")
        print(f"  event published -> POST received: p50 {pick(0.5):.1f} ms  "
              f"p99 {pick(0.99):.1f} ms  max {latencies[-1] * 1000:.1f} ms")
    finally:
        # The registry may be a shared database: leave nothing registered.
        yield api(port, "DELETE", "/api/webhooks?key=bench.event")
        yield webhooks.stop()
        yield web.stop()
        yield listening.stopListening()
        yield amqp.cleanUp(exchanges=[exchange], queues=[queue])
        yield amqp.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--hooks", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--database", default=None)
    arguments = parser.parse_args()
    task.react(main, (arguments.broker, arguments.events, arguments.hooks, arguments.rate,
                      arguments.database))
