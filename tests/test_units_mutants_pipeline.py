"""
The analysis pipeline's promises pinned down where mutation testing
(.ci/mutation.sh) found them unchecked: each invalid finding named, the
analysis document's fields, per-analyzer state, the time budget's edge,
failures counted, and logged ten at once then one per period.
"""

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent

from resmon import wire
from resmon.analysis.pipeline import FAILURE_LOG_PERIOD, AnalysisPipeline, InvalidFindings, validateFindings


@pytest.mark.parametrize("findings, message", [
    ([], "findings must be a dict or None, not list"),
    ({"levels": 1, "x": 2}, "unknown key(s) ['levels', 'x']"),
    ({"level": "SEVERE"}, "level must be one of ('LOW', 'MEDIUM', 'HIGH') or None, not 'SEVERE'"),
    ({"checks": []}, "checks must be a dict"),
    ({"checks": {"cpu": 1}}, "checks must map str subjects to dicts"),
    ({"checks": {1: {}}}, "checks must map str subjects to dicts"),
    ({"checks": {"cpu": {"lvl": "LOW"}}}, "check 'cpu' has unknown keys"),
    ({"checks": {"cpu": {"level": "low"}}}, "check 'cpu' has level 'low'"),
    ({"checks": {"cpu": {"value": float("nan")}}}, "check 'cpu' value must be a finite number or None"),
    ({"checks": {"cpu": {"message": 5}}}, "check 'cpu' message must be a str"),
    ({"values": {"a": True}}, "values must map str to finite numbers or None"),
    ({"values": []}, "values must map str to finite numbers or None"),
    ({"messages": "one"}, "messages must be a list of str"),
    ({"messages": ["one", 2]}, "messages must be a list of str"),
])
def test_invalid_findings_say_what_is_wrong(findings, message):
    with pytest.raises(InvalidFindings) as raised:
        validateFindings(findings)
    assert str(raised.value) == message


def test_valid_findings_are_copied_whole():
    messages = ["a", "b"]
    findings = {"level": None, "checks": {"cpu": {"level": None, "value": None}, "m": {"message": "x"}},
                "values": {"a": 1.5, "b": None}, "messages": messages}
    clean = validateFindings(findings)
    assert clean == findings and clean["messages"] is not messages
    assert validateFindings({"messages": []}) == {"messages": []}


class Analyzer:
    def __init__(self, name, findings=None, raises=None, counts=False):
        self.name, self.findings, self.raises, self.counts = name, findings, raises, counts

    def analyze(self, measure, state):
        if self.raises is not None:
            raise self.raises
        if self.counts:
            state["n"] = state.get("n", 0) + 1
            return {"values": {"n": state["n"]}}
        return self.findings


def measure(host="h", seq=1):
    return wire.Measure(host, seq, 100.0, 1.0, {"cpu": {"percent": 5.0}})


def test_an_analysis_has_every_field_of_the_protocol():
    usage = Analyzer("usage", {"level": "HIGH", "checks": {"cpu": {"level": "HIGH"}, "memory": {"level": "LOW"}}})
    pipeline = AnalysisPipeline([usage, Analyzer("quiet")], wallClock=lambda: 123.0)
    analysis = pipeline.analyze(measure())
    assert analysis == {
        "v": 1, "kind": "analysis", "host": "h", "seq": 1, "ts": 100.0, "interval": 1.0,
        "analyzed_at": 123.0, "level": "HIGH", "levels": {"cpu": "HIGH", "memory": "LOW"},
        "cpu_result": "HIGH",
        "analyses": {"usage": dict(usage.findings, status="ok"), "quiet": {"status": "ok"}},
        "metrics": {"cpu": {"percent": 5.0}},
    }


def test_without_a_usage_analyzer_or_its_checks_there_are_no_levels():
    for analyzers in ([Analyzer("other", {"level": "LOW"})], [Analyzer("usage")]):
        analysis = AnalysisPipeline(analyzers).analyze(measure())
        assert analysis["levels"] == {} and analysis["cpu_result"] is None


def test_each_analyzer_keeps_its_own_state_per_host_until_the_host_is_forgotten():
    pipeline = AnalysisPipeline([Analyzer("a", counts=True), Analyzer("b", counts=True)])
    for _ in range(2):
        pipeline.analyze(measure("h"))
    analyses = pipeline.analyze(measure("h"))["analyses"]
    assert analyses["a"]["values"] == analyses["b"]["values"] == {"n": 3}
    assert pipeline.analyze(measure("g"))["analyses"]["a"]["values"] == {"n": 1}
    pipeline.forgetHost("h")
    pipeline.forgetHost("never-seen")
    assert pipeline.analyze(measure("h"))["analyses"]["a"]["values"] == {"n": 1}
    assert pipeline.analyze(measure("g"))["analyses"]["a"]["values"] == {"n": 2}


def test_an_analyzer_taking_its_whole_budget_is_on_time_and_one_over_it_is_not():
    times = iter([0.0, 0.05, 1.0, 1.0625])
    pipeline = AnalysisPipeline([Analyzer("a", {"level": "LOW"})], timeBudget=0.05,
                                timer=lambda: next(times))
    assert pipeline.analyze(measure())["analyses"]["a"] == {"level": "LOW", "status": "ok"}
    assert pipeline.analyze(measure())["analyses"]["a"] == {
        "status": "error",
        "error": "OverBudget: took 62.5 ms, over its 50 ms time budget (--time-budget)"}


def test_failures_are_counted_and_logged_ten_at_once_then_one_per_period():
    clock = Clock()
    pipeline = AnalysisPipeline([Analyzer("bad", raises=RuntimeError("x" * 400)), Analyzer("good")],
                                clock=clock)
    events = []
    pipeline.log = Logger(observer=events.append)
    for _ in range(200):
        analysis = pipeline.analyze(measure("web"))
    assert analysis["analyses"]["good"] == {"status": "ok"}
    error = analysis["analyses"]["bad"]["error"]
    assert len(error) == 300 and error.startswith("RuntimeError: xxx")
    assert pipeline.failures == {"bad": 200}
    clock.advance(FAILURE_LOG_PERIOD)
    pipeline.analyze(measure("web"))
    lines = [formatEvent(e) for e in events]
    where = f"{__file__}:{Analyzer.analyze.__code__.co_firstlineno + 2} in analyze"
    assert lines == [f"analyzer bad raised on web (failure #1): {error} (at {where})"] + [
        f"analyzer bad failed on web (failure #{n}): {error}" for n in range(2, 12)] + [
        f"analyzer bad failed on web (failure #201): {error} "
        "(189 similar errors not logged before this one)"]
    assert all(e["log_level"] == LogLevel.error for e in events)


def test_where_an_analyzer_raised_is_logged_the_first_time_per_analyzer_and_host():
    pipeline = AnalysisPipeline([Analyzer("bad", raises=KeyError("k")),
                                 Analyzer("worse", raises=ValueError("v"))])
    events = []
    pipeline.log = Logger(observer=events.append)
    for host in ("a", "b", "a", "b", "c"):
        pipeline.analyze(measure(host))

    def located():
        return [(e["analyzer"], e["host"]) for e in events if "where" in e]
    assert located() == [("bad", "a"), ("worse", "a"), ("bad", "b"), ("worse", "b"),
                         ("bad", "c"), ("worse", "c")]
    assert all(e["where"].startswith(__file__ + ":") for e in events if "where" in e)
    # The repeats on a and b are logged without where (rate limited).
    assert [(e["analyzer"], e["host"]) for e in events if "where" not in e] == [
        ("bad", "a"), ("worse", "a"), ("bad", "b"), ("worse", "b")]
    pipeline.forgetHost("a")
    pipeline.analyze(measure("a"))
    assert located()[6:] == [("bad", "a"), ("worse", "a")]


def test_an_analyzer_over_its_budget_is_not_said_to_have_given_invalid_findings():
    times = iter([0.0, 1.0])
    pipeline = AnalysisPipeline([Analyzer("slow", {"level": "LOW"})], timeBudget=0.05,
                                timer=lambda: next(times))
    events = []
    pipeline.log = Logger(observer=events.append)
    result = pipeline.analyze(measure())["analyses"]["slow"]
    assert result["error"].startswith("OverBudget: took 1000.0 ms, over its 50 ms time budget")
    assert "Invalid" not in formatEvent(events[0]) and "where" not in events[0]


class FloatSubclass(float):
    pass


@pytest.mark.parametrize("value, finite", [
    (1.5, True), (0, True), (None, True), (-0.0, True), (FloatSubclass(2.0), True),
    (float("nan"), False), (float("inf"), False), (float("-inf"), False),
    (FloatSubclass("nan"), False), (True, False), ("1", False), ([1], False),
])
def test_only_finite_numbers_are_values(value, finite):
    """
    The exact-float fast path of the value check agrees with the general
    one: NaN and the infinities (of a float subclass too, as numpy's
    float64 is) and booleans are refused.
    """
    findings = {"checks": {"cpu": {"value": value}}, "values": {"v": value}}
    if finite:
        assert validateFindings(findings) == findings
    else:
        with pytest.raises(InvalidFindings):
            validateFindings(findings)


def test_summary_levels_keep_the_worst_per_subject_in_first_seen_order():
    from resmon.analysis.pipeline import summaryLevels
    results = [
        {"checks": {"memory": {"level": None}, "cpu": {"level": "LOW"}, "disk": {"level": "HIGH"}}},
        {},
        {"checks": {}},
        {"checks": {"cpu": {"level": "HIGH"}, "memory": {"level": "MEDIUM"}}},
        {"checks": {"cpu": {"level": "MEDIUM"}, "memory": {"level": "bogus"}}},
    ]
    levels = summaryLevels(results)
    assert levels == {"memory": "MEDIUM", "cpu": "HIGH"}
    assert list(levels) == ["memory", "cpu"]
    assert summaryLevels([{"checks": {"cpu": {"level": None}}}]) == {}


def test_worst_level_ignores_what_is_not_a_level():
    from resmon.analysis.base import worstLevel
    assert worstLevel(["LOW", None, "HIGH", "MEDIUM", "x"]) == "HIGH"
    assert worstLevel(iter(["MEDIUM", "LOW"])) == "MEDIUM"
    assert worstLevel([None, "nope"]) is None
    assert worstLevel([]) is None
