"""
WebSocket ping floods against a real `twistd resmon` web role: FLOODERS raw
connections each send pings as fast as the socket takes them and never read,
reconnecting whenever they are closed, for SECONDS; meanwhile one well-behaved
client counts the analyses it receives. Prints what the flood cost the server.

Usage: python bench/websocket_ping_flood.py [--flooders N] [--seconds S]
Needs resmon installed (the twistd beside this interpreter) and psutil; no broker
(the web role runs standalone, sampling this machine every 0.2 s).
"""

import argparse
import os
import socket
import subprocess
import threading
import time

import psutil

import _common  # noqa: F401 (the tests' helpers on the path)
from support import LOG_DIR, TWISTD, freePort, rawWebSocket, readUntilClosed, splitFrames

PING = b"\x89\x80\x00\x00\x00\x00"   # a masked, empty ping


def handshake(port):
    return rawWebSocket(port, timeout=10)


class Flooder(threading.Thread):
    def __init__(self, port, until):
        threading.Thread.__init__(self, daemon=True)
        self.port, self.until = port, until
        self.connections = self.pingsSent = self.closedBy1008 = 0

    def run(self):
        burst = PING * 10000
        while time.monotonic() < self.until:
            try:
                sock = handshake(self.port)
            except OSError:
                continue
            self.connections += 1
            sock.settimeout(0.5)
            try:
                while time.monotonic() < self.until:
                    self.pingsSent += sock.send(burst) // len(PING)
            except OSError:
                pass   # the server stopped reading (a send times out) or closed
            try:
                data = readUntilClosed(sock, 6)
            except OSError:
                data = b""
            if b"\x03\xf0too many pings" in data:   # a close frame: 1008, and its reason
                self.closedBy1008 += 1
            sock.close()


class Bystander(threading.Thread):
    def __init__(self, port):
        threading.Thread.__init__(self, daemon=True)
        self.sock = handshake(port)
        self.textFrames = 0
        self.stopped = False

    def run(self):
        data = b""
        self.sock.settimeout(1)
        while not self.stopped:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            frames, data = splitFrames(data + chunk)
            for opcode, payload in frames:
                if opcode == 1:
                    self.textFrames += 1
                elif opcode == 9:   # answer the server's pings, or it drops us
                    pong = b"\x8a" + bytes([0x80 | len(payload)]) + b"\0\0\0\0"   # masked with zeros
                    self.sock.sendall(pong + payload)


def sample(process, seconds):
    process.cpu_percent(None)
    time.sleep(seconds)
    return process.cpu_percent(None), process.memory_info().rss / 2 ** 20


def main(arguments):
    port = freePort()
    os.makedirs(LOG_DIR, exist_ok=True)
    logPath = os.path.join(LOG_DIR, f"bench-ping-flood-{port}.log")
    with open(logPath, "wb") as log:
        server = subprocess.Popen([TWISTD, "-n", "--pidfile=", "resmon", f"--port={port}",
                                   "--interface=127.0.0.1", "--name=flooded", "--interval=0.2",
                                   "--stats-interval=5"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while b"dashboard listening" not in open(logPath, "rb").read():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the web role did not start, see {logPath}")
            time.sleep(0.1)
        process = psutil.Process(server.pid)
        bystander = Bystander(port)
        bystander.start()
        quietCPU, quietRSS = sample(process, 3)
        before = bystander.textFrames
        until = time.monotonic() + arguments.seconds
        flooders = [Flooder(port, until) for _ in range(arguments.flooders)]
        for f in flooders:
            f.start()
        cpu, rss = [], []
        while time.monotonic() < until:
            c, r = sample(process, 1)
            cpu.append(c)
            rss.append(r)
        during = bystander.textFrames - before
        for f in flooders:
            f.join(15)
        bystander.stopped = True
        print(f"\n{arguments.flooders} raw clients flooding pings for {arguments.seconds:g} s, reconnecting "
              f"when closed; {os.cpu_count()} CPUs (server log: {logPath})")
        rows = [
            ("flood connections opened", sum(f.connections for f in flooders)),
            ("  closed by the server with 1008", sum(f.closedBy1008 for f in flooders)),
            ("pings sent (accepted by the socket)", sum(f.pingsSent for f in flooders)),
            ("web role CPU, quiet (% of one core)", f"{quietCPU:.0f}"),
            ("web role CPU during the flood, mean / max", f"{sum(cpu) / len(cpu):.0f} / {max(cpu):.0f}"),
            ("web role RSS quiet / max during (MiB)", f"{quietRSS:.0f} / {max(rss):.0f}"),
            ("analyses the bystander got during the flood",
             f"{during} (about {arguments.seconds * 5:.0f} expected at 5 a second)"),
        ]
        width = max(len(label) for label, _ in rows) + 2
        for label, value in rows:
            print(f"{label:<{width}}{value}")
    finally:
        server.terminate()
        server.wait(15)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--flooders", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    main(parser.parse_args())
