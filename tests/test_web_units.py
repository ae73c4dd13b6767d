"""
Unit tests of the web role's history, subscriptions, fan-out, WebSocket
messages, Server-Sent Events and JSON API, with Twisted's fakes (Clock,
StringTransport, DummyRequest, an HTTPChannel on a StringTransport).
"""

import json

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.test.requesthelper import DummyRequest

from fakebus import ConfirmingBus
from resmon.webserver.fanout import ClientFlow, EventFanout
from resmon.webserver.history import FleetHistory, makePoint
from resmon.webserver.httpapi import HostsResource
from resmon.services.web import WebService, buildSite
from resmon.webserver.subscriptions import InvalidSubscription, parseQuery, parseSubscribe
from resmon.webserver.origins import OriginPolicy, normalizeHostName, normalizeOrigin
from resmon.ratelimit import TokenBucket
from resmon.webserver.websocket import DashboardFactory


def analysis(host, seq, ts, cpu=10.0, cores=(10.0, 20.0), level="LOW"):
    return {
        "v": 1, "kind": "analysis", "host": host, "seq": seq, "ts": ts, "interval": 1.0,
        "analyzed_at": ts + 0.01, "level": level, "levels": {"cpu": level, "memory": "LOW"},
        "cpu_result": level,
        "metrics": {
            "cpu": {"percent": cpu, "per_core": list(cores)},
            "memory": {"total": 100, "used": 30, "available": 70, "percent": 30.04},
            "load": [0.5, 0.4, 0.3],
            "disks": [{"mount": "/", "percent": 70.44}, {"mount": "/var", "percent": 91.2}],
            "net_io": {"bytes_sent_per_s": 1200.4, "bytes_recv_per_s": 3400.6,
                       "packets_sent_per_s": 1.0, "packets_recv_per_s": 2.0},
        },
    }


def body(document):
    return json.dumps(document, separators=(",", ":")).encode()


def status(host, state, since=100.0):
    return {"v": 1, "kind": "status", "host": host, "status": state, "since": since, "last_seen": since}


def key(host, kind):
    from resmon.topics import routingKey
    return routingKey(host, kind)


# History


def test_a_point_is_compact_and_carries_what_the_charts_need():
    point = makePoint(analysis("h", 1, 1000.1234), now=5.0)
    assert point == {
        "ts": 1000.1234, "seq": 1, "cpu": 10.0, "mem": 30.0, "cores": [10.0, 20.0], "load1": 0.5,
        "disk": 91.2, "rx": 3401, "tx": 1200, "level": "LOW",
        "levels": {"cpu": "LOW", "memory": "LOW"},
    }
    # A proof-of-concept analysis has no ts: its analyzed_at, else the clock.
    poc = {"v": 1, "kind": "analysis", "host": "p", "seq": None, "ts": None,
           "analyzed_at": 7.5, "metrics": {"cpu": {"percent": 42.0}}}
    assert makePoint(poc, now=9.0)["ts"] == 7.5
    del poc["analyzed_at"]
    point = makePoint(poc, now=9.0)
    assert point["ts"] == 9.0 and point["seq"] is None and point["cpu"] == 42.0 and point["mem"] is None
    assert point["cores"] == [] and point["rx"] is None
    # Garbage from a third party becomes null rather than an error.
    junk = {"host": "j", "ts": "x", "metrics": {"cpu": {"percent": True, "per_core": "no"},
                                                 "disks": [1, {"percent": "?"}], "load": []}}
    point = makePoint(junk, now=3.0)
    assert point["ts"] == 3.0 and point["cpu"] is None and point["disk"] is None


def test_history_is_bounded_by_point_count():
    clock = Clock()
    history = FleetHistory(clock, window=900, maxPoints=5)
    for i in range(12):
        history.add(analysis("h", i, 1000.0 + i))
    points = [json.loads(p) for p in history.encodedPoints("h")]
    assert [p["ts"] for p in points] == [1007.0, 1008.0, 1009.0, 1010.0, 1011.0]


def test_history_is_bounded_by_age_and_keeps_order():
    clock = Clock()
    history = FleetHistory(clock, window=10, maxPoints=1000)
    for i in range(30):
        history.add(analysis("h", i, 1000.0 + i))
    assert [json.loads(p)["ts"] for p in history.encodedPoints("h")] == [1019.0 + i for i in range(11)]
    # An older analysis (from a competing analyzer) is not inserted out of order.
    assert history.add(analysis("h", 5, 1005.0)) is None
    assert history.counters["out-of-order"] == 1
    assert [json.loads(p)["ts"] for p in history.encodedPoints("h", since=1027.0)] == [1028.0, 1029.0]
    assert json.loads(history.pointsBody("h", since=2000.0)) == []


def test_history_forgets_hosts_not_seen_for_the_window():
    clock = Clock()
    history = FleetHistory(clock, window=60, maxPoints=100)
    history.add(analysis("gone", 1, 1.0))
    clock.advance(30)
    history.add(analysis("alive", 1, 2.0))
    clock.advance(31)
    history.expire()
    assert history.hosts() == ["alive"]
    assert json.loads(history.historyBody(["gone", "alive"])) == {
        "alive": [makePoint(analysis("alive", 1, 2.0), 0)]}
    clock.advance(60)
    history.expire()
    assert history.hosts() == [] and history.counters["forgotten"] == 2


def test_history_step_keeps_the_last_point_of_each_bucket():
    history = FleetHistory(Clock(), window=900, maxPoints=1000)
    for i in range(25):
        history.add(analysis("h", i, 1000.5 + i, cpu=float(i)))
    times = lambda **kw: [json.loads(p)["ts"] for p in history.encodedPoints("h", **kw)]
    # Buckets [1000, 1010), [1010, 1020), [1020, 1030): their last points.
    assert times(step=10) == [1009.5, 1019.5, 1024.5]
    assert times(step=0) == [1000.5 + i for i in range(25)]
    assert times(step=1) == times(step=0)
    assert times(step=10, since=1015.0) == [1019.5, 1024.5]
    assert times(step=10, since=1024.5) == []
    assert times(step=1000) == [1024.5]  # the newest point is always there
    assert len(times(step=0.3)) == 25
    # Full points, or [ts, cpu, mem] spelled exactly as in the points.
    assert json.loads(history.pointsBody("h", step=10, form="overview")) == [
        [1009.5, 9.0, 30.0], [1019.5, 19.0, 30.0], [1024.5, 24.0, 30.0]]
    assert json.loads(history.historyBody(["h", "other"], since=1023.0, form="overview")) == {
        "h": [[1023.5, 23.0, 30.0], [1024.5, 24.0, 30.0]]}


@pytest.mark.parametrize("window, maxPoints", [(900, 1800), (60, 1800), (900, 50)])
def test_the_overview_kept_ready_is_the_one_computed_from_the_points(window, maxPoints):
    import random
    rng = random.Random(window + maxPoints)
    ready = FleetHistory(Clock(), window=window, maxPoints=maxPoints, overviewStep=10)
    computed = FleetHistory(Clock(), window=window, maxPoints=maxPoints, overviewStep=0)
    ts = 1_763_891_230.0
    for seq in range(400):
        ts += rng.choice([0.0, 0.1, 0.5, 1.0, 2.5, 10.0, 30.0])  # equal times, bursts and gaps
        document = analysis("h", seq, ts, cpu=rng.uniform(0, 100))
        ready.add(document)
        computed.add(document)
        for since in (None, ts - 45.0, ts - 10.0, ts):
            assert ready.pointsBody("h", since, 10, "overview") == \
                computed.pointsBody("h", since, 10, "overview"), (seq, since)
    assert len(json.loads(ready.pointsBody("h", step=10, form="overview"))) <= window / 10 + 1


def test_overview_of_points_with_missing_values():
    history = FleetHistory(Clock(), window=900, maxPoints=10)
    history.add({"v": 1, "kind": "analysis", "host": "poc", "seq": None, "ts": 5.0,
                 "metrics": {"cpu": {"percent": 42.25}}})
    history.add(dict(analysis("poc", 1, 6.0), seq=2**40))
    assert json.loads(history.pointsBody("poc", form="overview")) == [[5.0, 42.2, None], [6.0, 10.0, 30.0]]


def test_history_window_zero_keeps_nothing():
    history = FleetHistory(Clock(), window=0)
    history.add(analysis("h", 1, 1.0))
    assert history.hosts() == [] and history.pointCount() == 0


# Subscriptions


def test_subscription_patterns_match_names_and_routing_words():
    sub = parseSubscribe({"kind": "subscribe", "hosts": ["web-01.example.com", "db-01"]})
    assert sub.matchesHost("web-01.example.com")
    assert not sub.matchesHost("web-02.example.com")
    assert sub.matchesHost("db-01") and not sub.matchesHost("db-02")
    sub = parseSubscribe({"kind": "subscribe", "hosts": ["web-01_example_com", "db"]})
    assert sub.matchesHost("web-01.example.com")  # by its routing word
    assert sub.matchesHost("db") and not sub.matchesHost("db2")
    for everything in ("*", "#"):
        sub = parseSubscribe({"kind": "subscribe", "hosts": [everything]})
        assert sub.matchesHost("any.host.name") and sub.matchesHost("x")
    assert not parseSubscribe({"hosts": ["*.x"]}).matchesHost("a")


def test_subscription_defaults_and_kinds():
    # The default is cheap for a whole fleet: an overview, one point per 10 s.
    sub = parseSubscribe({"kind": "subscribe"})
    assert sub.hosts is None and sub.events == {"analysis", "status"}
    assert (sub.history, sub.step, sub.historyForm) == ("overview", 10.0, "overview")
    sub = parseSubscribe({"kind": "subscribe", "events": ["status"], "history": False, "since": 12.5})
    assert sub.matches({"kind": "status", "host": "a"})
    assert not sub.matches({"kind": "analysis", "host": "a"})
    assert sub.historyForm is None
    assert sub.describe() == {"hosts": None, "events": ["status"], "history": False, "step": 0,
                              "since": 12.5}
    # history: true keeps its meaning: every field of every point.
    sub = parseSubscribe({"kind": "subscribe", "history": True})
    assert (sub.history, sub.step, sub.historyForm) == (True, 0, "full")
    sub = parseSubscribe({"kind": "subscribe", "history": True, "step": 2.5})
    assert sub.describe()["step"] == 2.5
    assert parseSubscribe({"history": "overview", "step": 0}).step == 0


@pytest.mark.parametrize("message, error", [
    ({"kind": "subscribe", "hosts": "web-*"}, "whole words"),
    ({"kind": "subscribe", "hosts": [1]}, "hosts: expected a list"),
    ({"kind": "subscribe", "hosts": []}, "hosts: empty list"),
    ({"kind": "subscribe", "hosts": [""]}, "1 to 255"),
    ({"kind": "subscribe", "hosts": ["x"] * 1001}, "at most 1000"),
    ({"kind": "subscribe", "events": ["measure"]}, "unknown kind 'measure'"),
    ({"kind": "subscribe", "events": []}, "events: empty list"),
    ({"kind": "subscribe", "history": "yes"}, 'history: expected true, false or "overview"'),
    ({"kind": "subscribe", "step": -1}, "step: expected a number of seconds: 0 (every point) or 0.001 to 86400"),
    ({"kind": "subscribe", "step": 1e-300}, "step: expected a number of seconds: 0 (every point) or 0.001 to 86400"),
    ({"kind": "subscribe", "step": 86401}, "step: expected a number"),
    ({"kind": "subscribe", "step": True}, "step: expected a number"),
    ({"kind": "subscribe", "step": "10"}, "step: expected a number"),
    ({"kind": "subscribe", "since": float("inf")}, "since: expected a number"),
    ({"kind": "subscribe", "host": ["a"]}, "unknown field 'host'"),
    ([], "JSON object"),
])
def test_invalid_subscriptions_say_why(message, error):
    with pytest.raises(InvalidSubscription) as caught:
        parseSubscribe(message)
    assert error in str(caught.value)


def test_subscription_from_query_parameters():
    sub = parseQuery({b"hosts": [b"web-01,db"], b"events": [b"analysis"], b"history": [b"0"]})
    assert sub.hosts == ("web-01", "db") and sub.events == {"analysis"} and sub.history is False
    assert parseQuery({"since": ["5"]}).since == 5.0  # Autobahn's params: str keys and values
    assert parseQuery({}).hosts is None and parseQuery({}).history == "overview"
    sub = parseQuery({b"history": [b"overview"], b"step": [b"0.5"]})
    assert (sub.history, sub.step) == ("overview", 0.5)
    sub = parseQuery({"history": ["1"], "step": ["60"]})
    assert (sub.history, sub.step) == (True, 60.0)
    for bad in ({b"hosts": [b"a*"]}, {b"history": [b"maybe"]}, {b"since": [b"soon"]}, {b"x": [b"1"]},
                {b"step": [b"nan"]}, {b"step": [b"-1"]}, {b"step": [b"often"]}, {b"since": [b"inf"]}):
        with pytest.raises(InvalidSubscription):
            parseQuery(bad)


# Fan-out


class FakeClient:
    def __init__(self):
        self.sent = []

    def sendEvent(self, document, body):
        self.sent.append(json.loads(body))


def _fanout(clock=None, window=900):
    return EventFanout(history=FleetHistory(clock or Clock(), window=window, maxPoints=100))


def test_snapshot_has_latest_analyses_statuses_and_history_of_matching_hosts():
    fanout = _fanout()
    for i in range(3):
        for host in ("web-01", "web-02", "db"):
            fanout.eventReceived(key(host, "analysis"), body(analysis(host, i, 100.0 + i)))
    fanout.eventReceived(key("web-01", "status"), body(status("web-01", "stale")))
    fanout.eventReceived(key("db", "status"), body(status("db", "online")))
    client = FakeClient()
    snapshot = json.loads(fanout.subscribe(
        client, parseSubscribe({"hosts": ["web-01", "db"], "history": True})))
    assert snapshot["kind"] == "snapshot"
    assert snapshot["subscription"]["hosts"] == ["web-01", "db"]
    assert [(e["host"], e["seq"]) for e in snapshot["events"]] == [("db", 2), ("web-01", 2)]
    assert [(s["host"], s["status"]) for s in snapshot["statuses"]] == [("db", "online"), ("web-01", "stale")]
    assert sorted(snapshot["history"]) == ["db", "web-01"]
    assert [p["ts"] for p in snapshot["history"]["web-01"]] == [100.0, 101.0, 102.0]

    # Without history, and for statuses only.
    snapshot = json.loads(fanout.snapshotBody(parseSubscribe({"history": False})))
    assert snapshot["history"] == {} and len(snapshot["events"]) == 3
    snapshot = json.loads(fanout.snapshotBody(parseSubscribe({"events": ["status"]})))
    assert snapshot["events"] == [] and snapshot["history"] == {} and len(snapshot["statuses"]) == 2
    # Only the history after `since`: what a reconnecting client missed.
    snapshot = json.loads(fanout.snapshotBody(
        parseSubscribe({"hosts": ["db"], "history": True, "since": 101.0})))
    assert [p["ts"] for p in snapshot["history"]["db"]] == [102.0]
    # By default, an overview: [ts, cpu, mem], one per 10 s.
    snapshot = json.loads(fanout.snapshotBody(parseSubscribe({"hosts": ["db"]})))
    assert snapshot["history"] == {"db": [[102.0, 10.0, 30.0]]}
    assert snapshot["subscription"]["history"] == "overview" and snapshot["subscription"]["step"] == 10


def test_clients_receive_only_matching_events_after_their_snapshot_exactly_once():
    fanout = _fanout()
    fanout.eventReceived(key("web-01", "analysis"), body(analysis("web-01", 0, 100.0)))
    webOnly, statusOnly, everything = FakeClient(), FakeClient(), FakeClient()
    snapshot = json.loads(fanout.subscribe(webOnly, parseSubscribe({"hosts": ["web-01"]})))
    fanout.subscribe(statusOnly, parseSubscribe({"events": ["status"]}))
    fanout.attach(everything)
    fanout.eventReceived(key("web-01", "analysis"), body(analysis("web-01", 1, 101.0)))
    fanout.eventReceived(key("web-01", "analysis"), body(analysis("web-01", 1, 101.0)))  # redelivered
    fanout.eventReceived(key("db", "analysis"), body(analysis("db", 0, 101.0)))
    fanout.eventReceived(key("web-01", "status"), body(status("web-01", "offline")))
    assert [e["seq"] for e in snapshot["events"]] == [0]
    assert [(e["host"], e["kind"]) for e in webOnly.sent] == [("web-01", "analysis"), ("web-01", "status")]
    assert [e["seq"] for e in webOnly.sent if e["kind"] == "analysis"] == [1]
    assert [(e["host"], e["kind"]) for e in statusOnly.sent] == [("web-01", "status")]
    assert len(everything.sent) == 3
    # A new subscription replaces the old one.
    fanout.subscribe(webOnly, parseSubscribe({"hosts": ["db"]}))
    fanout.eventReceived(key("web-01", "analysis"), body(analysis("web-01", 2, 102.0)))
    assert len(webOnly.sent) == 2
    fanout.detach(webOnly)
    fanout.eventReceived(key("db", "analysis"), body(analysis("db", 1, 102.0)))
    assert len(webOnly.sent) == 2


def test_status_events_are_kept_and_bad_ones_rejected():
    fanout = _fanout()
    fanout.eventReceived(key("a", "status"), body(status("a", "online")))
    fanout.eventReceived(key("a", "status"), body(status("a", "offline", since=200.0)))
    fanout.eventReceived(key("a", "status"), body(dict(status("a", "x"), status=3)))
    assert fanout.statuses.get("a")["status"] == "offline"
    assert dict(fanout.rejected) == {"type": 1}
    assert fanout.resolveHost("a") == ["a"]


def test_client_flow_restart_puts_the_snapshot_first_and_keeps_status_and_analysis_apart():
    clock, sent = Clock(), []
    flow = ClientFlow(sent.append, lambda: None, clock, stallTimeout=30)
    flow.pauseProducing()
    flow.send(("analysis", "a"), b"a1")
    flow.send(("status", "a"), b"s1")
    flow.send(("analysis", "a"), b"a2")
    assert flow.pending == {("analysis", "a"): b"a2", ("status", "a"): b"s1"}
    flow.restart(b"snapshot")  # supersedes what was held back
    flow.send(("analysis", "a"), b"a3")
    flow.resumeProducing()
    assert sent == [b"snapshot", b"a3"]
    flow.restart(b"snapshot2")
    assert sent[-1] == b"snapshot2"
    assert clock.getDelayedCalls() == []


# WebSocket messages


class FakeConnectionRequest:
    def __init__(self, params=None, origin=None, host="127.0.0.1:8080"):
        self.params = params or {}
        self.origin = origin
        self.headers = {"host": host} if host else {}


def _websocket(fanout, params=None):
    clock = Clock()
    factory = DashboardFactory(fanout, clock, stallTimeout=30)
    protocol = factory.buildProtocol(None)
    sent = []
    protocol.sendMessage = lambda payload, isBinary=False: sent.append(json.loads(payload))
    protocol.sendPreparedMessage = lambda prepared: sent.append(json.loads(prepared.payload))
    # A snapshot goes out as the frames of one message.
    frames = []
    protocol.beginMessage = lambda isBinary=False: frames.clear()
    protocol.sendMessageFrame = frames.append
    protocol.endMessage = lambda: sent.append(json.loads(b"".join(frames)))
    protocol.sendClose = lambda code=None, reason=None: sent.append(("close", code))
    protocol._fail_connection = lambda code=None, reason=None: sent.append(("close", code))
    protocol.transport = StringTransport()
    protocol.onConnect(FakeConnectionRequest(params))
    protocol.onOpen()
    return protocol, sent


def test_websocket_subscribe_replies_with_a_snapshot_then_matching_events():
    fanout = _fanout()
    fanout.eventReceived(key("web-01", "analysis"), body(analysis("web-01", 0, 100.0)))
    fanout.eventReceived(key("db", "analysis"), body(analysis("db", 0, 100.0)))
    protocol, sent = _websocket(fanout)
    # Never subscribed: everything, with history (the dashboard's default).
    assert sent[0]["kind"] == "snapshot" and len(sent[0]["events"]) == 2 and len(sent[0]["history"]) == 2
    protocol.onMessage(json.dumps({"kind": "subscribe", "hosts": ["db"], "events": ["analysis"]}).encode(), False)
    assert sent[1]["kind"] == "snapshot" and [e["host"] for e in sent[1]["events"]] == ["db"]
    assert list(sent[1]["history"]) == ["db"]
    fanout.eventReceived(key("web-01", "analysis"), body(analysis("web-01", 1, 101.0)))
    fanout.eventReceived(key("db", "status"), body(status("db", "stale")))
    fanout.eventReceived(key("db", "analysis"), body(analysis("db", 1, 101.0)))
    assert [(m["kind"], m["host"]) for m in sent[2:]] == [("analysis", "db")]
    protocol.onClose(True, 1000, None)
    assert fanout.clients == {}


def test_websocket_initial_subscription_from_the_url():
    fanout = _fanout()
    fanout.eventReceived(key("web-01", "analysis"), body(analysis("web-01", 0, 100.0)))
    fanout.eventReceived(key("db", "analysis"), body(analysis("db", 0, 100.0)))
    _, sent = _websocket(fanout, {"hosts": ["db"], "history": ["0"]})
    assert [e["host"] for e in sent[0]["events"]] == ["db"] and sent[0]["history"] == {}
    from autobahn.websocket.types import ConnectionDeny
    with pytest.raises(ConnectionDeny):
        _websocket(fanout, {"hosts": ["db*"]})


@pytest.mark.parametrize("payload, error", [
    (b"{not json", "not a JSON text message"),
    (b"[1]", "a message must be a JSON object"),
    (b'{"kind": "hello"}', "unknown message kind 'hello'; expected 'subscribe' or 'history'"),
    (b'{"kind": "subscribe", "events": ["measure"]}', "unknown kind 'measure'"),
])
def test_websocket_invalid_messages_get_an_error_and_the_connection_stays(payload, error):
    fanout = _fanout()
    protocol, sent = _websocket(fanout)
    protocol.onMessage(payload, False)
    assert sent[1]["kind"] == "error" and error in sent[1]["error"]
    assert protocol in fanout.clients  # still subscribed as before
    fanout.eventReceived(key("x", "analysis"), body(analysis("x", 0, 1.0)))
    assert sent[-1]["host"] == "x"


def test_websocket_history_request_answers_one_hosts_full_points():
    fanout = _fanout()
    for i in range(30):
        fanout.eventReceived(key("web-01.example.com", "analysis"),
                             body(analysis("web-01.example.com", i, 1000.0 + i)))
    protocol, sent = _websocket(fanout)
    # The default snapshot: an overview of every host, one point per 10 s.
    assert sent[0]["subscription"]["history"] == "overview" and sent[0]["subscription"]["step"] == 10
    assert sent[0]["history"] == {"web-01.example.com": [
        [1009.0, 10.0, 30.0], [1019.0, 10.0, 30.0], [1029.0, 10.0, 30.0]]}
    for asked in ("web-01.example.com", "web-01_example_com"):
        protocol.onMessage(json.dumps({"kind": "history", "host": asked, "step": 0}).encode(), False)
        reply = sent[-1]
        assert reply["kind"] == "history" and reply["host"] == "web-01.example.com" and reply["step"] == 0
        assert [p["seq"] for p in reply["points"]] == list(range(30))
        assert reply["points"][-1]["cores"] == [10.0, 20.0] and reply["points"][-1]["rx"] == 3401
    protocol.onMessage(b'{"kind": "history", "host": "web-01.example.com", "step": 5}', False)
    assert [p["ts"] for p in sent[-1]["points"]] == [1004.0, 1009.0, 1014.0, 1019.0, 1024.0, 1029.0]
    protocol.onMessage(b'{"kind": "history", "host": "web-01.example.com"}', False)
    assert len(sent[-1]["points"]) == 30  # step defaults to 0
    # The request changes nothing else: live events keep coming.
    fanout.eventReceived(key("web-01.example.com", "analysis"), body(analysis("web-01.example.com", 30, 1030.0)))
    assert sent[-1]["kind"] == "analysis" and sent[-1]["seq"] == 30
    # A host known only by its status has no points.
    fanout.eventReceived(key("quiet", "status"), body(status("quiet", "offline")))
    protocol.onMessage(b'{"kind": "history", "host": "quiet"}', False)
    assert sent[-1] == {"kind": "history", "host": "quiet", "step": 0, "points": []}


@pytest.mark.parametrize("message, error", [
    ({"kind": "history", "host": "nobody"}, {"kind": "error", "error": "unknown host", "host": "nobody"}),
    ({"kind": "history"}, "host: expected a host name"),
    ({"kind": "history", "host": ""}, "host: expected a host name"),
    ({"kind": "history", "host": "x" * 256}, "host: expected a host name"),
    ({"kind": "history", "host": ["a"]}, "host: expected a host name"),
    ({"kind": "history", "host": "a", "step": -1}, "step: expected a number"),
    ({"kind": "history", "host": "a", "step": float("nan")}, "step: expected a number"),
    ({"kind": "history", "host": "a", "step": 1e9}, "step: expected a number"),
    ({"kind": "history", "host": "a", "since": 5}, "unknown field 'since'"),
])
def test_websocket_history_request_errors(message, error):
    fanout = _fanout()
    fanout.eventReceived(key("a", "analysis"), body(analysis("a", 0, 1.0)))
    protocol, sent = _websocket(fanout)
    protocol.onMessage(json.dumps(message).encode(), False)
    if isinstance(error, dict):
        assert sent[-1] == error
    else:
        assert sent[-1]["kind"] == "error" and error in sent[-1]["error"], sent[-1]
    assert protocol in fanout.clients


def test_websocket_history_request_for_a_shared_routing_word_names_the_hosts():
    fanout = _fanout()
    for name in ("web.01", "web 01"):
        fanout.eventReceived(key(name, "analysis"), body(analysis(name, 0, 1.0)))
    protocol, sent = _websocket(fanout)
    protocol.onMessage(b'{"kind": "history", "host": "web_01"}', False)
    assert sent[-1]["kind"] == "error" and sent[-1]["hosts"] == ["web 01", "web.01"]
    protocol.onMessage(b'{"kind": "history", "host": "web.01"}', False)  # by name: no doubt
    assert sent[-1]["kind"] == "history" and sent[-1]["host"] == "web.01"


def test_websocket_history_replies_are_held_back_like_events_for_a_slow_client():
    fanout = _fanout()
    fanout.eventReceived(key("a", "analysis"), body(analysis("a", 0, 1.0)))
    protocol, sent = _websocket(fanout)
    protocol.flow.pauseProducing()
    for _ in range(20):
        protocol.onMessage(b'{"kind": "history", "host": "a"}', False)
    assert len(protocol.flow.pending) == 1  # one reply per host, however many requests
    protocol.flow.resumeProducing()
    assert [m["kind"] for m in sent] == ["snapshot", "history"]
    # A new subscription supersedes the events held back, not the history replies.
    protocol.flow.pauseProducing()
    protocol.onMessage(b'{"kind": "history", "host": "a"}', False)
    fanout.eventReceived(key("a", "analysis"), body(analysis("a", 1, 2.0)))
    protocol.onMessage(b'{"kind": "subscribe", "history": false}', False)
    protocol.flow.resumeProducing()
    assert [m["kind"] for m in sent[2:]] == ["snapshot", "history"]
    assert [p["seq"] for p in sent[-1]["points"]] == [0]
    protocol.onClose(True, 1000, None)


def test_default_snapshot_of_a_large_fleet_stays_small():
    clock = Clock()
    fanout = EventFanout(history=FleetHistory(clock, window=900, maxPoints=1800))
    bodies = {}
    for second in range(901):
        for h in range(20):
            host = f"host-{h:02d}"
            document = analysis(host, second, 1_763_891_234.125 + second, cores=[10.0] * 8)
            fanout.history.add(document)
            bodies[host] = body(document)
    for host, latest in bodies.items():
        fanout.latest.update(json.loads(latest), latest)
    default = fanout.snapshotBody(parseQuery({}))
    full = fanout.snapshotBody(parseQuery({"history": ["1"]}))
    history = json.loads(default)["history"]
    assert len(history) == 20
    assert all(len(points) <= 91 for points in history.values())
    assert all(len(p) == 3 for points in history.values() for p in points)
    # Per host: the latest analysis (~800 bytes) and at most 91 short arrays.
    assert len(default) / 20 < 4000 and len(full) / len(default) > 40


def test_websocket_binary_messages_close_with_1003():
    protocol, sent = _websocket(_fanout())
    protocol.onMessage(b"\x00", True)
    assert sent[-1] == ("close", 1003)


# JSON API


def _get(resource, path, args=None):
    request = DummyRequest(path)
    request.args = args or {}
    request.render(resource)
    return request.responseCode or 200, json.loads(b"".join(request.written))


def test_api_hosts_host_and_history():
    fanout = _fanout()
    for i in range(3):
        fanout.eventReceived(key("web-01.example.com", "analysis"),
                             body(analysis("web-01.example.com", i, 100.0 + i)))
    fanout.eventReceived(key("web-01.example.com", "status"), body(status("web-01.example.com", "online")))
    hosts = HostsResource(fanout)
    code, listing = _get(hosts, [])
    assert code == 200 and [h["seq"] for h in listing["hosts"]] == [2]
    assert [s["status"] for s in listing["statuses"]] == ["online"]
    for name in (b"web-01.example.com", b"web-01_example_com"):
        code, one = _get(hosts, [name])
        assert code == 200 and one["host"] == "web-01.example.com"
        assert one["analysis"]["seq"] == 2 and one["status"]["status"] == "online"
        code, history = _get(hosts, [name, b"history"])
        assert code == 200 and history["window"] == 900
        assert [p["ts"] for p in history["points"]] == [100.0, 101.0, 102.0]
    code, history = _get(hosts, [b"web-01.example.com", b"history"], {b"since": [b"101"]})
    assert [p["ts"] for p in history["points"]] == [102.0]
    assert _get(hosts, [b"web-01", b"history"], {b"since": [b"nan"]})[0] == 404
    assert _get(hosts, [b"web-01.example.com", b"history"], {b"since": [b"nan"]})[0] == 400
    assert _get(hosts, [b"nope"]) == (404, {"error": "unknown host", "host": "nope"})
    assert _get(hosts, [b"nope", b"history"])[0] == 404
    assert _get(hosts, [b"web-01.example.com", b"other"])[0] == 404
    # Two names with one routing word: the word is ambiguous, the names are not.
    fanout.eventReceived(key("web-01_example.com", "analysis"), body(analysis("web-01_example.com", 0, 1.0)))
    code, error = _get(hosts, [b"web-01_example_com"])
    assert code == 409 and error["hosts"] == ["web-01.example.com", "web-01_example.com"]


# Server-Sent Events, through a real HTTPChannel on a StringTransport


class SSEConnection:
    def __init__(self, site, query=b"", method=b"GET"):
        self.transport = StringTransport()
        self.channel = site.buildProtocol(None)
        self.channel.makeConnection(self.transport)
        self.channel.dataReceived(
            method + b" /api/stream" + query + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.offset = 0

    def head(self):
        return self.transport.value().split(b"\r\n\r\n", 1)[0]

    def frames(self):
        """
        The SSE frames written since the last call (chunked encoding removed).
        """
        raw = self.transport.value().split(b"\r\n\r\n", 1)[1]
        text, rest = b"", raw
        while rest:
            size, rest = rest.split(b"\r\n", 1)
            size = int(size, 16)
            text += rest[:size]
            rest = rest[size + 2:]
        new, self.offset = text[self.offset:], len(text)
        return [f for f in new.split(b"\n\n") if f]

    def close(self):
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure
        self.channel.connectionLost(Failure(ConnectionDone()))


def _event(frame):
    lines = frame.split(b"\n")
    assert lines[0].startswith(b"event: ")
    data = b"\n".join(line[len(b"data: "):] for line in lines[1:])
    return lines[0][len(b"event: "):].decode(), json.loads(data)


def _sseSite(tmp_path, fanout, clock):
    return buildSite(fanout, clock, stallTimeout=30, root=str(tmp_path))


def test_sse_sends_a_snapshot_then_matching_events_and_keep_alives(tmp_path):
    clock = Clock()
    fanout = _fanout(clock)
    fanout.eventReceived(key("web-01", "analysis"), body(analysis("web-01", 0, 100.0)))
    fanout.eventReceived(key("db", "analysis"), body(analysis("db", 0, 100.0)))
    site = _sseSite(tmp_path, fanout, clock)
    conn = SSEConnection(site, b"?hosts=web-01&events=analysis,status&history=1")
    head = conn.head()
    assert head.startswith(b"HTTP/1.1 200")
    assert b"text/event-stream" in head and b"Transfer-Encoding: chunked" in head
    frames = conn.frames()
    assert frames[0] == b"retry: 2000"
    kind, snapshot = _event(frames[1])
    assert kind == "snapshot" and [e["host"] for e in snapshot["events"]] == ["web-01"]
    assert [p["ts"] for p in snapshot["history"]["web-01"]] == [100.0]
    fanout.eventReceived(key("db", "analysis"), body(analysis("db", 1, 101.0)))
    fanout.eventReceived(key("web-01", "analysis"), body(analysis("web-01", 1, 101.0)))
    fanout.eventReceived(key("web-01", "status"), body(status("web-01", "stale")))
    events = [_event(f) for f in conn.frames()]
    assert [(k, e["host"]) for k, e in events] == [("analysis", "web-01"), ("status", "web-01")]
    clock.advance(15)
    assert conn.frames() == [b": keep-alive"]
    conn.close()
    assert fanout.clients == {} and site.eventStreams.streams == set()
    clock.advance(60)
    assert clock.getDelayedCalls() == []


def test_sse_data_with_line_breaks_is_one_data_line_of_the_same_json(tmp_path):
    from resmon.webserver.sse import eventFrame
    pretty = json.dumps(analysis("h", 1, 1.0), indent=2).encode()
    frame = eventFrame("analysis", pretty)
    assert frame.endswith(b"\n\n") and frame.count(b"\n") == 3  # event:, data:, the end
    assert len(frame) == len(pretty) + len(b"event: analysis\ndata: \n\n")
    assert _event(frame.rstrip(b"\n")) == ("analysis", analysis("h", 1, 1.0))


def test_sse_slow_client_gets_latest_per_host_and_is_dropped_when_stalled(tmp_path):
    clock = Clock()
    fanout = _fanout(clock)
    site = _sseSite(tmp_path, fanout, clock)
    conn = SSEConnection(site, b"?history=0")
    conn.frames()
    conn.transport.producer.pauseProducing()  # what the transport does when its buffer is full
    for i in range(500):
        for host in ("a", "b"):
            fanout.eventReceived(key(host, "analysis"), body(analysis(host, i, 100.0 + i)))
    fanout.eventReceived(key("a", "status"), body(status("a", "offline")))
    assert conn.frames() == []  # nothing written while paused: bounded by hosts, not events
    conn.transport.producer.resumeProducing()
    events = [_event(f) for f in conn.frames()]
    assert [(k, e["host"], e.get("seq")) for k, e in events] == [
        ("analysis", "a", 499), ("analysis", "b", 499), ("status", "a", None)]
    conn.transport.producer.pauseProducing()
    clock.advance(30)
    assert conn.transport.disconnecting or conn.transport.disconnected
    conn.close()
    assert fanout.clients == {}
    clock.advance(60)
    assert clock.getDelayedCalls() == []


def test_sse_rejects_a_bad_filter_with_400(tmp_path):
    clock = Clock()
    site = _sseSite(tmp_path, _fanout(clock), clock)
    conn = SSEConnection(site, b"?events=measure")
    assert conn.head().startswith(b"HTTP/1.1 400")
    assert b"unknown kind 'measure'" in conn.transport.value()
    conn.close()


def test_sse_head_answers_at_once(tmp_path):
    clock = Clock()
    fanout = _fanout(clock)
    conn = SSEConnection(_sseSite(tmp_path, fanout, clock), method=b"HEAD")
    assert conn.head().startswith(b"HTTP/1.1 200") and b"text/event-stream" in conn.head()
    assert fanout.clients == {}
    conn.close()


# The service


class RecordingBus(ConfirmingBus):
    @property
    def cancelled(self):
        return self.last.cancelled


@pytest_twisted.inlineCallbacks
def test_web_service_expires_history_and_ends_streams_when_stopped():
    clock, bus = Clock(), RecordingBus()
    service = WebService(bus, "tcp:0:interface=127.0.0.1", clock, historyWindow=60, historyPoints=10)
    service.startService()
    assert bus.patterns == ["#.analysis", "#.status", "*.event", "*.alert", "user.*.notify", "group.*.notify"]
    bus.handler(key("h", "analysis"), body(analysis("h", 0, 1.0)))
    assert service.history.hosts() == ["h"]
    conn = SSEConnection(service.site, b"?history=0")
    clock.advance(61)
    assert service.history.hosts() == []  # forgotten by the periodic sweep
    assert service.fanout.latest.hosts() == ["h"]  # its latest analysis stays
    yield service.stopService()  # the listening port closed: the Site's timers stopped
    assert bus.cancelled
    assert conn.transport.value().endswith(b"0\r\n\r\n")  # the chunked response ended
    conn.close()
    clock.advance(60)
    assert clock.getDelayedCalls() == []


def test_full_history_of_a_large_fleet_falls_back_to_the_overview_and_says_so():
    from resmon.webserver.fanout import MAX_FULL_HISTORY_HOSTS
    clock = Clock()
    clock.advance(1000)
    fanout = _fanout(clock)
    for i in range(MAX_FULL_HISTORY_HOSTS + 1):
        fanout.eventReceived(key(f"h{i}", "analysis"), body(analysis(f"h{i}", 0, 1000.0)))
    snapshot = json.loads(fanout.snapshotBody(parseSubscribe({"kind": "subscribe", "history": True})))
    assert snapshot["subscription"]["history"] == "overview" and "notice" in snapshot["subscription"]
    assert snapshot["history"]["h0"] == [[1000.0, 10.0, snapshot["history"]["h0"][0][2]]]
    few = json.loads(fanout.snapshotBody(parseSubscribe(
        {"kind": "subscribe", "history": True, "hosts": ["h1", "h2"]})))
    assert "notice" not in few["subscription"] and few["history"]["h1"][0]["seq"] == 0


def test_a_client_that_fails_to_send_is_detached_and_the_others_still_get_the_event():
    class Broken:
        def sendEvent(self, document, body):
            raise RuntimeError("closed under our feet")

    class Recording:
        def __init__(self):
            self.got = []

        def sendEvent(self, document, body):
            self.got.append(document["seq"])
    fanout = _fanout()
    broken, fine = Broken(), Recording()
    fanout.attach(broken)
    fanout.attach(fine)
    fanout.eventReceived(key("x", "analysis"), body(analysis("x", 0, 1.0)))
    fanout.eventReceived(key("x", "analysis"), body(analysis("x", 1, 2.0)))
    assert fine.got == [0, 1] and broken not in fanout.clients


def test_websocket_a_client_may_send_bursts_but_a_flood_closes_it_with_1008():
    fanout = _fanout()
    fanout.eventReceived(key("db", "analysis"), body(analysis("db", 0, 100.0)))
    protocol, sent = _websocket(fanout)
    clock = protocol.factory.clock
    subscribe = json.dumps({"kind": "subscribe", "hosts": ["db"]}).encode()
    # The limits are pinned here, not read from the code: 30 at once, then 10 a second.
    # A burst (a user clicking through hosts), then a steady 10 a second: all answered.
    for _ in range(30):
        protocol.onMessage(subscribe, False)
    for _ in range(50):
        clock.advance(0.1 + 1e-9)
        protocol.onMessage(b"junk", False)
    assert ("close", 1008) not in sent
    assert len(sent) == 1 + 30 + 50
    # One more without waiting: closed with 1008, and the rest of the flood is not read.
    protocol.onMessage(subscribe, False)
    protocol.onMessage(subscribe, False)
    assert sent[-1] == ("close", 1008) and len(sent) == 2 + 30 + 50
    assert protocol.factory.floodsClosed == 1


@pytest.mark.parametrize("burst, pause, closed", [
    (30, 0, False), (31, 0, True),              # 30 at once, not 31
    (30, 0.1 + 1e-9, False),                    # then one every 0.1 s ...
    (30, 0.06, True),                           # ... but not one every 0.06 s
])
def test_websocket_message_limit_is_30_at_once_then_10_a_second(burst, pause, closed):
    protocol, sent = _websocket(_fanout())
    for _ in range(burst):
        protocol.onMessage(b"junk", False)
    if pause:
        for _ in range(20):
            protocol.factory.clock.advance(pause)
            protocol.onMessage(b"junk", False)
    assert (("close", 1008) in sent) is closed


@pytest.mark.parametrize("burst, pause, closed", [
    (10, 0, False), (11, 0, True),              # 10 at once, not 11
    (10, 1 + 1e-9, False),                      # then one a second ...
    (10, 0.6, True),                            # ... but not one every 0.6 s
])
def test_websocket_pings_and_pongs_are_limited_to_10_at_once_then_1_a_second(burst, pause, closed):
    protocol, sent = _websocket(_fanout())
    pongs = []
    protocol.sendPong = pongs.append
    protocol.state = protocol.STATE_OPEN
    pings = 0
    for i in range(burst):
        if i % 2:
            protocol.onPong(b"p")   # unsolicited pongs count too
        else:
            protocol.onPing(b"p")
            pings += 1
    if pause:
        for _ in range(10):
            protocol.factory.clock.advance(pause)
            protocol.onPing(b"p")
            pings += 1
    assert (("close", 1008) in sent) is closed
    # Every ping is answered until the flood, none after.
    assert (len(pongs) < pings) is closed
    if closed:
        assert protocol.factory.floodsClosed == 1
        protocol.onPing(b"p")
        assert sent.count(("close", 1008)) == 1


def test_websocket_incoming_messages_are_capped_at_64_kib_over_all_their_fragments():
    protocol, sent = _websocket(_fanout())
    protocol.failedByMe = False
    protocol.maxMessagePayloadSize = protocol.factory.maxMessagePayloadSize
    protocol.maxFramePayloadSize = protocol.factory.maxFramePayloadSize
    protocol.onMessageBegin(False)
    protocol.onMessageFrameBegin(32 * 1024)
    protocol.onMessageFrameBegin(32 * 1024)
    assert sent[1:] == []
    protocol.onMessageFrameBegin(1)   # 65,537 bytes in all: refused from the frame header
    assert sent[-1] == ("close", 1009)
    # What the server sends is not capped by Autobahn (it would refuse a fleet's snapshot).
    assert protocol.factory.maxMessagePayloadSize == 0 and protocol.factory.maxFramePayloadSize == 0


def test_websocket_a_message_in_more_than_64_fragments_closes_with_1008():
    protocol, sent = _websocket(_fanout())
    protocol.failedByMe = False
    protocol.maxMessagePayloadSize = protocol.maxFramePayloadSize = 0
    for _ in range(3):   # the count starts again with each message
        protocol.onMessageBegin(False)
        for _ in range(64):
            protocol.onMessageFrameBegin(1)
    assert sent[1:] == []
    protocol.onMessageFrameBegin(1)
    assert sent[-1] == ("close", 1008) and protocol.factory.floodsClosed == 1


def test_limited_log_lets_a_burst_through_then_counts_what_it_held_back():
    from twisted.logger import Logger, LogLevel
    from resmon.ratelimit import LimitedLog
    events = []
    logger = Logger(observer=events.append)
    clock = Clock()
    limited = LimitedLog(clock, rate=0.5, burst=3)
    assert [limited.warn(logger, "bad client {n}", n=n) for n in range(5)] == [True] * 3 + [False] * 2
    assert limited.suppressed == 2
    clock.advance(2)
    assert limited.warn(logger, "bad client {n}", n=5)
    assert len(events) == 4 and events[-1]["log_level"] == LogLevel.warn
    assert events[-1]["suppressed"] == 2 and "not logged" in events[-1]["log_format"]
    assert limited.suppressed == 0


def test_token_bucket_refills_at_its_rate_up_to_its_burst():
    clock = Clock()
    bucket = TokenBucket(clock, rate=2.0, burst=3)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.5)
    assert [bucket.take() for _ in range(2)] == [True, False]
    clock.advance(100)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    with pytest.raises(ValueError):
        TokenBucket(clock, rate=0, burst=1)


def test_analyses_delivered_twice_out_of_order_go_to_clients_once_and_latest_never_goes_back():
    fanout = _fanout()
    protocol, sent = _websocket(fanout)
    # An analyzer killed before it acked 5 and 6: both analysed again by its successor.
    for seq in (5, 6, 5, 6, 7, 6):
        fanout.eventReceived(key("h", "analysis"), body(analysis("h", seq, 100.0 + seq)))
    assert [m["seq"] for m in sent[1:]] == [5, 6, 7]
    assert fanout.counters["duplicates"] == 3
    # An older analysis not seen before goes out, but the latest stays the newest.
    fanout.eventReceived(key("h", "analysis"), body(analysis("h", 4, 104.0)))
    assert sent[-1]["seq"] == 4 and fanout.latest.get("h")["seq"] == 7
    # A restarted agent counts from 0 again, at a later ts: new, not a repeat.
    fanout.eventReceived(key("h", "analysis"), body(analysis("h", 5, 200.0)))
    assert sent[-1]["ts"] == 200.0 and fanout.latest.get("h")["ts"] == 200.0
    # Proof-of-concept analyses have no seq: each one is new.
    poc = {"v": 1, "kind": "analysis", "host": "poc", "seq": None, "ts": None, "cpu_result": "LOW",
           "level": "LOW", "levels": {"cpu": "LOW"}, "metrics": {"cpu": {"percent": 1.0}}}
    fanout.eventReceived(key("poc", "analysis"), body(poc))
    fanout.eventReceived(key("poc", "analysis"), body(poc))
    assert [m["host"] for m in sent[-2:]] == ["poc", "poc"]


DASH = ("dash.example.com",)


@pytest.mark.parametrize("origin, host, allowed, hosts, accepted", [
    (None, "dash.example.com:8080", (), DASH, True),                  # a program, not a page
    ("http://127.0.0.1:8080", "127.0.0.1:8080", (), (), True),        # the dashboard itself
    ("http://localhost:8080", "localhost:8080", (), (), True),
    ("http://[::1]:8080", "[::1]:8080", (), (), True),
    ("HTTP://Dash.Example.COM:8080", "dash.example.com:8080", (), DASH, True),
    ("http://dash.example.com", "dash.example.com", (), DASH, True),  # default ports
    # An https page is not of the same origin as an http connection: a TLS proxy is allowed.
    ("https://dash.example.com", "dash.example.com", (), DASH, False),
    ("https://dash.example.com", "dash.example.com", ("https://dash.example.com",), (), True),
    ("http://evil.example", "dash.example.com:8080", (), DASH, False),  # another site's page
    ("http://dash.example.com:8081", "dash.example.com:8080", (), DASH, False),
    ("https://dash.example.com:8080", "dash.example.com:8081", (), DASH, False),
    ("null", "dash.example.com:8080", (), DASH, False),                # sandboxed or file: page
    ("http://dash.example.com:8080", None, (), DASH, False),
    ("https://dash.example.com", "10.0.0.5:8080", ("https://dash.example.com:443",), (), True),
    ("https://other.example.com", "10.0.0.5:8080", ("https://dash.example.com",), (), False),
    # Allowed origins match whole: not by prefix, not by suffix, not another port or scheme.
    ("https://dash.example.com.evil.net", "10.0.0.5:8080", ("https://dash.example.com",), (), False),
    ("https://dash.example.co", "10.0.0.5:8080", ("https://dash.example.com",), (), False),
    ("https://evil-dash.example.com", "10.0.0.5:8080", ("https://dash.example.com",), (), False),
    ("https://dash.example.com:8443", "10.0.0.5:8080", ("https://dash.example.com",), (), False),
    ("http://dash.example.com", "10.0.0.5:8080", ("https://dash.example.com",), (), False),
    # DNS rebinding: the attacker's name in both headers, same origin in appearance.
    ("https://dash.example.com.evil.net", "dash.example.com.evil.net", ("https://dash.example.com",),
     (), False),
    ("http://attacker.example:8080", "attacker.example:8080", (), DASH, False),
    (None, "attacker.example:8080", (), DASH, False),
    ("http://attacker.example:8080", "attacker.example:8080", (), ("*",), True),  # check turned off
])
def test_origin_policy(origin, host, allowed, hosts, accepted):
    assert OriginPolicy(allowed, hosts).accepts(origin, host) is accepted


def test_origin_policy_on_a_tls_connection_is_the_https_origin():
    policy = OriginPolicy((), DASH)
    assert policy.accepts("https://dash.example.com:8443", "dash.example.com:8443", secure=True)
    assert not policy.accepts("http://dash.example.com:8443", "dash.example.com:8443", secure=True)


@pytest.mark.parametrize("header, accepted", [
    (None, True),                                 # HTTP/1.0, a program
    ("dash.example.com", True), ("DASH.Example.com.:8080", True), ("mon.internal:80", True),
    ("localhost:8080", True), ("10.1.2.3:8080", True), ("[::1]:8080", True), ("[fe80::1]", True),
    ("dash.example.com.evil.net", False), ("evil.dash.example.com", False), ("example.com", False),
    ("", False), ("[dash.example.com]:80", False), ("a b", False), ("dash.example.com:80:80", False),
    ("[::1", False), ("*", False),
])
def test_hosts_the_dashboard_answers(header, accepted):
    policy = OriginPolicy(("http://mon.internal:8080",), DASH)
    assert policy.acceptsHost(header) is accepted


@pytest.mark.parametrize("name", ["http://dash.example.com", "dash.example.com:8080", "a/b", "", "a b",
                                  "-x.example"])
def test_allowed_host_names_are_names_or_addresses(name):
    with pytest.raises(ValueError):
        normalizeHostName(name)


def test_a_request_naming_another_host_gets_421_and_is_counted():
    site = buildSite(_fanout(), Clock(), origins=OriginPolicy((), DASH))
    for host, expected in [(b"attacker.example:8080", 421), (b"dash.example.com:8080", 200),
                           (b"127.0.0.1:8080", 200)]:
        request = DummyRequest([b"api", b"hosts"])
        request.requestHeaders.setRawHeaders(b"host", [host])
        site.getResourceFor(request).render(request)
        assert (request.responseCode or 200) == expected, host
    request = DummyRequest([b""])
    request.requestHeaders.setRawHeaders(b"host", [b"attacker.example"])
    body = site.getResourceFor(request).render(request)
    assert request.responseCode == 421 and b"--allowed-host" in body and b"attacker.example" in body
    assert site.hostsRefused == 2


def test_a_handshake_from_a_page_of_another_origin_is_refused_with_403():
    from autobahn.websocket.types import ConnectionDeny
    fanout = _fanout()
    factory = DashboardFactory(fanout, Clock(), stallTimeout=30)
    protocol = factory.buildProtocol(None)
    protocol.transport = StringTransport()
    with pytest.raises(ConnectionDeny) as e:
        protocol.onConnect(FakeConnectionRequest(origin="http://evil.example", host="127.0.0.1:8080"))
    assert e.value.code == 403 and factory.originsRefused == 1
    protocol.onConnect(FakeConnectionRequest(origin="http://127.0.0.1:8080", host="127.0.0.1:8080"))
    for bad in ("ftp://x", "https://x/path", "https://u:p@x", "x"):
        with pytest.raises(ValueError):
            normalizeOrigin(bad)


def test_allowed_host_options_are_validated_and_passed_to_the_web_role():
    from resmon.tap import Options
    options = Options()
    options.parseOptions(["--allowed-host=Mon.Internal.", "--allowed-host=[::1]",
                          "--allowed-origin=https://dash.example.com"])
    assert options["allowed-hosts"] == ["mon.internal", "::1"]
    for bad in ("--allowed-host=http://mon.internal", "--allowed-host=mon.internal:8080", "--allowed-host="):
        with pytest.raises(SystemExit) as e:
            Options().parseOptions([bad])
        text = str(e.value.code)
        assert "--allowed-host: " in text and "\n" not in text, text


# The host index and the host cap


def test_the_host_index_resolves_names_and_routing_words_without_scanning_the_fleet():
    from resmon.webserver.fanout import HostIndex
    index = HostIndex()
    for host in ("web-01.dc1", "web-01_dc1", "db.dc2", "a"):
        index.add(host)
    index.add("a")  # seen again: nothing changes
    assert len(index) == 4
    first = index.sorted()
    assert first == ["a", "db.dc2", "web-01.dc1", "web-01_dc1"]
    assert index.sorted() is first  # kept until the set changes
    assert index.resolve("a") == ["a"]
    assert index.resolve("db.dc2") == ["db.dc2"]
    assert index.resolve("db_dc2") == ["db.dc2"]
    # A name wins over a routing word; a word several names map to gives them all.
    assert index.resolve("web-01_dc1") == ["web-01_dc1"]
    index.discard("web-01_dc1")
    assert index.resolve("web-01_dc1") == ["web-01.dc1"]
    assert index.sorted() is not first and "web-01_dc1" not in index.sorted()
    index.discard("web-01.dc1")
    assert index.resolve("web-01_dc1") == [] and index._byWord.keys() == {"a", "db_dc2"}
    index.discard("nothing")
    assert not index.full() and HostIndex(maxHosts=2).full() is False


def test_the_fanout_keeps_its_index_from_analyses_and_statuses_and_refuses_new_hosts_at_the_cap():
    fanout = EventFanout(maxHosts=3)
    for i, host in enumerate(("h1", "h2")):
        fanout.eventReceived(key(host, "analysis"), body(analysis(host, 1, 100.0 + i)))
    fanout.eventReceived(key("s.1", "status"), body(status("s.1", "online")))
    assert fanout.knownHosts() == ["h1", "h2", "s.1"]
    assert fanout.resolveHost("s_1") == ["s.1"]
    assert fanout.hostIndex.full()
    fanout.eventReceived(key("h4", "analysis"), body(analysis("h4", 1, 101.0)))
    fanout.eventReceived(key("h5", "status"), body(status("h5", "online")))
    assert dict(fanout.rejected) == {"max-hosts": 2}
    assert "h4" not in fanout.latest and fanout.knownHosts() == ["h1", "h2", "s.1"]
    # Known hosts keep updating.
    fanout.eventReceived(key("h1", "analysis"), body(analysis("h1", 2, 103.0)))
    assert fanout.latest.get("h1")["seq"] == 2


def test_a_snapshot_is_frozen_when_it_is_taken_and_made_as_it_is_written():
    clock = Clock()
    clock.advance(1000)
    fanout = EventFanout(history=FleetHistory(clock, window=900))
    fanout.eventReceived(key("a", "analysis"), body(analysis("a", 1, 1000.0)))
    snapshot = fanout.snapshot(parseSubscribe({"history": True}))
    pieces = snapshot.pieces()
    first = next(pieces)
    # Events after the snapshot was taken are not in it (they go out live).
    fanout.eventReceived(key("a", "analysis"), body(analysis("a", 2, 1001.0)))
    fanout.eventReceived(key("b", "analysis"), body(analysis("b", 1, 1001.0)))
    document = json.loads(first + b"".join(pieces))
    assert [e["seq"] for e in document["events"]] == [1]
    assert [p["seq"] for p in document["history"]["a"]] == [1]
    assert json.loads(snapshot.body()) == document
    # A snapshot taken now has both.
    now = json.loads(fanout.snapshotBody(parseSubscribe({"history": True})))
    assert [(e["host"], e["seq"]) for e in now["events"]] == [("a", 2), ("b", 1)]


def test_client_flow_writes_a_snapshot_in_pieces_as_the_transport_reads_within_a_global_budget():
    from resmon.webserver.fanout import ClientFlow, Snapshot
    from resmon.webserver.sendbudget import CHUNK_SIZE, HIGH_WATER, SendBudget

    class Stream:
        def __init__(self, flow=None):
            self.written = []
            self.flow = flow

        def begin(self):
            self.written.append(b"<")

        def write(self, chunk):
            self.written.append(chunk)
            # The transport pauses its producer once its buffer is full.
            if sum(map(len, self.written)) > HIGH_WATER:
                self.flow.pauseProducing()

        def end(self):
            self.written.append(b">")

    clock = Clock()
    budget = SendBudget(limit=3 * HIGH_WATER)
    flows, streams = [], []
    for i in range(3):
        stream = Stream()
        flow = ClientFlow(lambda message: None, lambda: None, clock, 30, budget=budget, stream=stream)
        stream.flow = flow
        flows.append(flow)
        streams.append(stream)
    snapshot = Snapshot(lambda: iter([b"x" * 1000] * 1000))
    flows[0].restart(snapshot)
    # Written until the transport paused it, not the whole megabyte at once.
    assert flows[0].paused and flows[0].busy
    assert HIGH_WATER < sum(map(len, streams[0].written)) <= HIGH_WATER + CHUNK_SIZE + 1000
    assert budget.queued == flows[0].charged > HIGH_WATER
    # Events meanwhile are held back, after the snapshot.
    flows[0].send(("analysis", "a"), b"a1")
    assert flows[0].pending == {("analysis", "a"): b"a1"}
    # The budget has no room for another paused client: the next snapshot waits.
    flows[1].restart(snapshot)
    assert streams[1].written and flows[1].paused
    flows[2].restart(snapshot)
    assert streams[2].written == [] and budget.counters["waited"] == 1
    # The first drains: the waiting one is woken and gets its turn.
    streams[0].written = []
    flows[0].resumeProducing()
    assert streams[2].written
    assert budget.queued <= budget.limit + HIGH_WATER + CHUNK_SIZE + 1000
    for flow in flows:
        flow.stopProducing()
    assert budget.queued == 0 and clock.getDelayedCalls() == []


@pytest_twisted.inlineCallbacks
def test_static_files_stay_inside_the_web_root_and_directories_are_not_listed(tmp_path):
    import os

    from twisted.internet import reactor
    from twisted.web.client import Agent, readBody

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "index.html").write_text("<p>dashboard</p>")
    (root / "sub" / "page.html").write_text("inside")
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside / "secret.txt", root / "secret.txt")
    os.symlink(outside, root / "elsewhere")
    os.symlink(root / "sub" / "page.html", root / "alias.html")  # inside: served
    site = buildSite(EventFanout(), reactor, root=str(root))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        base = f"http://127.0.0.1:{port.getHost().port}"
        answers = {}
        for path in ("/", "/index.html", "/sub/page.html", "/alias.html", "/secret.txt",
                     "/elsewhere/secret.txt", "/elsewhere/", "/sub/", "/%00", "/sub/%ff"):
            response = yield Agent(reactor).request(b"GET", (base + path).encode())
            answers[path] = (response.code, (yield readBody(response)))
    finally:
        yield port.stopListening()
    assert answers["/"] == (200, b"<p>dashboard</p>")
    assert answers["/sub/page.html"] == answers["/alias.html"] == (200, b"inside")
    for path in ("/secret.txt", "/elsewhere/secret.txt", "/elsewhere/", "/sub/", "/%00", "/sub/%ff"):
        assert answers[path][0] == 404, (path, answers[path])
        assert b"secret" not in answers[path][1] and b"page.html" not in answers[path][1]


@pytest.mark.parametrize("bad", ["--max-clients=0", "--max-clients-per-address=x", "--max-queued-mib=0.5",
                                 "--header-timeout=nan", "--max-hosts=-1"])
def test_web_limit_options_are_validated_with_one_line_naming_the_option(bad):
    from resmon.tap import Options
    with pytest.raises(SystemExit) as e:
        Options().parseOptions(["--role=web", bad])
    text = str(e.value.code)
    assert text.startswith("twistd resmon: error: " + bad.split("=")[0] + ": ") and "\n" not in text


def test_web_limit_options_have_their_documented_defaults():
    from resmon.tap import Options
    options = Options()
    options.parseOptions(["--role=web"])
    assert (options["max-clients"], options["max-clients-per-address"], options["max-queued-mib"],
            options["header-timeout"], options["max-hosts"]) == (1000, 50, 64, 10, 10000)
