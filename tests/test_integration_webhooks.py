"""
The webhook registry and its delivery, with real parts: real C{twistd
resmon} web and webhooks processes on the real broker, real HTTP receivers
on loopback (twisted.web), SQLite in a temporary directory and the real
PostgreSQL.
"""

import json
import os
import shutil
import uuid

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue

from support import freePort
from webhooksupport import (
    POSTGRESQL, Receiver, api, documentedVerifier, listen, postgresqlAdmin, until)


class Roles:
    """
    A web process and a webhooks process sharing one registry.
    """

    def __init__(self, twistd, broker, amqp, stateDir, *extra):
        self.twistd = twistd
        self.broker = broker
        self.amqp = amqp
        self.exchange = amqp.names["exchange"]
        self.queue = amqp.names["queue"]
        self.stateDir = str(stateDir)
        self.extra = list(extra)
        self.port = freePort()

    def common(self):
        return ["--broker", self.broker, "--exchange", self.exchange, "--state-dir",
                self.stateDir, "--webhook-allow-private"] + self.extra

    @defer.inlineCallbacks
    def startWeb(self, *extra, label="web"):
        web = self.twistd(label, "--role=web", "--port", str(self.port), "--interface",
                          "127.0.0.1", *(self.common() + list(extra)))
        yield web.waitForOutput(b"dashboard listening")
        self.web = web
        return web

    @defer.inlineCallbacks
    def startWebhooks(self, *extra, label="webhooks"):
        hooks = self.twistd(label, "--role=webhooks", "--webhook-queue", self.queue,
                            *(self.common() + list(extra)))
        yield hooks.waitForOutput(b"now delivers webhooks", timeout=30)
        self.webhooks = hooks
        return hooks

    @defer.inlineCallbacks
    def register(self, key, url, secret=None):
        document = {"key": key, "url": url}
        if secret is not None:
            document["secret"] = secret
        code, hook = yield api(self.port, "POST", "/api/webhooks", document)
        assert code == 201, hook
        return hook

    def bound(self, key, times=1):
        return self.webhooks.waitForOutputCount(key.encode(), times, timeout=15)

    def publish(self, key, document):
        return self.amqp.publish(self.exchange, key, json.dumps(document).encode())

    def deliveries(self, hookId):
        return api(self.port, "GET", f"/api/webhooks/{hookId}/deliveries").addCallback(
            lambda answer: answer[1]["deliveries"])

    def recorded(self, hookId, count):
        """
        The hook's attempts, once at least C{count} are recorded (the
        receiver may see a request before its answer is recorded).
        """
        return until(lambda: self.deliveries(hookId).addCallback(
            lambda attempts: attempts if len(attempts) >= count else None),
            f"{count} attempts recorded for {hookId}")


@pytest_twisted.async_yield_fixture
async def receiver():
    hooks = Receiver()
    port = await defer.ensureDeferred(_listen(hooks))
    hooks.url = f"http://127.0.0.1:{port.getHost().port}"
    yield hooks
    hooks.close()
    await port.stopListening()


async def _listen(hooks):
    return await listen(hooks)


@pytest.fixture
def postgresqlDatabase():
    """
    A new database in the real PostgreSQL, dropped after the test (and,
    asked for before C{twistd}, after its processes stopped): its URL.
    """
    name = "resmon_" + uuid.uuid4().hex[:12]
    admin = postgresqlAdmin()
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield POSTGRESQL + name
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _delivered(path, count):
    return lambda r: sum(1 for q in r.on(path) if q["answer"] == 200) >= count


@pytest_twisted.inlineCallbacks
def test_delivered_signed_and_verified_with_the_documented_recipe(broker, amqp, receiver,
                                                                  twistd, tmp_path):
    roles = Roles(twistd, broker, amqp, tmp_path)
    yield roles.startWeb()
    yield roles.startWebhooks()
    hook = yield roles.register("deploy.event", receiver.url + "/hook", secret="s3cret")
    generated = yield roles.register("*.alert", receiver.url + "/other")
    assert len(generated["secret"]) == 64
    yield roles.bound("bound to 2 keys")
    yield roles.publish("deploy.event", {"v": 1, "kind": "event", "version": "1.2.3"})
    yield roles.publish("web-01.alert", {"v": 1, "kind": "alert", "host": "web-01"})
    yield receiver.waitFor(_delivered("/hook", 1), "the delivery")
    yield receiver.waitFor(_delivered("/other", 1), "the delivery to the generated secret")
    verify = documentedVerifier()
    for request, secret in ((receiver.on("/hook")[0], "s3cret"),
                            (receiver.on("/other")[0], generated["secret"])):
        headers = request["headers"]
        assert verify(secret, headers["x-resmon-timestamp"], request["body"],
                      headers["x-resmon-signature-256"])
        assert not verify("wrong", headers["x-resmon-timestamp"], request["body"],
                          headers["x-resmon-signature-256"])
        assert not verify(secret, headers["x-resmon-timestamp"], request["body"] + b" ",
                          headers["x-resmon-signature-256"])
        assert not verify(secret, str(int(headers["x-resmon-timestamp"]) - 3600),
                          request["body"], headers["x-resmon-signature-256"])
    request = receiver.on("/hook")[0]
    assert request["json"]["event"] == {"v": 1, "kind": "event", "version": "1.2.3"}
    assert request["json"]["key"] == "deploy.event" == request["headers"]["x-resmon-event"]
    assert request["json"]["hook"] == hook["id"]
    assert request["json"]["delivery"] == request["headers"]["x-resmon-delivery"]
    assert request["headers"]["content-type"] == "application/json"
    code, ping = yield api(roles.port, "POST", f"/api/webhooks/{hook['id']}/ping")
    assert code == 202
    yield receiver.waitFor(_delivered("/hook", 2), "the ping")
    pinged = receiver.on("/hook")[1]
    assert pinged["json"]["delivery"] == ping["delivery"]
    assert pinged["json"]["event"]["kind"] == "ping"
    attempts = yield roles.recorded(hook["id"], 2)
    assert [(a["attempt"], a["status"], a["outcome"]) for a in attempts] == [
        (1, 200, "delivered"), (1, 200, "delivered")]
    code, hookNow = yield api(roles.port, "GET", f"/api/webhooks/{hook['id']}")
    assert hookNow["state"] == "active" and hookNow["last_result"] == "200"
    assert "secret" not in hookNow


@pytest_twisted.inlineCallbacks
def test_500_then_200_is_retried_and_delivered_once_in_order(broker, amqp, receiver, twistd,
                                                             tmp_path):
    roles = Roles(twistd, broker, amqp, tmp_path)
    yield roles.startWeb()
    yield roles.startWebhooks()
    receiver.script("/flaky", 500, 503)
    hook = yield roles.register("deploy.#", receiver.url + "/flaky")
    yield roles.bound("bound to 1 keys")
    for n in range(3):
        yield roles.publish(f"deploy.event.n{n}", {"n": n})
    yield receiver.waitFor(_delivered("/flaky", 3), "three deliveries")
    requests = receiver.on("/flaky")
    assert [(r["json"]["event"]["n"], r["answer"]) for r in requests] == [
        (0, 500), (0, 503), (0, 200), (1, 200), (2, 200)]
    assert len({r["headers"]["x-resmon-delivery"] for r in requests[:3]}) == 1
    attempts = yield roles.recorded(hook["id"], 5)
    assert [(a["attempt"], a["status"], a["outcome"]) for a in reversed(attempts)] == [
        (1, 500, "retry"), (2, 503, "retry"), (3, 200, "delivered"), (1, 200, "delivered"),
        (1, 200, "delivered")]


@pytest_twisted.inlineCallbacks
def test_timeout_refused_connection_and_redirect_are_retried(broker, amqp, receiver, twistd,
                                                             tmp_path):
    roles = Roles(twistd, broker, amqp, tmp_path, "--webhook-timeout", "1")
    yield roles.startWeb()
    yield roles.startWebhooks()
    receiver.script("/slow", "hang")
    receiver.script("/moved", ("redirect", "/elsewhere"))
    # Hangs at every attempt: the process is stopped with a request in flight.
    receiver.script("/forever", *(["hang"] * 100))
    closedPort = freePort()
    slow = yield roles.register("slow.event", receiver.url + "/slow")
    moved = yield roles.register("moved.event", receiver.url + "/moved")
    refused = yield roles.register("refused.event", f"http://127.0.0.1:{closedPort}/late")
    # TLS to a plain HTTP receiver: the handshake fails.
    tls = yield roles.register("tls.event", receiver.url.replace("http:", "https:") + "/tls")
    yield roles.register("forever.event", receiver.url + "/forever")
    yield roles.bound("bound to 5 keys")
    for key in ("slow.event", "moved.event", "refused.event", "tls.event", "forever.event"):
        yield roles.publish(key, {"key": key})
    yield receiver.waitFor(_delivered("/slow", 1), "the slow receiver's retry")
    yield receiver.waitFor(_delivered("/moved", 1), "the redirected receiver's retry")
    assert receiver.on("/elsewhere") == []
    slowAttempts = yield roles.recorded(slow["id"], 2)
    assert [(a["status"], a["error"], a["outcome"]) for a in reversed(slowAttempts)] == [
        (None, "timeout", "retry"), (200, None, "delivered")]
    movedAttempts = yield roles.recorded(moved["id"], 2)
    assert [(a["status"], a["outcome"]) for a in reversed(movedAttempts)] == [
        (302, "retry"), (200, "delivered")]

    yield roles.recorded(refused["id"], 1)
    code, state = yield api(roles.port, "GET", f"/api/webhooks/{refused['id']}")
    assert state["state"] == "failing" and state["last_result"] == "connection refused"
    late = Receiver()
    port = yield listen(late, closedPort)
    try:
        yield late.waitFor(_delivered("/late", 1), "the delivery once the receiver listens")
    finally:
        yield port.stopListening()
    tlsAttempts = yield roles.recorded(tls["id"], 2)
    assert {(a["status"], a["outcome"]) for a in tlsAttempts} == {(None, "retry")}
    assert all(a["error"] for a in tlsAttempts), tlsAttempts
    assert receiver.on("/tls") == []
    refusedAttempts = yield until(lambda: roles.deliveries(refused["id"]).addCallback(
        lambda a: a if a[0]["outcome"] == "delivered" else None), "the delivery recorded")
    assert {a["error"] for a in refusedAttempts[1:]} == {"connection refused"}


@pytest_twisted.inlineCallbacks
def test_a_hook_failing_too_long_is_disabled_and_other_hooks_hear_of_it(broker, amqp, receiver,
                                                                       twistd, tmp_path):
    roles = Roles(twistd, broker, amqp, tmp_path, "--webhook-disable-after", "1")
    yield roles.startWeb()
    yield roles.startWebhooks()
    receiver.script("/dead", *([500] * 100))
    dead = yield roles.register("deploy.event", receiver.url + "/dead")
    yield roles.register("resmon.webhook", receiver.url + "/watch")
    yield roles.bound("bound to 2 keys")
    yield roles.publish("deploy.event", {"n": 1})
    yield receiver.waitFor(lambda r: r.on("/watch"), "the resmon.webhook event")
    event = receiver.on("/watch")[0]["json"]
    assert event["key"] == "resmon.webhook"
    assert (event["event"]["kind"], event["event"]["hook"], event["event"]["state"]) == (
        "webhook", dead["id"], "disabled")
    code, state = yield api(roles.port, "GET", f"/api/webhooks/{dead['id']}")
    assert state["state"] == "disabled" and state["last_result"] == "500"


@pytest_twisted.inlineCallbacks
def test_registry_persisted_across_restart_and_validated(broker, amqp, twistd, tmp_path):
    roles = Roles(twistd, broker, amqp, tmp_path)
    web = yield roles.startWeb()
    hook = yield roles.register("*.status", "http://127.0.0.1:9/x")
    yield roles.register("web-01.#", "http://127.0.0.1:9/y")
    code, answer = yield api(roles.port, "POST", "/api/webhooks",
                             {"key": "a..b", "url": "http://127.0.0.1:9/"})
    assert (code, answer["field"]) == (400, "key")
    code, answer = yield api(roles.port, "POST", "/api/webhooks",
                             {"key": "a.b", "url": "file:///etc/passwd"})
    assert (code, answer["field"]) == (400, "url")
    code, answer = yield api(roles.port, "POST", "/api/webhooks",
                             {"key": "a.b", "url": "http://127.0.0.1:9/"}, contentType="text/plain")
    assert code == 415
    assert (yield web.stop())
    # Without --webhook-allow-private this time: loopback targets are refused.
    roles.extra = []
    roles.common = lambda: ["--broker", broker, "--exchange", roles.exchange, "--state-dir",
                            roles.stateDir]
    yield roles.startWeb(label="web-again")
    code, listed = yield api(roles.port, "GET", "/api/webhooks")
    assert [h["id"] for h in listed["webhooks"]][0] == hook["id"]
    assert {h["key"] for h in listed["webhooks"]} == {"*.status", "web-01.#"}
    code, answer = yield api(roles.port, "POST", "/api/webhooks",
                             {"key": "a.b", "url": "http://127.0.0.1:9/"})
    assert (code, answer["field"]) == (400, "url") and "private" in answer["error"]
    code, answer = yield api(roles.port, "POST", "/api/webhooks",
                             {"key": "a.b", "url": "http://localhost:9/"})
    assert (code, answer["field"]) == (400, "url")
    code, answer = yield api(roles.port, "DELETE", "/api/webhooks?key=web-01.%23")
    assert code == 200 and len(answer["deleted"]) == 1
    code, _ = yield api(roles.port, "DELETE", f"/api/webhooks/{hook['id']}")
    assert code == 200
    code, _ = yield api(roles.port, "GET", f"/api/webhooks/{hook['id']}")
    assert code == 404
    code, listed = yield api(roles.port, "GET", "/api/webhooks")
    assert listed == {"webhooks": []}


@pytest_twisted.inlineCallbacks
def test_sigkill_during_a_retry_loses_nothing(broker, amqp, receiver, twistd, tmp_path):
    roles = Roles(twistd, broker, amqp, tmp_path)
    yield roles.startWeb()
    first = yield roles.startWebhooks()
    receiver.script("/down", *([503] * 1000))
    hook = yield roles.register("deploy.event", receiver.url + "/down")
    yield roles.bound("bound to 1 keys")
    for n in range(3):
        yield roles.publish("deploy.event", {"n": n})

    yield roles.recorded(hook["id"], 2)
    first.expectUncleanExit()
    first.signal("KILL")
    yield first.ended
    receiver.scripts["/down"] = []
    # Published while no webhooks process runs: kept by the durable queue.
    yield roles.publish("deploy.event", {"n": 3})
    yield roles.startWebhooks(label="webhooks-again")
    yield receiver.waitFor(_delivered("/down", 4), "every delivery after the restart", timeout=60)
    delivered = [r for r in receiver.on("/down") if r["answer"] == 200]
    assert [r["json"]["event"]["n"] for r in delivered] == [0, 1, 2, 3]
    assert len({r["headers"]["x-resmon-delivery"] for r in delivered}) == 4


@pytest_twisted.inlineCallbacks
def test_two_web_processes_on_postgresql_see_each_others_changes(postgresqlDatabase, broker, amqp,
                                                                receiver, twistd, tmp_path):
    database = postgresqlDatabase
    one = Roles(twistd, broker, amqp, tmp_path / "one", "--database", database)
    two = Roles(twistd, broker, amqp, tmp_path / "two", "--database", database)
    yield defer.gatherResults([one.startWeb(label="web-one"), two.startWeb(label="web-two")])
    hook = yield one.register("*.alert", "http://127.0.0.1:9/a")
    code, seen = yield api(two.port, "GET", f"/api/webhooks/{hook['id']}")
    assert code == 200 and seen["url"] == "http://127.0.0.1:9/a"
    yield two.register("*.alert", "http://127.0.0.1:9/b")
    code, listed = yield api(one.port, "GET", "/api/webhooks?key=*.alert")
    assert [h["url"] for h in listed["webhooks"]] == ["http://127.0.0.1:9/a",
                                                      "http://127.0.0.1:9/b"]
    code, answer = yield api(two.port, "DELETE", "/api/webhooks?key=*.alert")
    assert len(answer["deleted"]) == 2
    code, listed = yield api(one.port, "GET", "/api/webhooks")
    assert listed == {"webhooks": []}
    # A webhooks process on the same database delivers what web-two registers.
    yield one.startWebhooks()
    hook = yield two.register("deploy.event", receiver.url + "/pg", secret="pg-secret")
    yield one.bound("bound to 1 keys")
    yield one.publish("deploy.event", {"via": "postgresql"})
    yield receiver.waitFor(_delivered("/pg", 1), "the delivery")
    request = receiver.on("/pg")[0]
    assert request["json"]["hook"] == hook["id"]
    assert documentedVerifier()("pg-secret", request["headers"]["x-resmon-timestamp"],
                                request["body"], request["headers"]["x-resmon-signature-256"])
    attempts = yield one.recorded(hook["id"], 1)
    assert [a["outcome"] for a in attempts] == ["delivered"]


def _queueBindings(exchange, queue):
    """
    The routing keys binding C{queue} to C{exchange}, as the broker lists them.
    """
    d = getProcessOutputAndValue(shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl", [
        "list_bindings", "-q", "-p", "/", "source_name", "destination_name", "routing_key"],
        env=dict(os.environ))

    def parse(result):
        out, err, code = result
        assert code == 0, err
        rows = [line.split("\t") for line in out.decode().splitlines()]
        return {row[2] for row in rows if len(row) == 3 and row[:2] == [exchange, queue]}
    return d.addCallback(parse)


@pytest_twisted.inlineCallbacks
def test_the_queue_is_unbound_from_the_keys_whose_hooks_are_deleted(broker, amqp, receiver,
                                                                     twistd, tmp_path):
    roles = Roles(twistd, broker, amqp, tmp_path, "--stats-interval=1")
    yield roles.startWeb()
    yield roles.startWebhooks()
    yield roles.register("kept.event", receiver.url + "/kept")
    gone = yield roles.register("gone.event", receiver.url + "/gone")
    yield roles.bound("bound to 2 keys")
    assert (yield _queueBindings(roles.exchange, roles.queue)) == {"kept.event", "gone.event"}
    code, _ = yield api(roles.port, "DELETE", f"/api/webhooks/{gone['id']}")
    assert code == 200
    yield roles.bound("unbound from 1 keys no longer registered: gone.event")
    assert (yield _queueBindings(roles.exchange, roles.queue)) == {"kept.event"}
    # The broker no longer routes the dropped key to the queue: the webhooks
    # process never sees it (no event without a hook), and the kept one flows.
    yield roles.publish("gone.event", {"v": 1, "kind": "event", "n": 1})
    yield roles.publish("kept.event", {"v": 1, "kind": "event", "n": 2})
    yield receiver.waitFor(_delivered("/kept", 1), "the delivery of the kept key")
    stats = len(roles.webhooks.output)
    yield until(lambda: defer.succeed(b"events no hook matched" in roles.webhooks.output[stats:]),
                "a stats line after the delivery")
    assert b" 0 events no hook matched" in roles.webhooks.output[stats:]
    assert receiver.on("/gone") == []
    # Registered again: bound again.
    yield roles.register("gone.event", receiver.url + "/gone")
    yield roles.bound("bound to 2 keys", times=2)
    assert (yield _queueBindings(roles.exchange, roles.queue)) == {"kept.event", "gone.event"}


@pytest_twisted.inlineCallbacks
def test_a_webhooks_process_started_after_hooks_were_deleted_unbinds_their_keys(
        broker, amqp, receiver, twistd, tmp_path):
    roles = Roles(twistd, broker, amqp, tmp_path)
    yield roles.startWeb()
    first = yield roles.startWebhooks()
    yield roles.register("kept.event", receiver.url + "/kept")
    gone = yield roles.register("gone.event", receiver.url + "/gone")
    yield roles.bound("bound to 2 keys")
    assert (yield first.stop())
    # Deleted while no webhooks process runs: the next one learns of the
    # stale binding from the bindings recorded in the registry's database.
    code, _ = yield api(roles.port, "DELETE", f"/api/webhooks/{gone['id']}")
    assert code == 200
    yield roles.startWebhooks(label="webhooks-again")
    yield roles.bound("unbound from 1 keys no longer registered: gone.event")
    assert (yield _queueBindings(roles.exchange, roles.queue)) == {"kept.event"}


def _writeUsers(path, tokens, aliceHosts):
    from resmon.auth import passwords
    from resmon.auth.usersfile import Token, User, Users, writeUsers

    def user(name, role, hosts):
        token = Token("t" + name, passwords.tokenDigest(tokens[name]), 1.0, "test")
        return User(name, None, role, hosts, (), {token.id: token})
    users = [user("ada", "admin", ())]
    if aliceHosts is not None:
        users.append(user("alice", "operator", aliceHosts))
    writeUsers(path, Users(users))


@pytest_twisted.inlineCallbacks
def test_a_hook_gets_only_the_hosts_its_owner_may_see_as_the_users_file_says_now(
        broker, amqp, receiver, twistd, tmp_path):
    from resmon.auth import passwords

    tokens = {"ada": passwords.newToken(), "alice": passwords.newToken()}
    users = str(tmp_path / "users.toml")
    _writeUsers(users, tokens, ["web-*"])
    roles = Roles(twistd, broker, amqp, tmp_path / "state", f"--users={users}")
    yield roles.startWeb()
    yield roles.startWebhooks()
    for name in ("alice", "ada"):
        code, hook = yield api(roles.port, "POST", "/api/webhooks",
                               {"key": "*.analysis", "url": f"{receiver.url}/{name}"},
                               token=tokens[name])
        assert code == 201, hook
    yield roles.bound("bound to 1 keys")

    def hosts(path):
        return [request["json"]["event"]["host"] for request in receiver.on(path)]

    @defer.inlineCallbacks
    def publishThenWait(keysAndHosts, aliceLast):
        """
        Publish analyses in order; wait until alice's hook got the last one
        it may see and ada's got them all (a hook's deliveries come in
        order, so nothing published before is still on its way).
        """
        for key, host in keysAndHosts:
            yield roles.publish(key, {"v": 1, "kind": "analysis", "host": host})
        adaWants = len(hosts("/ada")) + len(keysAndHosts)
        yield receiver.waitFor(lambda r: len(hosts("/ada")) >= adaWants, "ada's deliveries")
        yield receiver.waitFor(lambda r: hosts("/alice")[-1:] == [aliceLast],
                               f"alice's delivery of {aliceLast}")

    # A forged body (a db host under a web key) reaches only the admin.
    yield publishThenWait([("db-01.analysis", "db-01"), ("web-01.analysis", "web-01"),
                           ("web-02.analysis", "db-02"), ("web-03.analysis", "web-03")],
                          "web-03")
    assert hosts("/alice") == ["web-01", "web-03"]
    assert hosts("/ada") == ["db-01", "web-01", "db-02", "web-03"]

    # The users file changes: the webhooks role reads it again by itself.
    reads = roles.webhooks.waitForOutputCount(b"read the users file", 1, timeout=15)
    _writeUsers(users, tokens, ["db-*"])
    yield reads
    yield publishThenWait([("web-04.analysis", "web-04"), ("db-04.analysis", "db-04")], "db-04")
    assert hosts("/alice") == ["web-01", "web-03", "db-04"]

    # Alice is no longer a user: her hook gets nothing, and when she is back
    # it gets only what came after.
    reads = roles.webhooks.waitForOutputCount(b"read the users file", 2, timeout=15)
    _writeUsers(users, tokens, None)
    yield reads
    yield roles.publish("db-05.analysis", {"v": 1, "kind": "analysis", "host": "db-05"})
    yield receiver.waitFor(lambda r: hosts("/ada")[-1:] == ["db-05"], "ada's delivery of db-05")
    reads = roles.webhooks.waitForOutputCount(b"read the users file", 3, timeout=15)
    _writeUsers(users, tokens, ["db-*"])
    yield reads
    yield publishThenWait([("db-06.analysis", "db-06")], "db-06")
    assert hosts("/alice") == ["web-01", "web-03", "db-04", "db-06"]


def _resmonUsers(path, *args):
    import subprocess
    import sys
    command = os.path.join(os.path.dirname(sys.executable), "resmon-users")
    done = subprocess.run([command, path] + list(args), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest_twisted.inlineCallbacks
def test_a_user_added_under_a_removed_users_name_gets_none_of_their_hooks(
        broker, amqp, receiver, twistd, tmp_path):
    """
    Alice registers a hook while the users file has no ids (as an older
    resmon-users wrote it), and another once resmon-users gave her one; she
    is removed with resmon-users, and another user is added as alice (same
    role, same hosts): neither old hook gets anything more, and the new
    alice neither sees nor can delete them; her own hook gets what she may
    see.
    """
    from resmon.auth import passwords
    from test_integration_metrics import scrape, value

    users = str(tmp_path / "users.toml")
    tokens = {"ada": passwords.newToken(), "alice": passwords.newToken()}
    _writeUsers(users, tokens, ["web-*"])              # no ids, as before they came
    metricsPort = freePort()
    roles = Roles(twistd, broker, amqp, tmp_path / "state", f"--users={users}")
    yield roles.startWeb()
    yield roles.startWebhooks(f"--metrics-port={metricsPort}")

    @defer.inlineCallbacks
    def register(path, key, token):
        code, hook = yield api(roles.port, "POST", "/api/webhooks",
                               {"key": key, "url": f"{receiver.url}/{path}"}, token=token)
        assert code == 201 and hook["owner"] == "alice", hook
        return hook

    @defer.inlineCallbacks
    def replaceUsers(*commands):
        """
        Run resmon-users on a copy, put in place at once: both processes
        read it once.
        """
        reads = [process.waitForOutputCount(b"read the users file", replaceUsers.reads + 1,
                                            timeout=15) for process in (roles.web, roles.webhooks)]
        changed = str(tmp_path / "users-changed.toml")
        shutil.copy(users, changed)
        printed = [_resmonUsers(changed, *command) for command in commands]
        os.replace(changed, users)
        yield defer.gatherResults(reads)
        replaceUsers.reads += 1
        return printed
    replaceUsers.reads = 0

    # Each hook on a key of its own: the webhooks role's log says when it knows of it.
    legacy = yield register("legacy", "*.analysis", tokens["alice"])
    assert legacy["owner_id"] is None
    yield roles.bound("bound to 1 keys")
    yield replaceUsers(("set", "ada", "--role=admin"))   # every user gets an id
    old = yield register("old", "web-01.analysis", tokens["alice"])
    assert len(old["owner_id"]) == 32
    yield roles.bound("bound to 2 keys")
    yield roles.publish("web-01.analysis", {"v": 1, "kind": "analysis", "host": "web-01"})
    yield receiver.waitFor(lambda r: len(r.on("/old")) == 1 and len(r.on("/legacy")) == 1,
                           "both of alice's deliveries")

    *_, newAlice = yield replaceUsers(
        ("remove", "alice"), ("add", "alice", "--role=operator", "--hosts=web-*", "--no-password"),
        ("token", "alice"))
    code, listed = yield api(roles.port, "GET", "/api/webhooks", token=newAlice)
    assert (code, listed) == (200, {"webhooks": []})
    for hook in (old, legacy):
        code, _ = yield api(roles.port, "DELETE", f"/api/webhooks/{hook['id']}", token=newAlice)
        assert code == 404
    new = yield register("new", "web-02.analysis", newAlice)
    yield roles.bound("bound to 3 keys")
    yield roles.publish("web-01.analysis", {"v": 1, "kind": "analysis", "host": "web-01"})
    yield roles.publish("web-02.analysis", {"v": 1, "kind": "analysis", "host": "web-02"})
    yield receiver.waitFor(lambda r: len(r.on("/new")) == 1, "the new alice's delivery")
    # Judged in order, the last with the new hook: the old hooks' owner is gone
    # (web-01 for legacy and old, web-02 for legacy).
    samples = yield scrape(metricsPort)
    assert value(samples, "resmon_webhook_deliveries_total", result="owner-gone") == 3
    for path, hosts in (("/old", ["web-01"]), ("/legacy", ["web-01"]), ("/new", ["web-02"])):
        assert [r["json"]["event"]["host"] for r in receiver.on(path)] == hosts, path
    # The admin sees the three, under the one name, with the ids they are bound to.
    code, listed = yield api(roles.port, "GET", "/api/webhooks", token=tokens["ada"])
    assert sorted((h["id"], h["owner_id"]) for h in listed["webhooks"]) == sorted(
        [(legacy["id"], None), (old["id"], old["owner_id"]), (new["id"], new["owner_id"])])


@pytest_twisted.inlineCallbacks
def test_a_standalone_process_filters_hooks_by_its_web_roles_users(receiver, twistd, tmp_path):
    from resmon.auth import passwords
    from test_integration_metrics import scrapeUntil, value

    tokens = {"ada": passwords.newToken(), "alice": passwords.newToken()}
    users = str(tmp_path / "users.toml")
    _writeUsers(users, tokens, ["nowhere-*"])
    port, metricsPort = freePort(), freePort()
    standalone = twistd("webhooks-standalone-users", "--role=standalone", f"--users={users}",
                        f"--port={port}", "--interface=127.0.0.1", f"--metrics-port={metricsPort}",
                        f"--state-dir={tmp_path}", "--webhook-allow-private", "--interval=0.2")
    yield standalone.waitForOutput(b"now delivers webhooks", timeout=30)
    for name in ("alice", "ada"):
        code, hook = yield api(port, "POST", "/api/webhooks",
                               {"key": "*.analysis", "url": f"{receiver.url}/{name}"},
                               token=tokens[name])
        assert code == 201, hook
    yield receiver.waitFor(lambda r: len(r.on("/ada")) >= 3, "three of this machine's analyses")
    # Alice's hook was there before ada's: it was left out of each of them.
    samples = yield scrapeUntil(
        metricsPort, lambda s: (value(s, "resmon_webhook_deliveries_total", result="not-visible")
                                or 0) >= 3, "analyses left out for alice")
    assert receiver.on("/alice") == []
    assert not value(samples, "resmon_webhook_deliveries_total", result="owner-gone")
