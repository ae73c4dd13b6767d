"""
Unit tests of the webhook registry's parts: validation, signing, backoff,
the SQLite store (real, in a temporary directory), the dispatcher's order
and retries with a fake poster and a L{Clock}.
"""

import hashlib
import json
import hmac
import random
import uuid

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import Logger, formatEvent

from resmon import wire
from resmon.webhooks import signing, store as storage, validation
from resmon.webhooks.addresses import isPublic
from resmon.webhooks.delivery import WebhookDispatcher
from resmon.webhooks.registry import WebhookRegistry
from webhooksupport import POSTGRESQL, postgresqlAdmin


@pytest.mark.parametrize("key", ["*.alert", "web-01.#", "deploy.event", "*.status", "#", "a_b.c-d"])
def test_keys_accepted(key):
    assert validation.checkKey(key) == key


@pytest.mark.parametrize("key", ["", "a..b", ".a", "a.", "a b", "a.*x", "é.x", "a" * 256, None, 3,
                                 "web-01.alert\n", "#\n"])
def test_keys_refused(key):
    with pytest.raises(validation.InvalidWebhook) as e:
        validation.checkKey(key)
    assert e.value.field == "key"


@pytest.mark.parametrize("url", ["ftp://x/", "x", "http://", "javascript:alert(1)",
                                 "http://a b/", "http://x/#f", "http://x:99999/", None,
                                 "https://user:pw@example.com/h", "http://token@example.com/"])
def test_urls_refused(url):
    with pytest.raises(validation.InvalidWebhook) as e:
        validation.checkURL(url)
    assert e.value.field == "url"


def test_only_the_origin_of_a_url_is_shown():
    assert validation.urlOrigin("https://hooks.example.com:8443/T000/B000/secret?x=1") == \
        "https://hooks.example.com:8443"
    assert validation.urlOrigin("http://u:p@example.com/x") == "http://example.com"


def test_url_port_defaults():
    assert validation.checkURL("https://example.com/h")[1:] == ("example.com", 443)
    assert validation.checkURL("http://example.com:8080/h")[1:] == ("example.com", 8080)


@pytest.mark.parametrize("document, field", [
    ({"key": "a.b", "url": "http://x/", "extra": 1}, "extra"),
    ({"url": "http://x/"}, "key"),
    ({"key": "a.b", "url": "http://x/", "secret": ""}, "secret"),
    ({"key": "a.b", "url": "http://x/", "secret": 5}, "secret"),
])
def test_registration_refused_naming_the_field(document, field):
    with pytest.raises(validation.InvalidWebhook) as e:
        validation.checkRegistration(document)
    assert e.value.field == field


@pytest.mark.parametrize("address, public", [
    ("127.0.0.1", False), ("10.1.2.3", False), ("192.168.1.1", False), ("172.16.0.1", False),
    ("169.254.169.254", False), ("::1", False), ("fe80::1", False), ("fc00::1", False),
    ("::ffff:127.0.0.1", False), ("0.0.0.0", False), ("100.64.0.1", False),
    ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("::ffff:8.8.8.8", True),
])
def test_public_addresses(address, public):
    assert isPublic(address) is public


@pytest_twisted.inlineCallbacks
def test_private_targets_refused_unless_allowed():
    def resolve(host, port):
        return defer.succeed({"inside": ["10.0.0.5"], "mixed": ["8.8.8.8", "127.0.0.1"],
                              "outside": ["8.8.8.8"]}[host])
    for host in ("inside", "mixed"):
        with pytest.raises(validation.InvalidWebhook) as e:
            yield validation.checkTarget(host, 80, resolve, False)
        assert e.value.field == "url" and "private" in str(e.value)
        yield validation.checkTarget(host, 80, resolve, True)
    yield validation.checkTarget("outside", 80, resolve, False)

    def fails(host, port):
        return defer.fail(OSError("no such name"))
    with pytest.raises(validation.InvalidWebhook):
        yield validation.checkTarget("nowhere", 80, fails, True)


def test_signature_is_the_documented_recipe():
    body = b'{"delivery":"d"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signing.signature("s3cret", "1700000000", body) == "sha256=" + expected


def test_backoff_doubles_with_jitter_within_bounds():
    rng = random.Random(1)
    for attempt in range(1, 40):
        delay = signing.backoff(attempt, rng)
        ceiling = min(600, 2 ** (attempt - 1))
        assert max(1, ceiling / 2) <= delay <= ceiling
    assert signing.backoff(30, rng) >= 300


def _store(tmp_path):
    pool, dialect, where = storage.openPool(None, str(tmp_path))
    return storage.WebhookStore(pool, dialect, where)




@pytest.fixture(params=["sqlite", "postgresql"])
def anyStore(request, tmp_path):
    """
    A store in SQLite under C{tmp_path}, or in a new database of the real
    PostgreSQL (dropped afterwards).
    """
    if request.param == "sqlite":
        store = _store(tmp_path)
        yield store
        store.close()
        return
    name = "resmon_unit_" + uuid.uuid4().hex[:12]
    admin = postgresqlAdmin()
    admin.cursor().execute(f"CREATE DATABASE {name}")
    pool, dialect, where = storage.openPool(POSTGRESQL + name, str(tmp_path))
    store = storage.WebhookStore(pool, dialect, where)
    try:
        yield store
    finally:
        store.close()
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _hook(hookId, key="a.b", url="http://127.0.0.1:1/"):
    return storage.Hook(hookId, key, url, "secret", 1.0, storage.ACTIVE)


@pytest_twisted.inlineCallbacks
def test_store_limits_list_remove(anyStore):
    store = anyStore
    version = yield store.version()
    assert (yield store.add(_hook("h1"), 3, 2)) is None
    assert (yield store.add(_hook("h2"), 3, 2)) is None
    assert (yield store.add(_hook("h3"), 3, 2)) == "per-key"
    assert (yield store.add(_hook("h3", key="c.d"), 3, 2)) is None
    assert (yield store.add(_hook("h4", key="e.f"), 3, 2)) == "hooks"
    assert (yield store.version()) == version + 3
    assert [h.id for h in (yield store.hooks("a.b"))] == ["h1", "h2"]
    assert (yield store.remove(key="a.b")) == ["h1", "h2"]
    assert [h.id for h in (yield store.hooks())] == ["h3"]
    assert (yield store.remove(hookId="nope")) == []


@pytest_twisted.inlineCallbacks
def test_store_backlog_and_attempts_are_bounded(anyStore):
    store = anyStore
    yield store.add(_hook("h1"), 10, 10)
    deliveries = [storage.Pending(None, f"d{i}", "h1", "a.b", b"{}", float(i), 0, 0.0)
                  for i in range(12)]
    dropped = yield store.enqueue(deliveries, 10)
    assert dropped == {"h1": 2}
    pending = yield store.pending("h1", 100)
    assert [p.id for p in pending] == [f"d{i}" for i in range(2, 12)]
    for n in range(105):
        yield store.recordAttempt(pending[0], n + 1, 100.0 + n, 500, None, 0.1, "retry",
                                  200.0, disableAfter=None)
    attempts = yield store.attempts("h1")
    assert len(attempts) == storage.KEPT_ATTEMPTS and attempts[0]["attempt"] == 105
    hook = yield store.hook("h1")
    assert hook.shownState == storage.FAILING and hook.failingSince == 100.0
    hook = yield store.recordAttempt(pending[0], 106, 300.0, None, "timeout", 0.1, "retry",
                                     400.0, disableAfter=150.0)
    assert hook.state == storage.DISABLED


@pytest_twisted.inlineCallbacks
def test_the_times_of_trims_are_forgotten_for_hooks_gone(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "TRIMMED_KEPT", 3)
    store = _store(tmp_path)
    try:
        yield store.add(_hook("h1"), 10, 10)
        yield store.enqueue([storage.Pending(None, "d1", "h1", "a.b", b"{}", 1.0, 0, 0.0)], 10)
        pending = yield store.pending("h1", 10)
        # Hooks deleted through another process long ago, and one trimmed just now.
        store._trimmed = {f"gone{n}": -100.0 for n in range(5)}
        yield store.recordDelivered([(pending[0], 1, 2.0, 200, 0.01)])
        assert set(store._trimmed) == {"h1"}
        assert (yield store.attempts("h1"))[0]["outcome"] == "delivered"
    finally:
        store.close()


class _Deadlock(Exception):
    pgcode = "40P01"


class DeadlockingPool:
    """
    A pool whose first C{deadlocks} transactions PostgreSQL rolled back to
    break a deadlock.
    """

    def __init__(self, deadlocks):
        self.deadlocks = deadlocks
        self.runs = 0

    def runInteraction(self, function, *args):
        self.runs += 1
        if self.runs <= self.deadlocks:
            return defer.fail(_Deadlock("deadlock detected"))
        return defer.succeed(("done", args))


@pytest_twisted.inlineCallbacks
def test_store_runs_a_transaction_again_after_a_deadlock():
    store = storage.WebhookStore(DeadlockingPool(2), "postgresql")
    store._ready = True
    assert (yield store.version()) == ("done", ())
    assert store.pool.runs == 3
    store = storage.WebhookStore(DeadlockingPool(storage.RETRIES + 1), "postgresql")
    store._ready = True
    with pytest.raises(_Deadlock):
        yield store.version()
    assert store.pool.runs == storage.RETRIES + 1


@pytest_twisted.inlineCallbacks
def test_store_lease_held_by_one_owner(anyStore):
    store = anyStore
    assert (yield store.claimLease("a", 100.0, 10))
    assert not (yield store.claimLease("b", 105.0, 10))
    assert (yield store.claimLease("a", 105.0, 10))
    assert (yield store.claimLease("b", 116.0, 10))
    yield store.releaseLease("b")
    assert (yield store.claimLease("a", 117.0, 10))


class FakePoster:
    """
    Answers each POST with the next of C{answers} (a status, or an
    exception to fail with), recording what was posted.
    """

    def __init__(self, answers):
        self.answers = list(answers)
        self.posted = []

    def post(self, url, headers, body):
        self.posted.append((url, headers, body))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(answer)

    def close(self):
        pass


@defer.inlineCallbacks
def _until(predicate, what, timeout=10):
    deadline = reactor.seconds() + timeout
    while not (yield predicate()):
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        yield deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.inlineCallbacks
def test_dispatcher_retries_in_order_then_delivers_once(tmp_path):
    store = _store(tmp_path)
    clock = Clock()
    clock.advance(1000)
    published = []
    poster = FakePoster([500, ConnectionRefusedError(), 200, 200])
    dispatcher = WebhookDispatcher(store, poster, clock, lambda k, b: published.append((k, b)),
                                   retryFor=3600, disableAfter=3600, maxBacklog=100,
                                   rng=random.Random(0))
    try:
        yield store.add(_hook("h1", key="*.event"), 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        dispatcher.setDelivering(True)
        assert dispatcher.eventReceived("x.other", b'{"n":0}') is None
        yield dispatcher.eventReceived("deploy.event", b'{"n":1}')
        yield dispatcher.eventReceived("deploy.event", b'{"n":2}')
        yield _until(lambda: defer.succeed(len(poster.posted) == 1), "the first attempt")
        yield _until(lambda: store.attempts("h1").addCallback(len), "the attempt recorded")
        clock.advance(1.0)
        yield _until(lambda: defer.succeed(len(poster.posted) == 2), "the second attempt")
        yield _until(lambda: store.attempts("h1").addCallback(lambda a: len(a) == 2), "2 attempts")
        clock.advance(2.0)
        yield _until(lambda: store.pendingCount("h1").addCallback(lambda n: n == 0), "delivered")
        events = [wire.loadJSON(body)["event"]["n"] for _, _, body in poster.posted]
        assert events == [1, 1, 1, 2]
        headers = poster.posted[-1][1]
        body = poster.posted[-1][2]
        assert headers["X-Resmon-Signature-256"] == signing.signature(
            "secret", headers["X-Resmon-Timestamp"], body)
        assert headers["X-Resmon-Event"] == "deploy.event"
        assert headers["X-Resmon-Delivery"] == wire.loadJSON(body)["delivery"]
        attempts = yield store.attempts("h1")
        assert [(a["attempt"], a["outcome"]) for a in reversed(attempts)] == [
            (1, "retry"), (2, "retry"), (3, "delivered"), (1, "delivered")]
        assert attempts[-2]["error"] == "connection refused"
        assert (yield store.hook("h1")).shownState == storage.ACTIVE
        assert published == []
    finally:
        yield dispatcher.stop()
        store.close()
    assert clock.getDelayedCalls() == []


class StrictPoster(FakePoster):
    """
    A poster that refuses at once, as the real one does, a header that is
    not ASCII.
    """

    def post(self, url, headers, body):
        for value in headers.values():
            value.encode("ascii")
        return FakePoster.post(self, url, headers, body)


@defer.inlineCallbacks
def _deliveringToOneHook(tmp_path, poster):
    """
    A store with one hook on C{#} and a dispatcher delivering to it through
    C{poster}: C{(store, clock, dispatcher)}.
    """
    store = _store(tmp_path)
    clock = Clock()
    clock.advance(1000)
    dispatcher = WebhookDispatcher(store, poster, clock, lambda k, b: None, retryFor=3600,
                                   disableAfter=3600, maxBacklog=100, rng=random.Random(0))
    yield store.add(_hook("h1", key="#"), 10, 10)
    dispatcher.setHooks((yield store.hooks()))
    dispatcher.setDelivering(True)
    return store, clock, dispatcher


@pytest_twisted.inlineCallbacks
def test_a_routing_key_that_is_not_ascii_is_delivered_and_holds_no_other_up(tmp_path):
    """
    A key of any UTF-8 (the bus allows it) goes in X-Resmon-Event
    percent-encoded; the deliveries after it go out as well.
    """
    poster = StrictPoster([])
    store, clock, dispatcher = yield _deliveringToOneHook(tmp_path, poster)
    try:
        for key in ("web-01.alert", "web-é.alert", "web-02.alert"):
            yield dispatcher.eventReceived(key, b'{"n":1}')
        yield _until(lambda: store.pendingCount("h1").addCallback(lambda n: n == 0), "delivered")
        assert [headers["X-Resmon-Event"] for _, headers, _ in poster.posted] == [
            "web-01.alert", "web-%C3%A9.alert", "web-02.alert"]
        assert [wire.loadJSON(body)["key"] for _, _, body in poster.posted][1] == "web-é.alert"
    finally:
        yield dispatcher.stop()
        store.close()


class RaisingPoster(FakePoster):
    """
    Raises at once (not a failed Deferred) on its first POST.
    """

    def post(self, url, headers, body):
        if not self.posted:
            self.posted.append((url, headers, body))
            raise RuntimeError("refused before sending")
        return FakePoster.post(self, url, headers, body)


@pytest_twisted.inlineCallbacks
def test_a_poster_that_raises_at_once_is_an_attempt_that_failed(tmp_path):
    poster = RaisingPoster([])
    store, clock, dispatcher = yield _deliveringToOneHook(tmp_path, poster)
    try:
        yield dispatcher.eventReceived("deploy.event", b'{"n":1}')
        yield _until(lambda: store.attempts("h1").addCallback(len), "the attempt recorded")
        attempts = yield store.attempts("h1")
        assert (attempts[0]["outcome"], attempts[0]["error"]) == (
            "retry", "RuntimeError: refused before sending")
        clock.advance(2.0)
        yield _until(lambda: store.pendingCount("h1").addCallback(lambda n: n == 0), "delivered")
        assert len(poster.posted) == 2
    finally:
        yield dispatcher.stop()
        store.close()


class SlowPoster(FakePoster):
    """
    Answers 200 after a turn of the reactor: the deliveries' recordings
    and the reads ahead run while POSTs are in flight.
    """

    def post(self, url, headers, body):
        self.posted.append((url, headers, body))
        return deferLater(reactor, 0, lambda: 200)


@pytest_twisted.inlineCallbacks
def test_dispatcher_sends_each_delivery_once_in_order_across_batches(anyStore):
    # More than two batches (read ahead while the last of the one before go
    # out), stored in waves while the worker delivers, and recorded in the
    # background: none sent twice, none skipped, in order, all recorded.
    from resmon.webhooks import delivery

    store = anyStore
    clock = Clock()
    clock.advance(1000)
    poster = SlowPoster([])
    dispatcher = WebhookDispatcher(store, poster, clock, lambda k, b: None, retryFor=3600,
                                   disableAfter=3600, maxBacklog=10_000)
    waves, perWave = 5, delivery.BATCH // 2 + 7
    try:
        yield store.add(_hook("h1", key="*.event"), 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        dispatcher.setDelivering(True)
        for wave in range(waves):
            yield defer.gatherResults([
                dispatcher.eventReceived("x.event", b'{"n":%d}' % (wave * perWave + n))
                for n in range(perWave)])
            yield deferLater(reactor, 0.01, lambda: None)
        total = waves * perWave
        yield _until(lambda: store.pendingCount("h1").addCallback(lambda n: n == 0),
                     "every delivery recorded", timeout=30)
        events = [wire.loadJSON(body)["event"]["n"] for _, _, body in poster.posted]
        assert events == list(range(total))
        assert dispatcher.counters["delivered"] == total
    finally:
        yield dispatcher.stop()
    assert clock.getDelayedCalls() == []


@pytest_twisted.inlineCallbacks
def test_a_delivery_stored_late_below_those_read_is_delivered_within_a_second(tmp_path):
    # A caught-up worker reads on from its last delivery read; a delivery
    # another process stored with a lower seq (a late commit on PostgreSQL)
    # is found by the read from the first within FULL_READ_INTERVAL.
    from resmon.webhooks import delivery

    store = _store(tmp_path)
    clock = Clock()
    clock.advance(1000)
    poster = FakePoster([])
    dispatcher = WebhookDispatcher(store, poster, clock, lambda k, b: None, retryFor=3600,
                                   disableAfter=3600, maxBacklog=100)

    def posted():
        return [wire.loadJSON(body)["event"]["n"] for _, _, body in poster.posted]

    def delivered(count):
        return _until(lambda: store.pendingCount("h1").addCallback(
            lambda n: n == 0 and len(poster.posted) == count), f"{count} delivered")
    try:
        yield store.add(_hook("h1", key="*.event"), 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        dispatcher.setDelivering(True)
        yield dispatcher.eventReceived("x.event", b'{"n":0}')
        yield delivered(1)
        yield dispatcher.eventReceived("x.event", b'{"n":1}')
        yield delivered(2)

        def storeLate(cursor):
            cursor.execute(
                "INSERT INTO webhook_pending (seq, id, hook, rkey, body, created, attempts, "
                "next_attempt) VALUES (1, 'late', 'h1', 'x.event', ?, 1000.0, 0, 0.0)",
                ('{"event": {"n": "late"}}',))
        yield store.pool.runInteraction(storeLate)
        yield dispatcher.eventReceived("x.event", b'{"n":2}')
        yield _until(lambda: defer.succeed(len(poster.posted) == 3), "the third event")
        clock.advance(delivery.FULL_READ_INTERVAL)
        yield delivered(4)
        assert sorted(posted(), key=str) == [0, 1, 2, "late"]
    finally:
        yield dispatcher.stop()
        store.close()
    assert clock.getDelayedCalls() == []


@pytest_twisted.inlineCallbacks
def test_dispatcher_keeps_the_backlog_cap_when_storing_event_by_event(tmp_path):
    store = _store(tmp_path)
    clock = Clock()
    dispatcher = WebhookDispatcher(store, FakePoster([]), clock, lambda k, b: None,
                                   retryFor=3600, disableAfter=3600, maxBacklog=10)
    try:
        yield store.add(_hook("h1", key="*.event"), 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        for n in range(25):
            yield dispatcher.eventReceived("x.event", b'{"n":%d}' % n)
        assert (yield store.pendingCount("h1")) == 10
        assert dispatcher.counters["dropped-backlog"] == 15
        pending = yield store.pending("h1", 100)
        assert [wire.loadJSON(p.body)["event"]["n"] for p in pending] == list(range(15, 25))
    finally:
        yield dispatcher.stop()
        store.close()


@pytest_twisted.inlineCallbacks
def test_dispatcher_disables_a_hook_failing_too_long_and_says_so(tmp_path):
    store = _store(tmp_path)
    clock = Clock()
    clock.advance(1000)
    published = []
    poster = FakePoster([503] * 10)
    dispatcher = WebhookDispatcher(store, poster, clock, lambda k, b: published.append((k, b)),
                                   retryFor=3600, disableAfter=2.5, maxBacklog=100,
                                   rng=random.Random(0))
    try:
        yield store.add(_hook("h1", key="*.event"), 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        dispatcher.setDelivering(True)
        yield dispatcher.eventReceived("deploy.event", b'{"n":1}')
        for attempts in (1, 2):
            yield _until(lambda: defer.succeed(len(poster.posted) == attempts), "an attempt")
            yield _until(lambda: store.attempts("h1").addCallback(lambda a: len(a) == attempts),
                         "the attempt recorded")
            clock.advance(signing.MAX_BACKOFF)
        yield _until(lambda: defer.succeed(bool(published)), "the disabled event")
        assert len(poster.posted) == 2
        key, body = published[0]
        assert key == wire.WEBHOOK_EVENT_KEY
        assert wire.loadJSON(body)["state"] == "disabled" and wire.loadJSON(body)["hook"] == "h1"
        # Only the origin of its URL: the path may hold the receiver's token.
        assert wire.loadJSON(body)["url"] == "http://127.0.0.1:1"
        assert (yield store.hook("h1")).state == storage.DISABLED
        assert "*.event" not in dispatcher.keys()
    finally:
        yield dispatcher.stop()
        store.close()


@pytest_twisted.inlineCallbacks
def test_registry_generates_a_secret_and_enforces_limits(tmp_path):
    store = _store(tmp_path)
    registry = WebhookRegistry(store, reactor, allowPrivate=False, maxHooks=5, maxPerKey=1,
                               resolve=lambda host, port: defer.succeed(["8.8.8.8"]))
    try:
        hook = yield registry.register({"key": "*.alert", "url": "https://example.com/h"})
        assert len(hook["secret"]) == 64 and hook["state"] == "active"
        with pytest.raises(validation.InvalidWebhook) as e:
            yield registry.register({"key": "*.alert", "url": "https://example.com/2"})
        assert e.value.field == "key"
        listed = yield registry.list()
        assert "secret" not in listed[0]
        delivery = yield registry.ping(hook["id"])
        pending = yield store.pending(hook["id"])
        assert [p.id for p in pending] == [delivery]
        assert wire.loadJSON(pending[0].body)["key"] == wire.WEBHOOK_PING_KEY
        assert (yield registry.ping("nope")) is None
    finally:
        store.close()


@pytest_twisted.inlineCallbacks
def test_service_binds_its_durable_queue_to_the_keys_as_they_are_registered_and_unbinds(
        tmp_path):
    from fakebus import FakeBus
    from resmon.services.webhooks import WebhooksService

    store = _store(tmp_path)
    clock = Clock()
    bus = FakeBus()
    dispatcher = WebhookDispatcher(store, FakePoster([]), clock, bus.publish, retryFor=3600,
                                   disableAfter=3600, maxBacklog=100)
    webhooks = WebhooksService(bus, store, dispatcher, clock, "q.hooks", pollInterval=0.5)
    webhooks.startService()
    try:
        yield _until(lambda: defer.succeed(dispatcher.delivering), "the lease")
        assert bus.made == []
        yield store.add(_hook("h1", key="*.alert"), 10, 10)
        clock.advance(0.5)
        yield _until(lambda: defer.succeed(len(bus.made) == 1), "the subscription")
        assert bus.last.patterns == ["*.alert"]
        assert (bus.last.options["queue"], bus.last.options["durable"]) == ("q.hooks", True)
        yield store.add(_hook("h2", key="deploy.#"), 10, 10)
        clock.advance(0.5)
        yield _until(lambda: defer.succeed(bus.last.patterns == ["*.alert", "deploy.#"]),
                     "the new subscription")
        assert len(bus.made) == 1
        yield store.remove(hookId="h2")
        clock.advance(0.5)
        yield _until(lambda: defer.succeed(set(dispatcher.hooks) == {"h1"}), "the removal")
        # Bindings follow the registry both ways: subscribed again without
        # the key, which is unbound once the old subscription is cancelled.
        yield _until(lambda: defer.succeed(bus.unbound == [("q.hooks", ["deploy.#"])]),
                     "the unbinding")
        assert bus.last.patterns == ["*.alert"] and len(bus.made) == 1
        assert webhooks.unbindPending == frozenset()
        yield bus.last.handler("web-01.alert", b'{"v":1}')
        assert (yield store.pendingCount("h1")) == 1
        yield store.remove(hookId="h1")
        clock.advance(0.5)
        yield _until(lambda: defer.succeed(len(bus.unbound) == 2), "the last unbinding")
        assert bus.unbound[-1] == ("q.hooks", ["*.alert"]) and bus.made == []
    finally:
        yield webhooks.stopService()
        store.close()
    assert bus.made == []
    assert clock.getDelayedCalls() == []


def test_options_roles_and_checks():
    from twisted.python import usage

    from resmon import tap

    assert "webhooks" in tap.ROLES["server"] and "webhooks" in tap.ROLES["standalone"]
    assert tap.ROLES["webhooks"] == ("webhooks",)
    options = tap.Options()
    options.parseOptions(["--role=webhooks", "--database", "postgresql://u@h/db",
                          "--webhook-retry-for", "60", "--webhook-allow-private"])
    assert options["webhook-retry-for"] == 60.0 and options["webhook-allow-private"]
    assert options["webhook-max-backlog"] == 10_000 and options["webhook-timeout"] == 10.0
    for arguments, wrong in ((["--database", "mysql://x"], "--database"),
                             (["--webhook-timeout", "0"], "--webhook-timeout"),
                             (["--webhook-max-backlog", "x"], "--webhook-max-backlog"),
                             (["--webhook-queue", ""], "--webhook-queue")):
        with pytest.raises((usage.UsageError, SystemExit)) as e:
            tap.Options().parseOptions(arguments)
        assert wrong in str(e.value)


@pytest_twisted.inlineCallbacks
def test_service_stops_delivering_once_its_lease_runs_out_unrenewed(tmp_path):
    from fakebus import FakeBus
    from resmon.services.webhooks import LEASE_DURATION, WebhooksService

    store = _store(tmp_path)
    clock = Clock()
    clock.advance(1000)
    bus = FakeBus()
    dispatcher = WebhookDispatcher(store, FakePoster([]), clock, bus.publish, retryFor=3600,
                                   disableAfter=3600, maxBacklog=100)
    webhooks = WebhooksService(bus, store, dispatcher, clock, "q.hooks", pollInterval=0.5)
    webhooks.startService()
    realVersion = store.version
    try:
        yield _until(lambda: defer.succeed(dispatcher.delivering), "the lease")
        store.version = lambda: defer.fail(OSError("the database is gone"))
        clock.advance(0.5)
        yield _until(lambda: defer.succeed(webhooks._polling is None), "the failed poll")
        assert dispatcher.delivering
        clock.advance(LEASE_DURATION)
        yield _until(lambda: defer.succeed(not dispatcher.delivering), "delivery to stop")
        store.version = realVersion
        clock.advance(0.5)
        yield _until(lambda: defer.succeed(dispatcher.delivering), "the lease again")
    finally:
        store.version = realVersion
        yield webhooks.stopService()
        store.close()


@pytest_twisted.inlineCallbacks
def test_poster_reads_at_most_64_kib_of_an_answer_and_refuses_private_targets():
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.task import LoopingCall
    from twisted.web import resource, server

    from resmon.webhooks.addresses import PrivateAddress
    from resmon.webhooks.poster import MAX_RESPONSE_BODY, WebhookPoster, describeError

    written = []

    class Endless(resource.Resource):
        isLeaf = True

        def render_POST(self, request):
            request.setResponseCode(201)
            chunk = b"x" * 16384

            def write():
                if not request.finished and not request._disconnected:
                    request.write(chunk)
                    written.append(len(chunk))
            loop = LoopingCall(write)
            loop.start(0.001)
            request.notifyFinish().addBoth(lambda _: loop.stop())
            return server.NOT_DONE_YET

    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    port = yield endpoint.listen(server.Site(Endless()))
    poster = WebhookPoster(reactor, timeout=30, allowPrivate=True)
    try:
        started = reactor.seconds()
        status = yield poster.post(f"http://127.0.0.1:{port.getHost().port}/", {}, b"{}")
        assert status == 201
        # The endless answer was dropped after its first 64 KiB, long before the timeout.
        assert reactor.seconds() - started < 10
        assert sum(written) >= MAX_RESPONSE_BODY
        refusing = WebhookPoster(reactor, timeout=5, allowPrivate=False)
        with pytest.raises(Exception) as e:
            yield refusing.post(f"http://127.0.0.1:{port.getHost().port}/", {}, b"{}")
        from twisted.python.failure import Failure
        assert describeError(Failure(e.value)).startswith("address not allowed")
        assert isinstance(e.value, PrivateAddress) or "PrivateAddress" in repr(e.value)
        yield refusing.close()
    finally:
        yield poster.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_an_unbinding_that_fails_is_tried_again_at_the_next_poll(tmp_path):
    from fakebus import FakeBus
    from resmon.services.webhooks import WebhooksService

    class FlakyBus(FakeBus):
        failures = 1

        def unbind(self, queue, patterns):
            if self.failures:
                self.failures -= 1
                return defer.fail(RuntimeError("the bus is not connected"))
            return FakeBus.unbind(self, queue, patterns)

    store = _store(tmp_path)
    clock = Clock()
    bus = FlakyBus()
    dispatcher = WebhookDispatcher(store, FakePoster([]), clock, bus.publish, retryFor=3600,
                                   disableAfter=3600, maxBacklog=100)
    webhooks = WebhooksService(bus, store, dispatcher, clock, "q.hooks", pollInterval=0.5)
    events = []
    webhooks.log = Logger(observer=events.append)
    webhooks.startService()
    try:
        yield _until(lambda: defer.succeed(dispatcher.delivering), "the lease")
        yield store.add(_hook("h1", key="*.alert"), 10, 10)
        yield store.add(_hook("h2", key="deploy.#"), 10, 10)
        clock.advance(0.5)
        yield _until(lambda: defer.succeed(len(bus.last.patterns) == 2 if bus.last else False),
                     "both keys bound")
        yield store.remove(hookId="h2")
        clock.advance(0.5)
        yield _until(lambda: defer.succeed(webhooks.unbindPending == {"deploy.#"}
                                           and webhooks._unbinding is None), "a failed attempt")
        assert bus.unbound == [] and bus.last.patterns == ["*.alert"]
        assert any("unbinding deploy.# from q.hooks failed (the bus is not connected)"
                   in formatEvent(e) for e in events)
        clock.advance(0.5)
        yield _until(lambda: defer.succeed(bus.unbound == [("q.hooks", ["deploy.#"])]),
                     "the next attempt")
        assert webhooks.unbindPending == frozenset()
    finally:
        yield webhooks.stopService()
        store.close()


@pytest_twisted.inlineCallbacks
def test_a_process_started_after_hooks_were_deleted_unbinds_their_keys(tmp_path):
    from fakebus import FakeBus
    from resmon.services.webhooks import WebhooksService

    store = _store(tmp_path)
    clock = Clock()

    def started(bus):
        dispatcher = WebhookDispatcher(store, FakePoster([]), clock, bus.publish, retryFor=3600,
                                       disableAfter=3600, maxBacklog=100)
        webhooks = WebhooksService(bus, store, dispatcher, clock, "q.hooks", pollInterval=0.5)
        webhooks.startService()
        return webhooks, dispatcher

    try:
        yield store.add(_hook("h1", key="*.alert"), 10, 10)
        yield store.add(_hook("h2", key="deploy.#"), 10, 10)
        first = FakeBus()
        webhooks, _ = started(first)
        yield _until(lambda: defer.succeed(bool(first.made)), "the first subscription")
        assert (yield store.boundKeys("q.hooks")) == {"*.alert", "deploy.#"}
        yield webhooks.stopService()
        # Deleted while no webhooks process runs.
        yield store.remove(hookId="h2")
        second = FakeBus()
        webhooks, dispatcher = started(second)
        # Unbound by the first poll (which reads what was recorded), without
        # waiting for the next (the clock does not move here).
        yield _until(lambda: defer.succeed(second.unbound == [("q.hooks", ["deploy.#"])]),
                     "the stale key unbound")
        assert second.last.patterns == ["*.alert"]
        yield _until(lambda: store.boundKeys("q.hooks").addCallback(lambda k: k == {"*.alert"}),
                     "the record of the stale key forgotten")
        yield webhooks.stopService()
    finally:
        store.close()


@pytest_twisted.inlineCallbacks
def test_store_records_the_queues_bindings(anyStore):
    store = anyStore
    assert (yield store.boundKeys("q")) == frozenset()
    yield store.recordBound("q", {"a.#", "b.c"})
    yield store.recordBound("q", {"a.#"})  # again: no error, no duplicate
    yield store.recordBound("other", {"x.y"})
    assert (yield store.boundKeys("q")) == {"a.#", "b.c"}
    yield store.forgetBound("q", {"a.#", "never"})
    assert (yield store.boundKeys("q")) == {"b.c"}
    assert (yield store.boundKeys("other")) == {"x.y"}


@pytest_twisted.inlineCallbacks
def test_pings_are_held_to_the_backlogs_bound_and_refused_for_a_disabled_hook(tmp_path):
    store = _store(tmp_path)
    registry = WebhookRegistry(store, reactor, allowPrivate=False, maxBacklog=3,
                               resolve=lambda host, port: defer.succeed(["8.8.8.8"]))
    try:
        hook = yield registry.register({"key": "*.alert", "url": "https://example.com/h"})
        pinged = []
        for _ in range(3):
            pinged.append((yield registry.ping(hook["id"])))
        # A ping is a delivery like any other, within the bound; it does not
        # push the oldest delivery out of a full backlog.
        with pytest.raises(validation.InvalidWebhook) as e:
            yield registry.ping(hook["id"])
        assert e.value.field is None and "backlog is full (3 deliveries pending)" in str(e.value)
        pending = yield store.pending(hook["id"], 100)
        assert [p.id for p in pending] == pinged
        yield store.recordAttempt(pending[0], 1, 100.0, 500, None, 0.1, "retry", 200.0,
                                  disableAfter=0.0)
        assert (yield store.hook(hook["id"])).state == storage.DISABLED
        with pytest.raises(validation.InvalidWebhook) as e:
            yield registry.ping(hook["id"])
        assert e.value.field is None and "disabled" in str(e.value)
        assert len((yield store.pending(hook["id"], 100))) == 3
    finally:
        store.close()


@pytest.mark.parametrize("event", [
    {"v": 1, "kind": "event", "n": 1},
    {"v": 1, "kind": "event", "text": "naïve — ✓ \u2028 \"quoted\" \\", "nested": [{"a": [1.5, None, True]}]},
    {},
])
def test_a_payload_made_from_the_events_json_is_the_same_bytes(event):
    made = wire.webhookPayloadOf("d1", "h1", "deploy.event", 1700000000.25, wire.encodeJSON(event))
    assert made == wire.webhookPayload("d1", "h1", "deploy.event", 1700000000.25, event)
    assert made == json.dumps({"v": 1, "delivery": "d1", "hook": "h1", "key": "deploy.event",
                               "ts": 1700000000.25, "event": event}, separators=(",", ":")).encode()
    assert wire.loadJSON(made)["event"] == event


class WaitingStore:
    """
    A store whose transactions end only when the test says: what each one
    was given is recorded.
    """

    def __init__(self):
        self.transactions = []

    def enqueueChecking(self, deliveries, maxBacklog, check):
        d = defer.Deferred()
        self.transactions.append((list(deliveries), d))
        return d


def test_an_event_for_many_hooks_is_stored_a_bounded_number_of_bytes_at_a_time(monkeypatch):
    """
    40 events of about 20 KB, each for 50 hooks (a copy of the payload per
    hook: 40 MB in all): deliveries are made as they are stored, at most
    MAX_UNSTORED_BYTES (here 1 MB) of them in a transaction, in the order
    received; an event is acknowledged once all of its deliveries are stored.
    """
    from twisted.internet.task import Clock
    from resmon.webhooks import delivery
    monkeypatch.setattr(delivery, "MAX_UNSTORED_BYTES", 1_000_000)
    store = WaitingStore()
    dispatcher = WebhookDispatcher(store, FakePoster([]), Clock(), lambda k, b: None,
                                   retryFor=3600, disableAfter=None, maxBacklog=10_000)
    dispatcher.setHooks([_hook(f"h{i:02d}", key="#") for i in range(50)])
    body = json.dumps({"v": 1, "kind": "event", "pad": "x" * 20_000}).encode()
    acked = []
    for n in range(40):
        dispatcher.eventReceived(f"e{n}.event", body).addCallback(lambda _, n=n: acked.append(n))
    stored = []
    while len(stored) < 40 * 50:
        assert len(store.transactions) == 1  # one at a time
        deliveries, d = store.transactions.pop()
        # At most the bound, and one payload more.
        assert sum(len(p.body) for p in deliveries) <= 1_000_000 + 21_000
        stored += deliveries
        d.callback(({}, {}))
        # Each event acknowledged once its last delivery is stored, not before.
        assert acked == list(range(len(stored) // 50))
    assert store.transactions == []
    assert [(p.key, p.hook) for p in stored] == [
        (f"e{n}.event", f"h{i:02d}") for n in range(40) for i in range(50)]
    assert len({p.id for p in stored}) == 40 * 50
    assert all(wire.loadJSON(p.body)["delivery"] == p.id for p in stored)


@pytest_twisted.inlineCallbacks
def test_workers_hold_a_bounded_number_of_bytes_of_their_hooks_backlogs(anyStore):
    """
    5 hooks each with 120 deliveries of 100 KB pending, and a receiver that
    answers each after 2 ms: every delivery is made, in order, while no
    worker ever holds much more than READ_BYTES of bodies read and not yet
    sent (200 of them would be 20 MB; reading ahead whenever fewer than 100
    were left, it grew towards that).
    """
    from twisted.internet.task import LoopingCall
    from resmon.webhooks import delivery

    class Slow(FakePoster):
        def post(self, url, headers, body):
            self.posted.append((url, headers, body))
            return deferLater(reactor, 0.002, lambda: 200)
    store = anyStore
    poster = Slow([])
    clock = Clock()
    clock.advance(1000)
    dispatcher = WebhookDispatcher(store, poster, clock, lambda k, b: None, retryFor=3600,
                                   disableAfter=3600, maxBacklog=10_000)
    held = []

    def sample():
        held.append(max([sum(len(p.body) for p in w._queue) for w in dispatcher.workers.values()],
                        default=0))
    sampling = LoopingCall(sample)
    try:
        for i in range(5):
            yield store.add(_hook(f"h{i}", key="#", url=f"http://127.0.0.1:1/{i}"), 1000, 1000)
        dispatcher.setHooks((yield store.hooks()))
        pad = "x" * 100_000
        for n in range(120):
            yield dispatcher.eventReceived(f"e{n}.event", json.dumps({"n": n, "pad": pad}).encode())
        sampling.start(0.005)
        dispatcher.setDelivering(True)
        yield _until(lambda: defer.succeed(len(poster.posted) >= 5 * 120), "every delivery", 60)
        for i in range(5):
            sent = [wire.loadJSON(body)["event"]["n"] for url, _, body in poster.posted
                    if url == f"http://127.0.0.1:1/{i}"]
            assert sent == list(range(120))
        assert max(held) <= 2 * delivery.READ_BYTES + 2 * 101_000, max(held)
    finally:
        if sampling.running:
            sampling.stop()
        yield dispatcher.stop()


@pytest_twisted.inlineCallbacks
def test_deliveries_for_a_hook_deleted_before_they_are_stored_are_not_kept(anyStore):
    """
    The dispatcher picks the hooks an event goes to when it comes, and
    stores their deliveries later: a hook deleted in between would be left
    with deliveries nothing ever makes or expires.
    """
    store = anyStore
    for hookId in ("kept", "deleted"):
        yield store.add(_hook(hookId, key="#"), 10, 10)
    dispatcher = WebhookDispatcher(store, FakePoster([]), Clock(), lambda k, b: None,
                                   retryFor=3600, disableAfter=None, maxBacklog=100)
    dispatcher.setHooks((yield store.hooks()))
    yield store.remove("deleted")
    yield dispatcher.eventReceived("deploy.event", b'{"n":1}')
    assert len((yield store.pending("kept", 10))) == 1
    assert list((yield store.pending("deleted", 10))) == []
    yield dispatcher.stop()


@pytest.mark.parametrize("first", ["store", "remove"])
def test_a_hook_removed_while_its_deliveries_are_stored_keeps_none_on_postgresql(first):
    """
    The real PostgreSQL, two connections, the two transactions at once:
    storing an event's deliveries for hook h, and removing h. Whichever
    locks h first, the other waits for it, and no delivery of h is left.
    """
    import threading
    import psycopg2
    name = "resmon_unit_" + uuid.uuid4().hex[:12]
    admin = postgresqlAdmin()
    admin.cursor().execute(f"CREATE DATABASE {name}")
    connections = []
    try:
        store = storage.WebhookStore(None, "postgresql")
        storing, removing = [psycopg2.connect(host="127.0.0.1", dbname=name) for _ in range(2)]
        connections += [storing, removing]
        cursor = storing.cursor()
        store._schema(cursor, "BIGSERIAL PRIMARY KEY")
        cursor.execute("INSERT INTO webhook_hooks (id, hkey, url, secret, created, state) "
                       "VALUES ('h', '#', 'http://127.0.0.1:1/', 's', 1, 'active')")
        storing.commit()
        delivery = storage.Pending(None, uuid.uuid4().hex, "h", "k", b"{}", 1.0, 0, 1.0)
        if first == "store":
            opened, (waiting, later) = (storing, lambda c: store._enqueue(c, [delivery], 100)), (
                removing, lambda c: store._remove(c, "h", None))
        else:
            opened, (waiting, later) = (removing, lambda c: store._remove(c, "h", None)), (
                storing, lambda c: store._enqueue(c, [delivery], 100))
        connection, work = opened
        work(connection.cursor())            # its transaction stays open
        done = threading.Event()

        def other():
            later(waiting.cursor())
            waiting.commit()
            done.set()
        thread = threading.Thread(target=other, daemon=True)
        thread.start()
        # The other waits for the first's lock on h.
        assert not done.wait(0.5)
        connection.commit()
        assert done.wait(10)
        cursor = storing.cursor()
        cursor.execute("SELECT count(*) FROM webhook_pending WHERE hook = 'h'")
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT count(*) FROM webhook_hooks WHERE id = 'h'")
        assert cursor.fetchone()[0] == 0
        storing.commit()
    finally:
        for connection in connections:
            connection.close()
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")


def test_events_are_matched_to_hooks_by_their_keys_as_the_registry_says_now(monkeypatch):
    from resmon.webhooks import delivery

    dispatcher = WebhookDispatcher(None, FakePoster([]), Clock(), lambda k, b: None,
                                   retryFor=3600, disableAfter=3600, maxBacklog=10)
    dispatcher.wakeAll = lambda: None
    hooks = [_hook("all", key="#"), _hook("alerts", key="*.alert"), _hook("web", key="web-01.#"),
             _hook("alerts2", key="*.alert"), _hook("deploys", key="deploys.event")]
    dispatcher.setHooks(hooks)

    def matched(routingKey):
        return sorted(dispatcher._matchingHooks(routingKey))
    assert matched("web-01.alert") == ["alerts", "alerts2", "all", "web"]
    assert matched("db-01.alert") == ["alerts", "alerts2", "all"]
    assert matched("deploys.event") == ["all", "deploys"]
    # A new registry: what was remembered of the old one is not used.
    dispatcher.setHooks(hooks[1:3])
    assert matched("web-01.alert") == ["alerts", "web"]
    assert matched("deploys.event") == []
    # Remembered for a bounded number of routing keys.
    monkeypatch.setattr(delivery, "MATCHES_KEPT", 3)
    for n in range(10):
        assert matched(f"h{n}.alert") == ["alerts"]
        assert len(dispatcher._matching) <= 3


@pytest_twisted.inlineCallbacks
def test_a_disabled_hook_gets_no_new_deliveries_from_what_was_matched_before(tmp_path):
    store = _store(tmp_path)
    dispatcher = WebhookDispatcher(store, FakePoster([]), Clock(), lambda k, b: None,
                                   retryFor=3600, disableAfter=3600, maxBacklog=10)
    try:
        for hook in (_hook("h1", key="*.event"), _hook("h2", key="*.event")):
            yield store.add(hook, 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        yield dispatcher.eventReceived("x.event", b'{"n": 1}')
        before = dispatcher.hooks["h2"]
        after = storage.Hook(before.id, before.key, before.url, before.secret, before.created,
                             storage.DISABLED, failingSince=1.0, lastResult="500")
        dispatcher.hookChanged(before, after)
        yield dispatcher.eventReceived("x.event", b'{"n": 2}')
        assert (yield store.pendingCount("h1")) == 2
        assert (yield store.pendingCount("h2")) == 1
    finally:
        yield dispatcher.stop()
        store.close()


def _pendingOf(hookId, n, size):
    return storage.Pending(None, uuid.uuid4().hex, hookId, "x.event",
                           b'{"n":%d,"pad":"%s"}' % (n, b"p" * (size - 15 - len(str(n)))),
                           float(n), 0, float(n))


@pytest_twisted.inlineCallbacks
def test_the_store_holds_every_hooks_pending_bodies_to_one_budget_oldest_first(anyStore):
    for hookId in ("h1", "h2"):
        yield anyStore.add(_hook(hookId), 10, 10)
    # Interleaved: 100 bytes each, 20 for h1 then h2 by turns.
    deliveries = [_pendingOf("h1" if n % 2 == 0 else "h2", n, 100) for n in range(20)]
    assert all(len(d.body) == 100 for d in deliveries)
    yield anyStore.enqueue(deliveries, 100)
    total, dropped = yield anyStore.trimToBytes(2000, 1800)
    assert total == 2000 and dropped == {}
    total, dropped = yield anyStore.trimToBytes(1500, 1000)
    assert total == 1000 and dropped == {"h1": 5, "h2": 5}
    left = []
    for hookId in ("h1", "h2"):
        rows = yield anyStore.pending(hookId, 100)
        left += [wire.loadJSON(row.body)["n"] for row in rows]
    assert sorted(left) == list(range(10, 20))


@pytest_twisted.inlineCallbacks
def test_deliveries_stored_by_an_older_resmon_count_by_their_length(tmp_path):
    import sqlite3
    path = tmp_path / "webhooks.sqlite3"
    old = sqlite3.connect(str(path))
    old.execute("""CREATE TABLE webhook_pending (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, hook TEXT NOT NULL,
        rkey TEXT NOT NULL, body TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
        attempts INTEGER NOT NULL, next_attempt DOUBLE PRECISION NOT NULL)""")
    old.execute("INSERT INTO webhook_pending (id, hook, rkey, body, created, attempts, "
                "next_attempt) VALUES ('d0', 'h1', 'x.event', ?, 1.0, 0, 1.0)", ("b" * 300,))
    old.commit()
    old.close()
    store = _store(tmp_path)
    try:
        yield store.add(_hook("h1"), 10, 10)  # the schema brought up to date first
        yield store.enqueue([_pendingOf("h1", 1, 100)], 100)
        total, dropped = yield store.trimToBytes(10_000, 9_000)
        assert total == 400 and dropped == {}
    finally:
        store.close()


@pytest_twisted.inlineCallbacks
def test_the_dispatcher_holds_the_registry_to_its_budget_as_it_stores(tmp_path):
    store = _store(tmp_path)
    clock = Clock()
    dispatcher = WebhookDispatcher(store, FakePoster([]), clock, lambda k, b: None,
                                   retryFor=3600, disableAfter=3600, maxBacklog=1000,
                                   maxStoredBytes=20_000)
    try:
        for hookId in ("h1", "h2", "h3"):
            yield store.add(_hook(hookId, key="*.event"), 10, 10)
        dispatcher.setHooks((yield store.hooks()))
        body = b'{"pad": "%s"}' % (b"p" * 800)
        for n in range(60):
            yield dispatcher.eventReceived("x.event", body)
            clock.advance(0.5)
        total, _ = yield store.trimToBytes(10 ** 9, 10 ** 9)
        # Over the budget by at most what one second stores (2 events x 3 hooks here).
        payload = len(wire.webhookPayloadOf(uuid.uuid4().hex, "h1", "x.event", 1.0, body))
        assert total <= 20_000 + 6 * payload
        assert dispatcher.counters["dropped-budget"] > 0
        assert dispatcher.counters["stored"] == 180
        counts = []
        for hookId in ("h1", "h2", "h3"):
            counts.append((yield store.pendingCount(hookId)))
        assert max(counts) - min(counts) <= 1  # the oldest of every hook went alike
    finally:
        yield dispatcher.stop()
        store.close()


@pytest_twisted.inlineCallbacks
def test_two_webhooks_processes_hold_the_registry_to_the_budget(tmp_path):
    from resmon.webhooks.delivery import BUDGET_REFRESH

    stores = [_store(tmp_path), _store(tmp_path)]  # one SQLite file, two processes
    clock = Clock()
    dispatchers = [WebhookDispatcher(s, FakePoster([]), clock, lambda k, b: None,
                                     retryFor=3600, disableAfter=3600, maxBacklog=100_000,
                                     maxStoredBytes=20_000) for s in stores]
    try:
        yield stores[0].add(_hook("h1", key="*.event"), 10, 10)
        for dispatcher in dispatchers:
            dispatcher.setHooks((yield stores[0].hooks()))
        body = b'{"pad": "%s"}' % (b"p" * 800)
        for n in range(60):  # one event a second in all, by turns
            yield dispatchers[n % 2].eventReceived("x.event", body)
            clock.advance(1.0)
        total, _ = yield stores[0].trimToBytes(10 ** 9, 10 ** 9)
        payload = len(wire.webhookPayloadOf(uuid.uuid4().hex, "h1", "x.event", 1.0, body))
        # Over by at most what the other stores between two of a process's counts.
        assert total <= 20_000 + (BUDGET_REFRESH + 2) * payload, total
        assert sum(d.counters["dropped-budget"] for d in dispatchers) > 0
    finally:
        for dispatcher in dispatchers:
            yield dispatcher.stop()
        for store in stores:
            store.close()


class _RacingCursor:
    """
    A cursor after whose first statement (the first count) another
    transaction deletes the oldest deliveries (delivered, or another
    process's trim).
    """

    def __init__(self, cursor, other):
        self.cursor, self.other, self.statements = cursor, other, 0

    def execute(self, *args):
        self.cursor.execute(*args)
        self.statements += 1
        if self.statements == 1:
            self.other()

    def __getattr__(self, name):
        return getattr(self.cursor, name)


@pytest.mark.parametrize("deletedMeanwhile, left, dropped", [(5, 10, {"h1": 5}), (10, 10, {})])
@pytest_twisted.inlineCallbacks
def test_a_trim_counts_again_once_no_other_writer_can_change_what_it_drops(
        anyStore, deletedMeanwhile, left, dropped):
    store = anyStore
    yield store.add(_hook("h1"), 10, 10)
    yield store.enqueue([_pendingOf("h1", n, 100) for n in range(20)], 100)
    delete = ("DELETE FROM webhook_pending WHERE seq IN (SELECT seq FROM webhook_pending "
              f"ORDER BY seq LIMIT {deletedMeanwhile})")
    if store.dialect == "postgresql":
        import psycopg2

        def connect():
            return psycopg2.connect(POSTGRESQL + store.pool.connkw["dbname"], connect_timeout=5)
    else:
        import sqlite3

        def connect():
            return sqlite3.connect(store.where, timeout=30)

    def elsewhere():
        connection = connect()
        connection.cursor().execute(delete)
        connection.commit()
        connection.close()
    result = yield store.pool.runInteraction(
        lambda cursor: store._trimToBytes(_RacingCursor(cursor, elsewhere), 1500, 1000))
    assert (yield store.pendingCount("h1")) == left
    assert result == (1000, dropped)


def test_the_webhooks_role_takes_max_body_which_it_reads():
    from resmon import tap
    options = tap.Options()
    options.parseOptions(["--role=webhooks", "--max-body=1000"])
    assert options["max-body"] == 1000
    with pytest.raises(SystemExit) as refused:
        tap.Options().parseOptions(["--role=webhooks", "--max-clock-skew=10"])
    assert "--max-clock-skew: means nothing for --role=webhooks" in str(refused.value)
