"""
Fast unit tests of the pure parts: topics, wire format, broker URLs,
pipeline.
"""

import json

import pytest

from resmon import topics, wire
from resmon.analysis.base import Analyzer, classify, parseThresholds
from resmon.analysis.builtin.usage import UsageAnalyzer
from resmon.bus.brokerurl import parseBrokerURL
from resmon.analysis.pipeline import AnalysisPipeline, validateFindings, InvalidFindings


@pytest.mark.parametrize("name, word", [
    ("web-01", "web-01"),
    ("web-01.example.com", "web-01_example_com"),
    ("a*b#c d", "a_b_c_d"),
    ("hôte", "h_te"),
    ("", "_"),
])
def test_host_word_is_one_safe_word(name, word):
    assert topics.hostWord(name) == word
    assert topics.splitKey(topics.routingKey(name, "measure")) == (word, "measure")


@pytest.mark.parametrize("pattern, key, matches", [
    ("*.measure", "a.measure", True),
    ("*.measure", "a.b.measure", False),
    ("#.measure", "measure", True),
    ("#.measure", "a.b.c.measure", True),
    ("a.#", "a", True),
    ("a.#.z", "a.z", True),
    ("a.#.z", "a.b.c.z", True),
    ("a.#.z", "a.b.c", False),
    ("#", "", True),
    ("a.*", "a", False),
])
def test_topic_matching(pattern, key, matches):
    assert topics.topicMatches(pattern, key) is matches


def _measure(**overrides):
    document = {"v": 1, "host": "h.example", "seq": 3, "ts": 1000.5, "interval": 1.0,
                "metrics": {"cpu": {"percent": 30.0, "per_core": [20.0, 40.0]},
                            "memory": {"total": 100, "used": 90, "available": 10, "percent": 90.0},
                            "disk_io": {"read_bytes_per_s": None}}}
    document.update(overrides)
    return json.dumps(document).encode()


def test_decode_valid_measure():
    measure = wire.decodeMeasure("h_example.measure", _measure())
    assert (measure.host, measure.seq, measure.hostWord) == ("h.example", 3, "h_example")
    assert measure.metrics["cpu"]["per_core"] == [20.0, 40.0]


def test_encoded_measure_decodes():
    body = wire.encodeMeasure("x", 0, 1.0, 1.0, {"cpu": {"percent": 1.0, "per_core": []}})
    assert wire.decodeMeasure("x.measure", body).metrics["cpu"]["percent"] == 1.0


def test_decode_legacy_measure():
    measure = wire.decodeMeasure("poc.measure", b'{"cpu_percentage": 42}')
    assert measure.legacy and measure.host == "poc" and measure.seq is None


@pytest.mark.parametrize("key, body, reason", [
    ("h_example.measure", b"", "empty"),
    ("h_example.measure", b"\xff", "encoding"),
    ("h_example.measure", b"{", "json"),
    ("h_example.measure", b"[]", "shape"),
    ("h_example.measure", b'{"cpu_percentage": NaN}', "non-finite"),
    ("h_example.measure", b'{"cpu_percentage": Infinity}', "non-finite"),
    ("h_example.measure", b'{"cpu_percentage": 1e999}', "non-finite"),
    ("h_example.measure", b'{"cpu_percentage": -1}', "range"),
    ("h_example.measure", b'{"cpu_percentage": "1"}', "type"),
    ("h_example.measure", b'{"cpu_percentage": true}', "type"),
    ("h_example.measure", b'{"cpu_percentage": ' + b"9" * 5000 + b"}", "json"),
    ("h_example.measure", b"[" * 50000 + b"]" * 50000, "too-deep"),
    ("h_example.measure", _measure(v=2), "version"),
    ("h_example.measure", _measure(seq=-1), "type"),
    ("h_example.measure", _measure(seq=True), "type"),
    ("h_example.measure", _measure(interval=0), "range"),
    ("h_example.measure", _measure(interval=-1), "range"),
    ("h_example.measure", _measure(ts=-1), "range"),
    ("h_example.measure", _measure(kind="analysis"), "kind"),
    ("h_example.measure", _measure(metrics={"cpu": {"percent": 101}}), "range"),
    ("h_example.measure", _measure(metrics={"cpu": {"percent": 1, "per_core": [1, "x"]}}), "type"),
    ("h_example.measure", _measure(metrics={"load": [1, 2]}), "type"),
    ("h_example.measure", _measure(metrics={"disks": [{"mount": "/", "percent": 5}]}), "type"),
    ("h_example.measure", _measure(metrics=[]), "type"),
    ("h_example.measure", _measure(host=""), "type"),
    ("other.measure", _measure(), "routing-key"),
    ("a.b.measure", _measure(), "routing-key"),
    (".measure", _measure(), "routing-key"),
    ("h_example.analysis", _measure(), "routing-key"),
])
def test_decode_rejects(key, body, reason):
    with pytest.raises(wire.Rejected) as e:
        wire.decodeMeasure(key, body)
    assert e.value.reason == reason


def test_decode_rejects_oversized_body():
    with pytest.raises(wire.Rejected) as e:
        wire.decodeMeasure("h.measure", b'{"cpu_percentage": 1}', maxBody=10)
    assert e.value.reason == "too-large"


def test_broker_url():
    url = parseBrokerURL("amqp://u%40x:p%3Aw@rabbit:5673/prod")
    assert (url.username, url.password, url.host, url.port, url.vhost) == ("u@x", "p:w", "rabbit", 5673, "prod")
    assert parseBrokerURL("amqp://rabbit/").vhost == "/"
    assert parseBrokerURL("amqp://rabbit/%2F").vhost == "/"
    assert "p:w" not in url.redacted()
    secure = parseBrokerURL("amqps://rabbit/")
    assert (secure.tls, secure.port, secure.redacted()) == (True, 5671, "amqps://guest@rabbit:5671/%2F")
    assert parseBrokerURL("amqp://rabbit/").tls is False
    for bad in ("http://x", "amqp://", "amqp://h:70000", "amqps://", "amqp://h/?x=1"):
        with pytest.raises(ValueError):
            parseBrokerURL(bad)


def test_thresholds_and_classification():
    assert parseThresholds("25,75") == (25.0, 75.0)
    for bad in ("75,25", "x,1", "1", "-1,50", "10,101"):
        with pytest.raises(ValueError):
            parseThresholds(bad)
    assert [classify(v, (25, 75)) for v in (0, 24.9, 25, 74.9, 75, 100)] == \
        ["LOW", "LOW", "MEDIUM", "MEDIUM", "HIGH", "HIGH"]


class _Raises(Analyzer):
    name = "raises"

    def analyze(self, measure, state):
        raise RuntimeError("broken plugin")


class _Invalid(Analyzer):
    name = "invalid"

    def analyze(self, measure, state):
        return {"level": "SEVERE"}


class _Slow(Analyzer):
    name = "slow"

    def __init__(self, clock):
        self.clock = clock

    def analyze(self, measure, state):
        self.clock[0] += 1.0  # one second of pretend work
        return {"level": "LOW"}


class _Counting(Analyzer):
    name = "counting"

    def analyze(self, measure, state):
        state["n"] = state.get("n", 0) + 1
        return {"values": {"n": state["n"]}}


def test_pipeline_isolates_failing_analyzers_and_keeps_state_per_host():
    clock = [0.0]
    pipeline = AnalysisPipeline(
        [UsageAnalyzer(), _Raises(), _Invalid(), _Slow(clock), _Counting()],
        timeBudget=0.05, wallClock=lambda: 5.0, timer=lambda: clock[0])
    measure = wire.decodeMeasure("h_example.measure", _measure())
    analysis = pipeline.analyze(measure)
    assert analysis["cpu_result"] == "MEDIUM"
    assert analysis["levels"] == {"cpu": "MEDIUM", "memory": "HIGH"}
    assert analysis["level"] == "HIGH"
    assert analysis["analyses"]["raises"] == {"status": "error", "error": "RuntimeError: broken plugin"}
    assert analysis["analyses"]["invalid"]["status"] == "error"
    assert "budget" in analysis["analyses"]["slow"]["error"]
    assert analysis["analyses"]["counting"] == {"values": {"n": 1}, "status": "ok"}
    assert pipeline.failures == {"raises": 1, "invalid": 1, "slow": 1}
    assert analysis["analyzed_at"] == 5.0
    assert pipeline.analyze(measure)["analyses"]["counting"]["values"] == {"n": 2}
    other = wire.decodeMeasure("other.measure", b'{"cpu_percentage": 1}')
    assert pipeline.analyze(other)["analyses"]["counting"]["values"] == {"n": 1}
    json.dumps(analysis, allow_nan=False)


@pytest.mark.parametrize("findings", [
    [], {"level": "BAD"}, {"extra": 1}, {"checks": {"cpu": {"value": float("nan")}}},
    {"checks": {"cpu": {"level": "LOW", "colour": "red"}}}, {"values": {"x": "1"}},
    {"messages": "not a list"}, {"checks": {1: {}}},
])
def test_invalid_findings_are_refused(findings):
    with pytest.raises(InvalidFindings):
        validateFindings(findings)
