"""
Tests for the built-in analyzers: usage, sustained (hysteresis) and disk
(fill level and time to full).
"""

import pytest
from zope.interface.verify import verifyObject

from resmon.analysis.builtin.disk import DiskAnalyzer, formatDuration
from resmon.analysis.builtin.sustained import SustainedLoadAnalyzer
from resmon.analysis.builtin.usage import UsageAnalyzer
from resmon.interfaces import IAnalyzer
from resmon.analysis.pipeline import validateFindings
from resmon.wire import Measure

GB = 1024 ** 3


def cpuMeasure(percent, seq=0, host="web-01"):
    return Measure(host=host, seq=seq, ts=1000.0 + seq, interval=1.0,
                   metrics={"cpu": {"percent": percent}})


def diskMeasure(ts, *disks, host="db-01"):
    return Measure(host=host, seq=0, ts=ts, interval=60.0,
                   metrics={"disks": [dict(disk) for disk in disks]})


def disk(mount, used, total=100 * GB):
    return {"mount": mount, "total": total, "used": used, "free": total - used,
            "percent": 100.0 * used / total}


@pytest.mark.parametrize("cls", [UsageAnalyzer, SustainedLoadAnalyzer, DiskAnalyzer])
def test_providesIAnalyzer(cls):
    analyzer = cls()
    assert verifyObject(IAnalyzer, analyzer)
    analyzer.configure({})


def test_usageLevels():
    analyzer = UsageAnalyzer()
    analyzer.configure({"cpu": "30,80"})
    findings = analyzer.analyze(Measure(
        "h", 1, 1.0, 1.0, {"cpu": {"percent": 50.0}, "memory": {"percent": 90.0}}), {})
    assert findings == {
        "level": "HIGH",
        "checks": {"cpu": {"level": "MEDIUM", "value": 50.0},
                   "memory": {"level": "HIGH", "value": 90.0}},
    }
    assert validateFindings(findings) == findings


def test_usageNothingToSay():
    assert UsageAnalyzer().analyze(Measure("h", 1, 1.0, 1.0, {"load": [0, 0, 0]}), {}) is None


def test_usageRefusesUnknownOption():
    with pytest.raises(ValueError, match="unknown option"):
        UsageAnalyzer().configure({"disk": "1,2"})


def runSustained(values, options=None):
    """
    Feed C{values} as CPU percents of one host; return the level after each.
    """
    analyzer = SustainedLoadAnalyzer()
    analyzer.configure(options or {})
    state = {}
    levels = []
    for seq, value in enumerate(values):
        findings = analyzer.analyze(cpuMeasure(value, seq), state)
        assert validateFindings(findings) == findings
        levels.append(findings["level"])
    return levels


def test_sustainedRisesAfterNSamples():
    levels = runSustained([60] * 6, {"samples": "3"})
    assert levels == ["LOW", "LOW", "MEDIUM", "MEDIUM", "MEDIUM", "MEDIUM"]


def test_sustainedInterruptedStreakDoesNotRise():
    """
    A dip below the threshold restarts the count: the samples must be
    consecutive.
    """
    levels = runSustained([60, 60, 40, 60, 60, 60], {"samples": "3"})
    assert levels == ["LOW"] * 5 + ["MEDIUM"]


def test_sustainedNoFlappingOnBoundary():
    """
    A value oscillating around a threshold never changes the level, whether
    the level is below or above that threshold.
    """
    boundary = [49.9, 50.0, 49.9, 50.1, 49.0, 51.0] * 10
    assert set(runSustained(boundary)) == {"LOW"}
    levels = runSustained([60] * 5 + boundary)
    assert levels[:4] == ["LOW"] * 4
    assert set(levels[4:]) == {"MEDIUM"}


def test_sustainedFallsOnlyBelowMargin():
    """
    Falling back needs N samples below the threshold minus the margin: 45 is
    below MEDIUM's 50 but not below 40.
    """
    levels = runSustained([60] * 3 + [45] * 10 + [39] * 3, {"samples": "3"})
    assert levels == ["LOW"] * 2 + ["MEDIUM"] * 13 + ["LOW"]


def test_sustainedJumpsAndLands():
    """
    Sustained load above HIGH goes straight to HIGH; falling lands on the
    highest level the samples still hold with the margin.
    """
    levels = runSustained([90] * 3 + [65] * 3 + [10] * 3, {"samples": "3"})
    assert levels == (["LOW"] * 2 + ["HIGH"] * 3 + ["MEDIUM"] + ["MEDIUM"] * 2 + ["LOW"])


def test_sustainedStateIsPerHost():
    analyzer = SustainedLoadAnalyzer()
    analyzer.configure({"samples": "2"})
    busy, idle = {}, {}
    for seq in range(3):
        busyLevel = analyzer.analyze(cpuMeasure(95, seq, "busy"), busy)["level"]
        idleLevel = analyzer.analyze(cpuMeasure(5, seq, "idle"), idle)["level"]
    assert (busyLevel, idleLevel) == ("HIGH", "LOW")


def test_sustainedMessageShowsProgress():
    analyzer = SustainedLoadAnalyzer()
    state = {}
    for seq in range(2):
        findings = analyzer.analyze(cpuMeasure(85.0, seq), state)
    assert findings["checks"]["cpu"] == {
        "level": "LOW", "value": 85.0,
        "message": "CPU 85.0 %, LOW; 2 of 5 samples at or above 50 %",
    }


def test_sustainedWithoutCPU():
    state = {}
    assert SustainedLoadAnalyzer().analyze(Measure("h", 1, 1.0, 1.0, {}), state) is None
    assert state == {}


@pytest.mark.parametrize("options, error", [
    ({"samples": "0"}, "samples must be between 1 and 10000"),
    ({"samples": "2.5"}, "samples must be an integer"),
    ({"medium": "abc"}, "medium must be a number"),
    ({"high": "nan"}, "high must be between 0 and 100"),
    ({"medium": "80", "high": "50"}, "medium .* must be below high"),
    ({"margin": "60"}, "margin .* must be below medium"),
    ({"sample": "3"}, r"unknown option\(s\) sample"),
])
def test_sustainedBadOptions(options, error):
    with pytest.raises(ValueError, match=error):
        SustainedLoadAnalyzer().configure(options)


def runDisk(analyzer, samples):
    """
    Feed C{(ts, disks)} samples of one host; return the last findings.
    """
    state = {}
    for ts, disks in samples:
        findings = analyzer.analyze(diskMeasure(ts, *disks), state)
        assert validateFindings(findings) == findings
    return findings


def test_diskFillLevel():
    analyzer = DiskAnalyzer()
    findings = analyzer.analyze(
        diskMeasure(1000.0, disk("/", 50 * GB), disk("/var", 85 * GB)), {})
    assert findings["level"] == "MEDIUM"
    assert findings["checks"]["/"] == {"level": "LOW", "value": 50.0, "message": "/ 50.0 % full"}
    assert findings["checks"]["/var"]["level"] == "MEDIUM"
    assert findings["values"] == {"/.seconds_to_full": None, "/var.seconds_to_full": None}


def test_diskTimeToFull():
    """
    A filesystem growing 1 GB per 10 minutes with 20 GB free fills in 200
    minutes: the estimate is exact on linear data, raises LOW to MEDIUM and
    says so.
    """
    samples = [(1000.0 + 60 * i, [disk("/var", 70 * GB + i * GB / 10)]) for i in range(61)]
    findings = runDisk(DiskAnalyzer(), samples)
    free = 30 * GB - 6 * GB
    assert findings["values"]["/var.seconds_to_full"] == pytest.approx(free / (GB / 600))
    check = findings["checks"]["/var"]
    assert check["level"] == "MEDIUM"
    assert check["value"] == pytest.approx(76.0)
    assert check["message"] == "/var 76.0 % full, full in ~4 h"


def test_diskFullWithinAnHourIsHigh():
    samples = [(60.0 * i, [disk("/tmp", 10 * GB + i * GB)]) for i in range(30)]
    findings = runDisk(DiskAnalyzer(), samples)
    assert findings["values"]["/tmp.seconds_to_full"] == pytest.approx(61 * 60)
    assert findings["checks"]["/tmp"]["level"] == "MEDIUM"
    samples = [(60.0 * i, [disk("/tmp", 50 * GB + i * GB)]) for i in range(30)]
    findings = runDisk(DiskAnalyzer(), samples)
    assert findings["values"]["/tmp.seconds_to_full"] == pytest.approx(21 * 60)
    assert findings["checks"]["/tmp"]["level"] == "HIGH"
    assert findings["checks"]["/tmp"]["message"].endswith("full in ~21 min")


def test_diskNotGrowing():
    shrinking = [(60.0 * i, [disk("/", 50 * GB - i * GB)]) for i in range(30)]
    assert runDisk(DiskAnalyzer(), shrinking)["values"]["/.seconds_to_full"] is None
    flat = [(60.0 * i, [disk("/", 50 * GB)]) for i in range(30)]
    assert runDisk(DiskAnalyzer(), flat)["values"]["/.seconds_to_full"] is None


def test_diskNeedsEnoughHistory():
    """
    No estimate from less than a tenth of the window: a few seconds of
    growth say nothing about the next day.
    """
    samples = [(float(i), [disk("/", 50 * GB + i * GB)]) for i in range(300)]
    assert runDisk(DiskAnalyzer(), samples)["values"]["/.seconds_to_full"] is None
    analyzer = DiskAnalyzer()
    analyzer.configure({"window": "600"})
    assert runDisk(analyzer, samples[:100])["values"]["/.seconds_to_full"] is not None


def test_diskWindowForgetsOldTrend():
    """
    Only the last C{window} seconds count: an old fast growth followed by a
    flat hour gives no estimate.
    """
    growth = [(60.0 * i, [disk("/", 10 * GB + i * GB)]) for i in range(30)]
    flat = [(60.0 * (30 + i), [disk("/", 40 * GB)]) for i in range(70)]
    assert runDisk(DiskAnalyzer(), growth + flat)["values"]["/.seconds_to_full"] is None


def test_diskHistoryIsBounded():
    analyzer = DiskAnalyzer()
    state = {}
    for i in range(5000):
        analyzer.analyze(diskMeasure(float(i), disk("/", 10 * GB + i)), state)
    assert len(state["series"]["/"]) <= 121


def test_diskForgetsUnmounted():
    analyzer = DiskAnalyzer()
    state = {}
    analyzer.analyze(diskMeasure(1.0, disk("/", GB), disk("/mnt/usb", GB)), state)
    findings = analyzer.analyze(diskMeasure(2.0, disk("/", GB)), state)
    assert sorted(state["series"]) == ["/"]
    assert list(findings["checks"]) == ["/"]


def test_diskClockGoingBackRestartsHistory():
    samples = [(60.0 * i, [disk("/", 50 * GB + i * GB)]) for i in range(30)]
    samples.append((0.0, [disk("/", 80 * GB)]))
    assert runDisk(DiskAnalyzer(), samples)["values"]["/.seconds_to_full"] is None


def test_diskWithoutTimestamp():
    findings = DiskAnalyzer().analyze(
        Measure("h", None, None, None, {"disks": [disk("/", GB)]}), {})
    assert findings["values"] == {"/.seconds_to_full": None}


def test_diskNothingToSay():
    assert DiskAnalyzer().analyze(Measure("h", 1, 1.0, 1.0, {"cpu": {"percent": 1}}), {}) is None


@pytest.mark.parametrize("options, error", [
    ({"medium": "95"}, "medium .* must be below high"),
    ({"window": "0"}, "window must be between 1"),
    ({"warn_hours": "soon"}, "warn_hours must be a number"),
    ({"window_seconds": "60"}, r"unknown option\(s\) window_seconds"),
])
def test_diskBadOptions(options, error):
    with pytest.raises(ValueError, match=error):
        DiskAnalyzer().configure(options)


def test_diskWarnHours():
    analyzer = DiskAnalyzer()
    analyzer.configure({"warn_hours": "2"})
    samples = [(1000.0 + 60 * i, [disk("/var", 70 * GB + i * GB / 10)]) for i in range(61)]
    assert runDisk(analyzer, samples)["checks"]["/var"]["level"] == "LOW"


@pytest.mark.parametrize("seconds, text", [
    (30, "30 s"), (600, "10 min"), (3 * 3600, "3 h"), (5 * 86400, "5 d")])
def test_formatDuration(seconds, text):
    assert formatDuration(seconds) == text


def referenceSlope(points):
    """
    The least-squares slope computed the textbook way, in two passes.
    """
    times = [t for t, _ in points]
    used = [u for _, u in points]
    meanTime, meanUsed = sum(times) / len(times), sum(used) / len(used)
    spread = sum((t - meanTime) ** 2 for t in times)
    return sum((t - meanTime) * (u - meanUsed) for t, u in zip(times, used)) / spread


def test_diskTrendMatchesTheTwoPassFormula():
    """
    The slope from the kept sums is the two-pass least-squares slope, for
    terabyte filesystems, a day of history and noisy growth.
    """
    import random
    from resmon.analysis.builtin.disk import _History
    rng = random.Random(7)
    history = _History()
    used = 3 * 10**12
    for i in range(200):
        used += rng.randint(-10**6, 5 * 10**6)
        history.points.append((1.7e9 + 30.0 * i + rng.random(), used))
        if len(history.points) > 121:
            history.points.popleft()
        history.changed()
        if len(history.points) >= 3:
            now, current = history.points[-1][0] + 7.5, used + 12345
            expected = referenceSlope(list(history.points) + [(now, current)])
            assert history.slope(now, current) == pytest.approx(expected, rel=1e-9)
            assert history.slope(history.points[-1][0], used) == pytest.approx(
                referenceSlope(history.points), rel=1e-9)


def test_diskSumsAreTakenOnlyWhenThePointsChange(monkeypatch):
    """
    A measure between two kept points adds its own point to the kept sums:
    the history is not walked again for each measure (the cost of a measure
    does not grow with the window's length).
    """
    from resmon.analysis.builtin import disk as diskModule
    walks = []
    original = diskModule._History.changed
    monkeypatch.setattr(diskModule._History, "changed",
                        lambda self: (walks.append(len(self.points)), original(self)))
    analyzer = DiskAnalyzer()
    state = {}
    for i in range(3600):  # an hour at 1 Hz; a point is kept every 30 s
        findings = analyzer.analyze(diskMeasure(float(i), disk("/", 10 * GB + i * 1000)), state)
    assert len(walks) <= 3600 / 30 + 1
    assert findings["values"]["/.seconds_to_full"] == pytest.approx(
        (100 * GB - 10 * GB - 3599 * 1000) / 1000, rel=1e-6)
