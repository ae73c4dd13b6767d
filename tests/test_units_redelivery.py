"""
The analyzer does not analyse a redelivered measure twice.
"""

from twisted.internet import defer
from twisted.internet.task import Clock

from fakebus import FakeBus
from resmon import wire
from resmon.analysis.builtin.usage import UsageAnalyzer
from resmon.bus.delivery import Retry
from resmon.analysis.pipeline import AnalysisPipeline
from resmon.services.analyzer import AnalyzerService


class SettledByTestBus(FakeBus):
    def __init__(self):
        FakeBus.__init__(self)
        self.published = []

    def publish(self, routingKey, body):
        d = defer.Deferred()
        self.published.append(d)
        return d


def analyzer():
    usage = UsageAnalyzer()
    usage.configure({})
    bus = SettledByTestBus()
    clock = Clock()
    clock.advance(2000.0)  # after the measures of these tests were taken
    return AnalyzerService(bus, AnalysisPipeline([usage]), clock), bus


def outcome(d):
    results = []
    d.addCallbacks(lambda r: results.append("ack"),
                   lambda f: results.append("retry" if f.check(Retry) else f))
    return results


MEASURE = wire.encodeMeasure("a", 7, 1000.0, 1.0, {"cpu": {"percent": 5.0}})


def test_a_copy_redelivered_while_the_analysis_is_unconfirmed_waits_for_it():
    service, bus = analyzer()
    first = outcome(service.measureReceived("a.measure", MEASURE))
    again = outcome(service.measureReceived("a.measure", MEASURE))
    assert len(bus.published) == 1 and first == again == []
    bus.published[0].callback(None)
    assert first == again == ["ack"]
    assert service.counters == {"analyzed": 1, "published": 1, "redelivered": 1}
    # A later copy is acknowledged at once, not analysed.
    assert service.measureReceived("a.measure", MEASURE) is None
    assert len(bus.published) == 1


def test_a_failed_publication_lets_the_measure_be_analysed_again():
    service, bus = analyzer()
    first = outcome(service.measureReceived("a.measure", MEASURE))
    again = outcome(service.measureReceived("a.measure", MEASURE))
    bus.published[0].errback(RuntimeError("dropped"))
    assert first == again == ["retry"]
    outcome(service.measureReceived("a.measure", MEASURE))
    assert len(bus.published) == 2


def test_an_agent_restart_is_not_a_redelivery():
    service, bus = analyzer()
    service.measureReceived("a.measure", MEASURE)
    bus.published[0].callback(None)
    restarted = wire.encodeMeasure("a", 7, 2000.0, 1.0, {"cpu": {"percent": 5.0}})
    service.measureReceived("a.measure", restarted)
    assert len(bus.published) == 2
