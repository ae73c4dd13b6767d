"""
Hosts come and go: 20,000 host names pass through a real C{twistd resmon
--role=analyzer} and a real C{--role=web} on the real broker, one measure
each from a plain AMQP client, with C{--forget-after=15}. Once they are
forgotten, a new WebSocket client's snapshot is empty and neither process
holds on to their memory.

Memory: Python keeps the arenas it once used, so the baseline is taken
after a first wave of 20,000 hosts has been forgotten; a second wave of
20,000 other hosts, once forgotten, must leave both processes' resident
memory (VmRSS) within 25 % of that baseline (a leak of the hosts would double
it; RSS follows each wave's peak, see the assertion). Kept, 20,000 hosts cost the web
role tens of MiB (bench/host_memory.py prints the figures).
"""

import json
import re
import time

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.client import Agent, readBody

from resmon import topics, wire
from support import connectWebSocket, freePort, waitUntil

HOSTS = 20_000
# The WebSocket client follows one host in this many (its statuses only):
# following all would make the test process the bottleneck.
FOLLOW_ONE_IN = 100
# Longer than a wave takes to arrive, even under load: every host of a wave
# is held at once before the first is forgotten, so both waves peak at the
# same 20,000 hosts and their resident memory compares (with 3 s, how many
# were held at once depended on the machine's speed: the web role once
# peaked 38 % higher in the second wave, on a loaded machine).
FORGET_AFTER = 15
# Generous: under load a 20,000-host wave takes minutes (three bus messages per host).
TIMEOUT = 300


def vmRSS(process):
    """
    The resident memory of a L{support.TwistdProcess}, in KiB.
    """
    with open(f"/proc/{process.transport.pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))


def forgottenByPipeline(analyzer):
    return sum(int(n) for n in re.findall(
        rb"forgot the analysis state of (\d+) hosts", analyzer.output))


@defer.inlineCallbacks
def webIsEmpty(port):
    response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/api/hosts".encode())
    body = json.loads((yield readBody(response)))
    return body == {"hosts": [], "statuses": []}


def waveHosts(label):
    return [f"{label}-{n:05d}.fleet.example" for n in range(HOSTS)]


@defer.inlineCallbacks
def wave(amqp, exchange, client, analyzer, port, label, forgottenBefore):
    """
    One measure of each of L{HOSTS} new hosts; fires once the analyzer's
    pipeline forgot them all, the web role sent a C{forgotten} status for
    each host C{client} follows, and kept none of them (an analysis that waited in the analyzer's
    queue may come after the liveness judge's C{forgotten}: the web role
    takes the host again, then forgets it on its own).
    """
    hosts = waveHosts(label)
    started, now = time.monotonic(), time.time()
    for first in range(0, HOSTS, 1000):
        yield defer.gatherResults([
            amqp.publish(exchange, topics.routingKey(host, topics.MEASURE),
                         wire.encodeMeasure(host, 1, now, 1.0, {"cpu": {"percent": 5.0}}))
            for host in hosts[first:first + 1000]])
    published = time.monotonic()
    pending = set(hosts[::FOLLOW_ONE_IN])

    def allForgotten():
        while client.messages:
            message = client.messages.pop()
            if message.get("kind") == "status" and message.get("status") == wire.FORGOTTEN:
                pending.discard(message["host"])
        return not pending

    yield waitUntil(lambda: forgottenByPipeline(analyzer) >= forgottenBefore + HOSTS, TIMEOUT,
                    f"every {label} host forgotten by the analysis pipeline")
    yield waitUntil(allForgotten, TIMEOUT, f"a forgotten status of every {label} host followed")
    yield waitUntil(lambda: webIsEmpty(port), TIMEOUT, f"no {label} host left in /api/hosts",
                    interval=0.5)
    print(f"{label} wave: published in {published - started:.1f} s, "
          f"forgotten everywhere {time.monotonic() - published:.1f} s later")


@pytest_twisted.inlineCallbacks
def test_twenty_thousand_hosts_come_and_go_and_leave_nothing_behind(broker, amqp, twistd):
    exchange, queue, port = amqp.names["exchange"], amqp.names["queue"], freePort()
    # Forgotten FORGET_AFTER s after their measure, before they would be stale or offline.
    common = [f"--broker={broker}", f"--exchange={exchange}", f"--forget-after={FORGET_AFTER}"]
    # A whole wave may reach the web role before the first of it is
    # forgotten (the analyzer drains 20,000 measures in seconds): let it keep
    # them all, or the hosts over --max-hosts are refused and never forgotten.
    web = twistd("forget-web", "--role=web", *common, f"--port={port}", "--interface=127.0.0.1",
                 f"--max-hosts={2 * HOSTS}")
    analyzer = twistd("forget-analyzer", "--role=analyzer", *common, f"--queue={queue}",
                      f"--dead-letter-queue={amqp.names['deadletter']}", "--liveness-grace=0",
                      "--stale-after=60", "--offline-after=60")
    try:
        yield web.waitForOutput(b"consuming #.analysis")
        yield web.waitForOutput(b"dashboard listening")
        yield analyzer.waitForOutput(b"judging host liveness: this process receives")
        client, proto = yield connectWebSocket(port)
        followed = waveHosts("first")[::FOLLOW_ONE_IN] + waveHosts("second")[::FOLLOW_ONE_IN]
        proto.sendMessage(json.dumps({"kind": "subscribe", "hosts": followed, "events": ["status"],
                                      "history": False}).encode())
        yield client.waitFor(lambda m: m["kind"] == "snapshot" and m["subscription"]["events"] == ["status"],
                             10, "the status-only snapshot")

        started = time.monotonic()
        yield wave(amqp, exchange, client, analyzer, port, "first", 0)
        baseline = {"web": vmRSS(web), "analyzer": vmRSS(analyzer)}
        yield wave(amqp, exchange, client, analyzer, port, "second", HOSTS)
        after = {"web": vmRSS(web), "analyzer": vmRSS(analyzer)}
        elapsed = time.monotonic() - started

        fresh, _ = yield connectWebSocket(port)
        snapshot = yield fresh.waitFor(lambda m: m["kind"] == "snapshot", 10, "a new client's snapshot")
        assert (snapshot["events"], snapshot["statuses"], snapshot["history"]) == ([], [], {})
        # RSS follows the size of each wave's peak (pymalloc arenas kept by a few
        # survivors of a larger peak, docs/performance.md), not what is kept: a
        # leak of the hosts would double it; 1.25 leaves room for a larger peak.
        for role in ("web", "analyzer"):
            assert after[role] <= baseline[role] * 1.25, (
                f"{role}: {after[role]} KiB after the second wave, {baseline[role]} KiB after the first")
        print(f"two waves of {HOSTS} hosts in {elapsed:.1f} s; VmRSS after the first, second: {baseline}, {after}")
        assert b"Traceback" not in web.output + analyzer.output
        assert (yield web.stop()), web.logPath
        assert (yield analyzer.stop()), analyzer.logPath
    finally:
        for process in (web, analyzer):
            if not process.ended_:
                yield process.stop()
        yield amqp.cleanUp(queues=[queue + ".liveness"])
