"""
The wire format's checks, each pinned to its exact reason, detail and
limit, where mutation testing (.ci/mutation.sh) found them unchecked: a
bad value in any field is rejected for its own reason with a detail naming
the field, and a value just inside each limit is accepted.
"""

import json

import pytest

from resmon import topics, wire
from resmon.wire import Rejected


def rejection(call, *args):
    with pytest.raises(Rejected) as raised:
        call(*args)
    e = raised.value
    assert str(e) == f"{e.reason}: {e.detail}"
    return str(e)


def disk(**changes):
    return dict({"mount": "/", "percent": 10.0, "total": 100, "used": 10, "free": 90}, **changes)


@pytest.mark.parametrize("metrics, expected", [
    ([], "type: metrics must be an object"),
    ({"cpu": 5}, "type: metrics.cpu must be an object"),
    ({"cpu": {}}, "type: metrics.cpu.percent must be a number, not NoneType"),
    ({"cpu": {"percent": "5"}}, "type: metrics.cpu.percent must be a number, not str"),
    ({"cpu": {"percent": True}}, "type: metrics.cpu.percent must be a number, not bool"),
    ({"cpu": {"percent": float("nan")}}, "non-finite: metrics.cpu.percent is not finite"),
    ({"cpu": {"percent": float("-inf")}}, "non-finite: metrics.cpu.percent is not finite"),
    ({"cpu": {"percent": 100.5}}, "range: metrics.cpu.percent is 100.5, above 100"),
    ({"cpu": {"percent": -1}}, "range: metrics.cpu.percent is -1, below 0"),
    ({"cpu": {"percent": 5, "per_core": "5"}},
     "type: metrics.cpu.per_core must be a list of at most 4096 numbers"),
    ({"cpu": {"percent": 5, "per_core": [5.0] * 4097}},
     "type: metrics.cpu.per_core must be a list of at most 4096 numbers"),
    ({"cpu": {"percent": 5, "per_core": [5, 101]}}, "range: metrics.cpu.per_core[1] is 101, above 100"),
    ({"memory": 1}, "type: metrics.memory must be an object"),
    ({"swap": []}, "type: metrics.swap must be an object"),
    ({"memory": {"percent": 101}}, "range: metrics.memory.percent is 101, above 100"),
    ({"swap": {"percent": -0.5}}, "range: metrics.swap.percent is -0.5, below 0"),
    ({"swap": {"total": 1}}, "type: metrics.swap.percent must be a number, not NoneType"),
    ({"load": "1 1 1"}, "type: metrics.load must be a list of 3 numbers"),
    ({"load": [1, 1]}, "type: metrics.load must be a list of 3 numbers"),
    ({"load": [1, 1, 1, 1]}, "type: metrics.load must be a list of 3 numbers"),
    ({"load": [1, 1, -1]}, "range: metrics.load[2] is -1, below 0"),
    ({"load": [1, "1", 1]}, "type: metrics.load[1] must be a number, not str"),
    ({"disks": {}}, "type: metrics.disks must be a list of at most 1024 objects"),
    ({"disks": [disk()] * 1025}, "type: metrics.disks must be a list of at most 1024 objects"),
    ({"disks": [disk(), 1]}, "type: metrics.disks[1] must be an object"),
    ({"disks": [disk(mount=None)]}, "type: metrics.disks[0].mount must be a non-empty string"),
    ({"disks": [disk(mount="")]}, "type: metrics.disks[0].mount must be a non-empty string"),
    ({"disks": [disk(mount="/" * 4097)]}, "range: metrics.disks[0].mount is longer than 4096 characters"),
    ({"disks": [disk(percent=100.1)]}, "range: metrics.disks[0].percent is 100.1, above 100"),
    ({"disks": [disk(), disk(percent=None)]}, "type: metrics.disks[1].percent must be a number, not NoneType"),
    ({"disks": [{"mount": "/", "percent": 1}]}, "type: metrics.disks[0].total must be a number, not NoneType"),
    ({"net_io": 1}, "type: metrics.net_io must be an object"),
    ({"disk_io": "x"}, "type: metrics.disk_io must be an object"),
] + [
    ({name: {"percent": 5, key: -1}}, f"range: metrics.{name}.{key} is -1, below 0")
    for name in ("memory", "swap") for key in ("total", "used", "available", "free")
] + [
    ({name: {"percent": 5, key: "1"}}, f"type: metrics.{name}.{key} must be a number, not str")
    for name in ("memory", "swap") for key in ("total", "used", "available", "free")
] + [
    ({"disks": [disk(**{key: -1})]}, f"range: metrics.disks[0].{key} is -1, below 0")
    for key in ("total", "used", "free")
] + [
    ({name: {key: -1}}, f"range: metrics.{name}.{key} is -1, below 0")
    for name, keys in wire._RATES.items() for key in keys
] + [
    ({name: {key: "1"}}, f"type: metrics.{name}.{key} must be a number, not str")
    for name, keys in wire._RATES.items() for key in keys
])
def test_every_metric_field_is_checked_and_named(metrics, expected):
    assert rejection(wire.validateMetrics, metrics) == expected


def test_values_at_each_limit_are_accepted():
    metrics = {
        "cpu": {"percent": 100, "per_core": [0.0] * 4095 + [100]},
        "memory": {"percent": 0, "total": 0, "used": 0, "available": 0, "free": 0},
        "swap": {"percent": 100.0, "total": 0, "used": 0, "free": 0},
        "load": [0, 0.0, 0],
        "disks": [disk(mount="/" * 4096, percent=0, total=0, used=0, free=0)] * 1024,
        "disk_io": {"read_bytes_per_s": None, "write_bytes_per_s": 0},
        "net_io": {key: 0 for key in wire._RATES["net_io"]},
        "unknown": {"left": "alone"},
    }
    assert wire.validateMetrics(metrics) is metrics
    assert wire.validateMetrics({}) == {}


def test_json_checks_name_their_reason_and_detail():
    assert rejection(wire.loadJSON, "{}") == "type: body is not bytes"
    assert rejection(wire.loadJSON, b"{}" + b" " * 9, 10) == "too-large: 11 bytes is over the 10 byte limit"
    assert wire.loadJSON(b"{}" + b" " * 8, 10) == {}
    assert rejection(wire.loadJSON, b"") == "empty: empty body"
    assert rejection(wire.loadJSON, b'{"a": "\xff"}') == (
        "encoding: not UTF-8 (invalid start byte at byte 7)")
    assert rejection(wire.loadJSON, b"[" * 100000) == "too-deep: JSON nested too deeply"
    assert rejection(wire.loadJSON, b"{not json") == (
        "json: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)")
    assert rejection(wire.loadJSON, b'{"a": "' + b"x" * 200) == (
        "json: Unterminated string starting at: line 1 column 7 (char 6)")
    assert rejection(wire.loadJSON, b"[1]") == "shape: top level is not a JSON object"
    assert rejection(wire.loadJSON, b'{"a": NaN}') == "non-finite: NaN is not a number resmon accepts"
    assert rejection(wire.loadJSON, b'{"a": -Infinity}') == (
        "non-finite: -Infinity is not a number resmon accepts")
    assert rejection(wire.loadJSON, b'{"a": 1e400}') == "non-finite: 1e400 is out of range"
    assert rejection(wire.loadJSON, b'{"a": 1' + b"0" * 30 + b'e400}') == (
        "non-finite: 10000000000000000000 is out of range")
    assert wire.loadJSON(b'{"a": 1.5, "b": "\xc3\xa9"}') == {"a": 1.5, "b": "\u00e9"}


def test_a_json_error_detail_is_cut_at_120_characters():
    detail = rejection(wire.loadJSON, b'{"' + b"k" * 300 + b'" 1}')
    assert detail.startswith("json: Expecting ':' delimiter")
    body = b"1" * 5000
    assert len(rejection(wire.loadJSON, b'{"a": ' + body + b"}")) == len("json: ") + 120


def good(**changes):
    return dict({"v": 1, "kind": "measure", "host": "h", "seq": 0, "ts": 0, "interval": 0.5,
                 "metrics": {}}, **changes)


def encoded(document):
    return json.dumps(document).encode()


@pytest.mark.parametrize("key, document, expected", [
    ("a.b.measure", good(), "routing-key: 'a.b.measure' is not <host>.measure"),
    ("h.analysis", good(), "routing-key: 'h.analysis' is not <host>.measure"),
    ("x" * 100 + ".a.measure", good(), f"routing-key: {'x' * 80!r} is not <host>.measure"),
    ("h.measure", {"cpu_percentage": 101}, "range: cpu_percentage is 101, above 100"),
    ("h.measure", {"cpu_percentage": "1"}, "type: cpu_percentage must be a number, not str"),
    ("h.measure", good(v=2), "version: unsupported version 2"),
    ("h.measure", {"seq": 1}, "version: unsupported version None"),
    ("h.measure", good(v="v" * 30), "version: unsupported version " + "v" * 20),
    ("h.measure", good(kind="analysis"), "kind: not a measure"),
    ("h.measure", good(host=None), "type: host must be a non-empty string"),
    ("h.measure", good(host=""), "type: host must be a non-empty string"),
    ("h.measure", good(host="h" * 256), "range: host is longer than 255 characters"),
    ("h.measure", good(seq=-1), "type: seq must be a non-negative integer"),
    ("h.measure", good(seq=True), "type: seq must be a non-negative integer"),
    ("h.measure", good(seq=1.0), "type: seq must be a non-negative integer"),
    ("h.measure", good(seq=None), "type: seq must be a non-negative integer"),
    ("h.measure", good(ts=-1), "range: ts is -1, below 0"),
    ("h.measure", good(ts="1"), "type: ts must be a number, not str"),
    ("h.measure", good(interval=-1), "range: interval is -1, below 0"),
    ("h.measure", good(interval=0), "range: interval is 0; it must be above 0"),
    ("h.measure", good(interval=None), "type: interval must be a number, not NoneType"),
    ("h.measure", good(metrics=None), "type: metrics must be an object"),
    ("g.measure", good(), "routing-key: host 'h' was published under 'g.measure'"),
    ("g.measure", good(host="x" * 100),
     f"routing-key: host {'x' * 80!r} was published under 'g.measure'"),
    ("g" * 100 + ".measure", good(),
     f"routing-key: host 'h' was published under {('g' * 100 + '.measure')[:80]!r}"),
    ("h.measure", {"v": 1, "cpu_percentage": 5}, "type: host must be a non-empty string"),
])
def test_every_measure_check_names_its_reason_and_detail(key, document, expected):
    assert rejection(wire.decodeMeasure, key, encoded(document)) == expected


def test_a_measure_just_inside_every_limit_is_accepted():
    # The longest host whose analysis' routing key fits AMQP's 255 bytes.
    host = "a." + "h" * (topics.MAX_HOST_WORD - 2)
    measure = wire.decodeMeasure(f"{topics.hostWord(host)}.measure", encoded(good(host=host, seq=0, ts=0)))
    assert (measure.host, measure.seq, measure.ts, measure.interval, measure.legacy) == (host, 0, 0, 0.5, False)
    assert measure.hostWord == topics.hostWord(host) == "a_" + "h" * 244
    without = good()
    del without["kind"]
    assert wire.decodeMeasure("h.measure", encoded(without)).metrics == {}
    assert wire.decodeMeasure("h.measure", encoded(good()), 200).host == "h"
    assert rejection(wire.decodeMeasure, "h.measure", encoded(good()), 50).startswith("too-large: ")


def test_a_proof_of_concept_measure_takes_its_host_from_the_routing_key():
    measure = wire.decodeMeasure("web-01.measure", b'{"cpu_percentage": 100}')
    assert measure == wire.Measure(host="web-01", seq=None, ts=None, interval=None,
                                   metrics={"cpu": {"percent": 100}}, legacy=True)
    assert measure.hostWord == "web-01"


def test_a_measure_computes_its_host_word_unless_given():
    assert wire.Measure("a.b", 1, 1.0, 1.0, {}).hostWord == "a_b"
    assert wire.Measure("a.b", 1, 1.0, 1.0, {}, hostWord="given").hostWord == "given"


def test_encoding_is_compact_strict_json():
    body = wire.encodeMeasure("h", 1, 2.5, 1.0, {"cpu": {"percent": 5}})
    assert body == b'{"v":1,"kind":"measure","host":"h","seq":1,"ts":2.5,"interval":1.0,"metrics":{"cpu":{"percent":5}},"cpu_percentage":5}'
    assert wire.encodeEvent({"host": "h\u00e9"}) == b'{"host":"h\\u00e9"}'
    with pytest.raises(ValueError):
        wire.encodeAnalysis({"value": float("nan")})
    assert wire.decodeMeasure("h.measure", body).seq == 1


@pytest.mark.parametrize("key, document, expected", [
    ("nodot", {"v": 1}, "routing-key: 'nodot' is not <host>.<kind>"),
    ("y" * 100, {"v": 1}, f"routing-key: {'y' * 80!r} is not <host>.<kind>"),
    ("h.analysis", {"v": 2, "kind": "analysis", "host": "h"}, "version: unsupported version 2"),
    ("h.analysis", {"v": "w" * 30}, "version: unsupported version " + "w" * 20),
    ("h.analysis", {"v": 1, "kind": "status", "host": "h"}, "kind: kind 'status' under 'h.analysis'"),
    ("h.analysis", {"v": 1, "host": "h"}, "kind: kind 'None' under 'h.analysis'"),
    ("h.analysis", {"v": 1, "kind": "k" * 30, "host": "h"}, f"kind: kind {'k' * 20!r} under 'h.analysis'"),
    ("h." + "k" * 100, {"v": 1, "kind": "analysis", "host": "h"},
     f"kind: kind 'analysis' under {('h.' + 'k' * 100)[:80]!r}"),
    ("h.analysis", {"v": 1, "kind": "analysis"}, "type: host must be a non-empty string"),
    ("h.analysis", {"v": 1, "kind": "analysis", "host": "h" * 256}, "range: host is longer than 255 characters"),
])
def test_every_event_check_names_its_reason_and_detail(key, document, expected):
    assert rejection(wire.decodeEvent, key, encoded(document)) == expected


def test_an_event_is_forwarded_as_is_and_its_body_limit_is_the_one_given():
    document = {"v": 1, "kind": "status", "host": "h", "extra": [1, 2]}
    assert wire.decodeEvent("h.status", encoded(document)) == document
    assert rejection(wire.decodeEvent, "h.status", encoded(document), 10).startswith("too-large: ")
