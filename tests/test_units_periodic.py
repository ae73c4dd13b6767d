"""
L{resmon.periodic.Periodic}: the one way periodic work is done in the
services (a LoopingCall on the injected clock, its failure logged).
"""

from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from resmon.periodic import Periodic


def test_calls_on_the_given_clock_from_one_interval_on_or_at_once():
    for now, expected in ((False, [1.0, 2.0]), (True, [0.0, 1.0, 2.0])):
        clock, calls = Clock(), []
        loop = Periodic(lambda: calls.append(clock.seconds()), 1.0, clock, Logger(), "x", now=now)
        loop.start()
        clock.advance(1.0)
        clock.advance(1.0)
        assert calls == expected and loop.running
        loop.stop()
        loop.stop()  # again: nothing happens
        assert not loop.running and clock.getDelayedCalls() == []


def test_a_failure_stops_the_loop_and_is_logged():
    clock, events = Clock(), []

    def work():
        raise RuntimeError("boom")

    loop = Periodic(work, 1.0, clock, Logger(observer=events.append), "the work failed; stopped")
    loop.start()
    clock.advance(1.0)
    [event] = events
    assert formatEvent(event) == "the work failed; stopped"
    assert event["log_failure"].check(RuntimeError)
    assert not loop.running and clock.getDelayedCalls() == []
    loop.stop()
