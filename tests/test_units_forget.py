"""
Every per-host table forgets a host silent for --forget-after (issue 10,
item 5): the analysis pipeline, host liveness (which announces it with a
C{forgotten} status), the web role's latest analyses, statuses, recent
analyses and history. Fast tests on a Clock; tests/test_integration_forget.py
runs 20,000 hosts through real processes.
"""

import json

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from resmon import wire
from resmon.analysis.builtin.usage import UsageAnalyzer
from resmon.webserver.fanout import ClientFlow, EventFanout
from resmon.webserver.history import FleetHistory
from resmon.services.liveness import FORGOTTEN, OFFLINE, ONLINE
from resmon.analysis.pipeline import AnalysisPipeline
from resmon.services.analyzer import AnalyzerService
from resmon.services.web import WebService
from resmon.webserver.subscriptions import EVERYTHING
from resmon.tap import Options
from resmon.topics import routingKey

from fakebus import ConfirmingBus
from test_liveness import LivenessBus, standingBy, started


def measureOf(host, seq=0, ts=0.0):
    return wire.decodeMeasure(
        routingKey(host, "measure"),
        wire.encodeMeasure(host, seq, ts, 1.0, {"cpu": {"percent": 5.0}}))


def analysisBody(host, seq, ts):
    return json.dumps({
        "v": 1, "kind": "analysis", "host": host, "seq": seq, "ts": ts, "interval": 1.0,
        "analyzed_at": ts, "level": "LOW", "levels": {"cpu": "LOW"},
        "metrics": {"cpu": {"percent": 5.0, "per_core": [5.0]}},
    }).encode()


def statusBody(host, state, lastSeen, seq=0):
    return json.dumps({"v": 1, "kind": "status", "host": host, "status": state,
                       "since": lastSeen, "last_seen": lastSeen, "seq": seq}).encode()


# The analysis pipeline and the analyzer service


def test_the_pipeline_forgets_the_state_of_hosts_silent_for_forget_after():
    clock = Clock()
    pipeline = AnalysisPipeline([UsageAnalyzer()], wallClock=clock.seconds, forgetAfter=10)
    pipeline.analyze(measureOf("old"))
    clock.advance(6)
    pipeline.analyze(measureOf("young"))
    clock.advance(5)
    assert pipeline.forgetSilent() == 1
    assert pipeline.hostCount() == 1 and "old" not in pipeline._state
    pipeline.analyze(measureOf("young", 1))  # seen again: its silence starts over
    clock.advance(9)
    assert pipeline.forgetSilent() == 0 and pipeline.hostCount() == 1
    clock.advance(2)
    assert pipeline.forgetSilent() == 1 and pipeline.hostCount() == 0
    assert pipeline.forgotten == 2


def test_the_analyzer_service_sweeps_its_pipeline_periodically_with_its_clock():
    clock, bus = Clock(), ConfirmingBus()
    pipeline = AnalysisPipeline([UsageAnalyzer()], wallClock=clock.seconds, forgetAfter=8)
    service = AnalyzerService(bus, pipeline, clock)
    service.startService()
    for n in range(1000):
        bus.handler(routingKey(f"h{n}", "measure"), wire.encodeMeasure(f"h{n}", 0, 0.0, 1.0, {}))
    assert pipeline.hostCount() == 1000
    clock.advance(8)
    assert pipeline.hostCount() == 1000  # silent for 8 s, not more
    clock.advance(2)  # swept every forget-after / 4
    assert pipeline.hostCount() == 0
    service.stopService()
    assert clock.getDelayedCalls() == []


# Host liveness


def advance(clock, seconds, step=0.5):
    for _ in range(round(seconds / step)):
        clock.advance(step)


def test_liveness_announces_forgotten_after_offline_and_drops_the_host():
    bus, clock = LivenessBus(), Clock()
    liveness = started(bus, clock, grace=0, offlineAfter=5, forgetAfter=20)
    liveness.measureReceived("a.measure", wire.encodeMeasure("a", 3, 0.0, 1.0, {}))
    advance(clock, 10)
    assert bus.statuses() == [("a", ONLINE), ("a", "stale"), ("a", OFFLINE)]
    advance(clock, 12)
    assert bus.statuses()[-1] == ("a", FORGOTTEN)
    key, forgotten = bus.published[-1]
    assert key == "a.status"
    # The same shape as every status.
    assert set(forgotten) == {"v", "kind", "host", "status", "since", "last_seen", "seq"}
    assert forgotten["seq"] == 3 and forgotten["last_seen"] == 0
    assert liveness.hosts == {} and liveness.forgotten == 1
    advance(clock, 30)
    assert len(bus.published) == 4  # announced once
    liveness.measureReceived("a.measure", wire.encodeMeasure("a", 4, 60.0, 1.0, {}))
    assert bus.statuses()[-1] == ("a", ONLINE)  # back: a new host
    liveness.stopService()


def test_a_forget_after_shorter_than_offline_after_forgets_without_offline():
    bus, clock = LivenessBus(), Clock()
    liveness = started(bus, clock, grace=0, staleAfter=2, offlineAfter=30, forgetAfter=5)
    liveness.measureReceived("a.measure", wire.encodeMeasure("a", 0, 0.0, 1.0, {}))
    advance(clock, 8)
    assert bus.statuses() == [("a", ONLINE), ("a", "stale"), ("a", FORGOTTEN)]
    assert liveness.hosts == {}
    advance(clock, 40)
    assert len(bus.published) == 3
    liveness.stopService()


def test_standing_by_liveness_drops_hosts_on_the_judges_forgotten_or_its_own_silence():
    bus, clock, liveness = standingBy(offlineAfter=5, forgetAfter=20, grace=0)
    now = clock.seconds()
    liveness.statusReceived("a.status", statusBody("a", OFFLINE, now))
    liveness.statusReceived("b.status", statusBody("b", ONLINE, now))
    assert sorted(liveness.hosts) == ["a", "b"]
    liveness.statusReceived("a.status", statusBody("a", FORGOTTEN, now))
    assert sorted(liveness.hosts) == ["b"]
    advance(clock, 21)  # the judge's forgotten for b was lost
    assert liveness.hosts == {}
    assert bus.published == []  # a process standing by announces nothing
    liveness.stopService()


# The web role


def webTables():
    """
    A web role's tables at time 1000 (hosts forgotten after 60 s), and what
    its one client is sent: (document, body) pairs.
    """
    clock = Clock()
    clock.advance(1000)
    history = FleetHistory(clock, window=900)
    fanout = EventFanout(history=history, clock=clock, forgetAfter=60)
    sent = []
    fanout.attach(type("Client", (), {"sendEvent": lambda self, d, b: sent.append((d, b))})())
    return clock, history, fanout, sent


def test_a_forgotten_status_drops_the_host_from_every_web_table_and_reaches_clients():
    _, history, fanout, sent = webTables()
    for host in ("a", "b"):
        fanout.eventReceived(routingKey(host, "analysis"), analysisBody(host, 1, 999.0))
        fanout.eventReceived(routingKey(host, "status"), statusBody(host, OFFLINE, 999.0))
    fanout.eventReceived("a.status", statusBody("a", FORGOTTEN, 999.0))
    assert sent[-1][0]["status"] == FORGOTTEN and sent[-1][0]["host"] == "a"
    assert fanout.latest.hosts() == ["b"] and fanout.statuses.hosts() == ["b"]
    assert history.hosts() == ["b"] and "a" not in fanout.latest._recent
    assert fanout.knownHosts() == ["b"]
    snapshot = json.loads(fanout.snapshotBody(EVERYTHING))
    assert [e["host"] for e in snapshot["events"]] == ["b"]
    assert [e["host"] for e in snapshot["statuses"]] == ["b"]
    assert list(snapshot["history"]) == ["b"]
    # A host forgotten twice (or never known) is not announced again.
    count = len(sent)
    fanout.eventReceived("a.status", statusBody("a", FORGOTTEN, 999.0))
    fanout.eventReceived("zz.status", statusBody("zz", FORGOTTEN, 999.0))
    assert len(sent) == count and fanout.counters["forgotten"] == 1
    # The same analysis again after forgetting is new again.
    fanout.eventReceived("a.analysis", analysisBody("a", 1, 999.0))
    assert fanout.latest.hosts() == ["a", "b"]


def test_forgetting_a_host_drops_it_from_the_fanouts_index_of_subscriptions():
    from resmon.webserver.subscriptions import Subscription
    fanout = EventFanout()
    subscription = Subscription(hosts=["a", "b"])
    fanout.attach(type("Client", (), {"sendEvent": lambda self, d, b: None})(), subscription)
    for host in ("a", "c"):
        fanout.eventReceived(routingKey(host, "analysis"), analysisBody(host, 1, 0.0))
    assert {host: len(entry.audiences) for host, entry in fanout._bySubject.items()} == {"a": 1, "c": 0}
    fanout.eventReceived("c.status", statusBody("c", FORGOTTEN, 0.0))
    fanout.eventReceived("a.status", statusBody("a", FORGOTTEN, 0.0))
    assert fanout._bySubject == {} and fanout._indexed == 0


def test_the_web_forgets_hosts_silent_for_forget_after_on_its_own():
    clock, _, fanout, sent = webTables()
    fanout.eventReceived("a.analysis", analysisBody("a", 7, 999.0))
    clock.advance(30)
    fanout.eventReceived("b.status", statusBody("b", OFFLINE, 1000.0))  # only a status
    fanout.eventReceived("a.status", statusBody("a", "stale", 1029.0))  # a status is no sign of life
    clock.advance(31)
    assert fanout.forgetSilent() == 1
    document, body = sent[-1]
    assert json.loads(body) == document
    assert document == {"v": 1, "kind": "status", "host": "a", "status": FORGOTTEN,
                        "since": 1061.0, "last_seen": 1000.0, "seq": 7}
    assert fanout.knownHosts() == ["b"]
    clock.advance(30)
    assert fanout.forgetSilent() == 1 and fanout.knownHosts() == []
    assert json.loads(fanout.snapshotBody(EVERYTHING))["statuses"] == []
    assert fanout._lastHeard == {}


def test_a_paused_client_gets_a_forgotten_status_after_the_analysis_held_back_before_it():
    clock = Clock()
    sent = []
    flow = ClientFlow(sent.append, lambda: None, clock)
    flow.send(("status", "a"), b"online")
    flow.pauseProducing()
    flow.send(("status", "a"), b"stale")
    flow.send(("analysis", "a"), b"analysis")
    flow.send(("status", "a"), b"forgotten")
    flow.resumeProducing()
    assert sent == [b"online", b"analysis", b"forgotten"]
    assert flow.coalesced == 1


@pytest_twisted.inlineCallbacks
def test_the_web_service_sweeps_silent_hosts_with_its_timer():
    clock, bus = Clock(), ConfirmingBus()
    service = WebService(bus, "tcp:0:interface=127.0.0.1", clock, forgetAfter=20)
    service.startService()
    for n in range(1000):
        bus.handler(routingKey(f"h{n}", "analysis"), analysisBody(f"h{n}", 0, 0.0))
    assert len(service.fanout.knownHosts()) == 1000
    clock.advance(20)
    assert len(service.fanout.knownHosts()) == 1000
    clock.advance(5)  # swept every forget-after / 4
    assert service.fanout.knownHosts() == [] and service.history.hosts() == []
    assert service.fanout.counters["forgotten"] == 1000
    yield service.stopService()


# The option


def test_forget_after_option():
    options = Options()
    options.parseOptions([])
    assert options["forget-after"] == 86400.0
    options = Options()
    options.parseOptions(["--forget-after=3", "--offline-after=30"])
    assert options["forget-after"] == 3.0


@pytest.mark.parametrize("value", ["0", "abc", "nan", "-5", str(400 * 86400)])
def test_a_bad_forget_after_stops_with_one_line_naming_it(value):
    with pytest.raises(SystemExit) as e:
        Options().parseOptions([f"--forget-after={value}"])
    text = str(e.value.code)
    assert "--forget-after:" in text and "\n" not in text


def test_forgetting_a_host_asks_each_distinct_subscription_once_not_each_client():
    from resmon.webserver.subscriptions import Subscription

    class Counting(Subscription):
        forgotten = []

        def forgetHost(self, host):
            Counting.forgotten.append(host)

    fanout = EventFanout()
    for _ in range(100):
        fanout.attach(type("Client", (), {"sendEvent": lambda self, d, b: None})(),
                      Counting(hosts=["a"]))
    fanout.eventReceived(routingKey("a", "analysis"), analysisBody("a", 1, 0.0))
    fanout.eventReceived("a.status", statusBody("a", FORGOTTEN, 0.0))
    assert Counting.forgotten == ["a"]
