"""
Cost of a WebSocket client that stops reading: one real `twistd resmon
--role=web` pushes analyses of 10 hosts at 500 a second to a fast client
and to one whose receive window is full; prints the fast client's latency
before and while the other is stalled, the web process's RSS growth during
the stall, and when the stalled client was dropped (--stall-timeout).

Usage: python bench/stalled_client.py [--broker URL] [--rate N] [--stall-timeout S]
Needs RabbitMQ, resmon installed (the twistd on this interpreter's PATH) and psutil.
"""

import time

import psutil
from twisted.internet import defer, threads

from _common import argumentParser, runBenchmark
from support import (
    analysisLatencies, connectWebSocket, publishAnalysesAt, rawWebSocket, readUntilClosed,
    timeAnalyses)


def median(values):
    return values[len(values) // 2]


@defer.inlineCallbacks
def main(reactor, arguments, rig):
    rate, stallTimeout = arguments.rate, arguments.stall_timeout
    amqp, exchange = rig.amqp, rig.exchange
    web, port = yield rig.startListening("bench-stalled-web", "web", "--history=1",
                                         "--history-points=2", f"--stall-timeout={stallTimeout}")
    fast, _ = yield connectWebSocket(port)
    timeAnalyses(fast)
    stalled = rawWebSocket(port, receiveBuffer=4096)
    connectedAt = time.monotonic()
    process = psutil.Process(web.transport.pid)

    yield publishAnalysesAt(amqp, exchange, rate, 1000, 0)
    yield fast.waitFor(lambda m: m.get("seq") == 999, 30, "the first 1000 analyses")
    before = process.memory_info().rss
    yield publishAnalysesAt(amqp, exchange, rate, 2000, 1000)
    yield fast.waitFor(lambda m: m.get("seq") == 2999, 30, "the next 2000 analyses")
    after = process.memory_info().rss
    yield web.waitForOutput(b"client stopped reading", timeout=stallTimeout + 30)
    droppedAfter = time.monotonic() - connectedAt
    yield threads.deferToThread(readUntilClosed, stalled, 15)

    early, late = analysisLatencies(fast, range(200, 1000)), analysisLatencies(fast, range(1200, 3000))
    print(f"analyses pushed                 3000 ({rate}/s, 10 hosts, ~4 KiB each)")
    print(f"fast client median latency      {median(early) * 1000:6.1f} ms alone, "
          f"{median(late) * 1000:6.1f} ms beside the stalled client")
    print(f"fast client 99th percentile     {early[len(early) * 99 // 100] * 1000:6.1f} ms alone, "
          f"{late[len(late) * 99 // 100] * 1000:6.1f} ms beside the stalled client")
    print(f"web RSS during 2000 analyses    {(after - before) / 2**20:+6.2f} MiB "
          f"({after / 2**20:.0f} MiB)")
    print(f"stalled client dropped          {droppedAfter:6.1f} s after it connected and never read "
          f"(--stall-timeout={stallTimeout})")


if __name__ == "__main__":
    runBenchmark(main, argumentParser(__doc__, rate=500, stall_timeout=6.0))
