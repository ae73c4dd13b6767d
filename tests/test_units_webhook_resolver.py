"""
Webhook targets' names are resolved apart from everything else
(resmon.webhooks.resolver): in threads of their own, a bounded number at
once, each given up after a timeout, so a name whose nameservers never
answer holds up neither the reactor's thread pool (logins hash passwords
there) nor a registration for longer than the timeout. Real threads and
the real reactor; the blocking lookup is a function that waits on an event.
"""

import threading
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

from resmon.webhooks import validation
from resmon.webhooks.addresses import WebhookEndpointFactory
from resmon.webhooks.resolver import NameResolver, ResolutionTimedOut


class HangingLookups:
    """
    A blocking lookup that hangs until released, counting how many run at
    once (as a nameserver that never answers would make C{getaddrinfo}).
    """

    def __init__(self, addresses=("192.0.2.1",)):
        self.release = threading.Event()
        self.addresses = list(addresses)
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.started = 0

    def __call__(self, host, port):
        with self.lock:
            self.running += 1
            self.started += 1
            self.most = max(self.most, self.running)
        try:
            if not self.release.wait(30):
                raise OSError("never released")
            return self.addresses
        finally:
            with self.lock:
                self.running -= 1


@defer.inlineCallbacks
def _until(predicate, timeout=10, what="the condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        yield task.deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.inlineCallbacks
def test_hanging_lookups_leave_the_reactors_thread_pool_free():
    lookups = HangingLookups()
    resolver = NameResolver(reactor, lookups=4, timeout=30, lookup=lookups)
    pending = [resolver.resolve(f"slow{i}.example", 443) for i in range(12)]
    yield _until(lambda: lookups.running == 4, what="4 lookups running")
    # What logins do (password hashing), in the reactor's pool: not held up.
    started = time.monotonic()
    assert (yield threads.deferToThread(lambda: 42)) == 42
    assert time.monotonic() - started < 5
    # At most 4 at once; the others waited their turn, and all of them end.
    assert lookups.most == 4 and lookups.started == 4
    lookups.release.set()
    results = yield defer.gatherResults(pending)
    assert results == [["192.0.2.1"]] * 12
    assert lookups.most == 4 and resolver.running == 0
    assert resolver.counters["resolved"] == 12


@pytest_twisted.inlineCallbacks
def test_a_lookup_is_given_up_after_the_timeout_and_its_place_kept_until_it_returns():
    lookups = HangingLookups()
    resolver = NameResolver(reactor, lookups=1, timeout=0.3, lookup=lookups)
    started = time.monotonic()
    running = resolver.resolve("slow.example", 443)
    waiting = resolver.resolve("next.example", 443)  # never gets a turn in time
    for d, host in ((running, "slow.example"), (waiting, "next.example")):
        with pytest.raises(ResolutionTimedOut) as e:
            yield d
        assert str(e.value) == f"{host} did not resolve within 0.3 s"
    assert time.monotonic() - started < 5
    assert resolver.counters["timed-out"] == 2
    # The thread given up still holds the one place: no second thread meanwhile.
    assert lookups.running == 1 and lookups.started == 1 and resolver.running == 1
    lookups.release.set()
    yield _until(lambda: resolver.running == 0, what="the lookup's thread to end")
    # The one waiting never ran; the place is free again.
    assert lookups.started == 1
    assert (yield resolver.resolve("again.example", 443)) == ["192.0.2.1"]


@pytest_twisted.inlineCallbacks
def test_a_failing_lookup_fails_its_resolution_with_its_error():
    def lookup(host, port):
        raise OSError(f"no such name: {host}")
    resolver = NameResolver(reactor, timeout=5, lookup=lookup)
    with pytest.raises(OSError, match="no such name: nowhere.example"):
        yield resolver.resolve("nowhere.example", 443)
    assert resolver.counters["failed"] == 1 and resolver.running == 0


@pytest_twisted.inlineCallbacks
def test_a_registration_whose_name_hangs_is_refused_after_the_timeout_with_why():
    lookups = HangingLookups()
    resolver = NameResolver(reactor, timeout=0.3, lookup=lookups)
    started = time.monotonic()
    with pytest.raises(validation.InvalidWebhook) as e:
        yield validation.checkTarget("tarpit.example", 443, resolver.resolve, False)
    assert time.monotonic() - started < 5
    assert e.value.field == "url"
    assert "tarpit.example did not resolve within 0.3 s" in str(e.value)
    assert "try again later" in str(e.value)
    lookups.release.set()


@pytest_twisted.inlineCallbacks
def test_a_webhook_connection_tries_the_next_address_when_one_refuses():
    """
    A name with several addresses: the first refuses (nothing listens on
    127.0.0.2 at that port), the next accepts.
    """
    accepted = []

    class Accept(Protocol):
        def connectionMade(self):
            accepted.append(self.transport.getHost().host)
            self.transport.loseConnection()
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Accept))
    try:
        number = port.getHost().port

        def resolve(host, _port):
            assert host == "several.example"
            return defer.succeed(["127.0.0.2", "127.0.0.1"])
        factory = WebhookEndpointFactory(reactor, 5, resolve, allowPrivate=True)
        from twisted.web.client import URI
        endpoint = factory.endpointForURI(URI.fromBytes(f"http://several.example:{number}/".encode()))
        protocol = yield endpoint.connect(Factory.forProtocol(Protocol))
        yield _until(lambda: accepted, what="the connection")
        assert accepted == ["127.0.0.1"]
        protocol.transport.loseConnection()
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_deliveries_to_hanging_names_leave_logins_their_threads(monkeypatch):
    """
    What the webhooks role uses by default: 15 deliveries whose names never
    resolve (more than the reactor's 10 threads) fail within the timeout,
    and a login's password hashing (a job in the reactor's pool) meanwhile
    runs at once. The registry resolves the same way.
    """
    from resmon.webhooks import addresses
    from resmon.webhooks.poster import WebhookPoster
    from resmon.webhooks.registry import WebhookRegistry
    lookups = HangingLookups()
    monkeypatch.setattr(addresses, "resolve", lookups)
    poster = WebhookPoster(reactor, timeout=0.5)
    try:
        posts = [poster.post(f"https://hook{i}.example/in", {}, b"{}") for i in range(15)]
        yield _until(lambda: lookups.running >= 8, what="lookups running")
        started = time.monotonic()
        assert (yield threads.deferToThread(lambda: "hashed")) == "hashed"
        assert time.monotonic() - started < 5
        for d in posts:
            with pytest.raises(Exception):
                yield d
        assert time.monotonic() - started < 5
    finally:
        lookups.release.set()
        yield poster.close()
    assert isinstance(WebhookRegistry(None, reactor).resolve.__self__, NameResolver)


@pytest_twisted.inlineCallbacks
def test_a_lookup_given_up_while_waiting_for_its_turn_never_runs():
    lookups = HangingLookups()
    resolver = NameResolver(reactor, lookups=1, timeout=30, lookup=lookups)
    running = resolver.resolve("first.example", 443)
    waiting = resolver.resolve("second.example", 443)
    waiting.cancel()  # what the poster's own timeout does to a connection
    with pytest.raises(defer.CancelledError):
        yield waiting
    lookups.release.set()
    assert (yield running) == ["192.0.2.1"]
    yield _until(lambda: resolver.running == 0, what="the lookup's thread to end")
    assert lookups.started == 1
    assert (yield resolver.resolve("third.example", 443)) == ["192.0.2.1"]
    assert lookups.started == 2 and resolver.running == 0


def _blackhole(interface):
    """
    A port on C{interface} that never answers a connection (a listener
    whose queue of connections not accepted is full drops what comes):
    the port and what to close.
    """
    import socket
    hole = socket.socket()
    hole.bind((interface, 0))
    hole.listen(0)
    port = hole.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect((interface, port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    return port, [hole] + fillers


@pytest_twisted.inlineCallbacks
def test_an_address_that_never_answers_leaves_the_next_one_its_turn(monkeypatch):
    """
    A receiver on 127.0.0.1 behind a name whose first address never
    answers: the delivery reaches it within the webhook timeout (each
    address tried for its share of it); an address that refuses is tried
    once.
    """
    from twisted.web.resource import Resource
    from twisted.web.server import Site
    from resmon.webhooks import addresses
    from resmon.webhooks.poster import WebhookPoster

    class Answer(Resource):
        isLeaf = True

        def render_POST(self, request):
            request.setResponseCode(204)
            return b""
    port, sockets = _blackhole("127.0.0.2")
    site = yield TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(Site(Answer()))
    tried = []
    connectTo = addresses._ResolvingEndpoint._connectTo

    def spied(endpoint, address, factory, timeout):
        tried.append((address, timeout))
        return connectTo(endpoint, address, factory, timeout)
    monkeypatch.setattr(addresses._ResolvingEndpoint, "_connectTo", spied)

    class Resolver:
        def __init__(self, answers):
            self.answers = answers

        def resolve(self, host, _port):
            return defer.succeed(self.answers)
    poster = WebhookPoster(reactor, timeout=8, allowPrivate=True,
                           resolver=Resolver(["127.0.0.2", "127.0.0.1"]))
    refusing = WebhookPoster(reactor, timeout=8, allowPrivate=True, resolver=Resolver(["127.0.0.1"]))
    try:
        started = time.monotonic()
        assert (yield poster.post(f"http://two.example:{port}/", {}, b"{}")) == 204
        assert time.monotonic() - started < 8
        assert tried == [("127.0.0.2", 4.0), ("127.0.0.1", 4.0)]
        yield site.stopListening()
        site = None
        del tried[:]
        with pytest.raises(Exception):
            yield refusing.post(f"http://one.example:{port}/", {}, b"{}")
        assert tried == [("127.0.0.1", 8.0)]
    finally:
        if site is not None:
            yield site.stopListening()
        yield poster.close()
        yield refusing.close()
        for sock in sockets:
            sock.close()


@pytest_twisted.inlineCallbacks
def test_the_webhooks_roles_stats_line_counts_the_lookups():
    from twisted.logger import Logger, formatEvent
    from fakebus import FakeBus
    from resmon.services.webhooks import WebhooksService
    from resmon.webhooks.delivery import WebhookDispatcher
    from resmon.webhooks.poster import WebhookPoster
    lookups = HangingLookups()
    poster = WebhookPoster(reactor, timeout=0.2,
                           resolver=NameResolver(reactor, timeout=0.2, lookup=lookups))
    dispatcher = WebhookDispatcher(None, poster, reactor, lambda k, b: None, retryFor=60,
                                   disableAfter=None, maxBacklog=10)
    service = WebhooksService(FakeBus(), None, dispatcher, reactor, "resmon.webhooks")
    events = []
    service.log = Logger(observer=events.append)
    try:
        with pytest.raises(ResolutionTimedOut):
            yield poster.resolver.resolve("tarpit.example", 443)
        service.logStats()
        line = formatEvent(events[-1])
        assert ("targets' names: 0 resolved, 0 failed, 1 given up after 0.2 s, "
                "1 lookups running") in line, line
    finally:
        lookups.release.set()
        yield poster.close()
