"""
Per-user filtering's cost: the web role's CPU per analysis fanned out to 100 WebSocket clients, without
users (every client gets every host) and with users (10 users seeing 10 disjoint host sets, 10 clients
each), in process: the real EventFanout, DashboardFactory and DashboardProtocol with its ClientFlow,
on StringTransports (Autobahn's framing of each message sent is left out: it costs the same per
message in both runs, and the filtered run sends a tenth as many).

Then the same with real processes: two `twistd resmon --role=web` on the real broker, one without users
and one with --users (10 users, each an API token), fed the same analyses, each with 100 WebSocket
clients (raw sockets that read and discard); the CPU each web process spent per analysis, by psutil.

Usage: python bench/visibility.py [--hosts 1000] [--clients 100] [--users 10] [--rounds 20] [--repeat 3]
                                  [--broker URL] [--rate 200] [--seconds 20] [--in-process-only]
Prints CPU microseconds per analysis received and per message sent, for each run, and the ratios
(a third in-process run, without users but each client subscribed to one of the same sets,
isolates the cost of composing the user's hosts with the client's subscription).
"""

import argparse
import base64
import json
import os
import sys
import time

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from resmon import topics  # noqa: E402
from resmon.auth.principal import UNRESTRICTED, VIEWER, Principal  # noqa: E402
from resmon.webserver.fanout import EventFanout  # noqa: E402
from resmon.webserver.history import FleetHistory  # noqa: E402
from resmon.webserver.subscriptions import Subscription  # noqa: E402
from resmon.webserver.websocket import DashboardFactory  # noqa: E402


class _Request:
    def __init__(self):
        self.params = {}
        self.origin = None
        self.headers = {"host": "127.0.0.1:8080"}


def _analysis(host, seq, ts):
    return json.dumps({
        "v": 1, "kind": "analysis", "host": host, "seq": seq, "ts": ts, "interval": 1.0,
        "analyzed_at": ts, "level": "LOW", "levels": {"cpu": "LOW", "memory": "LOW"},
        "metrics": {"cpu": {"percent": 12.5, "per_core": [10.0, 15.0]},
                    "memory": {"total": 100, "used": 30, "available": 70, "percent": 30.0},
                    "load": [0.5, 0.4, 0.3]}}, separators=(",", ":")).encode()


def run(hosts, clients, principals, rounds, subscriptions=None):
    clock = Clock()
    clock.advance(1000.0)
    fanout = EventFanout(history=FleetHistory(clock, 900, 900), clock=clock)
    factory = DashboardFactory(fanout, clock, stallTimeout=30)
    sent = [0]
    for i in range(clients):
        protocol = factory.buildProtocol(None)
        protocol.sendMessage = lambda payload, isBinary=False: sent.__setitem__(0, sent[0] + 1)
        protocol.sendPreparedMessage = lambda prepared: sent.__setitem__(0, sent[0] + 1)
        protocol.beginMessage = lambda isBinary=False: None
        protocol.sendMessageFrame = lambda chunk: None
        protocol.endMessage = lambda: None
        protocol.transport = StringTransport()
        protocol.onConnect(_Request())
        protocol.principal = principals[i % len(principals)]
        protocol.onOpen()
        if subscriptions is not None:
            # Each client its own, as each parses its own request.
            protocol.subscribe(Subscription(hosts=subscriptions[i % len(subscriptions)]))
    names = [f"host-{i:05d}" for i in range(hosts)]
    keys = [topics.routingKey(name, topics.ANALYSIS) for name in names]
    # Warm up the caches (as a running web role has), then measure.
    for seq in range(2):
        for name, key in zip(names, keys):
            fanout.eventReceived(key, _analysis(name, seq, 1000.0 + seq))
    sent[0] = 0
    bodies = [[_analysis(name, seq, 1000.0 + seq) for name in names] for seq in range(2, 2 + rounds)]
    started = time.process_time()
    for seq in range(rounds):
        clock.advance(1.0)
        for key, body in zip(keys, bodies[seq]):
            fanout.eventReceived(key, body)
    elapsed = time.process_time() - started
    analyses = hosts * rounds
    return elapsed / analyses * 1e6, sent[0], (elapsed / sent[0] * 1e6 if sent[0] else 0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--broker", default=None)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--in-process-only", action="store_true")
    args = parser.parse_args()
    inProcess(args)
    if not args.in_process_only:
        from twisted.internet import task
        task.react(lambda reactor: realProcesses(reactor, args))


def inProcess(args):
    names = [f"host-{i:05d}" for i in range(args.hosts)]
    users = [Principal(f"user{u}", VIEWER, names[u::args.users]) for u in range(args.users)]
    print(f"in process: {args.hosts} hosts, {args.clients} WebSocket clients, {args.rounds} analyses "
          f"per host, best of {args.repeat}")
    print(f"{'run':<50} {'us CPU/analysis':>16} {'messages sent':>14} {'us CPU/message':>15}")
    figures = {}
    sets = [names[u::args.users] for u in range(args.users)]
    runs = (("without users (every client: every host)", [UNRESTRICTED], None),
            (f"{args.users} users, disjoint host sets", users, None),
            ("without users, clients asking for the same sets", [UNRESTRICTED], sets))
    # Each run args.repeat times, interleaved, and the best kept: other work
    # on the machine only ever adds time.
    results = {}
    for _ in range(args.repeat):
        for label, principals, subscriptions in runs:
            result = run(args.hosts, args.clients, principals, args.rounds, subscriptions)
            results[label] = min(results.get(label, result), result)
    for label, _, _ in runs:
        perAnalysis, messages, perMessage = results[label]
        figures[label] = perAnalysis
        print(f"{label:<50} {perAnalysis:>16.1f} {messages:>14} {perMessage:>15.2f}")
    unauthenticated, filtered, subscribed = figures.values()
    print(f"ratio (users / without users): {filtered / unauthenticated:.2f} (goal: at most 1.5)")
    print(f"ratio (users / the same sets asked for without users): {filtered / subscribed:.2f}")


class _DiscardingClient:
    """
    A raw WebSocket client: the handshake (with a bearer token), then every
    byte read and counted, never parsed.
    """

    def __init__(self):
        from twisted.internet import defer, protocol

        class Reader(protocol.Protocol):
            def connectionMade(inner):
                key = base64.b64encode(os.urandom(16)).decode()
                auth = f"Authorization: Bearer {self.token}\r\n" if self.token else ""
                inner.transport.write((
                    f"GET /ws?history=0 HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                    f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    f"Sec-WebSocket-Version: 13\r\n{auth}\r\n").encode())

            def dataReceived(inner, data):
                if not self.bytes and not data.startswith(b"HTTP/1.1 101"):
                    self.failed = data[:200]
                self.bytes += len(data)

        self.protocolClass = Reader
        self.bytes = 0
        self.failed = None
        self.defer = defer

    def connect(self, reactor, port, token):
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        self.port, self.token = port, token
        return connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                               self.protocolClass())


def _usersFile(directory, names, users):
    from resmon.auth import passwords
    from resmon.auth.usersfile import Token, User, Users, writeUsers
    tokens, entries = [], []
    for u in range(users):
        token = passwords.newToken()
        entry = Token(f"bench{u}", passwords.tokenDigest(token), 0.0, "bench")
        entries.append(User(f"user{u}", None, VIEWER, tuple(names[u::users]), (), {entry.id: entry}))
        tokens.append(token)
    path = os.path.join(directory, "users.toml")
    writeUsers(path, Users(entries))
    return path, tokens


async def realProcesses(reactor, args):
    import tempfile

    import psutil
    from twisted.internet import defer
    from twisted.internet.task import deferLater

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import Rig, brokerURL
    from support import analysisBody

    rig = await Rig.connect(args.broker or brokerURL())
    directory = tempfile.mkdtemp(prefix="resmon-bench-visibility-")
    try:
        names = [f"host-{i:05d}" for i in range(args.hosts)]
        path, tokens = _usersFile(directory, names, args.users)
        quiet = ["--ping-interval=3600", "--stats-interval=3600", f"--state-dir={directory}",
                 "--max-clients-per-address=1000"]
        plain, plainPort = await rig.startListening("bench-visibility-plain", "web", *quiet)
        users, usersPort = await rig.startListening("bench-visibility-users", "web", *quiet,
                                                    f"--users={path}")
        clients = {"plain": [], "users": []}
        for i in range(args.clients):
            for label, port, token in (("plain", plainPort, None),
                                       ("users", usersPort, tokens[i % args.users])):
                client = _DiscardingClient()
                await client.connect(reactor, port, token)
                clients[label].append(client)
        keys = [topics.routingKey(name, topics.ANALYSIS) for name in names]
        seq = [0]

        async def publish(count):
            batch = max(1, int(args.rate / 50))
            for first in range(0, count, batch):
                sent = []
                for i in range(first, min(first + batch, count)):
                    seq[0] += 1
                    host = i % len(names)
                    sent.append(rig.amqp.publish(rig.exchange, keys[host],
                                                 analysisBody(names[host], seq[0], 200)))
                await defer.gatherResults(sent)
                await deferLater(reactor, batch / args.rate, lambda: None)

        async def settled():
            # Until no client has received anything for a second.
            last = None
            while True:
                now = [c.bytes for cs in clients.values() for c in cs]
                if now == last:
                    return
                last = now
                await deferLater(reactor, 1.0, lambda: None)

        async def idle(processes):
            # Until neither web process used more than 5 % of a core for a second.
            for p in processes.values():
                p.cpu_percent(None)
            while True:
                await deferLater(reactor, 1.0, lambda: None)
                if all(p.cpu_percent(None) < 5 for p in processes.values()):
                    return

        processes = {"plain": psutil.Process(plain.transport.pid),
                     "users": psutil.Process(users.transport.pid)}
        started = time.monotonic()
        await publish(len(names))  # every host once: the caches warm, the snapshots sent
        await settled()
        await idle(processes)
        warm = time.monotonic() - started
        refused = [c.failed for cs in clients.values() for c in cs if c.failed]
        if refused:
            raise SystemExit(f"{len(refused)} clients refused: {refused[0]!r}")
        before = {k: sum(p.cpu_times()[:2]) for k, p in processes.items()}
        received = {k: sum(c.bytes for c in cs) for k, cs in clients.items()}
        count = int(args.rate * args.seconds)
        await publish(count)
        await settled()
        cpu = {k: sum(p.cpu_times()[:2]) - before[k] for k, p in processes.items()}
        received = {k: sum(c.bytes for c in cs) - received[k] for k, cs in clients.items()}
        print(f"\nreal processes: {args.hosts} hosts, {count} analyses at {args.rate:g}/s, "
              f"{args.clients} WebSocket clients on each web role, {os.cpu_count()} CPUs")
        print(f"{'web role':<44} {'us CPU/analysis':>16} {'bytes to clients':>17}")
        for label, text in (("plain", "without users (every client: every host)"),
                            ("users", f"--users, {args.users} users, disjoint host sets")):
            print(f"{text:<44} {cpu[label] / count * 1e6:>16.0f} {received[label]:>17}")
        print(f"ratio (users / without users): {cpu['users'] / cpu['plain']:.2f} (goal: at most 1.5)")
        print(f"(the first analysis of every host, and the snapshots: {warm:.1f} s until both were idle)")
    finally:
        await rig.stop()
        import shutil
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
