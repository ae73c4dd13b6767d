"""
The decoders the web role validates what it receives with
(L{wire.decodeAnalysis}, L{wire.decodeStatus}), the clients' messages
(L{wire.decodeClientMessage}), and the encoders of the documents and bodies
that used to be built where they were sent: each accepted shape, and each
rejection with its reason and detail.
"""

import json

import pytest

from resmon import wire
from resmon.wire import Rejected

NOW = 1_800_000_000.0


def analysis(**changes):
    document = {
        "v": 1, "kind": "analysis", "host": "web-01.example.com", "seq": 7, "ts": NOW,
        "interval": 1.0, "analyzed_at": NOW + 0.01, "level": "MEDIUM",
        "levels": {"cpu": "LOW", "memory": "MEDIUM"}, "cpu_result": "LOW",
        "analyses": {"usage": {"status": "ok"}}, "metrics": {"cpu": {"percent": 12.5}},
    }
    document.update(changes)
    return {key: value for key, value in document.items() if value is not ...}


def status(**changes):
    document = {"v": 1, "kind": "status", "host": "web-01.example.com", "status": "stale",
                "since": NOW, "last_seen": NOW - 3, "seq": 7}
    document.update(changes)
    return {key: value for key, value in document.items() if value is not ...}


def encoded(document):
    return json.dumps(document).encode()


ANALYSIS_KEY = "web-01_example_com.analysis"
STATUS_KEY = "web-01_example_com.status"


def rejection(call, *args, **kwargs):
    with pytest.raises(Rejected) as raised:
        call(*args, **kwargs)
    e = raised.value
    assert str(e) == f"{e.reason}: {e.detail}"
    return str(e)


# Analyses


@pytest.mark.parametrize("document", [
    analysis(),
    # The proof-of-concept measure's analysis: no seq, ts, interval.
    analysis(seq=None, ts=None, interval=None),
    analysis(seq=..., ts=..., interval=..., analyzed_at=..., level=..., levels=..., cpu_result=...,
             metrics=...),
    analysis(level=None, cpu_result=None, levels={}),
    analysis(levels={"cpu": None, "disk": "HIGH"}),
    analysis(seq=0, ts=0, analyzed_at=0.0, interval=0),
    analysis(metrics=None, levels=None),
    # A third party's extra fields and metrics are forwarded as they are.
    analysis(extra=[1, {"x": None}], metrics={"cpu": {"percent": "odd"}, "gpu": 3}),
])
def test_valid_analyses_are_accepted_as_they_are(document):
    assert wire.decodeAnalysis(ANALYSIS_KEY, encoded(document), notAfter=NOW + 300) == document


@pytest.mark.parametrize("key, body, expected", [
    ("nodot", encoded(analysis()), "routing-key: 'nodot' is not <host>.<kind>"),
    ("web-01_example_com.status", encoded(analysis()),
     "routing-key: 'web-01_example_com.status' is not <host>.analysis"),
    ("other.analysis", encoded(analysis()),
     "routing-key: host 'web-01.example.com' was published under 'other.analysis'"),
    (ANALYSIS_KEY, "text", "type: body is not bytes"),
    (ANALYSIS_KEY, b"", "empty: empty body"),
    (ANALYSIS_KEY, b"\xff", "encoding: not UTF-8 (invalid start byte at byte 0)"),
    (ANALYSIS_KEY, b"{", "json: Expecting property name enclosed in double quotes: "
                         "line 1 column 2 (char 1)"),
    (ANALYSIS_KEY, b'{"ts": NaN}', "non-finite: NaN is not a number resmon accepts"),
    (ANALYSIS_KEY, b"[]", "shape: top level is not a JSON object"),
    (ANALYSIS_KEY, b"[" * 100_000, "too-deep: JSON nested too deeply"),
    (ANALYSIS_KEY, encoded(analysis(v=2)), "version: unsupported version 2"),
    (ANALYSIS_KEY, encoded(analysis(kind="status")),
     f"kind: kind 'status' under {ANALYSIS_KEY!r}"),
    (ANALYSIS_KEY, encoded(analysis(host=None)), "type: host must be a non-empty string"),
    (ANALYSIS_KEY, encoded(analysis(host="h" * 256)), "range: host is longer than 255 characters"),
    (ANALYSIS_KEY, encoded(analysis(ts=NOW + 301)),
     f"future: ts is {NOW + 301}, ahead of the receiver's clock by more than the allowed skew "
     f"(accepted up to {NOW + 300:.3f})"),
    (ANALYSIS_KEY, encoded(analysis(analyzed_at=NOW + 400)),
     f"future: analyzed_at is {NOW + 400}, ahead of the receiver's clock by more than the "
     f"allowed skew (accepted up to {NOW + 300:.3f})"),
    (ANALYSIS_KEY, encoded(analysis(seq="7")), "type: seq must be a non-negative integer or null"),
    (ANALYSIS_KEY, encoded(analysis(seq=-1)), "type: seq must be a non-negative integer or null"),
    (ANALYSIS_KEY, encoded(analysis(seq=True)), "type: seq must be a non-negative integer or null"),
    (ANALYSIS_KEY, encoded(analysis(seq=7.0)), "type: seq must be a non-negative integer or null"),
    (ANALYSIS_KEY, encoded(analysis(ts="now")), "type: ts must be a number, not str"),
    (ANALYSIS_KEY, encoded(analysis(ts=-1)), "range: ts is -1, below 0"),
    (ANALYSIS_KEY, encoded(analysis(analyzed_at=[1])), "type: analyzed_at must be a number, not list"),
    (ANALYSIS_KEY, encoded(analysis(interval=False)), "type: interval must be a number, not bool"),
    (ANALYSIS_KEY, encoded(analysis(level="SEVERE")),
     "type: level must be one of LOW, MEDIUM, HIGH or null"),
    (ANALYSIS_KEY, encoded(analysis(level="low")),
     "type: level must be one of LOW, MEDIUM, HIGH or null"),
    (ANALYSIS_KEY, encoded(analysis(cpu_result=2)),
     "type: cpu_result must be one of LOW, MEDIUM, HIGH or null"),
    (ANALYSIS_KEY, encoded(analysis(levels=["LOW"])), "type: levels must be an object"),
    (ANALYSIS_KEY, encoded(analysis(levels={"cpu": "LOW", "m" * 50: "BAD"})),
     f"type: levels.{'m' * 40} must be one of LOW, MEDIUM, HIGH or null"),
    (ANALYSIS_KEY, encoded(analysis(metrics=[])), "type: metrics must be an object"),
])
def test_every_analysis_rejection_names_its_reason_and_detail(key, body, expected):
    assert rejection(wire.decodeAnalysis, key, body, notAfter=NOW + 300) == expected


def test_an_analysis_over_the_body_limit_is_too_large():
    body = encoded(analysis())
    assert rejection(wire.decodeAnalysis, ANALYSIS_KEY, body, len(body) - 1) == (
        f"too-large: {len(body)} bytes is over the {len(body) - 1} byte limit")
    assert wire.decodeAnalysis(ANALYSIS_KEY, body, len(body))["seq"] == 7


def test_without_a_time_limit_any_time_is_accepted():
    document = analysis(ts=NOW * 10, analyzed_at=NOW * 10)
    assert wire.decodeAnalysis(ANALYSIS_KEY, encoded(document)) == document


def test_the_analysis_the_pipeline_builds_decodes_as_it_was():
    measure = wire.Measure("web-01.example.com", 3, NOW, 1.0, {"cpu": {"percent": 5.0}})
    document = wire.analysisDocument(measure, NOW + 0.5, "HIGH", {"cpu": "LOW"}, {"usage": {}})
    assert document == {
        "v": 1, "kind": "analysis", "host": "web-01.example.com", "seq": 3, "ts": NOW,
        "interval": 1.0, "analyzed_at": NOW + 0.5, "level": "HIGH", "levels": {"cpu": "LOW"},
        "cpu_result": "LOW", "analyses": {"usage": {}}, "metrics": {"cpu": {"percent": 5.0}}}
    body = wire.encodeAnalysis(document)
    assert wire.decodeAnalysis(ANALYSIS_KEY, body, notAfter=NOW + 1) == document
    assert wire.analysisDocument(measure, NOW, None, {}, {})["cpu_result"] is None


# Statuses


@pytest.mark.parametrize("document", [
    status(),
    status(status="forgotten", seq=None),
    status(status="x" * 32, since=None, last_seen=None),
    status(since=..., last_seen=..., seq=...),
    status(status="maintenance", extra={"by": "ops"}),
])
def test_valid_statuses_are_accepted_as_they_are(document):
    assert wire.decodeStatus(STATUS_KEY, encoded(document), notAfter=NOW + 300) == document


@pytest.mark.parametrize("key, document, expected", [
    ("nodot", status(), "routing-key: 'nodot' is not <host>.<kind>"),
    (ANALYSIS_KEY, status(), f"routing-key: {ANALYSIS_KEY!r} is not <host>.status"),
    ("victim.status", status(),
     "routing-key: host 'web-01.example.com' was published under 'victim.status'"),
    (STATUS_KEY, status(v=None), "version: unsupported version None"),
    (STATUS_KEY, status(kind="analysis"), f"kind: kind 'analysis' under {STATUS_KEY!r}"),
    (STATUS_KEY, status(host=""), "type: host must be a non-empty string"),
    (STATUS_KEY, status(since=NOW + 301),
     f"future: since is {NOW + 301}, ahead of the receiver's clock by more than the allowed skew "
     f"(accepted up to {NOW + 300:.3f})"),
    (STATUS_KEY, status(last_seen=NOW + 301),
     f"future: last_seen is {NOW + 301}, ahead of the receiver's clock by more than the allowed "
     f"skew (accepted up to {NOW + 300:.3f})"),
    (STATUS_KEY, status(status=...), "type: status: expected a short string"),
    (STATUS_KEY, status(status=""), "type: status: expected a short string"),
    (STATUS_KEY, status(status="s" * 33), "type: status: expected a short string"),
    (STATUS_KEY, status(status=1), "type: status: expected a short string"),
    (STATUS_KEY, status(since="soon"), "type: since must be a number, not str"),
    (STATUS_KEY, status(last_seen=-5), "range: last_seen is -5, below 0"),
    (STATUS_KEY, status(seq=-1), "type: seq must be a non-negative integer or null"),
    (STATUS_KEY, status(seq="1"), "type: seq must be a non-negative integer or null"),
])
def test_every_status_rejection_names_its_reason_and_detail(key, document, expected):
    assert rejection(wire.decodeStatus, key, encoded(document), notAfter=NOW + 300) == expected


def test_status_and_tick_documents():
    assert wire.statusDocument("a.b", wire.OFFLINE, NOW, NOW - 30, 4) == {
        "v": 1, "kind": "status", "host": "a.b", "status": "offline", "since": NOW,
        "last_seen": NOW - 30, "seq": 4}
    body = wire.encodeStatus("a.b", wire.ONLINE, NOW, NOW, None)
    assert wire.decodeStatus("a_b.status", body) == wire.statusDocument("a.b", "online", NOW, NOW, None)
    assert json.loads(wire.encodeTick("q", 5.0)) == {"v": 1, "kind": "liveness-tick", "queue": "q",
                                                     "ts": 5.0}


# Levels, and the one encoder


def test_levels_are_defined_once_in_order():
    assert wire.LEVELS == (wire.LOW, wire.MEDIUM, wire.HIGH) == ("LOW", "MEDIUM", "HIGH")
    assert sorted(wire.LEVELS, key=wire.LEVEL_ORDER.__getitem__) == list(wire.LEVELS)
    from resmon.analysis import base
    from resmon.analysis.builtin import sustained
    assert base.LEVEL_ORDER is wire.LEVEL_ORDER and sustained.LEVELS is wire.LEVELS


def test_the_encoder_is_compact_ascii_and_refuses_nan():
    assert wire.encodeJSON({"a": [1, "\u00e9"], "b": None}) == b'{"a":[1,"\\u00e9"],"b":null}'
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            wire.encodeJSON({"x": bad})


# Bodies for clients


def test_snapshot_pieces_make_one_json_object():
    pieces = wire.snapshotPieces({"hosts": None}, [b'{"host":"a"}', b'{"host":"b"}'], [],
                                 iter([b'{"a":', b"[]", b"}"]))
    assert json.loads(b"".join(pieces)) == {
        "kind": "snapshot", "subscription": {"hosts": None},
        "events": [{"host": "a"}, {"host": "b"}], "statuses": [], "history": {"a": []}}
    assert json.loads(b"".join(wire.snapshotPieces({}, [], [b"{}"])))["history"] == {}
    assert wire.analysesSnapshotBody(wire.jsonArray([b"1", b"2"])) == \
        b'{"kind":"snapshot","events":[1,2]}'


def test_history_and_host_bodies():
    assert wire.historyReplyBody("h\u00e9", 5, b"[]") == \
        b'{"kind":"history","host":"h\\u00e9","step":5,"points":[]}'
    assert wire.historyKey('a"b') == b'"a\\"b":'
    assert json.loads(wire.hostBody("h", None, b'{"status":"online"}')) == {
        "host": "h", "analysis": None, "status": {"status": "online"}}
    assert json.loads(b"".join(wire.hostsPieces([b"1", b"2"], [b"3"]))) == {
        "hosts": [1, 2], "statuses": [3]}
    assert json.loads(wire.hostHistoryBody("h", 900.0, 0, b"[[1,2,3]]")) == {
        "host": "h", "window": 900.0, "step": 0, "points": [[1, 2, 3]]}


def test_error_bodies():
    assert wire.errorBody("unknown host", host="x") == b'{"error":"unknown host","host":"x"}'
    assert wire.errorMessage("bad", hosts=["a"]) == b'{"kind":"error","error":"bad","hosts":["a"]}'


def test_a_history_point_and_its_overview():
    point = wire.historyPoint(analysis(), now=1.0)
    encoded = wire.encodePoint(point)
    assert encoded.startswith(b'{"ts":1800000000.0,"seq":7,"cpu":12.5,"mem":null,"cores":[]')
    assert wire.overviewPoint(encoded) == b"[1800000000.0,12.5,null]"


def test_sse_frames():
    assert wire.sseFrame("status", b'{"a":\r\n1}') == b'event: status\ndata: {"a":  1}\n\n'
    assert wire.sseFrame("status", b"") == b"event: status\ndata: \n\n"
    assert wire.sseData(b'{"a":\r\n1}') == b'{"a":  1}'
    assert wire.sseRetry(2000) == b"retry: 2000\n\n"


# The clients' messages


@pytest.mark.parametrize("payload, expected", [
    (b'{"kind": "subscribe"}', wire.SubscribeRequest()),
    (b'{"kind": "subscribe", "hosts": "web.*.#", "events": ["status"], "history": true, '
     b'"since": 5, "step": 0}',
     wire.SubscribeRequest(("web.*.#",), ("status",), True, 5, 0)),
    (b'{"kind": "history", "host": "a"}', wire.HistoryRequest("a", 0)),
    (b'{"kind": "history", "host": "a", "step": 2.5}', wire.HistoryRequest("a", 2.5)),
])
def test_client_messages_decode_to_requests(payload, expected):
    assert wire.decodeClientMessage(payload) == expected


@pytest.mark.parametrize("payload, expected", [
    (b"{not json", "not a JSON text message"),
    (b"\xff", "not a JSON text message"),
    (b"[" * 100_000, "not a JSON text message"),
    (b"[1]", "a message must be a JSON object"),
    (b'{"kind": "hello"}', "unknown message kind 'hello'; expected 'subscribe' or 'history'"),
    (b'{}', "unknown message kind 'None'; expected 'subscribe' or 'history'"),
    (b'{"kind": "subscribe", "since": NaN}', "since: expected a number (seconds since the epoch)"),
    (b'{"kind": "history", "host": "a", "step": NaN}',
     "step: expected a number of seconds: 0 (every point) or 0.001 to 86400"),
    (b'{"kind": "history", "host": "a", "x": 1}', "unknown field 'x'"),
])
def test_invalid_client_messages_say_why(payload, expected):
    with pytest.raises(wire.InvalidRequest) as raised:
        wire.decodeClientMessage(payload)
    assert str(raised.value) == expected


def test_query_parameters_decode_to_a_subscribe_request():
    assert wire.decodeQuery({b"hosts": [b"a,b"], b"history": [b"overview"], b"step": [b"60"]}) == \
        wire.SubscribeRequest(("a", "b"), wire.EVENT_KINDS, "overview", None, 60.0)
    with pytest.raises(wire.InvalidRequest, match="unknown parameter 'x'"):
        wire.decodeQuery({"x": ["1"]})


def test_the_web_role_counts_what_the_decoders_reject():
    from twisted.internet.task import Clock

    from resmon.webserver.fanout import EventFanout
    clock = Clock()
    clock.advance(NOW)
    fanout = EventFanout(clock=clock)
    fanout.eventReceived(ANALYSIS_KEY, encoded(analysis(seq="7")))
    fanout.eventReceived(STATUS_KEY, encoded(status(since="x")))
    fanout.eventReceived(ANALYSIS_KEY, encoded(analysis(ts=NOW + 301)))
    fanout.eventReceived(ANALYSIS_KEY, encoded(status()))
    fanout.eventReceived(STATUS_KEY, encoded(analysis()))
    assert dict(fanout.rejected) == {"type": 2, "future": 1, "kind": 2}
    fanout.eventReceived(ANALYSIS_KEY, encoded(analysis()))
    fanout.eventReceived(STATUS_KEY, encoded(status()))
    assert fanout.counters["received"] == 2 and sum(fanout.rejected.values()) == 5
