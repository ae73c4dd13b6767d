"""
Memory of a server fed junk: one real `twistd resmon --role=server` receives
rounds of generated bad measures (the bad-input integration test's stream,
every way a measure can be wrong, one 10 MiB body in the first round),
interleaved with good ones; prints its RSS after each round. Flat memory
means the rejections (counted, logged rate-limited, dead-lettered) keep
nothing per message.

Usage: python bench/badinput_memory.py [--broker URL] [--rounds N] [--per-round N]
Needs RabbitMQ, resmon installed (the twistd on this interpreter's PATH) and psutil.
"""

import random
import time

import psutil
from twisted.internet import defer

from _common import argumentParser, runBenchmark
from resmon.defaults import RULES_QUEUE_SUFFIX
from test_integration_badinput import badMessages, goodMeasure

GOOD_EVERY = 50


@defer.inlineCallbacks
def main(reactor, arguments, rig):
    rounds, perRound = arguments.rounds, arguments.per_round
    amqp, exchange = rig.amqp, rig.exchange
    queue = rig.queue("resmon.bench.analyzer", [".liveness", RULES_QUEUE_SUFFIX])
    deadLetter = rig.queue("resmon.bench.rejected", exchange=True)
    server, _ = yield rig.startListening(
        "bench-badinput", "server", f"--queue={queue}", f"--dead-letter-queue={deadLetter}",
        "--stats-interval=1", ready=b"consuming #.measure")
    process = psutil.Process(server.transport.pid)
    print(f"server RSS at start            {process.memory_info().rss / 2**20:7.1f} MiB")
    rng = random.Random(20261123)
    bad = good = 0
    for round in range(rounds):
        began = time.perf_counter()
        for key, body, _ in badMessages(rng, perRound, huge=round == 0):
            yield amqp.publish(exchange, key, body)
            bad += 1
            if bad % GOOD_EVERY == 0:
                yield amqp.publish(exchange, f"good-{good % 7}.measure", goodMeasure(f"good-{good % 7}", good))
                good += 1
        yield server.waitForOutput(f"not analysed again, {bad} rejected (".encode(), timeout=120)
        elapsed = time.perf_counter() - began
        print(f"after round {round + 1} ({bad:6d} bad)    {process.memory_info().rss / 2**20:7.1f} MiB"
              f"   ({perRound / elapsed:.0f} bad messages/s)")
    print(f"log: {server.logPath}")


if __name__ == "__main__":
    runBenchmark(main, argumentParser(__doc__, rounds=4, per_round=5000))
