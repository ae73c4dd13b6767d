"""
Analyzer cost in a steady flow: one real `twistd resmon --role=analyzer` (which also judges host
liveness, so it receives every measure twice: its share in the analyzers' queue, all of them in
the liveness queue) while this script publishes a measure of each of --hosts hosts every second,
spread over the second; its CPU per measure and in % of a core, the broker's beside it, and how
many measure decodes the process shared between its analyzer and its liveness judge (from its
/metrics). bench/analyzer_throughput.py measures a backlog drained instead, where the two queues
run apart and little is shared.

Usage: python bench/analyzer_steady.py [--broker URL] [--hosts N] [--cores N] [--warmup S]
       [--seconds S] [--source DIR]
--source runs the analyzer from another checkout of resmon (e.g. a git worktree of an older
commit) to compare. Needs RabbitMQ, resmon installed with its test extra (psutil).
"""

import json
import os
import random
import time

import psutil
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task
from twisted.web.client import Agent, readBody

from _common import TwistdProcess, argumentParser, freePort, runBenchmark
from analyzer_throughput import brokerProcess, cpuSeconds, measure, templateMetrics

# Publishing ticks a second: each publishes its share of the hosts.
TICKS = 20


@defer.inlineCallbacks
def scrape(port):
    response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/metrics".encode())
    body = yield readBody(response)
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def counter(samples, name, **labels):
    return samples.get((name + "_total", tuple(sorted(labels.items()))), 0.0)


class Publisher:
    """
    Publishes one measure of each host per second, TICKS times a second a
    share of them; bodies built from one template per host, with the seq
    and ts of the moment.
    """

    def __init__(self, amqp, exchange, hosts, cores):
        rng = random.Random(1)
        template = templateMetrics()
        self.amqp, self.exchange = amqp, exchange
        self.hosts = []
        for host in hosts:
            parts = json.dumps(measure(rng, template, host, 123456789, cores, 1.5e9)).encode()
            before, after = parts.split(b"123456789", 1)
            middle, end = after.split(b"1500000000.0", 1)
            self.hosts.append((host.replace(".", "_") + ".measure", before, middle, end))
        self.seq = 0
        self.published = 0
        self._tick = 0
        self._loop = task.LoopingCall(self.publishTick)

    def publishTick(self):
        share = len(self.hosts) // TICKS + 1
        first = self._tick * share
        if first == 0:
            self.seq += 1
        now = repr(time.time()).encode()
        seq = str(self.seq).encode()
        for key, before, middle, end in self.hosts[first:first + share]:
            self.amqp.publish(self.exchange, key, before + seq + middle + now + end)
            self.published += 1
        self._tick = (self._tick + 1) % TICKS

    def start(self):
        self._loop.start(1 / TICKS)

    def stop(self):
        self._loop.stop()


@defer.inlineCallbacks
def main(reactor, arguments, rig):
    exchange = rig.exchange
    queue = rig.queue("resmon.bench.steady", [".liveness"])
    metricsPort = freePort()
    env = {"PYTHONPATH": os.path.abspath(arguments.source)} if arguments.source else None
    process = TwistdProcess("bench-steady-analyzer", [
        "--role=analyzer", f"--broker={rig.broker}", f"--exchange={exchange}", f"--queue={queue}",
        "--dead-letter-queue=", f"--metrics-port={metricsPort}", "--interface=127.0.0.1"],
        env=env).start()
    rig._processes.append(process)
    yield process.waitForOutput(b"] ready: ", timeout=30)
    hosts = [f"host-{i:05d}.example.com" for i in range(arguments.hosts)]
    publisher = Publisher(rig.amqp, exchange, hosts, arguments.cores)
    print(f"analyzer from {arguments.source or 'this checkout'} (log: {process.logPath}); "
          f"{arguments.hosts} hosts at 1 Hz, {arguments.warmup:.0f} s of warm-up, then "
          f"{arguments.seconds:.0f} s measured", flush=True)
    publisher.start()
    try:
        yield task.deferLater(reactor, arguments.warmup, lambda: None)
        ps, broker = psutil.Process(process.transport.pid), brokerProcess()
        before = yield scrape(metricsPort)
        began, cpuBegan, brokerBegan = time.perf_counter(), sum(ps.cpu_times()[:2]), cpuSeconds(broker)
        publishedBegan = publisher.published
        yield task.deferLater(reactor, arguments.seconds, lambda: None)
        elapsed = time.perf_counter() - began
        cpu, brokerCPU = sum(ps.cpu_times()[:2]) - cpuBegan, cpuSeconds(broker) - brokerBegan
        published = publisher.published - publishedBegan
        after = yield scrape(metricsPort)
        rss = ps.memory_info().rss / 2**20
    finally:
        publisher.stop()

    def delta(name, **labels):
        return counter(after, name, **labels) - counter(before, name, **labels)

    analysed = delta("resmon_analyzer_measures", result="analyzed")
    decoded = delta("resmon_analyzer_measure_decodes", result="decoded")
    shared = delta("resmon_analyzer_measure_decodes", result="shared")
    print()
    print(f"{published / elapsed:.0f} measures/s published, {analysed / elapsed:.0f}/s analysed "
          f"(each also judged for liveness); {psutil.cpu_count()} CPUs shared with the broker "
          f"and this script")
    print(f"analyzer: {cpu / max(analysed, 1) * 1e6:.1f} us CPU per measure, "
          f"{cpu / elapsed * 100:.1f} % of a core, RSS {rss:.0f} MiB")
    print(f"broker:   {brokerCPU / max(analysed, 1) * 1e6:.1f} us CPU per measure, "
          f"{brokerCPU / elapsed * 100:.1f} % of a core")
    if decoded or shared:
        asked = decoded + shared
        print(f"decodes:  the analyzer and the liveness judge asked for {asked:.0f}; "
              f"{decoded:.0f} decoded, {shared:.0f} taken from the other: "
              f"{shared / (asked / 2) * 100:.0f} % of the measures decoded once for both")
    else:
        print("decodes:  not counted by this analyzer (an older resmon)")


if __name__ == "__main__":
    parser = argumentParser(__doc__, hosts=5000, cores=8, warmup=5.0, seconds=20.0)
    parser.add_argument("--source", default=None, help="a resmon checkout to run the analyzer from")
    runBenchmark(main, parser)
