"""
The analyzer's log line for measures with too many unknown metrics (see
docs/operations.md), pinned down where mutation testing (.ci/mutation.sh)
found it unchecked: its text and its rate limit (the first ten at once, then
one per period).
"""

from twisted.logger import Logger, formatEvent

from resmon import wire
from resmon.services.analyzer import LOG_PERIOD
from test_units_forged import NOW, analyzerAt, clockAt, measureBody


def test_measures_with_unknown_metrics_dropped_are_logged_ten_then_one_per_period():
    clock = clockAt(NOW)
    service, _ = analyzerAt(clock)
    events = []
    service.log = Logger(observer=events.append)
    junk = {"cpu": {"percent": 5.0}, **{f"x{i}": i for i in range(wire.MAX_UNKNOWN_METRICS + 1)}}
    for seq in range(1, 2002):
        service.measureReceived("h.measure", measureBody(seq=seq, metrics=junk))
    clock.advance(LOG_PERIOD)
    service.measureReceived("h.measure", measureBody(seq=2002, metrics=junk))
    assert service.unknownMetricsDropped == 2002
    lines = [formatEvent(e) for e in events if "unknown metrics" in e["log_format"]]
    line = ("dropped 17 unknown metrics of a measure under h.measure: over 16 keys or 4096 bytes; "
            "analysed its known metrics ({} measures so far)")
    assert lines == [line.format(n) for n in range(1, 11)] + [
        line.format(2002) + " (1991 similar warnings not logged before this one)"]


def test_the_starting_line_names_the_analyzers_discovered_but_not_selected():
    for leftOut, notRun in [(("load", "disk"), " (not selected: load, disk)"), ((), ""), (None, "")]:
        service, _ = analyzerAt(clockAt(NOW), leftOut=leftOut)
        events = []
        service.log = Logger(observer=events.append)
        service.startService()
        assert formatEvent(events[0]) == (
            f"analyzing measures from queue {service.queue} with {service.pipeline.analyzers[0].name}"
            f"{notRun}")
        assert service.leftOut == list(leftOut or ())
        service.stopService()
