"""
Forged or odd data must not pin what everyone sees: times from the future,
statuses and analyses under another host's routing key, an agent clock that
goes back, an offline status followed by live analyses, unknown metrics by
the kilobyte. Also the range checks and the memory of confirmed measures
that de-duplication rests on. Fast unit tests with Twisted's Clock; the same
on the real parts is in C{test_integration_forged.py}.
"""

import json

import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from fakebus import ConfirmingBus
from resmon import wire
from resmon.analysis.builtin.usage import UsageAnalyzer
from resmon.bus.delivery import Discard
from resmon.webserver.fanout import EventFanout
from resmon.webserver.history import FleetHistory
from resmon.analysis.pipeline import AnalysisPipeline
from resmon.services.analyzer import REMEMBERED_MEASURES, AnalyzerService
from resmon.webserver.subscriptions import parseSubscribe
from resmon.tap import Options

NOW = 1_800_000_000.0


def measureBody(host="h", seq=1, ts=NOW, metrics=None):
    return wire.encodeMeasure(host, seq, ts, 1.0, metrics or {"cpu": {"percent": 5.0}})


def analysisDocument(host, seq, ts, cpu=10.0, **extra):
    return dict({"v": 1, "kind": "analysis", "host": host, "seq": seq, "ts": ts, "interval": 1.0,
                 "analyzed_at": ts, "level": "LOW", "metrics": {"cpu": {"percent": cpu}}}, **extra)


def statusDocument(host, state, since=NOW):
    return {"v": 1, "kind": "status", "host": host, "status": state, "since": since,
            "last_seen": since, "seq": 1}


def encoded(document):
    return json.dumps(document).encode()


def clockAt(seconds):
    clock = Clock()
    clock.advance(seconds)
    return clock


def analyzerAt(clock, **kwargs):
    usage = UsageAnalyzer()
    usage.configure({})
    bus = ConfirmingBus()
    return AnalyzerService(bus, AnalysisPipeline([usage]), clock, **kwargs), bus


class FakeClient:
    def __init__(self):
        self.sent = []

    def sendEvent(self, document, body):
        self.sent.append(json.loads(body))


def fanoutAt(clock, window=900):
    return EventFanout(history=FleetHistory(clock, window=window, maxPoints=1000), clock=clock)


def historyTimes(fanout, host):
    return [json.loads(p)["ts"] for p in fanout.history.encodedPoints(host)]


# Times from the future


def test_a_measure_more_than_the_skew_ahead_is_rejected_as_future():
    notAfter = NOW + 300
    assert wire.decodeMeasure("h.measure", measureBody(ts=notAfter), notAfter=notAfter).ts == notAfter
    with pytest.raises(wire.Rejected) as e:
        wire.decodeMeasure("h.measure", measureBody(ts=notAfter + 0.5), notAfter=notAfter)
    assert e.value.reason == "future"
    # Without a clock to judge by, and for a proof-of-concept measure (no ts), no judgement.
    assert wire.decodeMeasure("h.measure", measureBody(ts=1e12)).ts == 1e12
    assert wire.decodeMeasure("h.measure", b'{"cpu_percentage": 1}', notAfter=0.0).ts is None


def test_the_analyzer_rejects_counts_logs_and_dead_letters_future_measures():
    clock = clockAt(NOW)
    service, bus = analyzerAt(clock, maxClockSkew=300, deadLetter="resmon.rejected")
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        with pytest.raises(Discard):
            service.measureReceived("h.measure", measureBody(seq=1, ts=NOW + 301))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert dict(service.rejected) == {"future": 1} and bus.published == []
    assert any("future" in event.get("reason", "") for event in logged)
    # Within the skew (an agent clock a little ahead) it is analysed.
    service.measureReceived("h.measure", measureBody(seq=2, ts=NOW + 299))
    assert [body["seq"] for _, body in bus.published] == [2]
    # The clock is the receiver's: later, the same ts is no longer ahead.
    clock.advance(10)
    service.measureReceived("h.measure", measureBody(seq=1, ts=NOW + 301))
    assert [body["seq"] for _, body in bus.published] == [2, 1]


def test_the_web_rejects_analyses_from_the_future_and_keeps_history_and_latest():
    clock = clockAt(NOW)
    fanout = fanoutAt(clock)
    client = FakeClient()
    fanout.attach(client)
    for seq in range(3):
        fanout.eventReceived("h.analysis", encoded(analysisDocument("h", seq, NOW - 3 + seq)))
    fanout.eventReceived("h.analysis", encoded(analysisDocument("h", 3, NOW + 86400 * 365)))
    # A proof-of-concept analysis has no ts: its analyzed_at is judged instead.
    fanout.eventReceived("h.analysis", encoded(
        analysisDocument("h", None, None, analyzed_at=NOW + 3600)))
    assert dict(fanout.rejected) == {"future": 2}
    clock.advance(1)
    fanout.eventReceived("h.analysis", encoded(analysisDocument("h", 4, NOW + 1)))
    assert fanout.latest.get("h")["seq"] == 4
    assert historyTimes(fanout, "h") == [NOW - 3, NOW - 2, NOW - 1, NOW + 1]
    assert [m["seq"] for m in client.sent] == [0, 1, 2, 4]


# Statuses and analyses under another host's key


@pytest.mark.parametrize("key, document", [
    ("zzz.status", statusDocument("victim", "offline")),
    ("zzz.analysis", analysisDocument("victim", 1, NOW)),
    ("victim_example.status", statusDocument("victim.example.com", "offline")),
])
def test_an_event_whose_host_does_not_match_its_key_is_rejected(key, document):
    with pytest.raises(wire.Rejected) as e:
        wire.decodeEvent(key, encoded(document))
    assert e.value.reason == "routing-key"
    fanout = fanoutAt(clockAt(NOW))
    client = FakeClient()
    fanout.attach(client)
    fanout.eventReceived(key, encoded(document))
    assert dict(fanout.rejected) == {"routing-key": 1}
    assert client.sent == [] and fanout.knownHosts() == []


def test_an_event_under_its_hosts_word_is_accepted():
    document = statusDocument("victim.example.com", "offline")
    assert wire.decodeEvent("victim_example_com.status", encoded(document)) == document


# An analysis after offline


def test_a_new_analysis_after_offline_or_stale_records_and_sends_online():
    clock = clockAt(NOW)
    fanout = fanoutAt(clock)
    client = FakeClient()
    fanout.attach(client)
    fanout.eventReceived("h.analysis", encoded(analysisDocument("h", 1, NOW)))
    assert fanout.statuses.get("h") is None  # no status known: none made up
    fanout.eventReceived("h.status", encoded(statusDocument("h", "offline")))
    clock.advance(5)
    fanout.eventReceived("h.analysis", encoded(analysisDocument("h", 2, NOW + 5)))
    online = {"v": 1, "kind": "status", "host": "h", "status": "online",
              "since": NOW + 5, "last_seen": NOW + 5, "seq": 2}
    assert fanout.statuses.get("h") == online
    assert [(m["kind"], m.get("seq"), m.get("status")) for m in client.sent] == [
        ("analysis", 1, None), ("status", 1, "offline"), ("analysis", 2, None), ("status", 2, "online")]
    # In every later snapshot too, and only once.
    fanout.eventReceived("h.analysis", encoded(analysisDocument("h", 3, NOW + 6)))
    snapshot = json.loads(fanout.snapshotBody(parseSubscribe({})))
    assert snapshot["statuses"] == [online]
    assert fanout.counters["back-online"] == 1
    # A stale host likewise; a duplicate or a late copy of an older sample does not count.
    fanout.eventReceived("h.status", encoded(statusDocument("h", "stale")))
    fanout.eventReceived("h.analysis", encoded(analysisDocument("h", 3, NOW + 6)))
    fanout.eventReceived("h.analysis", encoded(analysisDocument("h", 0, NOW - 1)))
    assert fanout.statuses.get("h")["status"] == "stale"
    fanout.eventReceived("h.analysis", encoded(analysisDocument("h", 4, NOW + 7)))
    assert fanout.statuses.get("h")["status"] == "online"
    assert fanout.counters["back-online"] == 2


def test_an_analysis_of_a_measure_the_judge_had_seen_does_not_bring_its_host_back():
    clock = clockAt(NOW)
    fanout = fanoutAt(clock)
    fanout.eventReceived("h.analysis", encoded(analysisDocument("h", 8, NOW - 2)))
    # The judge saw measures up to seq 10 (received at NOW), then none: stale.
    stale = dict(statusDocument("h", "stale", since=NOW + 3), last_seen=NOW, seq=10)
    fanout.eventReceived("h.status", encoded(stale))
    clock.advance(5)
    # Seq 9 waited in the analyzer's queue: the host is still silent.
    fanout.eventReceived("h.analysis", encoded(analysisDocument("h", 9, NOW - 1)))
    assert fanout.latest.get("h")["seq"] == 9 and fanout.statuses.get("h")["status"] == "stale"
    # Seq 11 was taken after: back.
    fanout.eventReceived("h.analysis", encoded(analysisDocument("h", 11, NOW + 4)))
    assert fanout.statuses.get("h")["status"] == "online"
    # A status that vouches for nothing comparable is overruled by any new analysis.
    fanout.eventReceived("h.status", encoded({"v": 1, "kind": "status", "host": "h",
                                              "status": "offline"}))
    fanout.eventReceived("h.analysis", encoded(analysisDocument("h", 12, NOW + 5)))
    assert fanout.statuses.get("h")["status"] == "online"


def test_a_status_dated_in_the_future_is_rejected():
    fanout = fanoutAt(clockAt(NOW))
    forged = dict(statusDocument("h", "offline"), last_seen=NOW + 10 ** 9, seq=10 ** 12)
    fanout.eventReceived("h.status", encoded(forged))
    fanout.eventReceived("h.status", encoded(statusDocument("h", "offline", since=NOW + 301)))
    assert dict(fanout.rejected) == {"future": 2} and fanout.statuses.get("h") is None


# An agent clock that disagrees


def test_history_and_latest_follow_receipt_when_an_agent_clock_goes_back():
    clock = clockAt(NOW)
    fanout = fanoutAt(clock)
    # The agent's clock is 200 s ahead (within the skew), then set right.
    for seq in range(3):
        fanout.eventReceived("h.analysis", encoded(analysisDocument("h", seq, NOW + 200 + seq)))
        clock.advance(1)
    for seq in range(3, 6):
        fanout.eventReceived("h.analysis", encoded(analysisDocument("h", seq, NOW + seq, cpu=seq)))
        clock.advance(1)
    # Nothing lost, nothing pinned: the latest is the last received, and the
    # history goes on at the pace the analyses arrive.
    assert fanout.latest.get("h")["seq"] == 5
    assert historyTimes(fanout, "h") == [NOW + 200, NOW + 201, NOW + 202, NOW + 203, NOW + 204,
                                         NOW + 205]
    points = [json.loads(p) for p in fanout.history.encodedPoints("h")]
    assert [p["seq"] for p in points] == [0, 1, 2, 3, 4, 5]
    assert [p["cpu"] for p in points[3:]] == [3.0, 4.0, 5.0]
    assert fanout.history.counters["placed-by-receipt"] == 3
    # Once the agent's ts overtakes the history's time, it is the time again.
    fanout.eventReceived("h.analysis", encoded(analysisDocument("h", 6, NOW + 250)))
    assert historyTimes(fanout, "h")[-1] == NOW + 250


def test_a_late_copy_of_an_older_sample_is_not_added_nor_latest():
    clock = clockAt(NOW)
    fanout = fanoutAt(clock)
    for seq in (5, 6, 4):  # 4 crossed 5 and 6 between competing analyzers
        fanout.eventReceived("h.analysis", encoded(analysisDocument("h", seq, NOW - 10 + seq)))
    assert fanout.latest.get("h")["seq"] == 6
    assert historyTimes(fanout, "h") == [NOW - 5, NOW - 4]
    assert fanout.history.counters["out-of-order"] == 1
    # An agent restart (seq from 0) with its clock right is new.
    fanout.eventReceived("h.analysis", encoded(analysisDocument("h", 0, NOW)))
    assert fanout.latest.get("h")["seq"] == 0 and historyTimes(fanout, "h")[-1] == NOW


def test_points_placed_by_receipt_keep_times_increasing_for_same_instant_arrivals():
    clock = clockAt(NOW)
    history = FleetHistory(clock, window=900, maxPoints=100)
    history.add(analysisDocument("h", 10, NOW))
    history.add(analysisDocument("h", 11, NOW - 60))  # clock went back, same instant
    times = [json.loads(p)["ts"] for p in history.encodedPoints("h")]
    assert times[0] == NOW and times[1] > times[0]


# Unknown metrics


def test_unknown_metrics_are_kept_within_the_bound_and_dropped_beyond():
    few = {"cpu": {"percent": 5.0}, "gpu": {"percent": 50.0}}
    assert wire.decodeMeasure("h.measure", measureBody(metrics=few)).metrics == few
    many = {"cpu": {"percent": 5.0}, "memory": {"percent": 10.0},
            **{f"x{i}": i for i in range(wire.MAX_UNKNOWN_METRICS + 1)}}
    measure = wire.decodeMeasure("h.measure", measureBody(metrics=many))
    assert measure.metrics == {"cpu": {"percent": 5.0}, "memory": {"percent": 10.0}}
    assert measure.droppedUnknown == wire.MAX_UNKNOWN_METRICS + 1
    big = {"cpu": {"percent": 5.0}, "blob": "x" * wire.MAX_UNKNOWN_METRICS_BYTES}
    measure = wire.decodeMeasure("h.measure", measureBody(metrics=big))
    assert measure.metrics == {"cpu": {"percent": 5.0}} and measure.droppedUnknown == 1


def test_the_analyzer_analyses_known_metrics_and_counts_dropped_unknown_ones():
    service, bus = analyzerAt(clockAt(NOW))
    blob = {"cpu": {"percent": 90.0}, **{f"junk{i}": "y" * 1000 for i in range(240)}}
    service.measureReceived("h.measure", measureBody(metrics=blob))
    (key, analysis), = bus.published
    assert analysis["metrics"] == {"cpu": {"percent": 90.0}} and analysis["cpu_result"] == "HIGH"
    assert service.unknownMetricsDropped == 1 and dict(service.rejected) == {}
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        service.logStats()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert any(event.get("unknown") == 1 and "unknown-metrics" in event["log_format"]
               for event in logged)


def test_the_web_bounds_unknown_metrics_of_analyses_it_did_not_get_from_the_analyzer():
    fanout = fanoutAt(clockAt(NOW))
    client = FakeClient()
    fanout.attach(client)
    forged = analysisDocument("h", 1, NOW)
    forged["metrics"]["blob"] = "z" * 100_000
    fanout.eventReceived("h.analysis", encoded(forged))
    assert client.sent[0]["metrics"] == {"cpu": {"percent": 10.0}}
    assert len(fanout.latest.body("h")) < 1000
    assert fanout.counters["unknown-metrics"] == 1


# Issue 17: the range checks of percentages


def _percentMetrics(name, percent):
    if name == "disks":
        return {"disks": [{"mount": "/", "total": 1, "used": 1, "free": 0, "percent": percent}]}
    return {name: {"total": 1, "used": 1, "percent": percent}}


@pytest.mark.parametrize("name", ["memory", "swap", "disks"])
@pytest.mark.parametrize("percent", [-0.1, -100, 100.1, 1000])
def test_memory_swap_and_disk_percent_outside_0_to_100_is_rejected_as_range(name, percent):
    with pytest.raises(wire.Rejected) as e:
        wire.validateMetrics(_percentMetrics(name, percent))
    assert e.value.reason == "range" and f"{name}" in e.value.detail
    for valid in (0, 55.5, 100):
        assert wire.validateMetrics(_percentMetrics(name, valid)) == _percentMetrics(name, valid)


# Issue 17: the memory of confirmed measures forgets the oldest


def test_the_analyzer_remembers_the_newest_confirmed_measures_and_forgets_the_oldest():
    assert REMEMBERED_MEASURES == 10000
    service, bus = analyzerAt(clockAt(NOW))
    extra = 5
    for seq in range(REMEMBERED_MEASURES + extra):
        service.measureReceived("h.measure", measureBody(seq=seq, ts=NOW - 20000 + seq))
    assert service.counters["redelivered"] == 0
    published = len(bus.published)
    # A redelivered copy of the newest and of the oldest still remembered: recognised.
    for seq in (REMEMBERED_MEASURES + extra - 1, extra):
        service.measureReceived("h.measure", measureBody(seq=seq, ts=NOW - 20000 + seq))
    assert service.counters["redelivered"] == 2 and len(bus.published) == published
    # The oldest were forgotten: a copy of one is analysed again.
    service.measureReceived("h.measure", measureBody(seq=extra - 1, ts=NOW - 20000 + extra - 1))
    assert service.counters["redelivered"] == 2 and len(bus.published) == published + 1


# The option


# A bad --max-clock-skew: in test_units_services.py's bad options.


def test_max_clock_skew_defaults_to_300_seconds():
    options = Options()
    options.parseOptions([])
    assert options["max-clock-skew"] == 300.0
    options = Options()
    options.parseOptions(["--max-clock-skew=30"])
    assert options["max-clock-skew"] == 30.0


def test_liveness_ignores_a_measure_from_the_future_as_the_analyzer_rejects_it():
    from resmon.services.liveness import HostLiveness
    clock = clockAt(NOW)
    liveness = HostLiveness(ConfirmingBus(), clock, maxClockSkew=300)
    liveness.measureReceived("h.measure", measureBody(ts=NOW + 301))
    assert liveness.hosts == {}
    liveness.measureReceived("h.measure", measureBody(ts=NOW + 299))
    assert list(liveness.hosts) == ["h"]
