"""
Per-user filtering's cost: the web role's CPU per analysis fanned out to 100 WebSocket clients, without
users (every client gets every host) and with users (10 users seeing 10 disjoint host sets, 10 clients
each), in process: the real EventFanout, DashboardFactory and DashboardProtocol with its ClientFlow,
on StringTransports (Autobahn's framing of each message sent is left out: it costs the same per
message in both runs, and the filtered run sends a tenth as many).

Usage: python bench/visibility.py [--hosts 1000] [--clients 100] [--users 10] [--rounds 20]
Prints CPU microseconds per analysis received and per message sent, for each run, and the ratios
(a third run, without users but each client subscribed to one of the same sets, isolates the cost
of composing the user's hosts with the client's subscription).
"""

import argparse
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
        protocol.beginMessage = lambda isBinary=False: None
        protocol.sendMessageFrame = lambda chunk: None
        protocol.endMessage = lambda: None
        protocol.transport = StringTransport()
        protocol.onConnect(_Request())
        protocol.principal = principals[i % len(principals)]
        protocol.onOpen()
        if subscriptions is not None:
            protocol.subscribe(subscriptions[i % len(subscriptions)])
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
    args = parser.parse_args()
    names = [f"host-{i:05d}" for i in range(args.hosts)]
    users = [Principal(f"user{u}", VIEWER, names[u::args.users]) for u in range(args.users)]
    print(f"{args.hosts} hosts, {args.clients} WebSocket clients, {args.rounds} analyses per host")
    print(f"{'run':<50} {'us CPU/analysis':>16} {'messages sent':>14} {'us CPU/message':>15}")
    figures = {}
    sets = [Subscription(hosts=names[u::args.users]) for u in range(args.users)]
    for label, principals, subscriptions in (
            ("without users (every client: every host)", [UNRESTRICTED], None),
            (f"{args.users} users, disjoint host sets", users, None),
            ("without users, clients asking for the same sets", [UNRESTRICTED], sets)):
        perAnalysis, messages, perMessage = run(args.hosts, args.clients, principals, args.rounds,
                                                subscriptions)
        figures[label] = perAnalysis
        print(f"{label:<50} {perAnalysis:>16.1f} {messages:>14} {perMessage:>15.2f}")
    unauthenticated, filtered, subscribed = figures.values()
    print(f"ratio (users / without users): {filtered / unauthenticated:.2f} (goal: at most 1.5)")
    print(f"ratio (users / the same sets asked for without users): {filtered / subscribed:.2f}")


if __name__ == "__main__":
    main()
