"""
Analyzer capacity: how many measures a second one real `twistd resmon --role=analyzer`
analyzes and publishes (with publisher confirms, acking each measure after its analysis is
confirmed), draining a backlog of realistic measures of many hosts; and its CPU per measure.

Usage: python bench/analyzer_throughput.py [--broker URL] [--measures N] [--hosts N] [--cores N]
Needs RabbitMQ, resmon installed (the twistd on this interpreter's PATH) and psutil.
"""

import json
import random
import time

import psutil
from twisted.internet import defer, task

from _common import argumentParser, runBenchmark
from resmon.agent.sampler import Sampler


def templateMetrics():
    """
    The metrics of this machine, as the agent samples them (rates from two samples).
    """
    sampler = Sampler()
    sampler.sample()
    time.sleep(0.2)
    return sampler.sample()


def measure(rng, template, host, seq, cores):
    metrics = json.loads(json.dumps(template))
    per = [round(rng.uniform(0, 100), 1) for _ in range(cores)]
    metrics["cpu"] = {"percent": round(sum(per) / cores, 1), "per_core": per}
    metrics["memory"]["percent"] = round(rng.uniform(20, 95), 1)
    for disk in metrics.get("disks", []):
        disk["percent"] = round(rng.uniform(10, 99), 1)
    return {"v": 1, "host": host, "seq": seq, "ts": time.time(), "interval": 1.0, "metrics": metrics}


@defer.inlineCallbacks
def messageCount(amqp, queue):
    reply = yield amqp.channel.queue_declare(queue=queue, passive=True)
    return reply.fields[1]


@defer.inlineCallbacks
def main(reactor, arguments, rig):
    count, hostCount, cores = arguments.measures, arguments.hosts, arguments.cores
    amqp, exchange = rig.amqp, rig.exchange
    queue = rig.queue("resmon.bench.analyzer", [".liveness"])
    recorder = rig.queue("resmon.bench.recorder")
    args = [f"--queue={queue}", "--dead-letter-queue="]
    yield amqp.channel.queue_declare(queue=recorder, durable=False, auto_delete=False)
    yield amqp.channel.queue_bind(queue=recorder, exchange=exchange, routing_key="#.analysis")
    # Once to declare the analyzer's queue as resmon does, then stopped: the backlog waits in it.
    first = rig.start("bench-analyzer-declare", "analyzer", *args)
    yield first.waitForOutput(b"consuming #.measure")
    yield first.stop()

    rng = random.Random(1)
    template = templateMetrics()
    hosts = [f"host-{i:04d}.example.com" for i in range(hostCount)]
    print(f"publishing {count} measures of {hostCount} hosts ({cores} cores, this machine's "
          f"{len(template.get('disks', []))} filesystems)...")
    for seq in range(count):
        host = hosts[seq % hostCount]
        body = json.dumps(measure(rng, template, host, seq // hostCount, cores)).encode()
        yield amqp.publish(exchange, host.replace(".", "_") + ".measure", body)
    while (yield messageCount(amqp, queue)) < count:
        yield task.deferLater(reactor, 0.05, lambda: None)
    size = len(body)

    analyzer = rig.start("bench-analyzer", "analyzer", *args)
    process = psutil.Process(analyzer.transport.pid)
    deadline = time.monotonic() + 30
    while (yield messageCount(amqp, recorder)) == 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"no analysis in 30 s: see {analyzer.logPath}")
        yield task.deferLater(reactor, 0.01, lambda: None)
    began, cpuBegan = time.perf_counter(), sum(process.cpu_times()[:2])
    startCount = yield messageCount(amqp, recorder)
    progressAt, done = time.monotonic(), startCount
    while done < count:
        yield task.deferLater(reactor, 0.05, lambda: None)
        now = yield messageCount(amqp, recorder)
        if now > done:
            progressAt, done = time.monotonic(), now
        elif analyzer.ended_ or time.monotonic() - progressAt > 10:
            raise SystemExit(f"the analyzer stopped analysing at {done} of {count}: "
                             f"see {analyzer.logPath}")
    elapsed, cpu = time.perf_counter() - began, sum(process.cpu_times()[:2]) - cpuBegan
    rss = process.memory_info().rss
    analysed = done - startCount
    print(f"measure body                {size} bytes")
    print("analyzers                   usage, sustained, disk (the built-ins)")
    print(f"measures analyzed           {analysed} in {elapsed:.2f} s")
    print(f"throughput                  {analysed / elapsed:.0f} measures/s "
          f"(= hosts at one sample a second)")
    print(f"analyzer CPU                {cpu / elapsed * 100:.0f} % of a core, "
          f"{cpu / analysed * 1e6:.0f} us per measure")
    print(f"analyzer RSS                {rss / 2**20:.0f} MiB")
    print(f"machine                     {psutil.cpu_count()} CPUs; the broker and this script "
          f"share them")


if __name__ == "__main__":
    runBenchmark(main, argumentParser(__doc__, measures=20000, hosts=1000, cores=8))
