"""
The analyzer service's promises pinned down where mutation testing
(.ci/mutation.sh) found them unchecked: how it subscribes, what it counts
and logs, which reasons it gives back to the bus, when its stats line comes.
"""

import json

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from resmon import wire
from resmon.analysis.builtin.usage import UsageAnalyzer
from resmon.bus.delivery import Discard, Retry
from resmon.analysis.pipeline import AnalysisPipeline
from resmon.services.analyzer import LOG_PERIOD, LOGGED_REJECTIONS, AnalyzerService


class Bus:
    """
    Records the subscription and every publication; the test settles them.
    """

    def __init__(self):
        self.published = []
        self.cancelled = 0

    def publish(self, routingKey, body):
        d = defer.Deferred()
        self.published.append((routingKey, json.loads(body), d))
        return d

    def subscribe(self, patterns, handler, **kwargs):
        self.subscribed = (patterns, handler, kwargs)
        return self

    def cancel(self):
        self.cancelled += 1
        return defer.succeed("cancelled")


def service(**kwargs):
    usage = UsageAnalyzer()
    usage.configure({})
    bus, clock, events = Bus(), Clock(), []
    clock.advance(10**6)  # measures are dated 1000.0: not from the future
    analyzer = AnalyzerService(bus, AnalysisPipeline([usage]), clock, **kwargs)
    analyzer.log = Logger(observer=events.append)
    return analyzer, bus, clock, events


def lines(events):
    return [formatEvent(e) for e in events]


def measure(host, seq, ts=1000.0):
    return wire.encodeMeasure(host, seq, ts, 1.0, {"cpu": {"percent": 5.0}})


def test_subscribes_to_every_measure_with_its_queue_options():
    analyzer, bus, _, _ = service(queue="q", prefetch=7, partitions=(4, [0, 1]), deadLetter="dl")
    analyzer.startService()
    patterns, handler, kwargs = bus.subscribed
    assert patterns == ["#.measure"] and handler == analyzer.measureReceived
    assert kwargs == {"queue": "q", "durable": True, "prefetch": 7, "partitions": (4, [0, 1]),
                      "deadLetter": "dl", "rejected": analyzer.rejected, "publisher": False}
    analyzer.stopService()


def test_the_start_line_names_the_queue_and_the_analyzers():
    analyzer, _, _, events = service(queue="q")
    analyzer.startService()
    assert lines(events)[0] == "analyzing measures from queue q with usage"
    analyzer.stopService()
    second = UsageAnalyzer()
    second.name = "again"
    analyzer.pipeline.analyzers.append(second)
    analyzer.startService()
    assert lines(events)[-1] == "analyzing measures from queue q with usage, again"
    analyzer.stopService()
    analyzer.pipeline.analyzers = []
    analyzer.startService()
    assert lines(events)[-1] == "analyzing measures from queue q with no analyzers"
    analyzer.stopService()


def test_the_stats_line_comes_every_interval_and_at_stop():
    analyzer, _, clock, events = service()
    analyzer.startService()
    clock.advance(59.9)
    assert not any("measures analyzed" in line for line in lines(events))
    clock.advance(0.1)
    assert lines(events)[-1] == (
        "0 measures analyzed, 0 analyses published, 0 redelivered measures not analysed again, "
        "0 rejected (none), 0 analyzer failures (none), 0 measures with unknown metrics over the "
        "bound (unknown-metrics, dropped), 0 decodes shared with the liveness judge")
    clock.advance(60)
    assert sum("measures analyzed" in line for line in lines(events)) == 2
    d = analyzer.stopService()
    assert sum("measures analyzed" in line for line in lines(events)) == 3
    assert clock.getDelayedCalls() == []
    assert d.result == "cancelled" and analyzer._subscription.cancelled == 1


def test_stopping_a_service_never_started_cancels_nothing():
    analyzer, bus, _, _ = service()
    analyzer.running = True
    assert analyzer.stopService() is None
    assert bus.cancelled == 0


def test_the_stats_line_counts_everything():
    analyzer, bus, _, events = service(processId="p1")
    analyzer.pipeline.failures.update({"disk": 2, "usage": 1})
    analyzer.startService()
    # This process judges liveness, and the judge decoded the first measure.
    analyzer.decoder.sharing = True
    analyzer.decoder.forJudge("a.measure", measure("a", 1))
    analyzer.measureReceived("a.measure", measure("a", 1))
    analyzer.measureReceived("a.measure", measure("a", 2))
    bus.published[0][2].callback(None)
    bus.published[1][2].callback(None)
    analyzer.measureReceived("a.measure", measure("a", 1))  # a redelivered copy
    analyzer.measureReceived("a.measure", measure("a", 2))
    for body in (b"", b"", b"{", b"[]"):
        analyzer.measureReceived("a.measure", body)
    analyzer.logStats()
    assert lines(events)[-1] == (
        "2 measures analyzed, 2 analyses published, 2 redelivered measures not analysed again, "
        "4 rejected (empty: 2, json: 1, shape: 1), 3 analyzer failures (disk: 2, usage: 1), "
        "0 measures with unknown metrics over the bound (unknown-metrics, dropped), "
        "1 decodes shared with the liveness judge")
    assert analyzer.counters == {"analyzed": 2, "published": 2, "redelivered": 2}
    analyzer.stopService()


def test_analyses_name_their_analyzer_process_only_if_it_has_a_name():
    named, bus, _, _ = service(processId="analyzer-7")
    named.measureReceived("a.measure", measure("a", 1))
    assert bus.published[0][1]["analyzer"] == "analyzer-7"
    anonymous, bus, _, _ = service()
    anonymous.measureReceived("a.measure", measure("a", 1))
    assert "analyzer" not in bus.published[0][1]


def test_the_body_limit_is_the_one_given():
    analyzer, bus, _, _ = service(maxBody=200)
    assert analyzer.measureReceived("a.measure", measure("a", 1) + b" " * 100) is None
    assert dict(analyzer.rejected) == {"too-large": 1}
    assert analyzer.measureReceived("a.measure", measure("a", 1)) is not None


def test_a_rejected_measure_is_discarded_with_its_reason_when_dead_lettered():
    analyzer, _, _, _ = service(deadLetter="dl")
    with pytest.raises(Discard) as raised:
        analyzer.measureReceived("a.measure", b"[1]")
    assert raised.value.args == ("shape",)


def test_rejections_are_logged_ten_at_once_then_one_per_period_per_reason():
    analyzer, _, clock, events = service()
    key = "k" * 100 + ".measure"
    for _ in range(2000):
        analyzer.measureReceived(key, b"")
    analyzer.measureReceived(key, b"[1]")  # another reason: not held back
    logged = lines(events)
    assert len(logged) == LOGGED_REJECTIONS + 1 == 11
    assert logged[0] == f"rejected a message under {key[:80]}: empty: empty body (1 for this reason)"
    assert logged[9].endswith("(10 for this reason)")
    assert logged[10].startswith(f"rejected a message under {key[:80]}: shape: ")
    clock.advance(LOG_PERIOD)
    analyzer.measureReceived(key, b"")
    assert lines(events)[11].endswith(
        "(2001 for this reason) (1990 similar warnings not logged before this one)")
    analyzer.measureReceived(key, b"")
    assert len(events) == 12
    assert analyzer.rejected["empty"] == 2002 and analyzer.rejected["shape"] == 1


def test_a_long_rejection_reason_is_cut_in_the_log():
    analyzer, _, _, events = service()
    key = "k" * 100 + ".measure"
    analyzer.measureReceived(key, measure("h" * 100, 1))
    [line] = lines(events)
    reason = line.split(f"under {key[:80]}: ", 1)[1].rsplit(" (1 for this reason)", 1)[0]
    assert len(reason) == 200 and reason.startswith("routing-key: ")


def test_a_failed_publication_retries_with_its_reason_for_the_measure_and_its_copies():
    analyzer, bus, _, _ = service()
    first = analyzer.measureReceived("a.measure", measure("a", 1))
    copy = analyzer.measureReceived("a.measure", measure("a", 1))
    failures = []
    first.addErrback(failures.append)
    copy.addErrback(failures.append)
    bus.published[0][2].errback(Exception("outbox full"))
    assert [f.check(Retry) for f in failures] == [Retry, Retry]
    assert [f.value.args for f in failures] == [("outbox full",), ("outbox full",)]
    assert analyzer._pending == {}


def test_a_confirmed_measure_is_remembered_and_its_copies_acknowledged_at_once():
    analyzer, bus, _, _ = service()
    analyzer.measureReceived("a.measure", measure("a", 1))
    bus.published[0][2].callback(None)
    assert analyzer._confirmed == {("a", 1, 1000.0): True}
    assert analyzer._pending == {}
    assert analyzer.measureReceived("a.measure", measure("a", 1)) is None
    assert len(bus.published) == 1


def test_proof_of_concept_measures_have_no_identity_and_are_always_analysed():
    analyzer, bus, _, _ = service()
    for _ in range(2):
        analyzer.measureReceived("a.measure", b'{"cpu_percentage": 5}')
        bus.published[-1][2].callback(None)
    assert len(bus.published) == 2 and analyzer._confirmed == {}
    assert analyzer.counters["redelivered"] == 0
