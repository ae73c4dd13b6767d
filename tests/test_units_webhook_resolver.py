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
    # Names never seen to answer take half the places.
    yield _until(lambda: lookups.running == 2, what="2 lookups running")
    # What logins do (password hashing), in the reactor's pool: not held up.
    started = time.monotonic()
    assert (yield threads.deferToThread(lambda: 42)) == 42
    assert time.monotonic() - started < 5
    # At most 2 at once; the others waited their turn, and all of them end.
    assert lookups.most == 2 and lookups.started == 2
    lookups.release.set()
    results = yield defer.gatherResults(pending)
    assert results == [["192.0.2.1"]] * 12
    assert lookups.most == 2 and resolver.running == 0
    assert resolver.counters["resolved"] == 12


class SomeNamesHang:
    """
    A blocking lookup that answers at once, except for the names given,
    which hang until released; counts the lookups of each name.
    """

    def __init__(self, hanging=()):
        self.hanging = set(hanging)
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.started = {}
        self.running = 0

    def __call__(self, host, port):
        with self.lock:
            self.started[host] = self.started.get(host, 0) + 1
            self.running += 1
        try:
            if host in self.hanging and not self.release.wait(30):
                raise OSError("never released")
            return [f"192.0.2.{len(host)}"]
        finally:
            with self.lock:
                self.running -= 1


@pytest_twisted.inlineCallbacks
def test_names_known_to_answer_keep_their_places_while_new_names_hang():
    """
    A user registers hooks on names whose nameservers never answer: they
    take half the places at most, and the names that answered before are
    still resolved at once.
    """
    names = [f"tarpit{i}.example" for i in range(10)]
    lookups = SomeNamesHang(hanging=names)
    resolver = NameResolver(reactor, lookups=4, timeout=30, lookup=lookups, cacheFor=0)
    assert (yield resolver.resolve("good.example", 443)) == ["192.0.2.12"]
    hanging = [resolver.resolve(name, 443) for name in names]
    yield _until(lambda: lookups.running == 2, what="2 lookups hanging")
    started = time.monotonic()
    for _ in range(3):
        assert (yield resolver.resolve("good.example", 443)) == ["192.0.2.12"]
    assert time.monotonic() - started < 5
    # A name never seen to answer waits behind the hanging ones.
    new = resolver.resolve("new.example", 443)
    assert not new.called and resolver.runningUnknown == 2 and lookups.running == 2
    assert lookups.started["good.example"] == 4
    lookups.release.set()
    assert (yield new) == ["192.0.2.11"]
    yield defer.gatherResults(hanging)
    yield _until(lambda: resolver.running == 0, what="every lookup to end")


@pytest_twisted.inlineCallbacks
def test_a_known_name_given_up_is_no_longer_known():
    lookups = SomeNamesHang()
    resolver = NameResolver(reactor, lookups=2, timeout=0.3, lookup=lookups, cacheFor=0)
    yield resolver.resolve("flaky.example", 443)
    lookups.hanging.add("flaky.example")
    with pytest.raises(ResolutionTimedOut):
        yield resolver.resolve("flaky.example", 443)
    # Still hanging, it holds its place; the name now counts as unknown.
    assert resolver.running == 1 and resolver._isKnown("flaky.example", reactor.seconds()) is False
    lookups.release.set()
    yield _until(lambda: resolver.running == 0, what="the lookup's thread to end")


@pytest_twisted.inlineCallbacks
def test_a_name_asked_for_while_its_lookup_runs_joins_it():
    lookups = SomeNamesHang(hanging=["busy.example"])
    resolver = NameResolver(reactor, lookups=4, timeout=30, lookup=lookups, cacheFor=0)
    pending = [resolver.resolve("busy.example", 443) for _ in range(5)]
    yield _until(lambda: lookups.running == 1, what="the lookup to start")
    assert resolver.running == 1 and lookups.started == {"busy.example": 1}
    lookups.release.set()
    assert (yield defer.gatherResults(pending)) == [["192.0.2.12"]] * 5
    assert lookups.started == {"busy.example": 1} and resolver.counters["resolved"] == 5


@pytest_twisted.inlineCallbacks
def test_an_answer_is_kept_for_cacheFor_then_looked_up_again():
    lookups = SomeNamesHang()
    resolver = NameResolver(reactor, timeout=5, lookup=lookups, cacheFor=0.3)
    first = yield resolver.resolve("kept.example", 443)
    first.append("changed by its caller")
    assert (yield resolver.resolve("kept.example", 443)) == ["192.0.2.12"]
    assert lookups.started == {"kept.example": 1} and resolver.counters["cached"] == 1
    yield task.deferLater(reactor, 0.35, lambda: None)
    assert (yield resolver.resolve("kept.example", 443)) == ["192.0.2.12"]
    assert lookups.started == {"kept.example": 2}


@pytest_twisted.inlineCallbacks
def test_the_answers_kept_are_bounded():
    lookups = SomeNamesHang()
    resolver = NameResolver(reactor, timeout=5, lookup=lookups, maxNames=3, maxKnown=3)
    for i in range(10):
        yield resolver.resolve(f"name{i}.example", 443)
    assert len(resolver._answers) == 3 and len(resolver._known) == 3
    # The newest are kept.
    yield resolver.resolve("name9.example", 443)
    assert lookups.started["name9.example"] == 1
    yield resolver.resolve("name0.example", 443)
    assert lookups.started["name0.example"] == 2


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
        # Names never seen to answer: half of the 8 places.
        yield _until(lambda: lookups.running == 4, what="lookups running")
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
                "0 answered from the answers kept, 1 lookups running") in line, line
    finally:
        lookups.release.set()
        yield poster.close()


@pytest_twisted.inlineCallbacks
def test_a_name_given_up_then_answering_late_is_not_known_again():
    lookups = SomeNamesHang()
    resolver = NameResolver(reactor, lookups=2, timeout=0.3, lookup=lookups, cacheFor=0)
    assert (yield resolver.resolve("late.example", 443)) == ["192.0.2.12"]
    lookups.hanging.add("late.example")
    with pytest.raises(ResolutionTimedOut):
        yield resolver.resolve("late.example", 443)
    lookups.release.set()  # answers, after having been given up
    yield _until(lambda: resolver.running == 0, what="the lookup's thread to end")
    assert resolver._isKnown("late.example", reactor.seconds()) is False


@pytest_twisted.inlineCallbacks
def test_a_known_name_given_up_while_waiting_for_a_place_stays_known():
    lookups = SomeNamesHang(hanging=["evil.example"])
    resolver = NameResolver(reactor, lookups=1, timeout=0.3, lookup=lookups, cacheFor=0)
    assert (yield resolver.resolve("victim.example", 443)) == ["192.0.2.14"]
    lookups.hanging.discard("evil.example")
    yield resolver.resolve("evil.example", 443)
    lookups.hanging.add("evil.example")
    evil = resolver.resolve("evil.example", 443)
    yield _until(lambda: lookups.running == 1, what="evil's lookup to run")
    with pytest.raises(ResolutionTimedOut):
        yield resolver.resolve("victim.example", 443)  # never ran: its nameservers were not asked
    assert lookups.started["victim.example"] == 1
    try:
        assert resolver._isKnown("victim.example", reactor.seconds()) is True
    finally:
        lookups.release.set()
        with pytest.raises(ResolutionTimedOut):
            yield evil
        yield _until(lambda: resolver.running == 0, what="every lookup to end")


@pytest_twisted.inlineCallbacks
def test_a_known_name_whose_lookup_fails_is_no_longer_known():
    state = {"fail": False}

    def lookup(host, port):
        if state["fail"]:
            time.sleep(0.2)
            raise OSError("SERVFAIL")
        return ["192.0.2.1"]
    resolver = NameResolver(reactor, lookups=2, timeout=0.3, lookup=lookup, cacheFor=0)
    yield resolver.resolve("servfail.example", 443)
    assert resolver._isKnown("servfail.example", reactor.seconds()) is True
    state["fail"] = True
    with pytest.raises(OSError):
        yield resolver.resolve("servfail.example", 443)
    assert resolver._isKnown("servfail.example", reactor.seconds()) is False


@pytest_twisted.inlineCallbacks
def test_registrations_lookups_make_no_name_known():
    """
    Registrations (refused ones included) can name any number of names
    that answer: they do not make them known, so they cannot push the
    names of the hooks delivering out of the names known to answer.
    """
    lookups = SomeNamesHang(hanging=["tarpit.example"])
    resolver = NameResolver(reactor, lookups=2, timeout=0.5, lookup=lookups, cacheFor=0,
                            maxKnown=50)
    yield resolver.resolve("victim.example", 443)
    for i in range(200):
        yield resolver.resolveToCheck(f"x{i}.attacker.example", 443)
    assert list(resolver._known) == ["victim.example"]
    tarpit = resolver.resolve("tarpit.example", 443)
    yield _until(lambda: lookups.running == 1, what="the tarpit to hang")
    try:
        # The one place of unknown names is taken; the known name has its own.
        assert (yield resolver.resolve("victim.example", 443)) == ["192.0.2.14"]
    finally:
        lookups.release.set()
        assert (yield tarpit) == ["192.0.2.14"]
        yield _until(lambda: resolver.running == 0, what="every lookup to end")


@pytest_twisted.inlineCallbacks
def test_one_name_asked_with_two_ports_takes_one_place():
    lookups = SomeNamesHang(hanging=["busy.example"])
    resolver = NameResolver(reactor, lookups=4, timeout=30, lookup=lookups, cacheFor=0)
    pending = [resolver.resolve("busy.example", port) for port in (443, 8443, 80)]
    yield _until(lambda: lookups.running == 1, what="the lookup to start")
    assert resolver.running == 1
    lookups.release.set()
    assert (yield defer.gatherResults(pending)) == [["192.0.2.12"]] * 3
    assert lookups.started == {"busy.example": 1}


@pytest_twisted.inlineCallbacks
def test_thousands_of_waiters_on_one_hung_name_all_give_up_and_leave_nothing_behind():
    # Each leaves in constant time (the waiters are a dict): as a list
    # rebuilt at each departure, these 4,000 cost 1.35 s of the reactor's CPU.
    lookups = HangingLookups()
    resolver = NameResolver(reactor, lookups=1, timeout=0.5, lookup=lookups)
    pending = [resolver.resolve("hung.example", 443) for _ in range(4000)]
    yield _until(lambda: lookups.running == 1, what="the lookup to hang")
    try:
        for d in pending:
            with pytest.raises(ResolutionTimedOut):
                yield d
        assert resolver.counters["timed-out"] == 4000 and lookups.started == 1
        assert resolver._lookups["hung.example"].waiters == {}
    finally:
        lookups.release.set()
        yield _until(lambda: resolver.running == 0, what="the lookup's thread to end")
    assert resolver._lookups == {} and resolver.running == 0


@pytest_twisted.inlineCallbacks
def test_when_no_thread_can_be_started_every_lookup_waiting_fails_and_no_place_is_lost(monkeypatch):
    lookups = HangingLookups()
    resolver = NameResolver(reactor, lookups=1, timeout=30, lookup=lookups)
    first = resolver.resolve("first.example", 443)
    yield _until(lambda: lookups.running == 1, what="the lookup to hang")
    queued = [resolver.resolve(f"q{i}.example", 443) for i in range(2000)]
    failures = []
    for d in queued:
        d.addErrback(failures.append)

    def refuse(self):
        raise RuntimeError("can't start new thread")
    monkeypatch.setattr(threading.Thread, "start", refuse)
    lookups.release.set()
    yield first
    yield _until(lambda: len(failures) == 2000, what="every lookup waiting to fail")
    monkeypatch.undo()
    assert (resolver.running, resolver.runningUnknown,
            sum(len(q) for q in resolver._queues.values()), len(resolver._lookups)) == (0, 0, 0, 0)
    assert all(f.check(RuntimeError) for f in failures)
    assert (yield resolver.resolve("again.example", 443)) == ["192.0.2.1"]
