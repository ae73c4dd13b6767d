"""
Analyzer capacity: how many measures a second one real `twistd resmon --role=analyzer`
analyzes and publishes (with publisher confirms, acking each measure after its analysis is
confirmed), draining a backlog of realistic measures of many hosts, and its CPU per measure;
in the same run, on the same backlog, the same figures for a naive txAMQP consumer and a pika
SelectConnection consumer doing the least work (bench/analyzer_peers.py), and the ratios.
With --rounds N the whole run is repeated N times, each round started by the next contender,
and the medians are printed: on a shared 2-core machine one round's figures move by 20 %.
Beside each consumer, the CPU the local broker (beam.smp) spent meanwhile, per measure and in
% of a core: what the consumer costs the broker, which shares the cores with it.
The backlog is what analyzers catch up on after an outage: the liveness queue, deleted with its
last consumer, does not hold it. With --liveness 1 it does, as in a steady flow, where the
analyzer that judges host liveness receives every measure twice: resmon's drain then ends when
both queues are empty, and its figures are those of that process.

With --partitions N the analyzer's backlog waits in N partition queues behind a consistent-hash
exchange (--partitions of twistd resmon), all consumed by the one process; --server-args adds
options to its command line (e.g. "--analyzers=usage").

Usage: python bench/analyzer_throughput.py [--broker URL] [--measures N] [--hosts N] [--cores N]
       [--prefetch N] [--only resmon,txamqp,pika] [--rounds N] [--liveness 0|1]
       [--partitions N] [--server-args "..."]
Needs RabbitMQ, resmon installed with its test extra (the twistd on this interpreter's PATH,
psutil, pika).
"""

import json
import os
import random
import statistics
import sys
import time

import psutil
from twisted.internet import defer, reactor, task

from _common import TwistdProcess, argumentParser, runBenchmark
from resmon.agent.sampler import Sampler
from resmon.bus.topology import partitionQueue
from resmon.defaults import DEFAULT_PREFETCH, LIVENESS_QUEUE_SUFFIX

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "analyzer_peers.py")
PEERS_KINDS = ("txamqp", "pika")


def brokerProcess():
    """
    The local RabbitMQ (Erlang's C{beam.smp}), whose CPU per measure is
    printed beside each consumer's, or L{None} if there is none here.
    """
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "beam.smp":
            return process
    return None


def cpuSeconds(process):
    if process is None:
        return float("nan")
    try:
        return sum(process.cpu_times()[:2])
    except psutil.Error:
        return float("nan")


def templateMetrics():
    """
    The metrics of this machine, as the agent samples them (rates from two samples).
    """
    sampler = Sampler()
    sampler.sample()
    time.sleep(0.2)
    return sampler.sample()


def measure(rng, template, host, seq, cores, ts):
    metrics = json.loads(json.dumps(template))
    per = [round(rng.uniform(0, 100), 1) for _ in range(cores)]
    metrics["cpu"] = {"percent": round(sum(per) / cores, 1), "per_core": per}
    metrics["memory"]["percent"] = round(rng.uniform(20, 95), 1)
    for disk in metrics.get("disks", []):
        disk["percent"] = round(rng.uniform(10, 99), 1)
    return {"v": 1, "host": host, "seq": seq, "ts": ts, "interval": 1.0, "metrics": metrics}


@defer.inlineCallbacks
def messageCount(amqp, queue):
    reply = yield amqp.channel.queue_declare(queue=queue, passive=True)
    return reply.fields[1]


@defer.inlineCallbacks
def totalCount(amqp, queues):
    total = 0
    for queue in queues:
        total += yield messageCount(amqp, queue)
    return total


class PeerProcess(TwistdProcess):
    """
    A peer of bench/analyzer_peers.py, run as its own process.
    """

    def __init__(self, kind, args):
        TwistdProcess.__init__(self, f"bench-peer-{kind}", [kind] + list(args))

    def start(self):
        argv = [sys.executable, PEERS] + self.args
        self._log.write(("$ " + " ".join(argv) + "\n").encode())
        reactor.spawnProcess(self, sys.executable, argv, env=self.env)
        return self

    def stop(self, timeout=10):
        self.signal("KILL")
        return self.ended


@defer.inlineCallbacks
def drain(reactor, amqp, process, count, recorder, queue, alsoDrains=()):
    """
    Start C{process}, which consumes the backlog of C{count} measures waiting
    in C{queue} and publishes one analysis each (counted in C{recorder}), and
    measure it from its first analysis to its last, and until the queues
    C{alsoDrains} are empty.

    @return: a dict of figures.
    """
    yield amqp.channel.queue_purge(queue=recorder)
    process.start()
    try:
        ps = psutil.Process(process.transport.pid)
        deadline = time.monotonic() + 30
        while (yield messageCount(amqp, recorder)) == 0:
            if time.monotonic() > deadline or process.ended_:
                raise SystemExit(f"no analysis in 30 s: see {process.logPath}")
            yield task.deferLater(reactor, 0.01, lambda: None)
        broker = brokerProcess()
        began, cpuBegan = time.perf_counter(), sum(ps.cpu_times()[:2])
        brokerBegan = cpuSeconds(broker)
        startCount = yield messageCount(amqp, recorder)
        progressAt, done = time.monotonic(), startCount
        waiting = 1
        while done < count or waiting:
            yield task.deferLater(reactor, 0.02, lambda: None)
            now = yield messageCount(amqp, recorder)
            left = 0
            for other in alsoDrains:
                left += yield messageCount(amqp, other)
            if now > done or left < waiting:
                progressAt, done, waiting = time.monotonic(), now, left
            elif process.ended_ or time.monotonic() - progressAt > 10:
                raise SystemExit(f"{process.label} stopped analysing at {done} of {count}: "
                                 f"see {process.logPath}")
        elapsed, cpu = time.perf_counter() - began, sum(ps.cpu_times()[:2]) - cpuBegan
        brokerCPU = cpuSeconds(broker) - brokerBegan
        rss = ps.memory_info().rss
    finally:
        yield process.stop()
    analysed = done - startCount
    return {"analysed": analysed, "elapsed": elapsed, "rate": analysed / elapsed,
            "cpuPer": cpu / analysed * 1e6, "core": cpu / elapsed, "rss": rss / 2**20,
            "brokerPer": brokerCPU / analysed * 1e6, "brokerCore": brokerCPU / elapsed}


@defer.inlineCallbacks
def main(reactor, arguments, rig):
    count, hostCount, cores, prefetch = (arguments.measures, arguments.hosts, arguments.cores,
                                         arguments.prefetch)
    only = [name for name in arguments.only.split(",") if name]
    amqp, exchange = rig.amqp, rig.exchange
    partitions = arguments.partitions
    queue = rig.queue("resmon.bench.analyzer", [".liveness"] + [f".{kind}" for kind in PEERS_KINDS]
                      + [f".{index}" for index in range(partitions)])
    if partitions:
        rig.deleteExchangeAtEnd(f"{queue}.hash")
    peerQueues = {kind: f"{queue}.{kind}" for kind in PEERS_KINDS}
    liveness = queue + LIVENESS_QUEUE_SUFFIX
    # Where resmon's backlog waits: its queue, or each of its partitions.
    resmonQueues = [partitionQueue(queue, index) for index in range(partitions)] or [queue]
    recorder = rig.queue("resmon.bench.recorder")
    args = [f"--queue={queue}", "--dead-letter-queue=", f"--prefetch={prefetch}",
            f"--partitions={partitions}"]
    yield amqp.channel.queue_declare(queue=recorder, durable=False, auto_delete=False)
    yield amqp.channel.queue_bind(queue=recorder, exchange=exchange, routing_key="#.analysis")
    # Once to declare the analyzer's queue as resmon does, then stopped: the backlog waits in it.
    first = rig.start("bench-analyzer-declare", "analyzer", *args)
    yield first.waitForOutput(b"consuming #.measure")
    yield first.stop()
    # The same backlog for the peers: every measure is routed to each queue.
    for peerQueue in peerQueues.values():
        yield amqp.channel.queue_declare(queue=peerQueue, durable=True, auto_delete=False)
        yield amqp.channel.queue_bind(queue=peerQueue, exchange=exchange, routing_key="#.measure")

    rng = random.Random(1)
    template = templateMetrics()
    hosts = [f"host-{i:04d}.example.com" for i in range(hostCount)]
    contenders = [("resmon", lambda: TwistdProcess("bench-analyzer", [
        "--role=analyzer", f"--broker={rig.broker}", f"--exchange={exchange}"] + args
        + arguments.server_args.split()), queue)] + [
        (kind, (lambda kind=kind: PeerProcess(
            kind, [rig.broker, exchange, peerQueues[kind], str(prefetch)])), peerQueues[kind])
        for kind in PEERS_KINDS]
    contenders = [c for c in contenders if not only or c[0] in only]
    results = {name: [] for name, _, _ in contenders}
    seq = 0
    for round in range(arguments.rounds):
        print(f"round {round + 1} of {arguments.rounds}: publishing {count} measures of "
              f"{hostCount} hosts ({cores} cores, this machine's "
              f"{len(template.get('disks', []))} filesystems) to {1 + len(peerQueues)} queues...")
        # Each host sampled once a second, up to now: with --hosts 20 each
        # has 1,000 s of history, past the disk analyzer's first 6 minutes.
        if arguments.liveness:
            # As the analyzer declares it. Deleted with its last consumer, it is
            # declared again before each backlog (a queue never consumed stays).
            yield amqp.channel.queue_declare(queue=liveness, auto_delete=True,
                                             arguments={"x-single-active-consumer": True})
            yield amqp.channel.queue_bind(queue=liveness, exchange=exchange,
                                          routing_key="#.measure")
        began = time.time() - count // hostCount - 1
        for index in range(count):
            host = hosts[seq % hostCount]
            body = json.dumps(measure(rng, template, host, seq // hostCount, cores,
                                      began + index // hostCount)).encode()
            yield amqp.publish(exchange, host.replace(".", "_") + ".measure", body)
            seq += 1
        backlogs = [resmonQueues] + [[q] for q in peerQueues.values()] + (
            [[liveness]] if arguments.liveness else [])
        for queues in backlogs:
            while (yield totalCount(amqp, queues)) < count:
                yield task.deferLater(reactor, 0.05, lambda: None)
        # Each round starts with the next contender: none always drains first.
        shift = round % len(contenders)
        for name, makeProcess, source in contenders[shift:] + contenders[:shift]:
            print(f"draining with {name}...")
            also = [liveness] if arguments.liveness and name == "resmon" else []
            results[name].append((yield drain(reactor, amqp, makeProcess(), count, recorder, source,
                                              also)))
        for waiting in resmonQueues + list(peerQueues.values()):
            yield amqp.channel.queue_purge(queue=waiting)  # what a contender left out

    print()
    print(f"measure body {len(body)} bytes, {count} measures of {hostCount} hosts, prefetch "
          f"{prefetch}; {psutil.cpu_count()} CPUs shared with the broker and this script")
    print("analyzers of resmon: usage, sustained, disk (the built-ins)" + (
        "; resmon also judges host liveness, receiving every measure a second time"
        if arguments.liveness else ""))
    if arguments.rounds > 1:
        print(f"median of {arguments.rounds} rounds (each round: the same backlog drained by each "
              f"in turn, starting with the next one); every round's measures/s in brackets")
    print(f"{'consumer':<10}{'measures/s':>12}{'CPU us/measure':>16}{'% of a core':>13}"
          f"{'RSS MiB':>9}{'broker us/measure':>19}{'broker % core':>15}")
    medians = {name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
               for name, rounds in results.items()}
    for name, r in medians.items():
        each = (" [" + ", ".join(f"{x['rate']:.0f}" for x in results[name]) + "]"
                if arguments.rounds > 1 else "")
        print(f"{name:<10}{r['rate']:>12.0f}{r['cpuPer']:>16.0f}{r['core'] * 100:>13.0f}"
              f"{r['rss']:>9.0f}{r['brokerPer']:>19.0f}{r['brokerCore'] * 100:>15.0f}{each}")
    mine = medians.get("resmon")
    if mine is not None:
        for name, r in medians.items():
            if name != "resmon":
                print(f"resmon / {name:<7} throughput x{mine['rate'] / r['rate']:.2f}, CPU per "
                      f"measure x{mine['cpuPer'] / r['cpuPer']:.2f}")


if __name__ == "__main__":
    runBenchmark(main, argumentParser(__doc__, measures=20000, hosts=1000, cores=8,
                                      prefetch=DEFAULT_PREFETCH, only="", rounds=1, liveness=0,
                                      server_args="", partitions=0))
