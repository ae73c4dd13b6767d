"""
Fan-out: a real `twistd resmon --role=web` fed one analysis per host per second through RabbitMQ,
and many real WebSocket clients (lean raw clients, bench/_wsclients.py, in several processes).

Usage: python bench/fanout.py [--broker URL] [--clients 1000] [--hosts 1000] [--groups 10]
    [--processes 4] [--warmup 5] [--measure 20] [--py-spy STACKS.txt] [--web-args "--opt=..."]
    [--batch 1] [--stream]
       python bench/fanout.py --in-process [--clients 1000] [--hosts 1000] [--groups 10]

The hosts are cut in --groups slices of equal size; client i subscribes to slice i mod groups
(/ws?hosts=<its hosts>&events=analysis&history=0); --groups 1: every client follows every host
(no hosts= parameter). Prints the web role's CPU (% of one core, from /proc), the frames the
clients received per second, frame latency (the analysis's "ts", set when it is published, to
the client's receive) p50/p99/max, the web role's RSS before and after the clients connected
and per client, and the clients' own CPU (they must not be the bottleneck). With --batch 1 the
clients ask for several events per message (/ws?batch=1, as the dashboard does). With --stream
the clients are event streams instead (/api/stream?..., Server-Sent Events, the same queries);
a "frame" is then one write of the web role (one chunk of the response).
"""

import json
import os
import shutil
import sys
import time

from twisted.internet import defer, protocol, task
from twisted.internet.error import ProcessExitedAlready

from _common import argumentParser, runBenchmark
from dashboard_load import FleetPublisher

CLIENTS_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_wsclients.py")
BUCKET = 1e-4
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ClientProcess(protocol.ProcessProtocol):
    """
    One bench/_wsclients.py process; C{lines} are the JSON lines it wrote.
    """

    def __init__(self):
        self.buffer = b""
        self.lines = []
        self._waiters = []
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.lines.append(json.loads(line))
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(self.lines[-1])

    def errReceived(self, data):
        sys.stderr.write(data.decode("utf-8", "replace"))

    def nextLine(self):
        d = defer.Deferred()
        self._waiters.append(d)
        return d

    def tell(self, line):
        self.transport.write(line.encode() + b"\n")

    def processEnded(self, reason):
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(RuntimeError(f"a client process ended before writing its figures: {reason.value}"))
        self.ended.callback(None)


def startClients(reactor, port, count, processes, paths, timedEvery=1):
    """
    Start C{count} clients in C{processes} processes, the client C{i}
    requesting C{paths[i % len(paths)]}; every C{timedEvery}th client of
    each path times its analyses, the others count them.
    """
    started = []
    for k in range(processes):
        mine = list(range(k, count, processes))
        if not mine:
            continue
        # Client i of process k is client k + i * processes overall.
        args = [sys.executable, CLIENTS_SCRIPT, f"--port={port}", f"--count={len(mine)}",
                f"--first={k}", f"--stride={processes}", f"--timed-every={timedEvery}"] + [
                    f"--path={path}" for path in paths]
        proc = ClientProcess()
        reactor.spawnProcess(proc, sys.executable, args, env=os.environ)
        started.append(proc)
    return started


def groupPaths(hosts, groups):
    """
    The request path of each slice of C{hosts}.
    """
    if groups <= 1:
        return ["/ws?events=analysis&history=0"]
    size = -(-len(hosts) // groups)
    return ["/ws?events=analysis&history=0&hosts=" + ",".join(h["name"] for h in hosts[i:i + size])
            for i in range(0, len(hosts), size)]


def processCPU(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def processRSS(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def percentiles(histogram, *qs):
    total = sum(histogram.values())
    if not total:
        return [float("nan")] * len(qs)
    ordered = sorted((int(k), v) for k, v in histogram.items())
    out = []
    for q in qs:
        want, seen = q * total, 0
        for bucket, count in ordered:
            seen += count
            if seen >= want:
                out.append((bucket + 1) * BUCKET * 1000)
                break
    return out


def mergeHistograms(results, name="histogram"):
    merged = {}
    for result in results:
        for k, v in result.get(name, {}).items():
            merged[int(k)] = merged.get(int(k), 0) + v
    return merged


@defer.inlineCallbacks
def runClients(reactor, arguments, web, port, publisher, paths, label):
    """
    Connect the clients, measure, and return the figures (a dict).
    """
    pid = web.transport.pid
    rssBefore = processRSS(pid)
    connectStart = time.monotonic()
    clients = startClients(reactor, port, arguments.clients, arguments.processes, paths)
    try:
        figures = yield measure(reactor, arguments, pid, publisher, clients, label, rssBefore, connectStart)
    finally:
        for c in clients:
            killClients(c)
    return figures


def killClients(process):
    try:
        process.transport.signalProcess("KILL")
    except ProcessExitedAlready:
        pass


@defer.inlineCallbacks
def measure(reactor, arguments, pid, publisher, clients, label, rssBefore, connectStart):
    readies = yield defer.gatherResults([c.nextLine() for c in clients], consumeErrors=True)
    connected = sum(r["ready"] for r in readies)
    connectSeconds = time.monotonic() - connectStart
    yield task.deferLater(reactor, arguments.warmup, lambda: None)
    rssClients = processRSS(pid)
    for c in clients:
        c.tell("begin")
    if arguments.py_spy:
        # Where the web role's time goes, sampled over the measured seconds (collapsed stacks).
        spy = protocol.ProcessProtocol()
        pySpy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        reactor.spawnProcess(spy, pySpy, [
            "py-spy", "record", "--nonblocking", "--format", "raw", "-r", "200", "-p", str(pid),
            "-d", str(int(arguments.measure)), "-o", arguments.py_spy], env=os.environ)
    cpu0, t0, published0 = processCPU(pid), time.monotonic(), publisher.published
    yield task.deferLater(reactor, arguments.measure, lambda: None)
    cpu1, t1, published1 = processCPU(pid), time.monotonic(), publisher.published
    rssLoaded = processRSS(pid)
    finals = [c.nextLine() for c in clients]
    for c in clients:
        c.tell("end")
    results = yield defer.gatherResults(finals, consumeErrors=True)
    yield defer.gatherResults([c.ended for c in clients])
    seconds = t1 - t0
    histogram = mergeHistograms(results)
    p50, p99, p999 = percentiles(histogram, 0.5, 0.99, 0.999)
    worst = (max(histogram) + 1) * BUCKET * 1000 if histogram else float("nan")
    messages = sum(r["messages"] for r in results)
    events = sum(r["events"] for r in results)
    figures = {
        "label": label, "clients": connected, "connectSeconds": connectSeconds,
        "cpu": (cpu1 - cpu0) / seconds * 100, "published": (published1 - published0) / seconds,
        "frames": events / seconds, "messages": messages / seconds, "mbytes": sum(r["bytes"] for r in results) / seconds / 1e6,
        "p50": p50, "p99": p99, "p999": p999, "max": worst,
        "rssBefore": rssBefore, "rssClients": rssClients, "rssLoaded": rssLoaded,
        "clientCPU": sum(r["cpu"] for r in results) / max(r["seconds"] for r in results) * 100,
        "closed": sum(r["closed"] for r in results),
    }
    return figures


def printFigures(f, arguments):
    mib = 1024 * 1024
    perClient = (f["rssClients"] - f["rssBefore"]) / max(1, f["clients"])
    perClientLoaded = (f["rssLoaded"] - f["rssBefore"]) / max(1, f["clients"])
    print(f"{f['label']}: {f['clients']} clients connected in {f['connectSeconds']:.1f} s "
          f"({f['closed']} closed by the end)")
    print(f"  analyses published {f['published']:.0f}/s; analyses received {f['frames']:.0f}/s "
          f"in {f['messages']:.0f} messages/s ({f['mbytes']:.1f} MB/s)")
    perFrame = f["cpu"] / 100 / f["frames"] * 1e6 if f["frames"] else float("nan")
    print(f"  web role CPU {f['cpu']:.0f} % of a core ({perFrame:.1f} µs per analysis received); "
          f"clients' CPU {f['clientCPU']:.0f} % ({arguments.processes} processes)")
    print(f"  frame latency (published -> client): p50 {f['p50']:.1f} ms  p99 {f['p99']:.1f} ms  "
          f"p99.9 {f['p999']:.1f} ms  max {f['max']:.1f} ms")
    print(f"  web RSS: {f['rssBefore'] / mib:.1f} MiB before the clients, {f['rssClients'] / mib:.1f} "
          f"MiB with them, {f['rssLoaded'] / mib:.1f} MiB at the end: {perClient / 1024:.1f} KiB "
          f"per client connected ({perClientLoaded / 1024:.1f} KiB at the end)")


@defer.inlineCallbacks
def main(reactor, arguments, rig):
    limit = arguments.clients + 100
    web, port = yield rig.startListening(
        "bench-fanout-web", "web", f"--max-clients={limit}", f"--max-clients-per-address={limit}",
        *arguments.web_args.split())
    publisher = FleetPublisher(rig.amqp, rig.exchange, arguments.hosts, reactor)
    publisher.start()
    try:
        # Two rounds of the fleet first: every host is known before the clients come.
        while publisher.published < 2 * arguments.hosts:
            yield task.deferLater(reactor, 0.1, lambda: None)
        paths = groupPaths(publisher.hosts, arguments.groups)
        if arguments.stream:
            paths = [path.replace("/ws?", "/api/stream?", 1) for path in paths]
        elif arguments.batch:
            paths = [path + "&batch=1" for path in paths]
        print(f"twistd --role=web on port {port} (log: {web.logPath}); {arguments.hosts} hosts at 1 Hz; "
              f"{arguments.clients} clients in {len(paths)} distinct subscriptions; "
              f"{arguments.warmup:g} s warm-up, {arguments.measure:g} s measured", flush=True)
        with open("/proc/loadavg") as f:
            print("load average before:", " ".join(f.read().split()[:3]), flush=True)
        figures = yield runClients(reactor, arguments, web, port, publisher, paths,
                                   f"{arguments.clients} clients x {len(paths)} subscriptions")
        printFigures(figures, arguments)
        print(f"publisher at most {publisher.behind * 1000:.0f} ms behind its schedule")
        if b"stopped reading" in web.output:
            print("the web role disconnected clients for not reading (see its log)")
    finally:
        publisher.stop()


class _NullTransport:
    """
    A connection's transport that keeps nothing (for L{inProcess}).
    """

    disconnecting = False

    def __init__(self):
        self.written = 0

    def write(self, data):
        self.written += len(data)

    def writeSequence(self, data):
        self.written += sum(map(len, data))

    def registerProducer(self, producer, streaming):
        pass

    def unregisterProducer(self):
        pass

    def getPeer(self):
        from twisted.internet.address import IPv4Address
        return IPv4Address("TCP", "127.0.0.1", 40000)

    getHost = getPeer

    def loseConnection(self):
        pass

    abortConnection = loseConnection


def inProcess(arguments):
    """
    The fan-out and WebSocket protocols alone, in this process: the CPU time
    per frame of matching, framing and flow control, without sockets or a
    broker (steadier than the real run on a shared machine).
    """
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from twisted.internet.task import Clock

    from resmon.webserver.fanout import EventFanout
    from resmon.webserver.websocket import DashboardFactory
    from dashboard_load import FleetPublisher

    class Publisher(FleetPublisher):
        def __init__(self, count):
            FleetPublisher.__init__(self, None, None, count, Clock())

    fleet = Publisher(arguments.hosts)
    fanout = EventFanout()
    bodies = [(h["key"], json.dumps(fleet._analysis(h)).encode()) for h in fleet.hosts]
    for routingKey, body in bodies:
        fanout.eventReceived(routingKey, body)
    factory = DashboardFactory(fanout, Clock(), stallTimeout=30)
    paths = groupPaths(fleet.hosts, arguments.groups)
    for i in range(arguments.clients):
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(_NullTransport())
        protocol.dataReceived((
            f"GET {paths[i % len(paths)]} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    rounds = [[(k, json.dumps(fleet._analysis(h)).encode()) for (k, _), h in zip(bodies, fleet.hosts)]
              for _ in range(3)]
    sent = fanout.counters["sent"]
    start = time.process_time()
    for events in rounds:
        for routingKey, body in events:
            fanout.eventReceived(routingKey, body)
    seconds = time.process_time() - start
    frames = fanout.counters["sent"] - sent
    print(f"in process: {arguments.clients} clients x {len(paths)} subscriptions, {arguments.hosts} "
          f"hosts, {len(rounds)} rounds: {frames} frames, {seconds / frames * 1e6:.2f} µs of CPU per "
          f"frame ({seconds / (len(rounds) * arguments.hosts) * 1e6:.0f} µs per analysis)")


if __name__ == "__main__":
    parser = argumentParser(__doc__, clients=1000, hosts=1000, groups=10, processes=4,
                            warmup=5.0, measure=20.0, web_args="", py_spy="", batch=0)
    parser.add_argument("--stream", action="store_true",
                        help="event-stream clients (GET /api/stream, Server-Sent Events)")
    parser.add_argument("--in-process", action="store_true",
                        help="only the fan-out and WebSocket protocols in this process, no sockets")
    if "--in-process" in sys.argv:
        inProcess(parser.parse_args())
    else:
        runBenchmark(main, parser)
