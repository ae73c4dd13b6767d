"""
End-to-end latency: measure published on RabbitMQ -> analysis received by a
WebSocket client of a real `twistd resmon --role=server`.

Usage: python bench/latency.py [--broker URL] [--count N] [--rate PER_SECOND]
       python bench/latency.py --hosts 1000 --dashboards 100 [--measure 20] [--processes 2] [--rounds N]
                               [--server-args "--prefetch=20 ..."] [--batch 0|1] [--split]
Needs RabbitMQ and resmon installed (the twistd on this interpreter's PATH).
Prints p50/p90/p99/max in milliseconds.

With --hosts and --dashboards: a fleet of that many hosts each sending a
measure a second, and that many dashboards open (lean raw WebSocket clients
subscribed to everything, as the page is: bench/_wsclients.py, in --processes
processes); the latency is then of every analysis every dashboard received,
from its measure's "ts" (set when it is published) to the client's receive.
The clients ask for several events per message (/ws?batch=1) as the page
does; --batch 0 has each analysis sent alone. --rounds N measures N times,
each round with its dashboards connected afresh, and prints the median p99.
--split runs --role=analyzer and --role=web as two processes instead of one
--role=server (which also runs the rules and the webhooks), and prints each
one's CPU.
"""

import json
import statistics
import time

from twisted.internet import defer, task

from _common import argumentParser, runBenchmark
from resmon.defaults import RULES_QUEUE_SUFFIX
from support import connectWebSocket, withTimeout


class MeasurePublisher:
    """
    One small measure per host per second, the hosts spread over the second.
    """

    def __init__(self, amqp, exchange, count, clock):
        self.amqp, self.exchange, self.clock = amqp, exchange, clock
        self.hosts = [f"fleet-{i:04d}" for i in range(count)]
        self.published = 0
        self.behind = 0.0
        self._start = None
        self._loop = task.LoopingCall(self._publishDue)
        self._loop.clock = clock

    def start(self):
        self._start = self.clock.seconds()
        self._loop.start(0.005)

    def stop(self):
        if self._loop.running:
            self._loop.stop()

    def _publishDue(self):
        now, n = self.clock.seconds(), len(self.hosts)
        self.behind = max(self.behind, now - (self._start + self.published / n))
        while self._start + self.published / n <= now:
            host = self.hosts[self.published % n]
            body = json.dumps({
                "v": 1, "host": host, "seq": self.published // n, "ts": time.time(), "interval": 1.0,
                "metrics": {"cpu": {"percent": float(self.published % 97)},
                            "memory": {"percent": 42.0, "total": 8 << 30, "used": 3 << 30}}}).encode()
            self.amqp.publish(self.exchange, f"{host}.measure", body)
            self.published += 1


@defer.inlineCallbacks
def fleet(reactor, arguments, rig, servers, port):
    """
    The latency every dashboard sees with a whole fleet sending, in
    C{--rounds} rounds (each with dashboards connected afresh, the fleet
    sending throughout), and their median p99 when more than one.
    """
    publisher = MeasurePublisher(rig.amqp, rig.exchange, arguments.hosts, reactor)
    publisher.start()
    p99s = []
    try:
        while publisher.published < 2 * arguments.hosts:
            yield task.deferLater(reactor, 0.1, lambda: None)
        for round in range(arguments.rounds):
            if arguments.rounds > 1:
                print(f"round {round + 1} of {arguments.rounds}:")
            p99 = yield fleetRound(reactor, arguments, servers, port, publisher)
            p99s.append(p99)
    finally:
        publisher.stop()
    if len(p99s) > 1:
        print(f"median p99 of {len(p99s)} rounds: {statistics.median(p99s):.2f} ms "
              f"(rounds {', '.join(f'{p:.1f}' for p in p99s)} ms)")


@defer.inlineCallbacks
def fleetRound(reactor, arguments, servers, port, publisher):
    """
    One round of L{fleet}: connect the dashboards, measure, print.

    @return: a L{Deferred} firing with the round's p99 in milliseconds.
    """
    from fanout import killClients, mergeHistograms, percentiles, processCPU, startClients

    clients = startClients(reactor, port, arguments.dashboards, arguments.processes,
                           ["/ws?history=overview" + ("&batch=1" if arguments.batch else "")],
                           arguments.timed_every)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: [killClients(c) for c in clients])
    yield defer.gatherResults([c.nextLine() for c in clients])
    yield task.deferLater(reactor, 3.0, lambda: None)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    for c in clients:
        c.tell("begin")
    pids = [server.transport.pid for server in servers]
    cpu0, t0 = [processCPU(pid) for pid in pids], time.monotonic()
    yield task.deferLater(reactor, arguments.measure, lambda: None)
    cpu1, t1 = [processCPU(pid) for pid in pids], time.monotonic()
    finals = [c.nextLine() for c in clients]
    for c in clients:
        c.tell("end")
    results = yield defer.gatherResults(finals)
    histogram = mergeHistograms(results)
    p50, p90, p99 = percentiles(histogram, 0.5, 0.9, 0.99)
    worst = (max(histogram) + 1) * 0.1 if histogram else float("nan")
    messages = sum(r["messages"] for r in results)
    events = sum(r["events"] for r in results)
    print(f"{arguments.hosts} hosts at 1 Hz, {arguments.dashboards} dashboards "
          f"({'batch=1' if arguments.batch else 'one event per message'}; load average {load}), "
          f"{arguments.measure:g} s: measure published -> analysis on each dashboard's WebSocket "
          f"({events / (t1 - t0):.0f} analyses/s received in {messages / (t1 - t0):.0f} messages/s):")
    print(f"  p50 {p50:.2f} ms  p90 {p90:.2f} ms  p99 {p99:.2f} ms  max {worst:.1f} ms")
    # The second half alone: from the analyzer's "analyzed_at" to the dashboard.
    analysed = mergeHistograms(results, "analysed")
    a50, a90, a99 = percentiles(analysed, 0.5, 0.9, 0.99)
    print(f"  of which analysed -> dashboard: p50 {a50:.2f} ms  p90 {a90:.2f} ms  p99 {a99:.2f} ms")
    spent = [b - a for a, b in zip(cpu0, cpu1)]
    roles = " + ".join(f"--role={s.role} {c / (t1 - t0) * 100:.0f} %" for s, c in zip(servers, spent))
    print(f"  {roles} of a core "
          f"({sum(spent) / max(1, events) * 1e6:.1f} µs per analysis received); clients' CPU "
          f"{sum(r['cpu'] for r in results) / (t1 - t0) * 100:.0f} %; publisher at most "
          f"{publisher.behind * 1000:.0f} ms behind its schedule")
    return p99


@defer.inlineCallbacks
def main(reactor, arguments, rig):
    count, rate = arguments.count, arguments.rate
    amqp, exchange = rig.amqp, rig.exchange
    limit = arguments.dashboards + 100
    queue = f"--queue={rig.queue('resmon.bench.q', ['.liveness', RULES_QUEUE_SUFFIX])}"
    servers = []
    if arguments.split:
        # The operator's other layout: the analyzer and the web role in processes of their own.
        analyzer = rig.start("bench-analyzer", "analyzer", queue, *arguments.server_args.split())
        analyzer.role = "analyzer"
        yield analyzer.waitForOutput(b"consuming #.measure")
        servers.append(analyzer)
        server, port = yield rig.startListening(
            "bench-web", "web", f"--max-clients={limit}", f"--max-clients-per-address={limit}")
        server.role = "web"
    else:
        server, port = yield rig.startListening(
            "bench-server", "server", queue, f"--max-clients={limit}",
            f"--max-clients-per-address={limit}", *arguments.server_args.split())
        server.role = "server"
        yield server.waitForOutput(b"consuming #.measure")
    servers.append(server)
    if arguments.hosts:
        yield fleet(reactor, arguments, rig, servers, port)
        return
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
    parser = argumentParser(__doc__, count=500, rate=100.0, hosts=0, dashboards=0, batch=1,
                            measure=20.0, processes=2, server_args="", rounds=1)
    parser.add_argument("--timed-every", type=int, default=1,
                        help="time the analyses of every Kth dashboard only (the others count "
                             "theirs): the clients then take less of the cores they share with "
                             "the server")
    parser.add_argument("--split", action="store_true",
                        help="--role=analyzer and --role=web, each its own process, for --role=server")
    runBenchmark(main, parser)
