"""
Lean WebSocket clients for the fan-out benchmarks: one process holding many
connections on one C{selectors} loop, doing as little as a client can (no
JSON: the C{"ts"} of each analysis is found with a regular expression), so
that the web role, not the clients, is what is measured.

Usage (run by bench/fanout.py and bench/latency.py, one process per slice of
the clients): python bench/_wsclients.py --port P --count N [--path /ws?...]...
With --timed-every K, only every Kth client of each path (in the order
they connect, over all the processes) times its analyses; the others count
them (one substring count per message, not a regular expression and a
float per analysis), so that on a machine shared with the role measured
the clients take less of its cores.
A path under /api/stream makes the client an event stream (Server-Sent
Events) instead: a "message" is then one chunk of the response, one write of
the web role.

Client C{i} of this process requests the C{--path} numbered C{first + i *
stride} (modulo their number): several processes share the paths out. The
process writes C{ready} once every client has its snapshot, then reads its
standard input: C{begin} starts counting, C{end} writes one JSON line
(messages, bytes, a latency histogram in 0.1 ms buckets, this process's CPU
seconds) and exits.
"""

import argparse
import base64
import json
import os
import re
import selectors
import socket
import sys
import time

# Latency histogram: 0.1 ms buckets up to 30 s.
BUCKET = 1e-4
BUCKETS = 300_000
_TS = re.compile(rb'"ts": ?([0-9.eE+-]+)')
# In a batch (/ws?batch=1: {"kind":"batch","events":[...]}), the "ts" of each
# analysis, which follows its "seq" as the analyzer writes it (the benchmarks
# publish analyses only; rules' events and alerts in a batch are not counted).
_BATCH = b'{"kind":"batch"'
_EVENT_TS = re.compile(rb'"seq": ?[-0-9.eE+nul]*, ?"ts": ?([0-9.eE+-]+)')
# Its "analyzed_at" (set by the analyzer), which follows: the part of the
# latency from the analysis to the client, histogrammed on its own.
_ANALYZED_AT = re.compile(rb'"analyzed_at": ?([0-9.eE+-]+)')
# What the clients that are not timed count: one per analysis.
_EVERY_ANALYSIS = b'"analyzed_at"'
_PONG_HEADER = 0x8A  # FIN + pong


class _Connection:
    """
    What both kinds of client share: the socket, the answer's head, and the
    bytes received and not yet read.
    """

    # How the answer to the request starts, and what a refusal is called.
    accepted = b""
    refused = ""

    def __init__(self, sock, stats, timed):
        self.sock = sock
        self.stats = stats
        self.timed = timed
        self.buffer = bytearray()
        self.open = False
        self.snapshot = False
        self.closed = False

    def received(self):
        """
        Read what the socket has: the buffer (past the answer's head), and
        when it was received; L{None} if there is nothing to read in it yet.
        """
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return None
        now = time.time()
        buf = self.buffer
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return None
            if not buf.startswith(self.accepted):
                raise SystemExit(self.refused + ": " + bytes(buf[:200]).decode("latin-1"))
            del buf[:end + 4]
            self.open = True
        return buf, now


class Client(_Connection):
    """
    One WebSocket connection: the handshake, then unmasked server frames.
    """

    accepted = b"HTTP/1.1 101"
    refused = "handshake refused"

    def __init__(self, sock, path, port, stats, timed=True):
        _Connection.__init__(self, sock, stats, timed)
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    def readable(self):
        received = self.received()
        if received is None:
            return
        buf, now = received
        stats = self.stats
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                head = 10
            if n - pos < head + length:
                break
            start = pos + head
            pos = start + length
            opcode = b0 & 0x0F
            if opcode == 1 and b0 & 0x80:
                stats.message(buf, start, pos, now, self.timed)
            elif opcode in (0, 1):
                if b0 & 0x80:  # the last frame of a snapshot
                    self.snapshot = True
            elif opcode == 9:  # ping: a masked pong (mask 0) with its payload
                payload = bytes(buf[start:pos])
                try:
                    self.sock.send(bytes([_PONG_HEADER, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                except OSError:  # a full buffer (this client is far behind) or a reset
                    pass
            elif opcode == 8:
                self.closed = True
        del buf[:pos]


class StreamClient(_Connection):
    """
    One event stream (C{GET /api/stream...}, Server-Sent Events): the chunks
    of its body, each a write of the web role (one event, or a turn's
    events); every C{analysis} event's C{"ts"} is histogrammed.
    """

    accepted = b"HTTP/1.1 200"
    refused = "stream refused"

    def __init__(self, sock, path, port, stats, timed=True):
        _Connection.__init__(self, sock, stats, timed)
        self.events = bytearray()
        self.request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()

    def readable(self):
        received = self.received()
        if received is None:
            return
        buf, now = received
        pos, n = 0, len(buf)
        while True:
            line = buf.find(b"\r\n", pos)
            if line < 0:
                break
            size = int(buf[pos:line], 16)
            if n < line + 2 + size + 2:
                break
            chunk = bytes(buf[line + 2:line + 2 + size])
            pos = line + 2 + size + 2
            if not self.snapshot:
                self.events += chunk
                end = self.events.find(b"\n\n", self.events.find(b"event: snapshot"))
                if end >= 0:
                    self.snapshot = True
                    self.events.clear()
                continue
            self.stats.chunk(chunk, now, self.timed)
        del buf[:pos]


class Stats:
    def __init__(self):
        self.counting = False
        self.messages = 0
        self.events = 0
        self.bytes = 0
        self.histogram = [0] * BUCKETS
        self.analysed = [0] * BUCKETS

    def chunk(self, data, now, timed=True):
        # A write to an event stream: its analyses' "ts" (keep-alives have none).
        if not self.counting:
            return
        self.messages += 1
        self.bytes += len(data)
        if not timed:
            self.events += data.count(_EVERY_ANALYSIS)
            return
        found = [match.group(1) for match in _TS.finditer(data)]
        self.events += len(found)
        self._count(found, _ANALYZED_AT.findall(data), now)

    def _count(self, found, analysed, now):
        for ts in found:
            bucket = int((now - float(ts)) / BUCKET)
            self.histogram[min(max(bucket, 0), BUCKETS - 1)] += 1
        for at in analysed:
            bucket = int((now - float(at)) / BUCKET)
            self.analysed[min(max(bucket, 0), BUCKETS - 1)] += 1

    def message(self, buf, start, end, now, timed=True):
        if not self.counting:
            return
        self.messages += 1
        self.bytes += end - start
        if not timed:
            self.events += buf.count(_EVERY_ANALYSIS, start, end)
            return
        if buf.startswith(_BATCH, start):
            found = [match.group(1) for match in _EVENT_TS.finditer(buf, start, end)]
            analysed = [match.group(1) for match in _ANALYZED_AT.finditer(buf, start, end)]
        else:
            match = _TS.search(buf, start, min(end, start + 400))
            found = [] if match is None else [match.group(1)]
            match = _ANALYZED_AT.search(buf, start, min(end, start + 500))
            analysed = [] if match is None else [match.group(1)]
        self.events += len(found)
        self._count(found, analysed, now)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--path", action="append", default=[])
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--timed-every", type=int, default=1)
    arguments = parser.parse_args()
    paths = arguments.path or ["/ws?history=0"]
    selector = selectors.DefaultSelector()
    stats = Stats()
    clients = []
    for i in range(arguments.count):
        sock = socket.create_connection(("127.0.0.1", arguments.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        index = arguments.first + i * arguments.stride
        path = paths[index % len(paths)]
        kind = StreamClient if path.startswith("/api/stream") else Client
        # Every path has its timed clients, spread over the order of connection.
        timed = (index // len(paths)) % arguments.timed_every == 0
        client = kind(sock, path, arguments.port, stats, timed)
        sock.sendall(client.request)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, client)
        clients.append(client)
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    ready = False
    while True:
        for key, _ in selector.select(1.0):
            client = key.data
            if client is None:
                line = sys.stdin.readline().strip()
                if line == "begin":
                    stats.counting = True
                    cpu = os.times()
                    begun = time.time()
                elif line in ("end", ""):
                    cpu2 = os.times()
                    closed = sum(c.closed for c in clients)
                    print(json.dumps({
                        "messages": stats.messages, "events": stats.events, "bytes": stats.bytes, "closed": closed,
                        "seconds": time.time() - begun if stats.counting else 0,
                        "cpu": (cpu2.user + cpu2.system - cpu.user - cpu.system) if stats.counting else 0,
                        "histogram": {i: c for i, c in enumerate(stats.histogram) if c},
                        "analysed": {i: c for i, c in enumerate(stats.analysed) if c}}), flush=True)
                    return
                continue
            client.readable()
            if client.closed:
                selector.unregister(client.sock)
        if not ready and all(c.snapshot or c.closed for c in clients):
            ready = True
            print(json.dumps({"ready": sum(not c.closed for c in clients)}), flush=True)


if __name__ == "__main__":
    main()
