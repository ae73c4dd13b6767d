"""
What each user sees, with fakes: two principals with disjoint hosts
(alice: web-*, bob: db-*), and every channel of the web role checked at the
byte level (snapshots, live WebSocket frames, history replies, /api/hosts,
/api/stream, /api/events, /api/alerts); notifications to users (the
notification center, its stores on SQLite and the real PostgreSQL,
POST /api/notify, act.notify).
"""

import json
import uuid

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.web import resource
from twisted.web.test.requesthelper import DummyRequest

from fakebus import ConfirmingBus
from resmon import wire
from resmon.auth.principal import ADMIN, OPERATOR, UNRESTRICTED, VIEWER, Principal
from resmon.rules.act import Act, ActionError
from resmon.rules.engine import RuleEngine
from resmon.services.web import WebService, buildSite
from resmon.webserver.events import AlertsResource, EventsResource
from resmon.webserver.httpapi import HostsResource
from resmon.webserver.notifications import (
    DatabaseNotifications, MemoryNotifications, NotificationCenter)
from resmon.webserver.notifyapi import NotifyResource
from resmon.webserver.subscriptions import EVERYTHING, parseQuery
from resmon.webserver.visibility import VisibleSubscription, visibleTo
from resmon.webserver.websocket import DashboardFactory
from test_units_eventfanout import alert, posted
from test_web_units import (
    FakeConnectionRequest, SSEConnection, _event, _fanout, analysis, body, key, status)
from webhooksupport import POSTGRESQL, postgresqlAdmin

WEB = ("web-01", "web-02")
DB = ("db-01", "db-02")


def alice():
    return Principal("alice", VIEWER, ["web-01", "web-02"], groups=["ops"])


def bob():
    return Principal("bob", OPERATOR, ["db-01", "db-02"], groups=["ops", "dba"])


class Directory:
    def __init__(self, *principals):
        self._principals = principals

    def principals(self):
        return list(self._principals)


def _fleet(fanout, seq=0):
    """
    Two hosts of each user, with analyses, statuses, alerts and events.
    """
    for host in WEB + DB:
        fanout.eventReceived(key(host, "analysis"), body(analysis(host, seq, 100.0 + seq)))
        fanout.eventReceived(key(host, "status"), body(status(host, "online")))
        fanout.eventReceived(f"{host}.alert", alert(host, "firing", eventId=f"a-{host}"))
        fanout.eventReceived(f"{host}.event", posted(host, 100.0, f"e-{host}"))
    fanout.eventReceived("deploys.event", posted("deploys", 100.0, "e-deploys"))


def _assertOnlyAbout(raw, mine, theirs):
    """
    C{raw} (bytes) names every host of C{mine} and none of C{theirs}, nor
    the non-host source C{deploys}.
    """
    for host in theirs + ("deploys",):
        assert host.encode() not in raw, f"{host} leaked: {raw[:300]!r}"
    for host in mine:
        assert host.encode() in raw


def _socket(fanout, principal, params=None, notifications=None):
    clock = Clock()
    factory = DashboardFactory(fanout, clock, stallTimeout=30)
    factory.notifications = notifications
    protocol = factory.buildProtocol(None)
    raw = []
    protocol.sendMessage = lambda payload, isBinary=False: raw.append(payload)
    protocol.sendPreparedMessage = lambda prepared: raw.append(prepared.payload)
    frames = []
    protocol.beginMessage = lambda isBinary=False: frames.clear()
    protocol.sendMessageFrame = frames.append
    protocol.endMessage = lambda: raw.append(b"".join(frames))
    protocol._fail_connection = lambda code=None, reason=None: raw.append(b"close")
    from twisted.internet.testing import StringTransport
    protocol.transport = StringTransport()
    protocol.onConnect(FakeConnectionRequest(params))
    # As the authentication guard does at the handshake.
    protocol.principal = principal
    protocol.onOpen()
    return protocol, raw


# The composed filter


def test_a_visible_subscription_matches_what_both_the_user_and_the_client_ask_for():
    sub = VisibleSubscription(alice(), parseQuery({b"hosts": [b"web-01,db-01,db-02"]}))
    assert [sub.matchesHost(h) for h in ("web-01", "web-02", "db-01")] == [True, False, False]
    everything = VisibleSubscription(alice(), EVERYTHING)
    assert everything.hosts is not None  # snapshots filter hosts, never list every one
    assert [everything.matchesHost(h) for h in WEB + DB + ("deploys",)] == [
        True, True, False, False, False]
    assert everything.describe() == EVERYTHING.describe()
    assert visibleTo(UNRESTRICTED, EVERYTHING) is EVERYTHING
    admin = visibleTo(Principal("root", ADMIN, ["web-01"]), EVERYTHING)
    assert admin.hosts is None and all(admin.matchesHost(h) for h in WEB + DB + ("deploys",))


# WebSocket: snapshot, live frames, history


def test_two_users_websockets_receive_disjoint_snapshots_and_live_frames():
    fanout = _fanout()
    _fleet(fanout)
    query = {"events": [b"analysis,status,event,alert"]}
    query = {k.encode(): v for k, v in query.items()}
    a, aliceRaw = _socket(fanout, alice(), query)
    b, bobRaw = _socket(fanout, bob(), query)
    snapshots = (aliceRaw[0], bobRaw[0])
    assert json.loads(snapshots[0])["kind"] == "snapshot"
    _assertOnlyAbout(snapshots[0], WEB, DB)
    _assertOnlyAbout(snapshots[1], DB, WEB)
    del aliceRaw[:], bobRaw[:]
    _fleet(fanout, 1)
    _assertOnlyAbout(b"".join(aliceRaw), WEB, DB)
    _assertOnlyAbout(b"".join(bobRaw), DB, WEB)
    assert {json.loads(m)["kind"] for m in aliceRaw} == {"analysis", "status", "alert", "event"}
    # A client asking for the other's hosts by name gets nothing about them.
    a.onMessage(json.dumps({"kind": "subscribe", "hosts": ["db-01", "db-02"],
                            "events": ["analysis", "status", "alert", "event"]}).encode(), False)
    snapshot = json.loads(aliceRaw[-1])
    assert snapshot["kind"] == "snapshot" and snapshot["events"] == snapshot["statuses"] == []
    assert snapshot["alerts"] == snapshot["recent"] == [] and snapshot["history"] == {}
    del aliceRaw[:]
    fanout.eventReceived(key("db-01", "analysis"), body(analysis("db-01", 2, 102.0)))
    assert aliceRaw == []


def test_a_history_request_for_a_host_not_seen_is_answered_as_for_an_unknown_one():
    fanout = _fanout()
    _fleet(fanout)
    a, raw = _socket(fanout, alice())
    del raw[:]
    for asked in ("db-01", "nope"):
        a.onMessage(json.dumps({"kind": "history", "host": asked}).encode(), False)
        assert json.loads(raw[-1]) == {"kind": "error", "error": "unknown host", "host": asked}
    a.onMessage(json.dumps({"kind": "history", "host": "web-01"}).encode(), False)
    reply = json.loads(raw[-1])
    assert reply["kind"] == "history" and reply["host"] == "web-01" and len(reply["points"]) == 1


# HTTP: /api/hosts, /api/events, /api/alerts


def _as(principal, path, args=None):
    request = DummyRequest(path)
    request.args = args or {}
    if principal is not None:
        request.resmonPrincipal = principal
    return request


def _render(target, request):
    result = target.render(request)
    if result is not None and isinstance(result, bytes) and result:
        return request.responseCode or 200, result
    return request.responseCode or 200, b"".join(request.written)


def test_api_hosts_lists_and_answers_only_the_users_hosts():
    fanout = _fanout()
    _fleet(fanout)
    hosts = HostsResource(fanout)
    code, raw = _render(hosts, _as(alice(), []))
    assert code == 200
    _assertOnlyAbout(raw, WEB, DB)
    listing = json.loads(raw)
    assert [h["host"] for h in listing["hosts"]] == list(WEB)
    assert [h["host"] for h in json.loads(_render(hosts, _as(bob(), []))[1])["hosts"]] == list(DB)
    # Without users: every host.
    assert len(json.loads(_render(hosts, _as(None, []))[1])["hosts"]) == 4
    for path in ([b"db-01"], [b"db-01", b"history"]):
        code, raw = _render(hosts, _as(alice(), path))
        assert (code, json.loads(raw)) == (404, {"error": "unknown host", "host": "db-01"})
        code, raw = _render(hosts, _as(bob(), path))
        assert code == 200 and json.loads(raw)["host"] == "db-01"


def test_api_events_and_alerts_list_only_what_the_user_may_see():
    fanout = _fanout()
    _fleet(fanout)
    events = EventsResource(ConfirmingBus(), Clock(), fanout=fanout)
    code, raw = _render(events, _as(alice(), []))
    assert code == 200
    _assertOnlyAbout(raw, WEB, DB)
    assert sorted(e["id"] for e in json.loads(raw)["events"]) == [
        "a-web-01", "a-web-02", "e-web-01", "e-web-02"]
    code, raw = _render(AlertsResource(fanout), _as(bob(), []))
    _assertOnlyAbout(raw, DB, WEB)
    assert [a["source"] for a in json.loads(raw)["alerts"]] == list(DB)
    # Admins and the unauthenticated (no --users) see the events of every source.
    admin = Principal("root", ADMIN)
    for principal in (admin, None):
        listed = json.loads(_render(events, _as(principal, []))[1])["events"]
        assert "e-deploys" in [e["id"] for e in listed] and len(listed) == 9


def test_an_alert_is_about_its_host_by_name_even_when_the_source_word_differs():
    fanout = _fanout()
    fanout.eventReceived("web_01_example_com.alert", alert("web.01.example.com", "firing"))
    fqdn = Principal("carol", VIEWER, ["web.01.example.com"])
    other = Principal("dave", VIEWER, ["web_01_example"])
    alerts = AlertsResource(fanout)
    assert len(json.loads(_render(alerts, _as(fqdn, []))[1])["alerts"]) == 1
    assert json.loads(_render(alerts, _as(other, []))[1])["alerts"] == []


def test_an_alert_naming_another_host_than_its_key_needs_both_hosts_not_a_glob_of_one():
    # Joined, the two names are one string a glob of one host ("web-*")
    # would match whole.
    fanout = _fanout()
    forged = wire.encodeEmitted("web-01", "alert", 100.0, "forged", {
        "host": "db-01", "check": "cpu", "state": "firing", "level": "HIGH"})
    fanout.eventReceived("web-01.alert", forged)
    for patterns, count in ((["web-*"], 0), (["db-*"], 0), (["*-01"], 1),
                            (["web-*", "db-*"], 1), (["#"], 1)):
        principal = Principal("glob", VIEWER, patterns)
        listed = json.loads(_render(AlertsResource(fanout), _as(principal, []))[1])["alerts"]
        assert len(listed) == count, patterns


def test_an_alert_naming_another_host_than_its_key_is_shown_only_to_those_who_see_both():
    fanout = _fanout()
    forged = wire.encodeEmitted("web-01", "alert", 100.0, "forged", {
        "host": "db-01", "check": "cpu", "state": "firing", "level": "HIGH"})
    fanout.eventReceived("web-01.alert", forged)
    query = {b"events": [b"alert"]}
    a, aliceRaw = _socket(fanout, alice(), query)
    b, bobRaw = _socket(fanout, bob(), query)
    root, rootRaw = _socket(fanout, Principal("root", ADMIN), query)
    for raw in (aliceRaw, bobRaw):
        assert json.loads(raw[0])["alerts"] == [] and b"forged" not in b"".join(raw)
    assert [a["id"] for a in json.loads(rootRaw[0])["alerts"]] == ["forged"]
    for principal, count in ((alice(), 0), (bob(), 0), (Principal("root", ADMIN), 1)):
        listed = json.loads(_render(AlertsResource(fanout), _as(principal, []))[1])["alerts"]
        assert len(listed) == count
        listed = json.loads(_render(EventsResource(ConfirmingBus(), Clock(), fanout=fanout),
                                    _as(principal, []))[1])["events"]
        assert len(listed) == count
    fanout.eventReceived("web-01.alert", forged.replace(b'"forged"', b'"forged2"'))
    assert b"forged2" not in b"".join(aliceRaw + bobRaw) and b"forged2" in rootRaw[-1]


# Server-Sent Events, through the real Site


class AsUser(resource.Resource):
    """
    Stands for the authentication guard: the principal named by the
    C{x-test-user} header.
    """

    def __init__(self, root, principals):
        resource.Resource.__init__(self)
        self.root = root
        self.principals = principals

    def getChildWithDefault(self, path, request):
        request.resmonPrincipal = self.principals[request.getHeader(b"x-test-user").decode()]
        return self.root.getChildWithDefault(path, request)


class UserSSE(SSEConnection):
    def __init__(self, site, user, query=b""):
        from twisted.internet.testing import StringTransport
        self.transport = StringTransport()
        self.channel = site.buildProtocol(None)
        self.channel.makeConnection(self.transport)
        self.channel.dataReceived(
            b"GET /api/stream" + query + b" HTTP/1.1\r\nHost: localhost\r\nx-test-user: "
            + user.encode() + b"\r\n\r\n")
        self.offset = 0


def _userSite(tmp_path, fanout, clock, notifications=None):
    site = buildSite(fanout, clock, stallTimeout=30, root=str(tmp_path))
    site.eventStreams.notifications = notifications
    site.resource = AsUser(site.resource, {"alice": alice(), "bob": bob()})
    return site


def test_two_users_event_streams_receive_disjoint_data(tmp_path):
    clock = Clock()
    fanout = _fanout(clock)
    _fleet(fanout)
    site = _userSite(tmp_path, fanout, clock)
    query = b"?events=analysis,status,event,alert"
    streams = {"alice": UserSSE(site, "alice", query), "bob": UserSSE(site, "bob", query)}
    first = {user: b"\n\n".join(stream.frames()) for user, stream in streams.items()}
    assert b"event: snapshot" in first["alice"]
    _assertOnlyAbout(first["alice"], WEB, DB)
    _assertOnlyAbout(first["bob"], DB, WEB)
    _fleet(fanout, 1)
    live = {user: stream.frames() for user, stream in streams.items()}
    _assertOnlyAbout(b"\n\n".join(live["alice"]), WEB, DB)
    _assertOnlyAbout(b"\n\n".join(live["bob"]), DB, WEB)
    assert {_event(f)[0] for f in live["bob"]} == {"analysis", "status", "alert", "event"}
    # Asking for the other's hosts by name: a snapshot of nothing, and nothing live.
    sneaky = UserSSE(site, "alice", b"?hosts=db-01,db-02&events=analysis,status,event,alert")
    kind, snapshot = _event(sneaky.frames()[-1])
    assert kind == "snapshot" and snapshot["events"] == snapshot["alerts"] == []
    _fleet(fanout, 2)
    assert sneaky.frames() == []
    for stream in list(streams.values()) + [sneaky]:
        stream.close()


# Notifications


def _notification(audience, name, nid, title="hello", host=None, ts=100.0):
    return wire.Notification(audience, name, nid, ts, title, "text", "info", host)


def _published(notification):
    return notification.routingKey, wire.encodeNotification(notification)


def test_notifications_reach_the_addressed_users_dashboards_only():
    clock = Clock()
    clock.advance(200)
    fanout = _fanout(clock)
    center = NotificationCenter(fanout, clock, Directory(alice(), bob()))
    a, aliceRaw = _socket(fanout, alice(), notifications=center)
    b, bobRaw = _socket(fanout, bob(), notifications=center)
    anonymous, anonymousRaw = _socket(fanout, UNRESTRICTED, notifications=center)
    # At connect: the (empty) list of notifications kept.
    assert json.loads(aliceRaw[-1]) == {"kind": "notifications", "notifications": []}
    start = {name: len(raw) for name, raw in (("a", aliceRaw), ("b", bobRaw), ("x", anonymousRaw))}
    center.received(*_published(_notification("user", "alice", "n1")))
    center.received(*_published(_notification("group", "dba", "n2")))
    center.received(*_published(_notification("group", "ops", "n3")))
    # About a host: only users who may see it.
    center.received(*_published(_notification("group", "ops", "n4", host="db-01")))
    received = {name: [json.loads(m) for m in raw[start[name]:]]
                for name, raw in (("a", aliceRaw), ("b", bobRaw), ("x", anonymousRaw))}
    assert [m["id"] for m in received["a"]] == ["n1", "n3"]
    assert [m["id"] for m in received["b"]] == ["n2", "n3", "n4"]
    assert received["x"] == []
    assert received["a"][0] == {"kind": "notification", "id": "n1", "ts": 100.0,
                                "to": {"user": "alice"}, "title": "hello", "text": "text",
                                "level": "info"}
    # Kept, and sent when a dashboard of the user connects.
    again, raw = _socket(fanout, bob(), notifications=center)
    kept = json.loads(raw[-1])
    assert kept["kind"] == "notifications"
    assert [n["id"] for n in kept["notifications"]] == ["n2", "n3", "n4"]
    # Junk is rejected and counted.
    center.received("user.alice.notify", b"{}")
    center.received("user.al.ice.notify", _published(_notification("user", "alice", "n5"))[1])
    assert fanout.rejected["version"] == 1 and fanout.rejected["routing-key"] == 1


def test_an_alert_notifies_each_user_who_may_see_its_host(tmp_path):
    clock = Clock()
    fanout = _fanout(clock)
    center = NotificationCenter(fanout, clock, Directory(alice(), bob(), Principal("root", ADMIN)))
    fanout.alertListener = center.alertReceived
    site = _userSite(tmp_path, fanout, clock, center)
    aliceStream, bobStream = UserSSE(site, "alice"), UserSSE(site, "bob")
    aliceStream.frames(), bobStream.frames()
    fanout.eventReceived("db-01.alert", alert("db-01", "firing", eventId="x1"))
    fanout.eventReceived("db-01.alert", alert("db-01", "resolved", eventId="x2"))
    assert aliceStream.frames() == []
    frames = [_event(f) for f in bobStream.frames()]
    assert [kind for kind, _ in frames] == ["notification"]
    note = frames[0][1]
    assert note["id"] == "alert-x1" and note["host"] == "db-01" and note["level"] == "critical"
    kept = {}
    for user in ("alice", "bob", "root"):
        center.store.recent(user).addCallback(lambda bodies, user=user: kept.setdefault(
            user, [json.loads(b)["id"] for b in bodies]))
    assert kept == {"alice": [], "bob": ["alert-x1"], "root": ["alert-x1"]}
    aliceStream.close(), bobStream.close()


def test_without_a_directory_nothing_is_kept_and_alerts_notify_nobody():
    clock = Clock()
    fanout = _fanout(clock)
    center = NotificationCenter(fanout, clock)
    fanout.alertListener = center.alertReceived
    a, raw = _socket(fanout, alice(), notifications=center)
    count = len(raw)
    fanout.eventReceived("web-01.alert", alert("web-01", "firing"))
    assert [json.loads(m)["kind"] for m in raw[count:]] == []  # default subscription: no alerts
    center.notify(_notification("user", "alice", "n1"))
    assert json.loads(raw[-1])["id"] == "n1"
    kept = []
    center.store.recent("alice").addCallback(kept.extend)
    assert kept == [] and center.counters["alerts"] == 0


def test_notifications_are_kept_for_the_users_of_the_directory_only():
    clock = Clock()
    center = NotificationCenter(_fanout(clock), clock, Directory(alice(), bob()))
    center.notify(_notification("user", "mallory", "n1"))
    center.notify(_notification("group", "dba", "n2"))
    kept = {}
    for user in ("mallory", "alice", "bob"):
        center.store.recent(user).addCallback(lambda bodies, user=user: kept.setdefault(
            user, [json.loads(b)["id"] for b in bodies]))
    assert kept == {"mallory": [], "alice": [], "bob": ["n2"]}


@pytest_twisted.inlineCallbacks
def test_a_user_added_under_a_removed_users_name_is_not_sent_their_notifications(database):
    pool, dialect = database
    clock = Clock()
    fanout = _fanout(clock)
    oldAlice = Principal("alice", VIEWER, ["web-01"], userId="0a" * 16)
    newAlice = Principal("alice", VIEWER, ["web-01"], userId="0b" * 16)
    directory = Directory(oldAlice)
    center = NotificationCenter(fanout, clock, directory,
                                store=DatabaseNotifications(pool, dialect))
    yield center.notify(_notification("user", "alice", "for-the-old-alice"))
    fanout.alertListener = center.alertReceived
    fanout.eventReceived("web-01.alert", alert("web-01", "firing", eventId="old"))
    directory._principals = (newAlice,)          # removed, and another added as alice
    yield center.notify(_notification("user", "alice", "for-the-new-alice"))
    fanout.eventReceived("web-01.alert", alert("web-01", "firing", eventId="new"))
    # The alerts' notifications are kept by the database's threads: wait for them.
    from twisted.internet import reactor
    from twisted.internet.task import deferLater
    from resmon.webserver.notifications import keptFor
    for _ in range(500):
        kept = yield center.store.recent(keptFor(newAlice))
        older = yield center.store.recent(keptFor(oldAlice))
        if b"alert-new" in b"".join(kept) and b"alert-old" in b"".join(older):
            break
        yield deferLater(reactor, 0.01, lambda: None)
    client, raw = _socket(fanout, newAlice)
    yield center.sendKept(client, newAlice)
    assert sorted(n["id"] for n in json.loads(raw[-1])["notifications"]) == [
        "alert-new", "for-the-new-alice"]
    client, raw = _socket(fanout, oldAlice)
    yield center.sendKept(client, oldAlice)
    assert sorted(n["id"] for n in json.loads(raw[-1])["notifications"]) == [
        "alert-old", "for-the-old-alice"]


class RecordingStore(MemoryNotifications):
    """
    A memory store that records its writes, and can leave them pending.
    """

    def __init__(self, pending=False):
        MemoryNotifications.__init__(self)
        self.writes, self.pending = [], pending

    def addMany(self, entries):
        self.writes.append([user for user, _, _, _ in entries])
        if self.pending:
            from twisted.internet import defer
            return defer.Deferred()
        return MemoryNotifications.addMany(self, entries)


def test_an_alert_passes_over_the_clients_once_and_is_kept_in_one_write(monkeypatch):
    """
    200 users who may all see the host, 2 dashboards each: each dashboard
    gets its own user's notification, the clients' principals are looked up
    once for the alert (not once per user and client), and the store gets
    one write for all 200 users.
    """
    from resmon.webserver import notifications
    users = [Principal(f"user{i:03d}", VIEWER, ["web-01"]) for i in range(200)]
    clock = Clock()
    fanout = _fanout(clock)
    store = RecordingStore()
    center = NotificationCenter(fanout, clock, Directory(*users), store=store)
    sockets = [(user, _socket(fanout, user)[1]) for user in users for _ in range(2)]
    looked = []
    original = notifications.principalOfSubscription
    monkeypatch.setattr(notifications, "principalOfSubscription",
                        lambda subscription: looked.append(1) or original(subscription))
    fanout.alertListener = center.alertReceived
    fanout.eventReceived("web-01.alert", alert("web-01", "firing", eventId="a-1"))
    assert len(looked) == len(fanout.clients) == 400
    for user, raw in sockets:
        frames = [json.loads(m) for m in raw if b'"notification"' in m]
        assert [(f["to"], f["id"]) for f in frames] == [({"user": user.name}, "alert-a-1")]
    assert store.writes == [[user.name for user in users]]
    assert center.counters["stored"] == 200 and center.counters["delivered"] == 400


def test_writes_waiting_for_the_store_are_bounded_and_the_rest_counted():
    """
    A store that does not keep up (a slow database) holds at most
    MAX_PENDING_WRITES writes; what comes next is still sent to the open
    dashboards, and counted as not kept.
    """
    from resmon.webserver.notifications import MAX_PENDING_WRITES
    clock = Clock()
    fanout = _fanout(clock)
    store = RecordingStore(pending=True)
    center = NotificationCenter(fanout, clock, Directory(alice(), bob()), store=store)
    a, raw = _socket(fanout, alice())
    for i in range(MAX_PENDING_WRITES + 5):
        center.notify(_notification("group", "ops", f"n{i}"))
    assert len(store.writes) == MAX_PENDING_WRITES
    assert center.counters["store-dropped"] == 5 * 2  # alice and bob, five times
    assert json.loads(raw[-1])["id"] == f"n{MAX_PENDING_WRITES + 4}"


@pytest_twisted.inlineCallbacks
def test_the_database_store_makes_its_table_again_after_a_failure(tmp_path):
    from resmon.webhooks.store import openPool
    pool, dialect, _ = openPool(None, str(tmp_path))
    store = DatabaseNotifications(pool, dialect)
    broken = store._schema
    attempts = []

    def failing(cursor, serial):
        attempts.append(serial)
        raise RuntimeError("disk full")
    store._schema = failing
    with pytest.raises(RuntimeError):
        yield store.add("alice", "n1", 1.0, b"{}")
    assert len(attempts) == 5
    store._schema = broken
    yield store.add("alice", "n1", 1.0, b'{"id":"n1"}')
    assert (yield store.recent("alice")) == [b'{"id":"n1"}']
    pool.close()


def test_the_memory_store_keeps_the_last_100_per_user_once_each():
    store = MemoryNotifications(maxUsers=2)
    for i in range(105):
        store.add("alice", f"n{i}", float(i), b'"%d"' % i)
    store.add("alice", "n104", 0.0, b'"again"')
    kept = []
    store.recent("alice").addCallback(kept.extend)
    assert kept == [b'"%d"' % i for i in range(5, 105)]
    store.add("bob", "x", 0.0, b"1")
    store.add("carol", "x", 0.0, b"1")
    gone = []
    store.recent("alice").addCallback(gone.extend)
    assert gone == []


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    from resmon.webhooks.store import openPool
    if request.param == "sqlite":
        pool, dialect, _ = openPool(None, str(tmp_path))
        yield pool, dialect
        pool.close()
        return
    name = "resmon_notify_" + uuid.uuid4().hex[:12]
    admin = postgresqlAdmin()
    admin.cursor().execute(f"CREATE DATABASE {name}")
    pool, dialect, _ = openPool(POSTGRESQL + name, str(tmp_path))
    try:
        yield pool, dialect
    finally:
        pool.close()
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest_twisted.inlineCallbacks
def test_the_database_store_keeps_the_last_100_per_user_shared_by_web_processes(database):
    pool, dialect = database
    first, second = DatabaseNotifications(pool, dialect), DatabaseNotifications(pool, dialect)
    for i in range(103):
        yield first.add("alice", f"n{i}", float(i), wire.encodeJSON({"id": f"n{i}"}))
    # Another web process storing the same notification: kept once.
    yield second.add("alice", "n102", 102.0, wire.encodeJSON({"id": "n102"}))
    yield second.add("bob", "n0", 0.0, wire.encodeJSON({"id": "b0"}))
    kept = yield second.recent("alice")
    assert [json.loads(b)["id"] for b in kept] == [f"n{i}" for i in range(3, 103)]
    assert [json.loads(b)["id"] for b in (yield first.recent("bob"))] == ["b0"]
    assert (yield first.recent("carol")) == []


@pytest_twisted.inlineCallbacks
def test_notifications_kept_in_the_database_are_sent_at_connect(database):
    pool, dialect = database
    clock = Clock()
    fanout = _fanout(clock)
    center = NotificationCenter(fanout, clock, Directory(alice(), bob()),
                                store=DatabaseNotifications(pool, dialect))
    # Kept by the database's threads: wait until it is, as a later login would.
    yield center.notify(_notification("user", "alice", "n1"))
    yield center.notify(_notification("user", "bob", "n2"))
    kept = yield center.store.recent("alice")
    assert len(kept) == 1
    a, raw = _socket(fanout, alice())
    yield center.sendKept(a, alice())
    assert json.loads(raw[-1])["notifications"][0]["id"] == "n1"
    assert b"n2" not in b"".join(raw)


# POST /api/notify


def _post(target, principal, payload):
    request = _as(principal, [])
    request.method = b"POST"
    from io import BytesIO
    request.content = BytesIO(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    code, raw = _render(target, request)
    return code, json.loads(raw)


def test_post_notify_is_for_operators_and_publishes_under_the_notify_key():
    bus = ConfirmingBus()
    clock = Clock()
    clock.advance(50)
    notify = NotifyResource(bus, clock, newId=lambda: "id1")
    assert _post(notify, alice(), {"user": "bob", "title": "hi"}) == (
        403, {"error": "only operators and admins may notify"})
    assert bus.published == []
    assert _post(notify, bob(), {"user": "alice", "title": "hi", "text": "there"}) == (
        202, {"id": "id1"})
    assert _post(notify, Principal("root", ADMIN), {"group": "ops", "title": "all",
                                                    "level": "warning", "host": "web-01"})[0] == 202
    (k1, b1), (k2, b2) = bus.published
    assert k1 == "user.alice.notify" and b1 == {"v": 1, "kind": "notify", "id": "id1", "ts": 50.0,
                                                "title": "hi", "text": "there", "level": "info"}
    assert k2 == "group.ops.notify" and b2["host"] == "web-01" and b2["level"] == "warning"
    for bad, error in [
            ({"title": "x"}, "give either user or group"),
            ({"user": "a", "group": "b", "title": "x"}, "give either user or group"),
            ({"user": "a.b", "title": "x"}, "user must be 1 to 64 letters, digits, '-' or '_'"),
            ({"user": "a"}, "title must be a non-empty string"),
            ({"user": "a", "title": "x" * 201}, "title is longer than 200 characters"),
            ({"user": "a", "title": "x", "text": 3}, "text must be a string of at most 2000 characters"),
            ({"user": "a", "title": "x", "level": "boom"}, "level must be one of info, warning, critical"),
            ({"user": "a", "title": "x", "to": 1}, "unknown field 'to'")]:
        assert _post(notify, bob(), bad) == (400, {"error": error})
    code, answer = _post(notify, bob(), b"{" + b" " * 9000 + b"}")
    assert code == 413
    assert len(bus.published) == 2 and notify.counters["forbidden"] == 1


def test_the_web_service_delivers_notifications_from_its_bus_subscription():
    bus = ConfirmingBus()
    clock = Clock()
    web = WebService(bus, "tcp:0", clock, directory=Directory(alice(), bob()))
    web.startService()
    try:
        assert {"user.*.notify", "group.*.notify"} <= set(bus.patterns)
        a, raw = _socket(web.fanout, alice(), notifications=web.notifications)
        bus.handler(*_published(_notification("user", "alice", "n1")))
        bus.handler(*_published(_notification("user", "bob", "n2")))
        assert [json.loads(m)["id"] for m in raw if b'"notification"' in m] == ["n1"]
        assert b"notify" in web.site.resource.children[b"api"].children
    finally:
        web.stopService()


# act.notify


def test_a_rule_notifies_a_user_through_act_notify():
    class Notifier:
        name = "notifier"
        patterns = ("*.analysis",)

        def check(self, event, state):
            return True

        def action(self, event, state, act):
            act.notify("cpu high", f"on {event.payload['host']}", user="alice",
                       host=event.payload["host"], level="warning")

    clock = Clock()
    clock.advance(10)
    engine = RuleEngine([Notifier()], clock, newId=lambda: "r1")
    event = wire.decodeBusEvent(key("web-01", "analysis"), body(analysis("web-01", 0, 5.0)))
    [(routingKey, published)] = engine.handle(event)
    assert routingKey == "user.alice.notify"
    notification = wire.decodeNotification(routingKey, published)
    assert notification == wire.Notification("user", "alice", "r1", 10.0, "cpu high", "on web-01",
                                             "warning", "web-01")
    act = Act(clock)
    with pytest.raises(ActionError, match="notify: give either user or group"):
        act.notify("x")
    with pytest.raises(ActionError, match="notify: title must be a non-empty string"):
        act.notify("", user="alice")


def test_notifications_kept_that_come_after_the_stream_ended_go_nowhere(tmp_path):
    from twisted.internet import defer
    clock = Clock()
    fanout = _fanout(clock)
    center = NotificationCenter(fanout, clock, Directory(alice()))
    answer = defer.Deferred()
    center.store.recent = lambda user: answer
    site = _userSite(tmp_path, fanout, clock, center)
    stream = UserSSE(site, "alice")
    stream.frames()
    stream.close()
    answer.callback([wire.encodeJSON(_notification("user", "alice", "n1").document())])
    assert stream.frames() == [] and fanout.clients == {}


def test_alert_notification_ids_stay_distinct_for_long_event_ids():
    from resmon.webserver.notifications import alertNotificationId
    short = alertNotificationId("x1")
    first, second = alertNotificationId("a" * 58 + "-one"), alertNotificationId("a" * 58 + "-two")
    assert short == "alert-x1"
    assert first != second and len(first) == len(second) == wire.EVENT_ID_LENGTH
    assert first == alertNotificationId("a" * 58 + "-one")
    # A short id can not stand for a long one's digest.
    digest = first[len("alert~"):]
    assert alertNotificationId(digest) != first
