"""
Memory per host: what one host costs a real `twistd resmon --role=analyzer` and a real
`--role=web` while they keep it (its latest analysis, status, history point and liveness and
analyzer state), and what is left once they forgot it (`--forget-after`).

Publishes one realistic measure for each of N new hosts (twice: the first wave warms the
processes up, as Python keeps the arenas it once used), reads each process's VmRSS with the
hosts held and after they were forgotten.

Usage: python bench/host_memory.py [--broker URL] [--hosts N] [--forget-after S]
Needs RabbitMQ and resmon installed (the twistd on this interpreter's PATH).
"""

import argparse
import os
import re
import sys
import time

from twisted.internet import defer, task

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from resmon import topics, wire  # noqa: E402
from resmon.agent.sampler import Sampler  # noqa: E402
from support import PlainAMQPClient, TwistdProcess, freePort, uniqueName  # noqa: E402


def vmRSS(process):
    with open(f"/proc/{process.transport.pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


def lastCount(process, pattern):
    found = re.findall(pattern, process.output)
    return int(found[-1]) if found else 0


def totalCount(process, pattern):
    return sum(int(n) for n in re.findall(pattern, process.output))


@defer.inlineCallbacks
def waitUntil(reactor, predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"not {what} after {timeout} s")
        yield task.deferLater(reactor, 0.2, lambda: None)


@defer.inlineCallbacks
def wave(reactor, amqp, exchange, analyzer, web, label, count, metrics, before):
    """
    One measure of each of C{count} new hosts; returns the VmRSS of both
    processes while they hold them, then once they forgot them.
    """
    hosts = [f"{label}-{n:06d}.fleet.example" for n in range(count)]
    now = time.time()
    for first in range(0, count, 1000):
        yield defer.gatherResults([
            amqp.publish(exchange, topics.routingKey(host, topics.MEASURE),
                         wire.encodeMeasure(host, 1, now, 1.0, metrics))
            for host in hosts[first:first + 1000]])
    # Held: the analyzer analysed every measure and the web received every
    # analysis and online status (their stats lines count them).
    yield waitUntil(reactor, lambda: lastCount(web, rb"(\d+) events received")
                    >= before["events"] + 2 * count
                    and lastCount(analyzer, rb"(\d+) measures analyzed") >= before["analyzed"] + count,
                    600, f"{label}: every host at the analyzer and the web role")
    held = {"analyzer": vmRSS(analyzer), "web": vmRSS(web)}
    if lastCount(web, rb"(\d+) hosts forgotten") > before["web"]:
        raise SystemExit(f"{label}: hosts were forgotten before all were taken in: "
                         "give a longer --forget-after")
    yield waitUntil(reactor, lambda: lastCount(web, rb"(\d+) hosts forgotten") >= before["web"] + count
                    and totalCount(analyzer, rb"forgot the analysis state of (\d+) hosts")
                    >= before["analyzer"] + count, 600, f"{label}: every host forgotten")
    forgotten = {"analyzer": vmRSS(analyzer), "web": vmRSS(web)}
    return held, forgotten


@defer.inlineCallbacks
def main(reactor, broker, count, forgetAfter):
    exchange, queue = uniqueName("resmon.bench"), uniqueName("resmon.bench.analyzer")
    common = [f"--broker={broker}", f"--exchange={exchange}", f"--forget-after={forgetAfter}",
              "--stats-interval=1"]
    amqp = yield PlainAMQPClient(broker).connect()
    processes = []
    try:
        yield amqp.declareExchange(exchange)
        web = TwistdProcess("bench-memory-web", ["--role=web", *common, f"--port={freePort()}",
                                                 "--interface=127.0.0.1"]).start()
        analyzer = TwistdProcess("bench-memory-analyzer", [
            "--role=analyzer", *common, f"--queue={queue}", "--dead-letter-queue=",
            "--liveness-grace=0", "--stale-after=86400", "--offline-after=604800"]).start()
        processes = [web, analyzer]
        yield web.waitForOutput(b"dashboard listening")
        yield analyzer.waitForOutput(b"judging host liveness: this process receives")
        sampler = Sampler()
        sampler.sample()
        time.sleep(0.2)
        metrics = sampler.sample()
        size = len(wire.encodeMeasure("x", 1, time.time(), 1.0, metrics))
        started = {"analyzer": vmRSS(analyzer), "web": vmRSS(web)}
        print(f"{count} hosts per wave, one {size}-byte measure each (this machine's metrics), "
              f"--forget-after={forgetAfter}")
        print(f"{'':34}{'analyzer':>12}{'web':>12}")
        print(f"{'VmRSS at start':34}" + "".join(f"{started[r] / 2**20:>8.1f} MiB" for r in ("analyzer", "web")))
        results = []
        for number, label in enumerate(("first", "second")):
            before = {"events": lastCount(web, rb"(\d+) events received"),
                      "analyzed": lastCount(analyzer, rb"(\d+) measures analyzed"),
                      "web": lastCount(web, rb"(\d+) hosts forgotten"),
                      "analyzer": number * count}
            held, forgotten = yield wave(reactor, amqp, exchange, analyzer, web, label, count,
                                         metrics, before)
            results.append((held, forgotten))
            print(f"{f'VmRSS, {label} wave held':34}"
                  + "".join(f"{held[r] / 2**20:>8.1f} MiB" for r in ("analyzer", "web")))
            print(f"{f'VmRSS, {label} wave forgotten':34}"
                  + "".join(f"{forgotten[r] / 2**20:>8.1f} MiB" for r in ("analyzer", "web")))
        (firstHeld, baseline), (_, forgotten) = results
        print(f"{'memory per host held (1st wave)':34}"
              + "".join(f"{(firstHeld[r] - started[r]) / count / 1024:>8.1f} KiB"
                        for r in ("analyzer", "web")))
        print(f"{'left after forgetting (2nd wave)':34}"
              + "".join(f"{(forgotten[r] - baseline[r]) / 2**20:>+8.1f} MiB" for r in ("analyzer", "web")))
        print("(per host: VmRSS with the first wave held minus VmRSS at start; left: VmRSS once the "
              "second wave was forgotten minus once the first was. Python keeps the arenas it "
              "freed, so VmRSS does not fall back after forgetting; the second wave reuses them)")
    finally:
        for process in processes:
            yield process.stop()
        yield amqp.cleanUp(exchanges=[exchange], queues=[queue, queue + ".liveness"])
        yield amqp.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--hosts", type=int, default=20000)
    parser.add_argument("--forget-after", type=float, default=60.0,
                        help="longer than the processes take to take in a wave")
    arguments = parser.parse_args()
    task.react(main, (arguments.broker, arguments.hosts, arguments.forget_after))
