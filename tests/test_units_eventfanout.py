"""
Rules' events and alerts in the web role, with fakes: the fan-out sends them
only to the clients that asked (WebSocket and SSE subscriptions), keeps the
recent ones and the firing alerts for GET /api/events and GET /api/alerts.
"""

import json

from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from fakebus import FakeBus
from resmon import wire
from resmon.webserver.events import AlertsResource, EventsResource
from resmon.webserver.fanout import EventFanout
from resmon.webserver.subscriptions import parseQuery
from test_web_units import FakeClient, _websocket, analysis, body, key


def alert(host, state, check="cpu", ts=100.0, eventId=None):
    return wire.encodeEmitted(wire.eventSource(host), "alert", ts, eventId or f"{host}-{check}-{state}",
                              {"host": host, "check": check, "state": state, "level": "HIGH",
                               "since": 90.0, "value": 99.0}, wire.Chain(("alert",), 1))


def posted(source, ts, eventId):
    return wire.encodeEventFromBody(source, b'{"a": 1}', "application/json", ts, eventId)


def test_events_and_alerts_go_only_to_clients_that_asked_for_them():
    fanout = EventFanout()
    everything, events, alerts = FakeClient(), FakeClient(), FakeClient()
    fanout.attach(everything)
    fanout.attach(events, parseQuery({b"events": [b"event"]}))
    fanout.attach(alerts, parseQuery({b"events": [b"alert,analysis"], b"hosts": [b"web-01"]}))
    fanout.eventReceived("deploys.event", posted("deploys", 1.0, "e1"))
    fanout.eventReceived("web-01.alert", alert("web-01", "firing"))
    fanout.eventReceived("db.alert", alert("db", "firing"))
    fanout.eventReceived(key("web-01", "analysis"), body(analysis("web-01", 0, 100.0)))
    assert [m["kind"] for m in everything.sent] == ["analysis"]
    assert [m["id"] for m in events.sent] == ["e1"]
    assert [(m["kind"], m["source"]) for m in alerts.sent[:1]] == [("alert", "web-01")]
    assert [m["kind"] for m in alerts.sent] == ["alert", "analysis"]


def test_junk_events_are_rejected_and_counted():
    fanout = EventFanout()
    fanout.eventReceived("x.event", b"junk")
    fanout.eventReceived("x.alert", posted("y", 1.0, "e"))
    assert fanout.rejected == {"json": 1, "kind": 1}
    assert len(fanout.recentEvents) == 0


def test_a_websocket_subscribes_to_alerts_and_each_one_is_sent():
    fanout = EventFanout()
    protocol, sent = _websocket(fanout)
    protocol.onMessage(json.dumps({"kind": "subscribe", "events": ["alert"]}).encode(), False)
    assert sent[-1]["kind"] == "snapshot" and sent[-1]["subscription"]["events"] == ["alert"]
    fanout.eventReceived("web-01.alert", alert("web-01", "firing", check="cpu"))
    fanout.eventReceived("web-01.alert", alert("web-01", "firing", check="memory"))
    assert [m["payload"]["check"] for m in sent[-2:]] == ["cpu", "memory"]


def test_firing_alerts_until_resolved_and_forgotten_with_their_host():
    fanout = EventFanout()
    fanout.eventReceived("web-01.alert", alert("web-01", "firing", "cpu"))
    fanout.eventReceived("web-01.alert", alert("web-01", "firing", "memory"))
    fanout.eventReceived("db.alert", alert("db", "firing", "cpu"))
    fanout.eventReceived("web-01.alert", alert("web-01", "resolved", "cpu"))
    resource = AlertsResource(fanout)
    request = DummyRequest([])
    listed = json.loads(resource.render(request))["alerts"]
    assert [(a["source"], a["payload"]["check"]) for a in listed] == [("web-01", "memory"), ("db", "cpu")]
    fanout.eventReceived(key("db", "analysis"), body(analysis("db", 0, 100.0)))
    fanout.forget("db")
    assert [a["source"] for a in json.loads(resource.render(DummyRequest([])))["alerts"]] == ["web-01"]


def test_recent_events_since_and_bounded():
    fanout = EventFanout()
    fanout.recentEvents.limit = 3
    for i in range(5):
        fanout.eventReceived("s.event", posted("s", float(i), f"e{i}"))
    resource = EventsResource(FakeBus(), Clock(), fanout=fanout)

    def get(**args):
        request = DummyRequest([])
        request.args = {k.encode(): [v.encode()] for k, v in args.items()}
        result = resource.render(request)
        return request.responseCode or 200, json.loads(result)
    assert [e["id"] for e in get()[1]["events"]] == ["e2", "e3", "e4"]
    assert [e["id"] for e in get(since="3")[1]["events"]] == ["e4"]
    assert get(since="soon")[0] == 400 and get(since="nan")[0] == 400
    assert get(other="1")[0] == 400


def test_without_a_fanout_get_is_not_allowed():
    request = DummyRequest([])
    body = EventsResource(FakeBus(), Clock()).render(request)
    assert request.responseCode == 405 and b"method not allowed" in body
    assert request.responseHeaders.getRawHeaders(b"allow") == [b"POST"]


def test_a_snapshot_carries_firing_alerts_and_recent_events_only_when_asked():
    fanout = EventFanout()
    fanout.eventReceived("web-01.alert", alert("web-01", "firing", "cpu"))
    fanout.eventReceived("db.alert", alert("db", "firing", "cpu"))
    fanout.eventReceived("deploys.event", posted("deploys", 1.0, "e1"))
    plain = json.loads(fanout.snapshotBody())
    assert "alerts" not in plain and "recent" not in plain
    both = json.loads(fanout.snapshotBody(parseQuery({b"events": [b"alert,event"]})))
    assert [a["source"] for a in both["alerts"]] == ["web-01", "db"]
    assert [e["kind"] for e in both["recent"]] == ["alert", "alert", "event"]
    one = json.loads(fanout.snapshotBody(parseQuery({b"events": [b"alert"], b"hosts": [b"db"]})))
    assert [a["source"] for a in one["alerts"]] == ["db"] and len(one["recent"]) == 1
    events = json.loads(fanout.snapshotBody(parseQuery({b"events": [b"event"]})))
    assert "alerts" not in events and [e["id"] for e in events["recent"]] == ["e1"]


def test_the_recent_events_are_bounded_in_bytes_too():
    """
    A thousand events of 256 KiB would be 350 MB kept: past the byte bound
    the oldest go first (the newest always stays).
    """
    from resmon.webserver.eventlog import RecentEvents
    kept = RecentEvents(limit=1000, maxBytes=1_000_000)
    for i in range(50):
        envelope = posted("deploys", 100.0 + i, f"e{i}") if i % 2 else \
            wire.encodeEventFromBody("deploys", b"x" * 100_000, "text/plain", 100.0 + i, f"e{i}")
        kept.add(wire.decodeEventEnvelope("deploys.event", envelope), envelope)
    bodies = kept.since()
    assert sum(map(len, bodies)) <= 1_000_000 and len(bodies) < 50
    assert wire.loadJSON(bodies[-1])["id"] == "e49"
    huge = wire.encodeEventFromBody("deploys", b"y" * 2_000_000, "text/plain", 200.0, "huge")
    kept.add(wire.decodeEventEnvelope("deploys.event", huge, 4_000_000), huge)
    assert [wire.loadJSON(b, 4_000_000)["id"] for b in kept.since()] == ["huge"]
