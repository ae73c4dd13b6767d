"""
Analyzer cost in a steady flow: one real `twistd resmon --role=analyzer` (which also judges host
liveness, so it receives every measure twice: its share in the analyzers' queue, all of them in
the liveness queue) while this script publishes a measure of each of --hosts hosts every second,
spread over the second; its CPU per measure and in % of a core, the broker's beside it, and how
many measure decodes the process shared between its analyzer and its liveness judge (from its
/metrics). bench/analyzer_throughput.py measures a backlog drained instead, where the two queues
run apart and little is shared.

Usage: python bench/analyzer_steady.py [--broker URL] [--hosts N] [--cores N] [--warmup S]
       [--seconds S] [--analyzers N] [--source DIR]
--analyzers N runs N analyzer processes on the same queue (one judges liveness, all analyse their
share).
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
    env = {"PYTHONPATH": os.path.abspath(arguments.source)} if arguments.source else None
    analyzers = []
    for index in range(arguments.analyzers):
        metricsPort = freePort()
        process = TwistdProcess(f"bench-steady-analyzer-{index}", [
            "--role=analyzer", f"--broker={rig.broker}", f"--exchange={exchange}",
            f"--queue={queue}", "--dead-letter-queue=", f"--metrics-port={metricsPort}",
            "--interface=127.0.0.1"], env=env).start()
        rig._processes.append(process)
        yield process.waitForOutput(b"] ready: ", timeout=30)
        analyzers.append((process, metricsPort))
    hosts = [f"host-{i:05d}.example.com" for i in range(arguments.hosts)]
    publisher = Publisher(rig.amqp, exchange, hosts, arguments.cores)
    print(f"{arguments.analyzers} analyzer process(es) from {arguments.source or 'this checkout'} "
          f"(logs: {', '.join(p.logPath for p, _ in analyzers)}); {arguments.hosts} hosts at "
          f"1 Hz, {arguments.warmup:.0f} s of warm-up, then {arguments.seconds:.0f} s measured",
          flush=True)
    publisher.start()
    try:
        yield task.deferLater(reactor, arguments.warmup, lambda: None)
        broker = brokerProcess()
        watched = [psutil.Process(p.transport.pid) for p, _ in analyzers]
        before = []
        for _, port in analyzers:
            before.append((yield scrape(port)))
        began, brokerBegan = time.perf_counter(), cpuSeconds(broker)
        cpuBegan = [sum(ps.cpu_times()[:2]) for ps in watched]
        publishedBegan = publisher.published
        yield task.deferLater(reactor, arguments.seconds, lambda: None)
        elapsed = time.perf_counter() - began
        cpus = [sum(ps.cpu_times()[:2]) - c for ps, c in zip(watched, cpuBegan)]
        brokerCPU = cpuSeconds(broker) - brokerBegan
        published = publisher.published - publishedBegan
        after = []
        for _, port in analyzers:
            after.append((yield scrape(port)))
        rss = [ps.memory_info().rss / 2**20 for ps in watched]
    finally:
        publisher.stop()

    def delta(index, name, **labels):
        return counter(after[index], name, **labels) - counter(before[index], name, **labels)

    print()
    print(f"{published / elapsed:.0f} measures/s published; {psutil.cpu_count()} CPUs shared with "
          f"the broker and this script")
    print(f"{'process':<9}{'judges':>7}{'analysed/s':>12}{'CPU us/measure':>16}{'% of a core':>13}"
          f"{'RSS MiB':>9}{'decoded once for both':>32}")
    total = 0.0
    for index, cpu in enumerate(cpus):
        analysed = delta(index, "resmon_analyzer_measures", result="analyzed")
        decoded = delta(index, "resmon_analyzer_measure_decodes", result="decoded")
        shared = delta(index, "resmon_analyzer_measure_decodes", result="shared")
        # The judge receives every measure a second time, in the liveness queue.
        judges = ("yes" if decoded + shared > analysed * 1.5 else "no") if decoded or shared else "?"
        total += analysed
        once = (f"{shared / analysed * 100:.0f} % of its measures" if analysed and (decoded or shared)
                else "not counted (an older resmon)")
        print(f"{index:<9}{judges:>7}{analysed / elapsed:>12.0f}"
              f"{cpu / max(analysed, 1) * 1e6:>16.1f}{cpu / elapsed * 100:>13.1f}{rss[index]:>9.0f}"
              f"{once:>32}")
    print(f"all      {'':>7}{total / elapsed:>12.0f}{sum(cpus) / max(total, 1) * 1e6:>16.1f}"
          f"{sum(cpus) / elapsed * 100:>13.1f}")
    print(f"broker: {brokerCPU / max(total, 1) * 1e6:.1f} us CPU per measure, "
          f"{brokerCPU / elapsed * 100:.1f} % of a core")


if __name__ == "__main__":
    parser = argumentParser(__doc__, hosts=5000, cores=8, warmup=5.0, seconds=20.0, analyzers=1)
    parser.add_argument("--source", default=None, help="a resmon checkout to run the analyzer from")
    runBenchmark(main, parser)
