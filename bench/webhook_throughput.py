"""
Webhook deliveries per second from one webhooks process to a local receiver,
and event -> POST latency: events published on RabbitMQ, delivered by a real
`twistd resmon --role=webhooks` (registry in SQLite, or in a database of its
own on the PostgreSQL server of --database) to a twisted.web receiver in a
process of its own (bench/webhook_receiver.py).

Usage: python bench/webhook_throughput.py [--broker URL] [--hooks H]
       [--rate EVENTS_PER_SECOND --duration SECONDS | --events N]
       [--database postgresql://127.0.0.1/]
Needs RabbitMQ and resmon installed (the twistd on this interpreter's PATH).

With --rate (steady flow), events are published at that rate (paced on the
clock, not by sleeps between publishes) for --duration seconds: offered =
rate x hooks deliveries/s. It prints the deliveries/s received during the
steady window (from --warmup s after the first event to the last event
published), the event -> POST latency p50/p99/max of the events of that
window, and how long the backlog took to drain after the last event. Without
--rate (a burst), --events events are published as fast as possible
(latency then includes the queueing of the whole burst).

Every run checks that each hook received every event once, in order, and
prints the CPU seconds of the webhooks process, of the receiver and of this
process (the publisher). With --kill-at S the webhooks process is killed
(SIGKILL) S seconds into the run and another started: the run then checks
that each hook received every event, the first POSTs in order (a delivery
made and not yet recorded is made again).
"""

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

from twisted.internet import defer, protocol, reactor, task

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support import PlainAMQPClient, TwistdProcess, freePort, uniqueName, withTimeout  # noqa: E402
from webhooksupport import api  # noqa: E402

RECEIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "webhook_receiver.py")
# Publishing ticks per second of a steady flow.
TICKS = 100


class ReceiverProcess(protocol.ProcessProtocol):
    """
    bench/webhook_receiver.py: L{listening} fires with its port, L{ended}
    once it received every POST and wrote its results.
    """

    def __init__(self):
        self.listening = defer.Deferred()
        self.ended = defer.Deferred()
        self.exited = False
        self.output = b""

    def outReceived(self, data):
        self.output += data
        if not self.listening.called and b"\n" in self.output:
            self.listening.callback(int(self.output.split(b"\n")[0].split()[-1]))

    def errReceived(self, data):
        sys.stderr.write(data.decode(errors="replace"))

    def processEnded(self, reason):
        self.exited = True
        if not self.ended.called:
            self.ended.callback(reason.value.exitCode)


def cpuSeconds(pid):
    """
    The user + system CPU seconds process C{pid} used so far.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scratchDatabase(server):
    """
    Make an empty database on the PostgreSQL server of URL C{server}: its
    URL, and a function that drops it.
    """
    import psycopg2

    parts = urlsplit(server)
    name = "resmon_bench_" + uuid.uuid4().hex[:8]
    admin = psycopg2.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
                             user=parts.username or "postgres", dbname="postgres",
                             connect_timeout=5)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")

    def drop():
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
    return urlunsplit(parts._replace(path="/" + name)), drop


def percentile(values, q):
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


@defer.inlineCallbacks
def publishSteadily(amqp, exchange, rate, duration):
    """
    Publish C{rate} events a second for C{duration} seconds, paced on the
    clock: at each tick, as many as should have been published by then.

    @return: a L{Deferred} of the time of the first and of the last event.
    """
    total = int(rate * duration)
    started = time.time()
    published = 0
    while published < total:
        due = min(total, int((time.time() - started) * rate) + 1)
        while published < due:
            body = json.dumps({"v": 1, "kind": "event", "seq": published, "sent": time.time()})
            amqp.publish(exchange, "bench.event", body.encode())
            published += 1
        yield task.deferLater(reactor, 1.0 / TICKS, lambda: None)
    return started, time.time()


@defer.inlineCallbacks
def publishBurst(amqp, exchange, events):
    started = time.time()
    for seq in range(events):
        body = json.dumps({"v": 1, "kind": "event", "seq": seq, "sent": time.time()})
        yield amqp.publish(exchange, "bench.event", body.encode())
    return started, time.time()


def checkEveryDelivery(received, events, hooks, again=False):
    """
    Each hook received each event once, in order: the problems found. With
    C{again} (the webhooks process was killed), a delivery may come again
    (made, not yet recorded): each hook must receive each event, the first
    POSTs of each in order.
    """
    byHook = {}
    for _, _, seq, hook in sorted(received):
        byHook.setdefault(hook, []).append(seq)
    problems = []
    for n in range(hooks):
        seqs = byHook.get(str(n), [])
        if again:
            seen = set()
            seqs = [seq for seq in seqs if not (seq in seen or seen.add(seq))]
        if seqs != list(range(events)):
            duplicates = len(seqs) - len(set(seqs))
            problems.append(f"hook {n}: {len(seqs)} POSTs, {len(set(seqs))} distinct of {events}, "
                            f"{duplicates} repeated, {'in' if seqs == sorted(seqs) else 'out of'} "
                            "order")
    return problems


killed = []


def killAndRestart(webhooks, queue, common):
    """
    SIGKILL the webhooks process, and start another in its place (it
    delivers once the killed one's lease ran out).
    """
    webhooks.signal("KILL")
    killed.append(TwistdProcess("bench-webhooks", [
        "--role=webhooks", f"--webhook-queue={queue}", "--stats-interval=1"] + common).start())
    print(f"killed the webhooks process (SIGKILL) {time.strftime('%H:%M:%S')}, started another")


@defer.inlineCallbacks
def main(reactor, arguments):
    broker, hooks, rate, database = (arguments.broker, arguments.hooks, arguments.rate,
                                     arguments.database)
    events = int(rate * arguments.duration) if rate else arguments.events
    drop = None
    if database:
        database, drop = scratchDatabase(database)
    exchange, queue, port = uniqueName("resmon.bench"), uniqueName("resmon.bench.q"), freePort()
    state = tempfile.mkdtemp(prefix="resmon-bench-")
    results = os.path.join(state, "received.json")
    common = [f"--broker={broker}", f"--exchange={exchange}", f"--state-dir={state}",
              "--webhook-allow-private"] + ([f"--database={database}"] if database else [])
    receiver = ReceiverProcess()
    receiverProcess = reactor.spawnProcess(receiver, sys.executable,
                                           [sys.executable, RECEIVER, str(events * hooks),
                                            results], env=os.environ)
    receiverPort = yield withTimeout(receiver.listening, 15, "the receiver")
    url = f"http://127.0.0.1:{receiverPort}/hook"
    amqp = yield PlainAMQPClient(broker).connect()
    web = TwistdProcess("bench-web", ["--role=web", f"--port={port}", "--interface=127.0.0.1"]
                        + common).start()
    webhooks = TwistdProcess("bench-webhooks", ["--role=webhooks", f"--webhook-queue={queue}",
                                                "--stats-interval=1"] + common).start()
    try:
        yield web.waitForOutput(b"dashboard listening")
        yield webhooks.waitForOutput(b"now delivers webhooks", timeout=30)
        for n in range(hooks):
            code, hook = yield api(port, "POST", "/api/webhooks",
                                   {"key": "bench.event", "url": f"{url}?{n}"})
            assert code == 201, (code, hook)
        # Every hook known to the webhooks process before the first event
        # (its queue is bound once it knows the first).
        yield webhooks.waitForOutput(f"webhooks: {hooks} hooks, delivering: yes".encode(),
                                     timeout=30)
        pid = webhooks.transport.pid
        cpuBefore, ownBefore = cpuSeconds(pid), sum(os.times()[:2])
        if arguments.kill_at:
            reactor.callLater(arguments.kill_at, killAndRestart, webhooks, queue, common)
        if rate:
            started, finished = yield publishSteadily(amqp, exchange, rate, arguments.duration)
        else:
            started, finished = yield publishBurst(amqp, exchange, events)
        yield withTimeout(receiver.ended, 120, "every delivery")
        if arguments.kill_at:
            cpu, own = 0.0, sum(os.times()[:2]) - ownBefore
            webhooks = killed[-1]
        else:
            cpu, own = cpuSeconds(pid) - cpuBefore, sum(os.times()[:2]) - ownBefore
    finally:
        if not receiver.exited:
            receiverProcess.signalProcess("KILL")
        # Stopped first: deleting hooks while their deliveries are recorded
        # may deadlock on PostgreSQL (the API then answers 503).
        for process in [webhooks] + killed:
            yield process.stop()
        yield api(port, "DELETE", "/api/webhooks?key=bench.event")
        yield web.stop()
        yield amqp.cleanUp(exchanges=[exchange], queues=[queue])
        yield amqp.close()
        if drop is not None:
            drop()
    with open(results) as f:
        seen = json.load(f)
    received = seen["received"]
    last = max(arrival for arrival, _, _, _ in received)
    where = "PostgreSQL" if database else "SQLite"
    problems = checkEveryDelivery(received, events, hooks, again=bool(arguments.kill_at))
    if arguments.kill_at:
        print(f"  {len(received) - events * hooks} deliveries made again after the SIGKILL "
              "(made, not yet recorded)")
    for problem in problems:
        print("PROBLEM: " + problem)
    if rate:
        windowStart = started + arguments.warmup
        inWindow = [r for r in received if windowStart <= r[0] <= finished]
        steady = len(inWindow) / (finished - windowStart)
        latencies = sorted(arrival - sent for arrival, sent, _, _ in received
                           if windowStart <= sent <= finished)
        print(f"{where}, {hooks} hooks, {rate:g} events/s for {arguments.duration:g} s: offered "
              f"{rate * hooks:.0f} deliveries/s ({events * hooks} in all)")
        print(f"  delivered during the steady window ({finished - windowStart:.1f} s): "
              f"{steady:.0f} deliveries/s; backlog drained {last - finished:.2f} s after the "
              "last event")
    else:
        latencies = sorted(arrival - sent for arrival, sent, _, _ in received)
        print(f"{where}, {hooks} hooks, burst of {events} events: {len(received)} deliveries in "
              f"{last - started:.2f} s: {len(received) / (last - started):.0f} deliveries/s")
    print(f"  event published -> POST received: p50 {percentile(latencies, 0.5):.1f} ms  "
          f"p99 {percentile(latencies, 0.99):.1f} ms  max {latencies[-1] * 1000:.1f} ms")
    print(f"  CPU: webhooks process {cpu:.1f} s ({cpu / (last - started) * 100:.0f} % of a core), "
          f"receiver {seen['cpu']:.1f} s, publisher {own:.1f} s; "
          f"load average {os.getloadavg()[0]:.2f}")
    if arguments.series:
        print("  second after the first event: POSTs received, p50 latency (ms) of its events")
        for second in range(int(last - started) + 1):
            arrived = sum(1 for r in received if int(r[0] - started) == second)
            sent = sorted(r[0] - r[1] for r in received if int(r[1] - started) == second)
            print(f"  {second:4d} {arrived:6d} {percentile(sent, 0.5) if sent else 0:8.0f}")
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--events", type=int, default=2000, help="events of a burst")
    parser.add_argument("--hooks", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0, help="events/s of a steady flow")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of steady flow")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of the steady flow left out of its figures")
    parser.add_argument("--database", default=None,
                        help="a PostgreSQL server (postgresql://127.0.0.1/): the registry "
                        "goes in a database made for the run, dropped after it")
    parser.add_argument("--kill-at", type=float, default=0.0,
                        help="SIGKILL the webhooks process this many seconds into the run, "
                        "start another, and check that nothing was lost")
    parser.add_argument("--series", action="store_true",
                        help="print deliveries and latency second by second")
    task.react(main, (parser.parse_args(),))
