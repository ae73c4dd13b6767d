"""
What each user sees, end to end: a real `twistd resmon --role=web --users`
on the real broker, two users with disjoint hosts (alice: web-*, bob:
db-*), each with a WebSocket and an event stream open at once (API
tokens), every frame checked for the other's hosts; their notifications
(POST /api/notify, an alert), delivered to the right user only, kept in the
web role's SQLite registry and sent again at the next connection.
"""

import json
import os
import time

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from resmon import wire
from resmon.auth import passwords
from resmon.auth.usersfile import Token, User, Users, writeUsers
from support import WebSocketRecorder, analysisBody, openEventStream, startedWebRole, withTimeout

WEB = ("web-01", "web-02")
DB = ("db-01", "db-02")


def _usersFile(tmp_path):
    tokens = {name: passwords.newToken() for name in ("alice", "bob")}

    def user(name, role, hosts, groups):
        token = Token("t" + name, passwords.tokenDigest(tokens[name]), 1.0, "test")
        return User(name, None, role, hosts, groups, {token.id: token})
    path = os.path.join(str(tmp_path), "users.toml")
    writeUsers(path, Users([user("alice", "viewer", WEB, ("ops",)),
                            user("bob", "operator", DB, ("ops", "dba"))]))
    return path, tokens


def _status(host):
    now = time.time()
    return json.dumps({"v": 1, "kind": "status", "host": host, "status": "online", "since": now,
                       "last_seen": now, "seq": 1}).encode()


def _alert(host, eventId):
    return wire.encodeEmitted(host, "alert", time.time(), eventId,
                              {"host": host, "check": "cpu", "state": "firing", "level": "HIGH",
                               "since": time.time(), "value": 99.0}, wire.Chain(("alert",), 1))


@defer.inlineCallbacks
def _socket(port, token, query=""):
    factory = WebSocketRecorder(f"ws://127.0.0.1:{port}/ws{query}")
    factory.setSessionParameters(f"ws://127.0.0.1:{port}/ws{query}",
                                 headers={"Authorization": f"Bearer {token}"})
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    proto = yield endpoint.connect(factory)
    yield withTimeout(factory.opened, 5, "the WebSocket handshake")
    return factory, proto


def _stream(port, token, query=""):
    return openEventStream(port, query, Headers({b"authorization": [f"Bearer {token}".encode()]}))


@defer.inlineCallbacks
def _request(port, method, path, token=None, body=None):
    headers = Headers({b"content-type": [b"application/json"]})
    if token is not None:
        headers.addRawHeader(b"authorization", f"Bearer {token}".encode())
    producer = None
    if body is not None:
        from io import BytesIO
        producer = FileBodyProducer(BytesIO(json.dumps(body).encode()))
    response = yield Agent(reactor).request(
        method, f"http://127.0.0.1:{port}{path}".encode(), headers, producer)
    raw = yield readBody(response)
    return response.code, raw


def _leaks(raw, theirs):
    return [host for host in theirs + ("deploys",) if host in raw]


@pytest_twisted.inlineCallbacks
def test_two_users_see_disjoint_data_and_only_their_notifications(broker, amqp, twistd, tmp_path):
    path, tokens = _usersFile(tmp_path)
    exchange = amqp.names["exchange"]
    web, port = yield startedWebRole(
        twistd, "visibility-web", broker, amqp, f"--users={path}",
        f"--state-dir={tmp_path / 'state'}")

    def publishFleet(seq):
        published = []
        for host in WEB + DB:
            published.append(amqp.publish(exchange, f"{host}.analysis", analysisBody(host, seq, 100)))
            published.append(amqp.publish(exchange, f"{host}.status", _status(host)))
            published.append(amqp.publish(exchange, f"{host}.event", wire.encodeEventFromBody(
                host, b"{}", "application/json", time.time(), f"e-{host}-{seq}")))
        published.append(amqp.publish(exchange, "deploys.event", wire.encodeEventFromBody(
            "deploys", b"{}", "application/json", time.time(), f"e-deploys-{seq}")))
        return defer.gatherResults(published)

    yield publishFleet(1)
    code, raw = yield _request(port, b"GET", "/api/hosts", tokens["bob"])
    deadline = time.time() + 10
    while len(json.loads(raw)["hosts"]) < 2 and time.time() < deadline:
        code, raw = yield _request(port, b"GET", "/api/hosts", tokens["bob"])
    assert code == 200 and [h["host"] for h in json.loads(raw)["hosts"]] == list(DB)
    assert _leaks(raw.decode(), WEB) == []
    code, raw = yield _request(port, b"GET", "/api/hosts", tokens["alice"])
    assert [h["host"] for h in json.loads(raw)["hosts"]] == list(WEB) and _leaks(raw.decode(), DB) == []
    code, raw = yield _request(port, b"GET", "/api/hosts/db-01", tokens["alice"])
    assert (code, json.loads(raw)) == (404, {"error": "unknown host", "host": "db-01"})
    code, raw = yield _request(port, b"GET", "/api/hosts")
    assert code == 401

    query = "?events=analysis,status,event,alert"
    sockets = {}
    streams = {}
    for user in ("alice", "bob"):
        sockets[user] = yield _socket(port, tokens[user], query)
        streams[user] = yield _stream(port, tokens[user], query)
    # Alice also asks for bob's hosts by name, on a second socket and stream.
    sneakySocket = yield _socket(port, tokens["alice"], "?hosts=db-01,db-02&events=analysis,status,event,alert")
    sneakyStream = yield _stream(port, tokens["alice"], "?hosts=db-01,db-02&events=analysis,status,event,alert")
    for factory, _ in list(sockets.values()) + [sneakySocket]:
        yield factory.waitFor(lambda m: m["kind"] == "snapshot", 10, "a snapshot")
    yield publishFleet(2)
    yield amqp.publish(exchange, "db-01.alert", _alert("db-01", "alert-db"))
    yield amqp.publish(exchange, "web-02.alert", _alert("web-02", "alert-web"))
    for user, mine, alerted in (("alice", "web-02", "web-02"), ("bob", "db-02", "db-01")):
        factory = sockets[user][0]
        yield factory.waitFor(lambda m: m.get("kind") == "alert" and alerted in json.dumps(m), 10,
                              f"{user}'s alert")
        yield factory.waitFor(lambda m: m.get("kind") == "analysis" and m["host"] == mine
                              and m["seq"] == 2, 10, f"{user}'s live analysis")
        yield streams[user].waitFor(
            lambda events: any(k == "alert" and alerted in json.dumps(e) for k, e in events), 10,
            f"{user}'s alert on the stream")
    # A notification from an operator to alice, and one to the group of both.
    code, raw = yield _request(port, b"POST", "/api/notify", tokens["bob"],
                               {"user": "alice", "title": "for alice only", "text": "hello"})
    assert code == 202, raw
    code, raw = yield _request(port, b"POST", "/api/notify", tokens["alice"],
                               {"user": "bob", "title": "from a viewer"})
    assert code == 403
    yield sockets["alice"][0].waitFor(
        lambda m: m.get("kind") == "notification" and m["title"] == "for alice only", 2,
        "alice's notification within a second or two")
    yield streams["alice"].waitFor(
        lambda events: any(k == "notification" and e["title"] == "for alice only" for k, e in events),
        2, "alice's notification on her stream")
    yield sockets["bob"][0].waitFor(
        lambda m: m.get("kind") == "notification" and m.get("id") == "alert-alert-db", 5,
        "bob's notification of the alert on db-01")
    yield sockets["alice"][0].waitFor(
        lambda m: m.get("kind") == "notification" and m.get("id") == "alert-alert-web", 5,
        "alice's notification of the alert on web-02")
    # Everything each one received, at the byte level.
    received = {user: json.dumps(sockets[user][0].messages) + json.dumps(streams[user].events)
                for user in ("alice", "bob")}
    assert _leaks(received["alice"], DB) == [] and all(h in received["alice"] for h in WEB)
    assert _leaks(received["bob"], WEB) == [] and all(h in received["bob"] for h in DB)
    assert "for alice only" not in received["bob"]
    # What alice sees when she asks for bob's hosts: nothing but the echo of her own question.
    echoed = [m.get("subscription", {}).get("hosts") for m in sneakySocket[0].messages] + [
        e.get("subscription", {}).get("hosts") for _, e in sneakyStream.events]
    assert set(map(tuple, filter(None, echoed))) == {("db-01", "db-02")}
    # (and her own notifications, which go to every dashboard of hers).
    sneaky = [{k: v for k, v in m.items() if k != "subscription"}
              for m in sneakySocket[0].messages + [e for _, e in sneakyStream.events]]
    assert _leaks(json.dumps(sneaky), DB) == []
    assert "web-0" not in json.dumps([m for m in sneaky if m["kind"] != "notification"])
    # Kept, and sent again when alice connects next.
    again = yield _socket(port, tokens["alice"])
    kept = yield again[0].waitFor(lambda m: m.get("kind") == "notifications", 10, "the kept notifications")
    titles = [n["title"] for n in kept["notifications"]]
    assert "for alice only" in titles and "db-01" not in json.dumps(kept)
    for factory, proto in list(sockets.values()) + [sneakySocket, again]:
        proto.sendClose()
    for reader in list(streams.values()) + [sneakyStream]:
        reader.transport.stopProducing()


@pytest_twisted.inlineCallbacks
def test_two_web_processes_on_postgresql_keep_each_notification_once(broker, amqp, twistd, tmp_path):
    import uuid

    from webhooksupport import POSTGRESQL, postgresqlAdmin

    path, tokens = _usersFile(tmp_path)
    name = "resmon_notify_it_" + uuid.uuid4().hex[:12]
    admin = postgresqlAdmin()
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        database = f"--database={POSTGRESQL}{name}"
        first, firstPort = yield startedWebRole(twistd, "notify-pg-1", broker, amqp,
                                                f"--users={path}", database)
        second, secondPort = yield startedWebRole(twistd, "notify-pg-2", broker, amqp,
                                                  f"--users={path}", database)
        # Both web processes receive it from the bus and store it.
        code, raw = yield _request(firstPort, b"POST", "/api/notify", tokens["bob"],
                                   {"group": "ops", "title": "for the ops group"})
        assert code == 202, raw
        notificationId = json.loads(raw)["id"]

        import psycopg2
        reader = psycopg2.connect(POSTGRESQL + name, connect_timeout=5)
        reader.autocommit = True

        def kept():
            cursor = reader.cursor()
            try:
                cursor.execute("SELECT username, id FROM user_notifications ORDER BY username")
            except psycopg2.errors.UndefinedTable:
                return []
            return cursor.fetchall()
        deadline = time.time() + 10
        while len(kept()) < 2 and time.time() < deadline:
            yield deferLater(0.1)
        # (UNIQUE (username, id): the other process's insert of the same one is ignored.)
        assert kept() == [("alice", notificationId), ("bob", notificationId)]
        reader.close()
        # Alice connects to the other process: the notification is there.
        factory, proto = yield _socket(secondPort, tokens["alice"])
        message = yield factory.waitFor(lambda m: m.get("kind") == "notifications", 10,
                                        "the kept notifications")
        assert [n["title"] for n in message["notifications"]] == ["for the ops group"]
        proto.sendClose()
        yield first.stop()
        yield second.stop()
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def deferLater(seconds):
    from twisted.internet.task import deferLater as later
    return later(reactor, seconds, lambda: None)


@pytest_twisted.inlineCallbacks
def test_a_rules_notification_reaches_the_named_users_dashboard(broker, amqp, twistd, tmp_path):
    rules = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rules")
    path, tokens = _usersFile(tmp_path)
    web, port = yield startedWebRole(twistd, "notify-rule-web", broker, amqp, f"--users={path}")
    ruler = twistd("notify-rule-rules", "--role=rules", f"--broker={broker}",
                   f"--exchange={amqp.names['exchange']}", f"--queue={amqp.names['queue']}",
                   f"--rules-dir={rules}", "--rules=notify-relay")
    yield ruler.waitForOutput(b"ready: on")
    sockets = {}
    for user in ("alice", "bob"):
        sockets[user] = yield _socket(port, tokens[user])
        yield sockets[user][0].waitFor(lambda m: m.get("kind") == "notifications", 10,
                                       f"{user}'s kept notifications")
    code, raw = yield _request(port, b"POST", "/api/events/pager", tokens["bob"],
                               {"user": "alice", "title": "paged by a rule", "text": "web-01 is slow"})
    assert code == 202, raw
    note = yield sockets["alice"][0].waitFor(lambda m: m.get("kind") == "notification", 10,
                                             "the rule's notification")
    assert (note["title"], note["text"], note["level"], note["to"]) == (
        "paged by a rule", "web-01 is slow", "warning", {"user": "alice"})
    # A later one for bob: what came to him before it is all he was sent.
    code, raw = yield _request(port, b"POST", "/api/events/pager", tokens["bob"],
                               {"user": "bob", "title": "for bob"})
    yield sockets["bob"][0].waitFor(lambda m: m.get("kind") == "notification", 10, "bob's own")
    assert [m["title"] for m in sockets["bob"][0].messages if m.get("kind") == "notification"] == [
        "for bob"]
    for factory, proto in sockets.values():
        proto.sendClose()
