"""
Several events per WebSocket message for the clients that ask for it
(/ws?batch=1, as the dashboard does): the events of one reactor turn go out
together when it ends, framed once for all the clients given the same ones;
flow control, order and subscriptions stay each client's own. Protocols
here did a real handshake over a StringTransport; the Clock's advance(0) is
the end of the reactor turn.
"""

import json

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from resmon.webserver import batches, sse, websocket
from resmon.webserver.fanout import EventFanout
from resmon.webserver.sendbudget import HIGH_WATER, SendBudget
from resmon.webserver.websocket import DashboardFactory
from test_units_fanout_sharing import HANDSHAKE, _CountedEvent
from test_web_units import analysis, body, key


def _connect(factory, path="/ws?history=0&batch=1"):
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(HANDSHAKE.format(path=path).encode())
    assert transport.value().startswith(b"HTTP/1.1 101 "), transport.value()[:200]
    transport.clear()
    return protocol, transport


def messages(data):
    """
    The messages in C{data} (unmasked frames, a message perhaps in several),
    decoded from JSON.
    """
    found, parts = [], []
    while data:
        length, start = data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        parts.append(data[start:start + length])
        if data[0] & 0x80:  # FIN: the message's last frame
            found.append(json.loads(b"".join(parts)))
            parts = []
        data = data[start + length:]
    assert parts == []
    return found


def _setup(budget=None):
    clock = Clock()
    fanout = EventFanout(clock=clock)
    factory = DashboardFactory(fanout, clock, stallTimeout=30, budget=budget)
    return clock, fanout, factory


def _publish(fanout, host, seq):
    fanout.eventReceived(key(host, "analysis"), body(analysis(host, seq, 100.0 + seq)))


def test_the_events_of_one_turn_go_out_in_one_message_when_it_ends():
    clock, fanout, factory = _setup()
    batching, batched = _connect(factory)
    _, plain = _connect(factory, "/ws?history=0")
    for host, seq in (("a", 1), ("b", 1), ("a", 2)):
        _publish(fanout, host, seq)
    # A client that did not ask is sent each event as it comes.
    assert [(m["host"], m["seq"]) for m in messages(plain.value())] == [("a", 1), ("b", 1), ("a", 2)]
    assert batched.value() == b""
    clock.advance(0)
    [message] = messages(batched.value())
    assert message["kind"] == "batch"
    # Every event, in the order it came, as it would be sent alone.
    assert [(e["kind"], e["host"], e["seq"]) for e in message["events"]] == [
        ("analysis", "a", 1), ("analysis", "b", 1), ("analysis", "a", 2)]
    assert message["events"][0] == analysis("a", 1, 101.0)
    assert batching.batching and clock.getDelayedCalls() == []


def test_one_event_in_a_turn_is_sent_as_itself():
    clock, fanout, factory = _setup()
    _, batched = _connect(factory)
    _publish(fanout, "a", 1)
    clock.advance(0)
    assert messages(batched.value()) == [analysis("a", 1, 101.0)]


def test_clients_given_the_same_events_share_one_message_made_once(monkeypatch):
    monkeypatch.setattr(websocket, "PreparedEvent", _CountedEvent)
    clock, fanout, factory = _setup()
    clients = [_connect(factory)[1] for _ in range(5)]
    narrow = _connect(factory, "/ws?history=0&batch=1&hosts=a")[1]
    _CountedEvent.made = 0
    for host, seq in (("a", 1), ("b", 1)):
        _publish(fanout, host, seq)
    clock.advance(0)
    # One batch for the five, one event for the one following "a" only.
    assert _CountedEvent.made == 2
    assert len({t.value() for t in clients}) == 1
    assert [e["host"] for e in messages(clients[0].value())[0]["events"]] == ["a", "b"]
    assert messages(narrow.value()) == [analysis("a", 1, 101.0)]


def test_a_client_not_reading_holds_back_the_latest_event_per_host_not_the_batches():
    clock, fanout, factory = _setup()
    protocol, transport = _connect(factory)
    protocol.flow.pauseProducing()
    for seq in range(1, 4):
        _publish(fanout, "a", seq)
        _publish(fanout, "b", seq)
        clock.advance(0)
    assert transport.value() == b""
    assert list(protocol.flow.pending) == [("analysis", "a"), ("analysis", "b")]
    protocol.flow.resumeProducing()
    assert [(m["host"], m["seq"]) for m in messages(transport.value())] == [("a", 3), ("b", 3)]
    # Reading again, it is sent batches again.
    transport.clear()
    _publish(fanout, "a", 4)
    _publish(fanout, "b", 4)
    clock.advance(0)
    assert [m["kind"] for m in messages(transport.value())] == ["batch"]


def test_a_batch_that_fills_the_send_buffer_is_charged_to_the_budget():
    budget = SendBudget(limit=64 * 1024 * 1024)
    clock, fanout, factory = _setup(budget)
    protocol, transport = _connect(factory)
    for seq in range(3):
        _publish(fanout, f"h{seq}", seq)
    original = transport.write

    def write(data):
        # The write that fills the buffer pauses the transport (as Twisted's do).
        original(data)
        protocol.flow.pauseProducing()
    transport.write = write
    clock.advance(0)
    [message] = messages(transport.value())
    assert protocol.flow.paused and len(message["events"]) == 3
    assert protocol.flow.charged > HIGH_WATER
    assert budget.queued == protocol.flow.charged


def _twoClientsAndTwoEvents():
    """
    Two batching clients, and the analyses of hosts a and b gathered for them this turn.
    """
    clock, fanout, factory = _setup()
    protocol, transport = _connect(factory)
    _, other = _connect(factory)
    _publish(fanout, "a", 1)
    _publish(fanout, "b", 1)
    return clock, fanout, protocol, transport, other


def test_a_subscribe_is_sent_what_the_old_subscription_gathered_then_the_snapshot():
    clock, fanout, protocol, transport, other = _twoClientsAndTwoEvents()
    protocol.onMessage(json.dumps({"kind": "subscribe", "hosts": ["b"], "history": False}).encode(), False)
    # As it would have been sent them unbatched: before the new snapshot.
    found = messages(transport.value())
    assert [m["kind"] for m in found] == ["batch", "snapshot"]
    assert [e["host"] for e in found[0]["events"]] == ["a", "b"]
    assert [e["host"] for e in found[1]["events"]] == ["b"]
    _publish(fanout, "a", 2)
    _publish(fanout, "b", 2)
    clock.advance(0)
    assert messages(transport.value())[2:] == [analysis("b", 2, 102.0)]
    # The other client of the old subscription is sent its batch whole, once.
    assert [[(e["host"], e["seq"]) for e in m["events"]] for m in messages(other.value())] == [
        [("a", 1), ("b", 1), ("a", 2), ("b", 2)]]


def test_replies_go_at_once_and_leave_the_turns_batches_whole():
    clock, fanout, factory = _setup()
    protocol, transport = _connect(factory)
    _, other = _connect(factory)
    junk, _ = _connect(factory, "/ws?history=0")
    _publish(fanout, "a", 1)
    protocol.onMessage(json.dumps({"kind": "history", "host": "a"}).encode(), False)
    # Another client's bad messages do not cut anyone's batch short.
    for _ in range(3):
        junk.onMessage(b"not json", False)
    _publish(fanout, "b", 1)
    clock.advance(0)
    # The reply has the turn's points; the events follow in one message.
    assert [m["kind"] for m in messages(transport.value())] == ["history", "batch"]
    assert [m["kind"] for m in messages(other.value())] == ["batch"]
    assert len(messages(other.value())[0]["events"]) == 2


@pytest.mark.parametrize("bound", ["MAX_BATCH", "MAX_BATCH_BYTES"])
def test_a_batch_is_sent_once_it_holds_its_bound_of_events_or_bytes(monkeypatch, bound):
    # Three events' worth, counted or in bytes.
    three = 3 if bound == "MAX_BATCH" else 3 * len(body(analysis("h0", 0, 100.0)))
    monkeypatch.setattr(batches, bound, three)
    clock, fanout, factory = _setup()
    _, transport = _connect(factory)
    for seq in range(4):
        _publish(fanout, f"h{seq}", seq)
    # Sent within the turn at three; the fourth waits for its end.
    assert [len(m["events"]) for m in messages(transport.value())] == [3]
    clock.advance(0)
    assert [m.get("host") for m in messages(transport.value())[1:]] == ["h3"]


def test_a_client_gone_before_the_turn_ends_is_sent_nothing():
    clock, fanout, protocol, transport, other = _twoClientsAndTwoEvents()
    protocol.onClose(False, 1006, None)
    clock.advance(0)
    assert transport.value() == b""
    assert len(messages(other.value())[0]["events"]) == 2


def test_batch_must_be_0_or_1_and_0_is_one_event_per_message():
    clock, fanout, factory = _setup()
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    # As twisted.web's channel is, before an upgrade (Autobahn unregisters it on refusal).
    transport.registerProducer(protocol, True)
    protocol.dataReceived(HANDSHAKE.format(path="/ws?batch=yes").encode())
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert b"batch: expected 0 or 1" in transport.value()
    _, plain = _connect(factory, "/ws?history=0&batch=0")
    _publish(fanout, "a", 1)
    _publish(fanout, "b", 1)
    assert [m["host"] for m in messages(plain.value())] == ["a", "b"]


def test_the_batch_body_is_the_events_bodies_joined():
    assert batches.batchBody([b'{"a":1}', b'{"b":2}']) == b'{"kind":"batch","events":[{"a":1},{"b":2}]}'
    assert json.loads(batches.batchBody([b"{}"])) == {"kind": "batch", "events": [{}]}


def _events(transport):
    found = []
    for message in messages(transport.value()):
        found += message["events"] if message.get("kind") == "batch" else [message]
    return [(e["host"], e["seq"]) for e in found]


def test_a_client_joining_a_subscription_mid_turn_is_not_sent_what_came_before_its_snapshot():
    clock, fanout, factory = _setup()
    _, first = _connect(factory)
    _publish(fanout, "a", 1)
    second, secondTransport = _connect(factory)
    _publish(fanout, "a", 2)
    _, third = _connect(factory)
    _publish(fanout, "a", 3)
    clock.advance(0)
    # One message each, the first's batch whole: nobody's batch was cut short.
    assert [len(messages(t.value())) for t in (first, secondTransport, third)] == [1, 1, 1]
    assert _events(first) == [("a", 1), ("a", 2), ("a", 3)]
    assert _events(secondTransport) == [("a", 2), ("a", 3)]
    assert _events(third) == [("a", 3)]
    assert fanout.counters["sent"] == 6
    # The next turn, each is sent every event again.
    _publish(fanout, "a", 4)
    _publish(fanout, "a", 5)
    clock.advance(0)
    assert [_events(t)[-2:] for t in (first, secondTransport, third)] == [[("a", 4), ("a", 5)]] * 3


def test_a_forgotten_host_leaves_no_key_behind_with_a_client_holding_events_back():
    clock, fanout, factory = _setup()
    protocol, transport = _connect(factory)
    protocol.flow.pauseProducing()
    _publish(fanout, "h", 1)
    fanout.eventReceived(key("h", "status"), body(
        {"v": 1, "kind": "status", "host": "h", "status": "forgotten", "since": 100.0, "last_seen": 100.0}))
    clock.advance(0)
    assert fanout._eventKeys == {}
    protocol.flow.resumeProducing()
    assert [(m["kind"], m.get("status")) for m in messages(transport.value())] == [
        ("analysis", None), ("status", "forgotten")]


def test_a_single_event_is_framed_once_for_every_subscription_it_matches(monkeypatch):
    monkeypatch.setattr(websocket, "PreparedEvent", _CountedEvent)
    clock, fanout, factory = _setup()
    paths = ["/ws?history=0&batch=1", "/ws?history=0&batch=1&hosts=a", "/ws?history=0&batch=1&events=analysis"]
    transports = [_connect(factory, path)[1] for path in paths]
    _CountedEvent.made = 0
    _publish(fanout, "a", 1)
    clock.advance(0)
    assert _CountedEvent.made == 1
    assert [messages(t.value()) for t in transports] == [[analysis("a", 1, 101.0)]] * 3


class _Batching:
    """
    A client of the fan-out taking batches: it must never be given events one by one.
    """

    batching = True

    def __init__(self):
        self.batches = []

    def sendEvent(self, document, body):
        raise AssertionError("a batching client was sent an event alone")

    def sendBatch(self, batch):
        self.batches.append([json.loads(body)["seq"] for _, body in batch.events])


def test_the_clients_of_one_subscription_share_one_batch_per_turn():
    clock = Clock()
    fanout = EventFanout(clock=clock)
    clients = [_Batching() for _ in range(100)]
    for client in clients:
        fanout.attach(client)
    for seq in range(3):
        _publish(fanout, "a", seq)
    assert [c.batches for c in clients] == [[]] * 100
    clock.advance(0)
    assert [c.batches for c in clients] == [[[0, 1, 2]]] * 100
    assert fanout.counters["sent"] == 300


def test_without_a_clock_each_event_is_a_batch_of_its_own():
    fanout = EventFanout()
    client = _Batching()
    fanout.attach(client)
    _publish(fanout, "a", 1)
    _publish(fanout, "a", 2)
    assert client.batches == [[1], [2]]
    assert fanout._batched == []


def test_a_client_raising_on_a_batch_is_detached_and_the_others_are_sent_it():
    clock = Clock()
    fanout = EventFanout(clock=clock)

    class Broken(_Batching):
        def sendBatch(self, batch):
            raise RuntimeError("broken")

    broken, fine = Broken(), _Batching()
    fanout.attach(broken)
    fanout.attach(fine)
    _publish(fanout, "a", 1)
    clock.advance(0)
    assert fine.batches == [[1]] and broken not in fanout.clients


class _TwistedLikeTransport(StringTransport):
    """
    A StringTransport that pauses its producer once more than HIGH_WATER
    bytes wait, during the write, as Twisted's transports do.
    """

    def write(self, data):
        StringTransport.write(self, data)
        if len(self.io.getvalue()) > HIGH_WATER and self.producer is not None \
                and self.producerState == "producing":
            self.producerState = "paused"
            self.producer.pauseProducing()


def test_a_burst_pauses_each_client_at_the_buffer_not_beyond_and_all_of_it_arrives():
    """
    A turn with far more than a buffer's worth of events: each client is
    written batches until its buffer is full (never a batch much bigger than
    the buffer, charged whole to the shared budget), then holds the rest
    back per host; reading, it gets every event, in order.
    """
    budget = SendBudget(limit=64 * 1024 * 1024)
    clock, fanout, factory = _setup(budget)
    clients = []
    for _ in range(100):
        protocol = factory.buildProtocol(None)
        transport = _TwistedLikeTransport()
        protocol.makeConnection(transport)
        transport.registerProducer(protocol, True)  # as twisted.web's channel does
        protocol.dataReceived(HANDSHAKE.format(path="/ws?history=0&batch=1").encode())
        transport.clear()
        transport.producerState = "producing"
        clients.append((protocol, transport))
    for n in range(600):
        _publish(fanout, f"h{n:03d}", 1)
    clock.advance(0)
    assert budget.counters["dropped"] == 0
    # What an unbatched client would hold: a buffer and a bit (the write that filled it).
    assert budget.peak <= 100 * 2 * HIGH_WATER
    for protocol, transport in clients:
        assert protocol.flow.paused
        assert len(transport.value()) <= 2 * HIGH_WATER
    received = {id(t): [] for _, t in clients}
    while any(p.flow.paused for p, _ in clients):
        for protocol, transport in clients:
            received[id(transport)] += _events(transport)
            transport.clear()
            transport.producerState = "producing"
            protocol.flow.resumeProducing()
    for protocol, transport in clients:
        received[id(transport)] += _events(transport)
    assert all(r == [(f"h{n:03d}", 1) for n in range(600)] for r in received.values())
    assert budget.queued == 0


# Event streams (/api/stream): every client takes the events of a turn in
# one write, and reads them as the events written one by one.


def _sseSetup(tmp_path):
    from resmon.services.web import buildSite
    clock = Clock()
    fanout = EventFanout(clock=clock)
    return clock, fanout, buildSite(fanout, clock, stallTimeout=30, root=str(tmp_path))


def _chunks(connection):
    """
    The chunks of the response's body written so far (the HTTP head and the
    chunked framing taken off).
    """
    rest = connection.transport.value().split(b"\r\n\r\n", 1)[1]
    found = []
    while rest:
        size, rest = rest.split(b"\r\n", 1)
        found.append(rest[:int(size, 16)])
        rest = rest[int(size, 16) + 2:]
    return found


def test_an_event_stream_is_written_the_events_of_one_turn_at_once_as_events(tmp_path):
    from test_web_units import SSEConnection, _event
    clock, fanout, site = _sseSetup(tmp_path)
    stream = SSEConnection(site, b"?history=0")
    dashboard, batched = _connect(DashboardFactory(fanout, clock, stallTimeout=30))
    stream.frames()
    before = len(_chunks(stream))
    bodies = [body(analysis(host, seq, 100.0 + seq)) for host, seq in (("a", 1), ("b", 1), ("a", 2))]
    for (host, seq), message in zip((("a", 1), ("b", 1), ("a", 2)), bodies):
        fanout.eventReceived(key(host, "analysis"), message)
    assert stream.frames() == [] and batched.value() == b""
    clock.advance(0)
    # One write (one chunk) holding each event exactly as it was written alone.
    [chunk] = _chunks(stream)[before:]
    assert chunk == b"".join(sse.eventFrame("analysis", message) for message in bodies)
    assert [(k, e["host"], e["seq"]) for k, e in map(_event, stream.frames())] == [
        ("analysis", "a", 1), ("analysis", "b", 1), ("analysis", "a", 2)]
    # The dashboard beside it, with the same subscription, has its own batch message.
    [message] = messages(batched.value())
    assert message["kind"] == "batch" and len(message["events"]) == 3
    assert fanout.counters["batches"] == 2
    stream.close()
    dashboard.onClose(True, 1000, None)
    assert fanout.clients == {}


def test_the_event_streams_of_one_subscription_share_what_is_written(tmp_path, monkeypatch):
    from test_web_units import SSEConnection
    clock, fanout, site = _sseSetup(tmp_path)
    made = []
    original = sse.keyedEventFrame

    def counted(eventKey, message):
        made.append(eventKey)
        return original(eventKey, message)
    monkeypatch.setattr(sse, "keyedEventFrame", counted)
    streams = [SSEConnection(site, b"?history=0") for _ in range(3)]
    for stream in streams:
        stream.frames()
    for seq in range(4):
        _publish(fanout, f"h{seq % 2}", seq)
    clock.advance(0)
    # Each event framed once, not once per stream; every stream sent the same bytes.
    assert len(made) == 4
    assert len({_chunks(stream)[-1] for stream in streams}) == 1
    assert all(len(stream.frames()) == 4 for stream in streams)
    for stream in streams:
        stream.close()


def test_an_event_stream_not_reading_holds_back_the_latest_event_per_host(tmp_path):
    from test_web_units import SSEConnection, _event
    clock, fanout, site = _sseSetup(tmp_path)
    stream = SSEConnection(site, b"?history=0")
    stream.frames()
    stream.transport.producer.pauseProducing()
    for seq in range(50):
        for host in ("a", "b"):
            _publish(fanout, host, seq)
        clock.advance(0)
    assert stream.frames() == []
    stream.transport.producer.resumeProducing()
    assert [(k, e["host"], e["seq"]) for k, e in map(_event, stream.frames())] == [
        ("analysis", "a", 49), ("analysis", "b", 49)]
    # And then batches again, a turn's events in one write.
    before = len(_chunks(stream))
    _publish(fanout, "a", 50)
    _publish(fanout, "b", 50)
    clock.advance(0)
    assert len(_chunks(stream)) == before + 1 and len(stream.frames()) == 2
    stream.close()


# A notification, sent to one client alone, comes after the events of the
# turn that came before it, and those are not sent again at the turn's end.


def _kindsAndSeqs(documents):
    return [(d["kind"], d.get("seq", d.get("id"))) for d in documents]


def test_a_notification_on_an_event_stream_comes_after_the_turns_earlier_events(tmp_path):
    from resmon.webserver.notifications import NotificationCenter
    from test_units_visibility import Directory, UserSSE, _notification, _published, _userSite, alice
    from test_web_units import _event
    clock = Clock()
    clock.advance(200)
    fanout = EventFanout(clock=clock)
    center = NotificationCenter(fanout, clock, Directory(alice()))
    site = _userSite(tmp_path, fanout, clock, center)
    stream = UserSSE(site, "alice", b"?history=0&events=analysis")
    stream.frames()
    fanout.eventReceived(key("web-01", "analysis"), body(analysis("web-01", 1, 150.0)))
    center.received(*_published(_notification("user", "alice", "n1")))
    fanout.eventReceived(key("web-01", "analysis"), body(analysis("web-01", 2, 151.0)))
    clock.advance(0)
    events = [_event(frame) for frame in stream.frames()]
    assert [(kind, e.get("seq")) for kind, e in events] == [
        ("analysis", 1), ("notification", None), ("analysis", 2)]
    stream.close()


def test_a_notification_on_a_batching_websocket_comes_after_the_turns_earlier_events():
    from resmon.webserver.notifications import NotificationCenter
    from test_units_visibility import Directory, _notification, _published, _socket, alice
    clock = Clock()
    clock.advance(200)
    fanout = EventFanout(clock=clock)
    center = NotificationCenter(fanout, clock, Directory(alice()))
    protocol, raw = _socket(fanout, alice(), {"batch": ["1"], "history": ["0"]}, notifications=center)
    assert protocol.batching
    raw.clear()
    for seq in (1, 2):
        fanout.eventReceived(key("web-01", "analysis"), body(analysis("web-01", seq, 150.0 + seq)))
    center.received(*_published(_notification("user", "alice", "n1")))
    fanout.eventReceived(key("web-01", "analysis"), body(analysis("web-01", 3, 153.0)))
    clock.advance(0)
    received = [json.loads(payload) for payload in raw]
    assert [m["kind"] for m in received] == ["batch", "notification", "analysis"]
    assert [e["seq"] for e in received[0]["events"]] == [1, 2] and received[2]["seq"] == 3


def test_event_streams_closed_mid_turn_are_sent_the_turns_events_first(tmp_path):
    from test_web_units import SSEConnection, _event
    clock, fanout, site = _sseSetup(tmp_path)
    stream = SSEConnection(site, b"?history=0&events=analysis")
    stream.frames()
    _publish(fanout, "web-01", 1)
    site.eventStreams.closeAll()
    clock.advance(0)
    assert [(k, e["seq"]) for k, e in map(_event, stream.frames())] == [("analysis", 1)]


def test_an_event_stream_batch_of_bodies_full_of_line_breaks_is_no_bigger_than_its_bodies(tmp_path):
    # A publisher's line breaks (JSON white space) are written as spaces, not
    # as a data: line each, which made a batch of 32 KiB of bodies over 200 KiB.
    from test_web_units import SSEConnection
    clock, fanout, site = _sseSetup(tmp_path)
    connection = SSEConnection(site, b"?history=0")
    connection.frames()
    before = len(_chunks(connection))
    bodies = []
    for i in range(40):
        document = analysis(f"web-{i:02d}", 1, 100.0)
        body = json.dumps(document, indent=1).replace("\n", "\n" * 20).encode()
        fanout.eventReceived(key(f"web-{i:02d}", "analysis"), body)
        bodies.append(body)
    clock.advance(0)
    chunks = _chunks(connection)[before:]
    assert sum(map(len, chunks)) <= sum(map(len, bodies)) + 40 * len(b"event: analysis\ndata: \n\n")
    events = [json.loads(line[len(b"data: "):]) for chunk in chunks
              for line in chunk.split(b"\n") if line.startswith(b"data: ")]
    assert [event["host"] for event in events] == [f"web-{i:02d}" for i in range(40)]
