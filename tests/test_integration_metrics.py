"""
Prometheus C{/metrics} from real C{twistd resmon} processes on the real
broker: the web role's port, and C{--metrics-port} for an agent.
"""

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.web.client import Agent, readBody

from resmon import wire
from support import freePort


@defer.inlineCallbacks
def scrape(port):
    response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/metrics".encode())
    body = yield readBody(response)
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@defer.inlineCallbacks
def scrapeUntil(port, predicate, what, timeout=20):
    deadline = reactor.seconds() + timeout
    while True:
        samples = yield scrape(port)
        if predicate(samples):
            return samples
        assert reactor.seconds() < deadline, f"no {what} in {samples}"
        yield deferLater(reactor, 0.2, lambda: None)


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest_twisted.inlineCallbacks
def test_agent_and_server_export_their_counters(broker, amqp, twistd):
    exchange, queue = amqp.names["exchange"], amqp.names["queue"]
    webPort, agentMetrics = freePort(), freePort()
    server = twistd("server", "--role=server", f"--broker={broker}", f"--exchange={exchange}",
                    f"--queue={queue}", f"--port={webPort}", "--interface=127.0.0.1",
                    "--dead-letter-queue=")
    yield server.waitForOutput(b"] ready: ")
    agent = twistd("agent", "--role=agent", f"--broker={broker}", f"--exchange={exchange}",
                   "--name=metered", "--interval=0.2", f"--metrics-port={agentMetrics}",
                   "--interface=127.0.0.1")
    yield agent.waitForOutput(b"] ready: ")

    samples = yield scrapeUntil(
        agentMetrics, lambda s: (value(s, "resmon_agent_measures_total", result="confirmed") or 0) >= 3,
        "3 confirmed measures")
    assert value(samples, "resmon_agent_measures_total", result="sampled") >= 3
    assert value(samples, "resmon_bus_messages_total", event="confirmed") >= 3
    assert value(samples, "resmon_bus_connected") == 1
    assert value(samples, "resmon_bus_connections_total") == 1
    assert value(samples, "resmon_ready") == 1
    assert value(samples, "process_resident_memory_bytes") > 0
    # An agent has no analyzer or web counters.
    assert not any(name.startswith(("resmon_analyzer", "resmon_web")) for name, _ in samples)

    # An analysis is counted as published once the broker confirms it, which
    # may come after the web role has received it: wait for both.
    samples = yield scrapeUntil(
        webPort, lambda s: (value(s, "resmon_web_events_total", event="received") or 0) >= 3
        and (value(s, "resmon_analyzer_analyses_published_total") or 0) >= 3,
        "3 events received by the web role and 3 analyses confirmed")
    assert value(samples, "resmon_analyzer_measures_total", result="analyzed") >= 3
    assert value(samples, "resmon_analyzer_analyses_published_total") >= 3
    for analyzer in ("usage", "sustained", "disk"):
        assert value(samples, "resmon_analyzer_plugin_seconds_total", analyzer=analyzer) > 0
    assert value(samples, "resmon_bus_outbox_messages") is not None
    assert value(samples, "resmon_liveness_hosts", status="online") == 1
    assert value(samples, "resmon_web_hosts") == 1
    assert value(samples, "resmon_web_connections") >= 1  # this scrape
    assert value(samples, "resmon_ready") == 1


@pytest_twisted.inlineCallbacks
def test_the_liveness_judge_and_the_analyzer_decode_each_measure_once(broker, amqp, twistd):
    """
    The analyzer process receiving the liveness queue gets every measure in
    both queues: each body is decoded once, for the analyzer or the judge,
    and taken by the other.
    """
    exchange, queue = amqp.names["exchange"], amqp.names["queue"]
    metricsPort = freePort()
    analyzer = twistd("analyzer", "--role=analyzer", f"--broker={broker}", f"--exchange={exchange}",
                      f"--queue={queue}", "--dead-letter-queue=", f"--metrics-port={metricsPort}",
                      "--interface=127.0.0.1")
    # Until its first delivery from the liveness queue (its own tick), the
    # process does not know it judges, and keeps nothing for the judge.
    yield analyzer.waitForOutput(b"judging host liveness: this process receives")
    hosts, count = [f"decoded-{i}" for i in range(5)], 60
    now = reactor.seconds()
    for seq in range(count):
        host = hosts[seq % len(hosts)]
        yield amqp.publish(exchange, f"{host}.measure", wire.encodeMeasure(
            host, seq, now, 1.0, {"cpu": {"percent": 5.0 + seq}}))
    samples = yield scrapeUntil(
        metricsPort, lambda s: (value(s, "resmon_analyzer_analyses_published_total") or 0) >= count
        and sum(value(s, "resmon_analyzer_measure_decodes_total", result=r) or 0
                for r in ("decoded", "shared")) >= 2 * count,
        f"{count} analyses published and {2 * count} measures asked for by the analyzer and the "
        "judge")
    decoded = value(samples, "resmon_analyzer_measure_decodes_total", result="decoded")
    shared = value(samples, "resmon_analyzer_measure_decodes_total", result="shared")
    assert (decoded, shared) == (count, count)
    assert value(samples, "resmon_analyzer_measures_total", result="analyzed") == count
    assert value(samples, "resmon_liveness_hosts", status="online") == len(hosts)
