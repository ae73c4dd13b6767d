"""
Cost of a WebSocket client that stops reading: one real `twistd resmon
--role=web` pushes analyses of 10 hosts at 500 a second to a fast client
and to one whose receive window is full; prints the fast client's latency
before and while the other is stalled, the web process's RSS growth during
the stall, and when the stalled client was dropped (--stall-timeout).

Usage: python bench/stalled_client.py [--broker URL] [--rate N] [--stall-timeout S]
Needs RabbitMQ, resmon installed (the twistd on this interpreter's PATH) and psutil.
"""

import argparse
import os
import sys
import time

import psutil
from twisted.internet import defer, task, threads

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support import PlainAMQPClient, TwistdProcess, connectWebSocket, freePort, uniqueName  # noqa: E402
from test_integration_websocket_abuse import (  # noqa: E402
    _latencies, _publishAt, _rawHandshake, _readUntilClosed)


def median(values):
    return values[len(values) // 2]


@defer.inlineCallbacks
def main(reactor, broker, rate, stallTimeout):
    exchange, port = uniqueName("resmon.bench"), freePort()
    amqp = yield PlainAMQPClient(broker).connect()
    yield amqp.declareExchange(exchange)
    web = TwistdProcess("bench-stalled-web", [
        "--role=web", f"--broker={broker}", f"--exchange={exchange}", f"--port={port}",
        "--interface=127.0.0.1", "--history=1", "--history-points=2",
        f"--stall-timeout={stallTimeout}"]).start()
    try:
        yield web.waitForOutput(b"consuming #.analysis")
        fast, _ = yield connectWebSocket(port)
        fast.timed = []
        received = fast.received

        def timestamp(message):
            if message.get("kind") == "analysis":
                fast.timed.append(dict(message, received=time.time()))
            received(message)
        fast.received = timestamp
        stalled = _rawHandshake(port, receiveBuffer=4096)
        connectedAt = time.monotonic()
        process = psutil.Process(web.transport.pid)

        yield _publishAt(amqp, exchange, rate, 1000, 0)
        yield fast.waitFor(lambda m: m.get("seq") == 999, 30, "the first 1000 analyses")
        before = process.memory_info().rss
        yield _publishAt(amqp, exchange, rate, 2000, 1000)
        yield fast.waitFor(lambda m: m.get("seq") == 2999, 30, "the next 2000 analyses")
        after = process.memory_info().rss
        yield web.waitForOutput(b"client stopped reading", timeout=stallTimeout + 30)
        droppedAfter = time.monotonic() - connectedAt
        yield threads.deferToThread(_readUntilClosed, stalled, 15)

        early, late = _latencies(fast, range(200, 1000)), _latencies(fast, range(1200, 3000))
        print(f"analyses pushed                 3000 ({rate}/s, 10 hosts, ~4 KiB each)")
        print(f"fast client median latency      {median(early) * 1000:6.1f} ms alone, "
              f"{median(late) * 1000:6.1f} ms beside the stalled client")
        print(f"fast client 99th percentile     {early[len(early) * 99 // 100] * 1000:6.1f} ms alone, "
              f"{late[len(late) * 99 // 100] * 1000:6.1f} ms beside the stalled client")
        print(f"web RSS during 2000 analyses    {(after - before) / 2**20:+6.2f} MiB "
              f"({after / 2**20:.0f} MiB)")
        print(f"stalled client dropped          {droppedAfter:6.1f} s after it connected and never read "
              f"(--stall-timeout={stallTimeout})")
    finally:
        yield web.stop()
        yield amqp.cleanUp(exchanges=[exchange])
        yield amqp.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--stall-timeout", type=float, default=6)
    arguments = parser.parse_args()
    task.react(main, (arguments.broker, arguments.rate, arguments.stall_timeout))
