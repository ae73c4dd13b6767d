"""
Memory of the web role under event stream clients that never read: a real
`twistd resmon --role=web` on the real broker, fed the analyses of N hosts
(15 minutes of history each, then one analysis a second per host), and M
clients that open /api/stream and never read a byte. Prints the web
process's RSS before the clients, at its peak while they are connected,
and after they have gone, and the budget counters from its log. The live
analyses keep adding history: their own growth is measured first, over as
long, without clients.

Usage: python bench/stream_memory.py [--broker URL] [--hosts 1000] [--clients 300]
                                     [--rounds 90] [--hold 10] [--settle 25] [--waves 2]
Needs RabbitMQ, resmon installed (the twistd beside this interpreter) and psutil.
"""

import json
import re
import socket
import time

import psutil
from twisted.internet import defer, task

from _common import argumentParser, runBenchmark
from resmon.topics import hostWord

MIB = 1024 * 1024


def analysis(host, seq, ts):
    cores = [round(10 + (seq * 7 + i * 13) % 80, 1) for i in range(8)]
    return json.dumps({
        "v": 1, "kind": "analysis", "host": host, "seq": seq, "ts": ts, "interval": 1.0,
        "analyzed_at": ts + 0.002, "level": "LOW", "levels": {"cpu": "LOW", "memory": "LOW"},
        "metrics": {
            "cpu": {"percent": sum(cores) / 8, "per_core": cores},
            "memory": {"total": 16 << 30, "used": 9 << 30, "available": 7 << 30, "percent": 56.2},
            "load": [1.5, 1.0, 1.0],
            "disks": [{"mount": "/", "percent": 40.0}, {"mount": "/var", "percent": 71.5}],
            "net_io": {"bytes_sent_per_s": 12000.0, "bytes_recv_per_s": 98000.0,
                       "packets_sent_per_s": 10.0, "packets_recv_per_s": 12.0},
        },
    }).encode()


@defer.inlineCallbacks
def publishRound(reactor, amqp, exchange, hosts, seq, ts):
    for i, host in enumerate(hosts):
        amqp.publish(exchange, f"{hostWord(host)}.analysis", analysis(host, seq, ts))
        if i % 200 == 199:
            yield task.deferLater(reactor, 0, lambda: None)


def silentClient(port, receiveBuffer=4096):
    """
    A socket that asks for the event stream and never reads.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return sock


@defer.inlineCallbacks
def waitForSeq(reactor, port, host, seq, timeout=120):
    from twisted.web.client import Agent, readBody
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/api/hosts/{host}".encode())
        body = yield readBody(response)
        if response.code == 200 and (json.loads(body).get("analysis") or {}).get("seq", -1) >= seq:
            return
        yield task.deferLater(reactor, 0.2, lambda: None)
    raise SystemExit(f"the web role did not get {host}'s analysis {seq} within {timeout} s")


@defer.inlineCallbacks
def main(reactor, arguments, rig):
    amqp, exchange = rig.amqp, rig.exchange
    clients = []
    try:
        web, port = yield rig.startListening(
            "bench-stream-web", "web", "--stats-interval=1",
            f"--max-clients-per-address={arguments.clients + 50}",
            f"--max-clients={arguments.clients + 50}")
        process = psutil.Process(web.transport.pid)
        hosts = [f"host-{i:04d}.dc1.example.com" for i in range(arguments.hosts)]
        now = time.time()
        # 15 minutes of history: one round per 10 s overview bucket.
        for r in range(arguments.rounds):
            yield publishRound(reactor, amqp, exchange, hosts, r, now - (arguments.rounds - r) * 10)
        yield waitForSeq(reactor, port, hosts[-1], arguments.rounds - 1)
        seq = arguments.rounds
        peak = 0

        def tick():
            nonlocal seq, peak
            publishRound(reactor, amqp, exchange, hosts, seq, time.time())
            seq += 1
            peak = max(peak, process.memory_info().rss)
        live = task.LoopingCall(tick)
        # Live analyses alone grow the history: measured first, without clients.
        loaded = process.memory_info().rss
        live.start(1.0)
        yield task.deferLater(reactor, arguments.hold + arguments.settle, lambda: None)
        idle = process.memory_info().rss
        peak = idle
        waves = []
        for wave in range(arguments.waves):
            began = time.monotonic()
            for i in range(arguments.clients):
                clients.append(silentClient(port))
                if i % 20 == 19:
                    yield task.deferLater(reactor, 0.05, lambda: None)
                    peak = max(peak, process.memory_info().rss)
            opened = time.monotonic() - began
            for _ in range(int(arguments.hold / 0.2)):
                yield task.deferLater(reactor, 0.2, lambda: None)
                peak = max(peak, process.memory_info().rss)
            held = process.memory_info().rss
            for sock in clients:
                sock.close()
            clients = []
            for _ in range(int(arguments.settle / 0.2)):
                yield task.deferLater(reactor, 0.2, lambda: None)
                peak = max(peak, process.memory_info().rss)
            waves.append((opened, held, process.memory_info().rss))
        live.stop()
        stats = re.findall(rb"\d+ connections, \d+ hosts; (\d+) bytes queued to clients \(peak (\d+), "
                           rb"budget (\d+)\); (\d+) snapshot pieces waited for room, (\d+) clients "
                           rb"dropped at the budget, (\d+) for not reading", web.output)
        print(f"web role, {arguments.hosts} hosts ({arguments.rounds} history rounds), "
              f"{arguments.waves} waves of {arguments.clients} /api/stream clients that never read "
              f"(held {arguments.hold:g} s each, live analyses 1/s/host)")
        print(f"  RSS history loaded   {loaded / MIB:8.1f} MiB, {arguments.hold + arguments.settle:g} s of "
              f"live analyses later (no clients) {idle / MIB:.1f} MiB")
        print(f"  RSS before clients   {idle / MIB:8.1f} MiB")
        for wave, (opened, held, after) in enumerate(waves, 1):
            print(f"  wave {wave} (opened in {opened:.1f} s): RSS with clients {held / MIB:.1f} MiB, "
                  f"{arguments.settle:g} s after they left {after / MIB:.1f} MiB")
        print(f"  RSS peak             {peak / MIB:8.1f} MiB")
        if stats:
            queued, queuedPeak, limit, waited, dropped, stalled = (int(x) for x in stats[-1])
            print(f"  queued to clients: peak {queuedPeak / MIB:.1f} MiB of a {limit / MIB:.0f} MiB budget; "
                  f"{waited} snapshot pieces waited, {dropped} clients dropped at the budget, "
                  f"{stalled} for not reading")
        print(f"  web log: {web.logPath}")
    finally:
        for sock in clients:
            sock.close()


if __name__ == "__main__":
    parser = argumentParser(__doc__)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=90, help="history rounds published first")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds the clients stay")
    parser.add_argument("--settle", type=float, default=25.0, help="seconds waited after they leave")
    parser.add_argument("--waves", type=int, default=2, help="times the clients come and go")
    runBenchmark(main, parser)
