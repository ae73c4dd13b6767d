"""
The fan-out's sharing: each event is matched once per distinct subscription
(and visibility), framed once as a WebSocket message, and the same frame is
written to every client it matches; per-client flow control, order and
visibility stay each client's own. WebSocket protocols here did a real
handshake over a StringTransport; the last test connects over real TCP.
"""

import socket

import pytest_twisted
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from resmon.auth.principal import VIEWER, Principal
from resmon.webserver import websocket
from resmon.webserver.fanout import EventFanout
from resmon.webserver.subscriptions import Subscription
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

    def matches(self, document):
        _CountingSubscription.calls += 1
        return Subscription.matches(self, document)


def test_each_event_is_matched_once_per_distinct_subscription_and_sent_once_to_each_client():
    fanout = EventFanout()
    _CountingSubscription.calls = 0
    clients = {"a": [FakeClient() for _ in range(50)], "b": [FakeClient() for _ in range(50)]}
    for host, group in clients.items():
        for client in group:
            # Equal subscriptions, each its own object (each client parses its own).
            fanout.attach(client, _CountingSubscription(hosts=[host]))
    fanout.eventReceived(key("a", "analysis"), body(analysis("a", 0, 100.0)))
    assert _CountingSubscription.calls == 2
    assert [len(c.sent) for c in clients["a"]] == [1] * 50
    assert [len(c.sent) for c in clients["b"]] == [0] * 50
    assert fanout.counters["sent"] == 50
    # A client subscribing again moves: it is sent each event once, as its new subscription says.
    moving = clients["a"][0]
    fanout.attach(moving, _CountingSubscription(hosts=["b"]))
    fanout.eventReceived(key("b", "analysis"), body(analysis("b", 0, 100.0)))
    assert [m["host"] for m in moving.sent] == ["a", "b"]
    for client in clients["a"] + clients["b"]:
        fanout.detach(client)
    assert fanout.clients == {} and fanout._audiences == {}


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
