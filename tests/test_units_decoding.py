"""
Unit tests of L{resmon.analysis.decoding}: one decode per measure for the
analyzer and the liveness judge of one process, and the two services
sharing it, with Twisted's Clock and fake buses.
"""

import json

import pytest
from twisted.internet.task import Clock

from fakebus import ConfirmingBus
from resmon import wire
from resmon.analysis.builtin.usage import UsageAnalyzer
from resmon.analysis.decoding import JudgedMeasure, SharedMeasureDecoder
from resmon.analysis.pipeline import AnalysisPipeline
from resmon.services.analyzer import AnalyzerService
from resmon.services.liveness import ONLINE, HostLiveness

KEY = "web-01.measure"


def body(seq=1, host="web-01", ts=10.0, cpu=5.0):
    return wire.encodeMeasure(host, seq, ts, 2.0, {"cpu": {"percent": cpu}})


def sharing(**kwargs):
    decoder = SharedMeasureDecoder(Clock(), **kwargs)
    decoder.sharing = True
    return decoder


def test_not_sharing_decodes_every_time_and_keeps_nothing():
    decoder = SharedMeasureDecoder(Clock())
    first = decoder.forAnalyzer(KEY, body())
    second = decoder.forJudge(KEY, body())
    assert first == second and first is not second
    assert decoder.counters == {"decoded": 2, "shared": 0}
    assert decoder.waiting() == (0, 0)


def test_the_judge_takes_what_the_analyzer_decoded():
    decoder = sharing()
    measure = decoder.forAnalyzer(KEY, body(seq=7))
    assert decoder.waiting() == (0, 1)
    judged = decoder.forJudge(KEY, body(seq=7))
    assert isinstance(judged, JudgedMeasure)
    assert (judged.host, judged.hostWord, judged.seq, judged.interval) == ("web-01", "web-01", 7, 2.0)
    assert decoder.counters == {"decoded": 1, "shared": 1}
    assert decoder.waiting() == (0, 0)
    assert measure.metrics == {"cpu": {"percent": 5.0}}


def test_the_analyzer_takes_what_the_judge_decoded():
    decoder = sharing()
    judged = decoder.forJudge(KEY, body())
    assert decoder.forAnalyzer(KEY, body()) is judged
    assert decoder.counters == {"decoded": 1, "shared": 1}


def test_what_is_kept_is_taken_once():
    decoder = sharing()
    decoder.forAnalyzer(KEY, body())
    decoder.forJudge(KEY, body())
    # A redelivery of the same body: decoded again, kept again.
    decoder.forAnalyzer(KEY, body())
    assert decoder.counters == {"decoded": 2, "shared": 1}
    assert decoder.waiting() == (0, 1)


def test_only_the_same_bytes_under_the_same_key_are_shared():
    decoder = sharing()
    decoder.forAnalyzer(KEY, body(cpu=5.0))
    assert decoder.forJudge(KEY, body(cpu=6.0)).seq == 1
    other = body(host="web-02")
    decoder.forAnalyzer("web-02.measure", other)
    # The same body under another host's key is rejected, not taken.
    with pytest.raises(wire.Rejected) as caught:
        decoder.forJudge(KEY, other)
    assert caught.value.reason == "routing-key"
    assert decoder.counters["shared"] == 0


def test_a_rejected_body_is_not_kept_and_each_is_told_why():
    decoder = sharing()
    for decode in (decoder.forAnalyzer, decoder.forJudge):
        with pytest.raises(wire.Rejected) as caught:
            decode(KEY, b'{"v": 1, "host": "web-01", "seq": -1}')
        assert caught.value.reason == "type"
    assert decoder.waiting() == (0, 0)
    assert decoder.counters == {"decoded": 2, "shared": 0}


def test_a_measure_from_the_future_is_rejected_with_the_clock_given():
    clock = Clock()
    clock.advance(100)
    decoder = SharedMeasureDecoder(clock, maxClockSkew=5)
    decoder.sharing = True
    assert decoder.forAnalyzer(KEY, body(ts=105.0)).ts == 105.0
    with pytest.raises(wire.Rejected) as caught:
        decoder.forJudge(KEY, body(ts=105.5))
    assert caught.value.reason == "future"


def test_the_size_limit_applies():
    decoder = sharing(maxBody=50)
    with pytest.raises(wire.Rejected) as caught:
        decoder.forAnalyzer(KEY, body())
    assert caught.value.reason == "too-large"


def test_what_is_kept_is_bounded_oldest_dropped_first():
    decoder = sharing(kept=3, pause=0)
    for seq in range(5):
        decoder.forJudge(KEY, body(seq=seq))
    assert decoder.waiting() == (3, 0)
    assert decoder.forAnalyzer(KEY, body(seq=0)).seq == 0
    assert decoder.forAnalyzer(KEY, body(seq=1)).seq == 1
    assert decoder.counters == {"decoded": 7, "shared": 0}
    for seq in (2, 3, 4):
        decoder.forAnalyzer(KEY, body(seq=seq))
    assert decoder.counters == {"decoded": 7, "shared": 3}


def test_what_is_kept_is_bounded_by_the_size_of_the_bodies():
    bodies = [body(seq=seq) for seq in range(4)]
    decoder = sharing(keptBytes=len(bodies[0]) * 2 + 1)
    for each in bodies:
        decoder.forJudge(KEY, each)
    assert decoder.waiting() == (2, 0)
    assert [decoder.forAnalyzer(KEY, each).seq for each in bodies] == [0, 1, 2, 3]
    assert decoder.counters == {"decoded": 6, "shared": 2}
    # A body bigger than that is never kept.
    decoder = sharing(keptBytes=len(bodies[0]) - 1)
    decoder.forJudge(KEY, bodies[0])
    assert decoder.waiting() == (0, 0)


def test_a_body_kept_twice_is_kept_once():
    decoder = sharing()
    decoder.forJudge(KEY, body())
    decoder.forJudge(KEY, body())  # a redelivery, before the analyzer's
    assert decoder.waiting() == (1, 0)
    assert decoder._forAnalyzer.bytes == len(body())
    decoder.forAnalyzer(KEY, body())
    assert decoder.waiting() == (0, 0)
    assert decoder._forAnalyzer.bytes == 0


def test_the_bytes_kept_are_those_of_the_bodies_kept():
    decoder = sharing(kept=2, pause=0)
    bodies = [body(seq=seq) for seq in range(3)]
    for each in bodies:
        decoder.forAnalyzer(KEY, each)
    assert decoder._forJudge.bytes == len(bodies[1]) + len(bodies[2])
    decoder.forJudge(KEY, bodies[2])
    assert decoder._forJudge.bytes == len(bodies[1])
    decoder.stopSharing()
    assert decoder._forJudge.bytes == 0


def test_a_stopped_liveness_service_stops_the_sharing():
    clock, bus = Clock(), ConfirmingBus()
    decoder = SharedMeasureDecoder(clock)
    liveness = HostLiveness(bus, clock, decoder=decoder)
    liveness.startService()
    liveness.measureReceived(KEY, body())
    assert decoder.sharing and decoder.waiting() == (1, 0)
    liveness.stopService()
    assert not decoder.sharing and decoder.waiting() == (0, 0)
    # A delivery still arriving as the subscription goes turns nothing on.
    liveness.measureReceived(KEY, body(seq=2))
    assert not decoder.sharing


def test_keeping_for_a_consumer_far_behind_pauses_then_resumes():
    # Catching up, the judge runs far ahead of the analyzer: what it keeps
    # is all dropped unused.
    decoder = sharing(kept=3, pause=5)
    for seq in range(5):
        decoder.forJudge(KEY, body(seq=seq))
    assert decoder.waiting() == (3, 0)  # 2 dropped unused so far
    decoder.forJudge(KEY, body(seq=5))
    assert decoder.waiting() == (0, 0)  # 3 dropped, none taken: paused
    for seq in range(6, 11):
        decoder.forJudge(KEY, body(seq=seq))
    assert decoder.waiting() == (0, 0)  # 5 not kept
    decoder.forJudge(KEY, body(seq=11))
    assert decoder.waiting() == (1, 0)  # tried again
    assert decoder.forAnalyzer(KEY, body(seq=11)).seq == 11
    assert decoder.counters["shared"] == 1


def test_keeping_for_an_analyzer_that_takes_its_share_only_pauses():
    """
    With several analyzer processes, the judge's own analyzer receives
    only its share of the measures the judge receives: what the judge keeps
    for it is mostly never taken, and is not kept for long.
    """
    decoder = sharing(kept=8, pause=40)
    for seq in range(24):
        decoder.forJudge(KEY, body(seq=seq))
        if seq % 4 == 0:
            decoder.forAnalyzer(KEY, body(seq=seq))  # a quarter of them
    # Of the first 8 taken or dropped, fewer than half taken: not worth it.
    assert decoder.counters["shared"] == 6
    assert decoder.waiting() == (0, 0)
    # What the analyzer keeps for the judge, which takes it all, goes on.
    for seq in range(100, 120):
        decoder.forAnalyzer(KEY, body(seq=seq))
        decoder.forJudge(KEY, body(seq=seq))
    assert decoder.counters["shared"] == 26
    # Half taken is worth keeping.
    decoder = sharing(kept=8, pause=40)
    for seq in range(32):
        decoder.forJudge(KEY, body(seq=seq))
        if seq % 2 == 0:
            decoder.forAnalyzer(KEY, body(seq=seq))
    assert decoder.waiting() == (8, 0)  # the ones not taken, the last 8
    assert decoder.counters["shared"] == 16



def test_stop_sharing_drops_what_is_kept():
    decoder = sharing()
    decoder.forAnalyzer(KEY, body(seq=1))
    decoder.forJudge(KEY, body(seq=2))
    decoder.stopSharing()
    assert decoder.waiting() == (0, 0)
    decoder.forAnalyzer(KEY, body(seq=3))
    assert decoder.waiting() == (0, 0)


class Vandal:
    """
    An analyzer plugin that changes the measure it is given.
    """

    name = "vandal"

    def analyze(self, measure, state):
        measure.host = "someone-else"
        measure.seq = 10**6
        return {"level": "LOW"}


def test_what_a_plugin_does_to_its_measure_does_not_reach_the_judge():
    clock, bus = Clock(), ConfirmingBus()
    decoder = sharing()
    analyzer = AnalyzerService(bus, AnalysisPipeline([Vandal()]), clock, decoder=decoder)
    liveness = HostLiveness(bus, clock, decoder=decoder)
    analyzer.measureReceived(KEY, body(seq=3))
    liveness.measureReceived(KEY, body(seq=3))
    assert decoder.counters == {"decoded": 1, "shared": 1}
    assert list(liveness.hosts) == ["web-01"]
    assert liveness.hosts["web-01"].seq == 3


def test_the_services_share_one_decoder_while_this_process_judges():
    clock, bus = Clock(), ConfirmingBus()
    decoder = SharedMeasureDecoder(clock)
    analyzer = AnalyzerService(bus, AnalysisPipeline([UsageAnalyzer()]), clock, decoder=decoder)
    liveness = HostLiveness(bus, clock, decoder=decoder, checkInterval=0.5)
    analyzer.startService()
    liveness.startService()
    clock.advance(0)
    try:
        # Before the liveness queue delivers anything here, nothing is kept.
        analyzer.measureReceived(KEY, body(seq=1))
        assert decoder.waiting() == (0, 0)
        # Its first delivery (a tick, or a measure): this process judges.
        liveness.measureReceived(liveness.tickKey, wire.encodeTick(liveness.queue, 0.0))
        assert decoder.sharing
        clock.advance(0.5)
        assert liveness.active is True
        for seq in range(2, 6):
            analyzer.measureReceived(KEY, body(seq=seq))
            liveness.measureReceived(KEY, body(seq=seq))
        assert decoder.counters == {"decoded": 5, "shared": 4}
        assert liveness.hosts["web-01"].status == ONLINE
        analyses = [json.loads(b) if isinstance(b, bytes) else b for _, b in bus.published
                    if _.endswith(".analysis")]
        assert [a["seq"] for a in analyses] == [1, 2, 3, 4, 5]
        # No delivery from the liveness queue for the active window: another
        # process judges; this one keeps nothing more.
        decoder.forJudge(KEY, body(seq=6))
        assert decoder.waiting() == (1, 0)
        for _ in range(8):
            clock.advance(0.5)
        assert liveness.active is False
        assert not decoder.sharing and decoder.waiting() == (0, 0)
    finally:
        liveness.stopService()
        analyzer.stopService()


def test_each_service_decodes_alone_without_a_decoder_given():
    clock, bus = Clock(), ConfirmingBus()
    analyzer = AnalyzerService(bus, AnalysisPipeline([UsageAnalyzer()]), clock)
    liveness = HostLiveness(bus, clock)
    assert analyzer.decoder is not liveness.decoder
    analyzer.measureReceived(KEY, body())
    liveness.measureReceived(KEY, body())
    assert analyzer.decoder.counters == liveness.decoder.counters == {"decoded": 1, "shared": 0}
