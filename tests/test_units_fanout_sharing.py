"""
The fan-out's sharing: each event is matched once per distinct subscription
(and visibility), framed once as a WebSocket message, and the same frame is
written to every client it matches; per-client flow control, order and
visibility stay each client's own. WebSocket protocols here did a real
handshake over a StringTransport; the last test connects over real TCP.
"""

import json
import socket

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from resmon.auth.principal import VIEWER, Principal
from resmon.webserver import websocket
from resmon.webserver.fanout import EventFanout
from resmon.webserver.subscriptions import EVERYTHING, Subscription
from resmon.webserver.websocket import DashboardFactory
from test_web_units import FakeClient, analysis, body, key

HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def web():
    return Principal("alice", VIEWER, ["web-*"])


def db():
    return Principal("bob", VIEWER, ["db-*"])


def _connect(factory, principal=None, path="/ws?history=0"):
    """
    A L{DashboardProtocol} of C{factory} after its handshake and snapshot,
    and its transport, cleared.
    """
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    if principal is not None:
        protocol.principal = principal  # as the authentication guard does
    protocol.dataReceived(HANDSHAKE.format(path=path).encode())
    assert transport.value().startswith(b"HTTP/1.1 101 ")
    snapshot = transport.value()
    transport.clear()
    return protocol, transport, snapshot


def _frame(payload):
    """
    The unmasked WebSocket text frame of C{payload} (126 to 65535 bytes).
    """
    assert 126 <= len(payload) <= 0xFFFF
    return b"\x81\x7e" + len(payload).to_bytes(2, "big") + payload


class _CountedEvent(websocket.PreparedEvent):
    made = 0

    def __init__(self, body):
        _CountedEvent.made += 1
        super().__init__(body)


def test_clients_with_equal_subscriptions_are_written_one_frame_made_once(monkeypatch):
    monkeypatch.setattr(websocket, "PreparedEvent", _CountedEvent)
    _CountedEvent.made = 0
    fanout = EventFanout()
    factory = DashboardFactory(fanout, Clock(), stallTimeout=30)
    webs = [_connect(factory, web())[1] for _ in range(3)]
    dbs = [_connect(factory, db())[1] for _ in range(2)]
    everything = _connect(factory)[1]
    webBody = body(analysis("web-01", 0, 100.0))
    fanout.eventReceived(key("web-01", "analysis"), webBody)
    assert _CountedEvent.made == 1
    assert [t.value() for t in webs + [everything]] == [_frame(webBody)] * 4
    assert [t.value() for t in dbs] == [b"", b""]
    dbBody = body(analysis("db-01", 0, 100.0))
    fanout.eventReceived(key("db-01", "analysis"), dbBody)
    assert _CountedEvent.made == 2
    assert [t.value() for t in dbs] == [_frame(dbBody)] * 2
    assert everything.value() == _frame(webBody) + _frame(dbBody)
    assert [t.value() for t in webs] == [_frame(webBody)] * 3
    assert fanout.counters["sent"] == 4 + 3


def test_different_visibility_different_bytes_for_the_same_subscription():
    fanout = EventFanout()
    for host in ("web-01", "db-01"):
        fanout.eventReceived(key(host, "analysis"), body(analysis(host, 0, 100.0)))
    factory = DashboardFactory(fanout, Clock(), stallTimeout=30)
    _, alice, aliceSnapshot = _connect(factory, web())
    _, bob, bobSnapshot = _connect(factory, db())
    assert b"web-01" in aliceSnapshot and b"db-01" not in aliceSnapshot
    assert b"db-01" in bobSnapshot and b"web-01" not in bobSnapshot
    for host in ("web-01", "db-01", "web-02"):
        fanout.eventReceived(key(host, "analysis"), body(analysis(host, 1, 101.0)))
    assert b"web-01" in alice.value() and b"web-02" in alice.value() and b"db-" not in alice.value()
    assert b"db-01" in bob.value() and b"web-" not in bob.value()
    assert alice.value() != bob.value()


class _CountingSubscription(Subscription):
    calls = 0

    def matchesHost(self, host):
        _CountingSubscription.calls += 1
        return Subscription.matchesHost(self, host)


def test_each_event_is_matched_once_per_distinct_subscription_and_sent_once_to_each_client():
    """
    A subscription is asked about a host once (the fan-out indexes the
    answers), whatever the number of its clients and of the host's events.
    """
    fanout = EventFanout()
    _CountingSubscription.calls = 0
    clients = {"a": [FakeClient() for _ in range(50)], "b": [FakeClient() for _ in range(50)]}
    for host, group in clients.items():
        for client in group:
            # Equal subscriptions, each its own object (each client parses its own).
            fanout.attach(client, _CountingSubscription(hosts=[host]))
    fanout.eventReceived(key("a", "analysis"), body(analysis("a", 0, 100.0)))
    assert _CountingSubscription.calls == 2
    fanout.eventReceived(key("a", "analysis"), body(analysis("a", 1, 101.0)))
    assert _CountingSubscription.calls == 2
    assert [len(c.sent) for c in clients["a"]] == [2] * 50
    assert [len(c.sent) for c in clients["b"]] == [0] * 50
    assert fanout.counters["sent"] == 100
    # A client subscribing again moves: it is sent each event once, as its new subscription says.
    moving = clients["a"][0]
    fanout.attach(moving, _CountingSubscription(hosts=["b"]))
    fanout.eventReceived(key("b", "analysis"), body(analysis("b", 0, 100.0)))
    assert [m["host"] for m in moving.sent] == ["a", "a", "b"]
    for client in clients["a"] + clients["b"]:
        fanout.detach(client)
    assert fanout.clients == {} and fanout._audiences == {}


def test_an_event_costs_the_subscriptions_it_concerns_not_every_distinct_one():
    """
    A thousand dashboards each following its own host (a thousand distinct
    subscriptions): each is asked about a host once; later events of that
    host are sent to its one audience without asking the others again.
    """
    fanout = EventFanout()
    _CountingSubscription.calls = 0
    clients = [FakeClient() for _ in range(1000)]
    for i, client in enumerate(clients):
        fanout.attach(client, _CountingSubscription(hosts=[f"host-{i}"]))
    for seq in range(5):
        fanout.eventReceived(key("host-7", "analysis"), body(analysis("host-7", seq, 100.0 + seq)))
    assert _CountingSubscription.calls == 1000
    assert len(clients[7].sent) == 5 and sum(len(c.sent) for c in clients) == 5
    # A subscription made later is asked about the hosts already indexed, once.
    late = FakeClient()
    fanout.attach(late, _CountingSubscription(hosts=["host-7"]))
    fanout.eventReceived(key("host-7", "analysis"), body(analysis("host-7", 5, 105.0)))
    assert len(late.sent) == 1 and len(clients[7].sent) == 6
    # One that went is dropped from the index when an event finds it.
    fanout.detach(clients[7])
    fanout.eventReceived(key("host-7", "analysis"), body(analysis("host-7", 6, 106.0)))
    assert len(clients[7].sent) == 6 and len(late.sent) == 2
    assert len(fanout._bySubject["host-7"].audiences) == 1


def test_subscribing_costs_nothing_per_subject_until_an_event_comes():
    """
    A new subscription is not matched against every subject seen (200,000
    event sources would cost each subscribe message that many matches): it
    is asked about a subject when an event about it comes.
    """
    from test_units_eventfanout import posted
    fanout = EventFanout()
    fanout.attach(FakeClient(), Subscription(events=["event"]))
    for i in range(300):
        fanout.eventReceived(f"source{i}.event", posted(f"source{i}", 100.0, f"e{i}"))
    _CountingSubscription.calls = 0
    late = FakeClient()
    fanout.attach(late, _CountingSubscription(hosts=["#"], events=["event"]))
    assert _CountingSubscription.calls == 0
    fanout.eventReceived("source7.event", posted("source7", 101.0, "again"))
    assert _CountingSubscription.calls == 1 and len(late.sent) == 1


def test_subscriptions_that_went_are_not_kept_whole_by_the_index(monkeypatch):
    """
    A client subscribing again and again (each time with other patterns):
    the subscriptions it left are dropped from the index's lists as events
    find them, hold no patterns meanwhile, and the index stays within its
    bound even when no new subject comes.
    """
    import gc
    import weakref

    from resmon.webserver import fanout as fanoutModule
    from test_units_eventfanout import posted
    monkeypatch.setattr(fanoutModule, "MAX_INDEXED", 300)
    fanout = EventFanout()
    client = FakeClient()
    left = []
    for i in range(500):
        subscription = Subscription(hosts=["#", f"x{i}"], events=["event"])
        left.append(weakref.ref(subscription))
        fanout.attach(client, subscription)
        del subscription
        fanout.eventReceived(f"source{i % 20}.event", posted(f"source{i % 20}", 100.0, f"e{i}"))
        assert fanout._indexed <= 300
    gc.collect()
    assert sum(ref() is not None for ref in left) == 1  # only the one attached now
    assert len(fanout._live) == 1 and len(client.sent) == 500


def test_a_client_that_does_not_read_holds_one_history_reply_not_one_per_host():
    """
    History requests within the message rate, for many hosts, from a client
    whose socket is full: one reply is held (the last asked for), and it is
    what is written when the client reads again.
    """
    from test_web_units import _fanout
    fanout = _fanout()
    hosts = [f"web-{i:02d}" for i in range(30)]
    for host in hosts:
        for seq in range(3):
            fanout.eventReceived(key(host, "analysis"), body(analysis(host, seq, 100.0 + seq)))
    factory = DashboardFactory(fanout, Clock(), stallTimeout=30)
    protocol, transport, _ = _connect(factory)
    protocol.flow.pauseProducing()
    for host in hosts:
        protocol.onMessage(json.dumps({"kind": "history", "host": host}).encode(), False)
    held = [message for k, message in protocol.flow.pending.items() if k[0] == "history"]
    assert len(held) == 1
    protocol.flow.resumeProducing()
    written = transport.value()
    assert b'"host":"web-29"' in written and b'"host":"web-00"' not in written


def test_subscriptions_without_matches_host_match_each_event():
    class Everything:
        def matches(self, document):
            return True
    fanout = EventFanout()
    client = FakeClient()
    fanout.attach(client, Everything())
    fanout.eventReceived(key("a", "analysis"), body(analysis("a", 0, 100.0)))
    assert len(client.sent) == 1
    fanout.detach(client)
    assert fanout._unindexed == {}


def test_the_index_of_subjects_is_bounded_whatever_the_sources(monkeypatch):
    """
    Events about ever new subjects (sources of events from the bus) make
    the index start again past its bound, not grow.
    """
    from resmon.webserver import fanout as fanoutModule
    from test_units_eventfanout import posted
    monkeypatch.setattr(fanoutModule, "MAX_INDEXED", 50)
    fanout = EventFanout()
    clients = [FakeClient() for _ in range(3)]
    for client, events in zip(clients, (["event"], ["event", "alert"], ["analysis"])):
        fanout.attach(client, Subscription(events=events))
    for i in range(500):
        fanout.eventReceived(f"source{i}.event", posted(f"source{i}", 100.0, f"e{i}"))
        assert fanout._indexed <= 50
    assert len(fanout._bySubject) <= 50 // 3
    assert [len(c.sent) for c in clients] == [500, 500, 0]


def test_the_users_answers_are_kept_within_one_budget(monkeypatch):
    from resmon.webserver import visibility
    monkeypatch.setattr(visibility, "_SHARED_ANSWERS", 100)
    monkeypatch.setattr(visibility, "_shared", {})
    monkeypatch.setattr(visibility, "_sharedCount", 0)
    principals = [Principal(f"u{i}", VIEWER, [f"web-{i}", "db-*"]) for i in range(5)]
    subscriptions = [visibility.visibleTo(p, EVERYTHING) for p in principals]
    for i in range(1000):
        for subscription in subscriptions:
            subscription.matchesHost(f"source{i}")
        assert visibility._sharedCount <= 100
    assert subscriptions[2].matchesHost("web-2") and not subscriptions[2].matchesHost("web-3")
    assert subscriptions[0].matchesHost("db-9")


def test_a_paused_client_holds_the_shared_frame_back_and_then_gets_the_latest():
    fanout = EventFanout()
    factory = DashboardFactory(fanout, Clock(), stallTimeout=30)
    _, reading, _ = _connect(factory)
    slow, stalled, _ = _connect(factory)
    slow.flow.pauseProducing()
    first, second = body(analysis("web-01", 0, 100.0)), body(analysis("web-01", 1, 101.0))
    fanout.eventReceived(key("web-01", "analysis"), first)
    fanout.eventReceived(key("web-01", "analysis"), second)
    assert reading.value() == _frame(first) + _frame(second)
    assert stalled.value() == b""
    held = list(slow.flow.pending.values())
    assert len(held) == 1 and held[0].payloadHybi == _frame(second) and slow.flow.coalesced == 1
    assert held[0] is factory.prepareEvent(fanout.latest.get("web-01"), second)[1]
    slow.flow.resumeProducing()
    assert stalled.value() == _frame(second)


def test_literal_host_patterns_match_as_the_topic_patterns_did():
    subscription = Subscription(hosts=["web-01.example.com", "db_01", "cache-*", "*", "a.b"])
    assert subscription.matchesHost("web-01.example.com")
    assert subscription.matchesHost("db.01")  # its routing word is db_01
    assert subscription.matchesHost("anything")  # "*" matches every one-word routing key
    narrow = Subscription(hosts=["web-01.example.com", "db_01", "a.b"])
    assert not narrow.matchesHost("web-01")
    assert not narrow.matchesHost("a_b")  # a pattern with a dot matches no routing word
    assert narrow.matchesHost("a.b")  # but the host of that name
    assert Subscription(hosts=["#"]).matchesHost("x")
    assert Subscription(hosts=["db_01"]).matchKey == Subscription(hosts=["db_01"]).matchKey
    assert Subscription(hosts=["db_01"]).matchKey != Subscription(hosts=["db_01"], events=["status"]).matchKey


def test_wildcard_host_patterns_match_as_topic_patterns_do():
    """
    A subscription's wildcard patterns are reduced once to what they match
    among one-word keys (a host's routing word); the answer is
    topicMatches' for every pattern and host.
    """
    import random

    from resmon.topics import hostWord, topicMatches
    rng = random.Random(3)
    hosts = ["a", "b", "a.b", "web-01", "c_d"]
    for _ in range(3000):
        pattern = ".".join(rng.choice(["#", "*", "a", "b", "web-01"]) for _ in range(rng.randint(1, 5)))
        if "*" not in pattern and "#" not in pattern:
            continue
        subscription = Subscription(hosts=[pattern])
        for host in hosts:
            assert subscription.matchesHost(host) == topicMatches(pattern, hostWord(host)), (
                pattern, host)


def test_hostile_host_patterns_cost_set_lookups(monkeypatch):
    """
    A thousand patterns of 255 characters (what any dashboard may send) are
    judged once when subscribing; matching each new host then makes no
    topic match at all.
    """
    from resmon import topics
    patterns = ["#.*." * 60 + f"x{i:03d}" for i in range(1000)]
    subscription = Subscription(hosts=patterns)
    monkeypatch.setattr(topics, "topicMatches", lambda *a: pytest.fail("a topic match per host"))
    assert not subscription.matchesHost("web-01")
    assert not subscription.matchesHost("x007")  # "#.*" then "x007": two words besides '#'
    assert Subscription(hosts=["#." * 126 + "x007"]).matchesHost("x007")
    assert Subscription(hosts=["#." * 126 + "*"]).matchesHost("anything")


@pytest_twisted.inlineCallbacks
def test_websocket_connections_are_set_tcp_nodelay(tmp_path):
    """
    Each event is written at once: no Nagle delay on the web role's side
    (twisted.web sets it when the connection is made, the protocol again
    when the WebSocket opens).
    """
    from twisted.internet import reactor

    from resmon.services.web import buildSite
    from support import connectWebSocket, waitUntil

    (tmp_path / "index.html").write_text("<p>dashboard</p>")
    fanout = EventFanout()
    port = reactor.listenTCP(0, buildSite(fanout, reactor, root=str(tmp_path)), interface="127.0.0.1")
    try:
        client, proto = yield connectWebSocket(port.getHost().port)
        yield waitUntil(lambda: len(fanout.clients) == 1, 5, "the client attached")
        (server,) = fanout.clients
        handle = server.transport.getHandle()
        assert handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        proto.dropConnection(abort=True)
    finally:
        yield port.stopListening()


def test_equal_subscriptions_share_their_patterns_within_a_bound():
    from resmon.webserver.subscriptions import _SharedPatterns

    table = _SharedPatterns(limit=5)
    first = table.get(["a", "b*", "c"])
    assert first == (("a", "b*", "c"), frozenset({"a", "c"}), (False, frozenset({"b*"})))
    assert table.get(("a", "b*", "c")) is first
    table.get(["d", "e", "f"])  # 6 patterns in all: the table starts again
    assert table.get(["a", "b*", "c"]) is not first
    assert Subscription(hosts=["x", "y"]).hosts is Subscription(hosts=("x", "y")).hosts


@pytest.mark.parametrize("seed, bound", [(1, 40), (2, 25), (3, 2_000_000)])
def test_the_index_sends_what_matching_every_subscription_would(monkeypatch, seed, bound):
    """
    Random attaches (plain and user-visible subscriptions, some sharing a
    key), re-attaches, detaches, forgotten subjects and events, with the
    index's bound small enough to be hit: each client gets exactly the
    events its subscription matches, and the index's count of entries is
    always what it holds.
    """
    import random

    from resmon.webserver import fanout as fanoutModule
    from resmon.webserver.visibility import visibleTo
    monkeypatch.setattr(fanoutModule, "MAX_INDEXED", bound)
    rng = random.Random(seed)
    plain = [Subscription(["a"]), Subscription(["#"]), Subscription(["b", "*"]),
             Subscription(None, events=["status"]), Subscription(["a", "c"], events=["alert"]),
             Subscription(["c.#"])]
    principals = [Principal("p", VIEWER, ["a", "b"]), Principal("q", VIEWER, ["*"])]
    class RawClient:
        def __init__(self):
            self.sent = []

        def sendEvent(self, document, body):
            self.sent.append(body)

    fanout = EventFanout()
    clients = [RawClient() for _ in range(8)]
    subjects = ["a", "b", "c", "d", "e"] + [f"s{i}" for i in range(30)]
    attached = {}
    for step in range(5000):
        roll = rng.random()
        if roll < 0.2:
            client, subscription = rng.choice(clients), rng.choice(plain)
            if rng.random() < 0.5:
                subscription = visibleTo(rng.choice(principals), subscription)
            fanout.attach(client, subscription)
            attached[client] = subscription
        elif roll < 0.3:
            client = rng.choice(clients)
            fanout.detach(client)
            attached.pop(client, None)
        elif roll < 0.33:
            fanout._unindex(rng.choice(subjects))
        else:
            document = {"kind": rng.choice(["analysis", "status", "alert", "event"]),
                        "host": rng.choice(subjects)}
            marker = object()
            fanout._send(document, marker)
            for client in clients:
                subscription = attached.get(client)
                expected = subscription is not None and subscription.matches(document)
                assert (bool(client.sent) and client.sent[-1] is marker) == expected, step
        assert fanout._indexed == sum(len(entry.audiences) + 1
                                      for entry in fanout._bySubject.values())
        assert fanout._indexed <= max(bound, len(fanout._live) + 1)
