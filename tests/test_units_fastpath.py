"""
The bus's hot path on its own: deliveries read straight from the frames
(resmon.bus.frames), acknowledgements sent in batches (resmon.bus.acks), and
the guarantee they must keep: a measure is acknowledged only once the broker
confirmed its analysis.

A real L{ResmonAMQClient} over Twisted's StringTransport and Clock; the
frames the broker would send are packed by txAMQP's own encoder, the frames
resmon writes are decoded by txAMQP's own decoder.
"""

import struct
from io import BytesIO

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from txamqp.codec import Codec
from txamqp.connection import Body, Frame, Method
from txamqp.spec import load as loadSpec

from amqpfields import contentHeader
from resmon import wire
from resmon.analysis.pipeline import AnalysisPipeline
from resmon.bus import frames
from resmon.bus.acks import ACK, DISCARD, RETRY, BatchedAcks
from resmon.bus.amqp import SPEC_PATH, AMQPBus
from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.connection import Delegate, ResmonAMQClient
from resmon.bus.properties import REFUSED
from resmon.services.analyzer import AnalyzerService

SPEC = loadSpec(SPEC_PATH)
BASIC = SPEC.classes.byname["basic"]


class Channel:
    def __init__(self, id=2):
        self.id = id
        self.closed = False


class Writer:
    """
    Records the frames L{BatchedAcks} asks for.
    """

    def __init__(self):
        self.frames = []

    def ackFrame(self, channelId, tag, multiple):
        self.frames.append(("ack", channelId, tag, multiple))

    def rejectFrame(self, channelId, tag, requeue):
        self.frames.append(("reject", channelId, tag, requeue))


def batched():
    clock, writer = Clock(), Writer()
    return BatchedAcks(Channel(), writer, clock), writer, clock


def test_settled_deliveries_are_acknowledged_with_one_multiple_ack_in_the_next_reactor_turn():
    acks, writer, clock = batched()
    settlements = [acks.received(tag) for tag in range(1, 6)]
    for settle in settlements:
        settle()
    assert writer.frames == []  # not before the reactor turns
    clock.advance(0)
    assert writer.frames == [("ack", 2, 5, True)]
    assert acks.pending() == 0 and acks.sent == 1


def test_a_delivery_still_being_handled_is_never_covered_by_a_multiple_ack():
    acks, writer, clock = batched()
    first, second, third, fourth = [acks.received(tag) for tag in (11, 12, 13, 14)]
    first()
    third()
    fourth()
    clock.advance(0)
    # 11 with multiple (nothing before it); 13 and 14 alone, as 12 is still handled.
    assert writer.frames == [("ack", 2, 11, True), ("ack", 2, 13, False), ("ack", 2, 14, False)]
    assert acks.pending() == 1
    second()
    clock.advance(0)
    assert writer.frames[3:] == [("ack", 2, 12, True)]
    assert acks.pending() == 0


def test_requeues_and_discards_are_sent_alone_in_their_place_between_multiple_acks():
    acks, writer, clock = batched()
    settlements = [acks.received(tag) for tag in range(1, 7)]
    settlements[0]()
    settlements[1].retry()
    settlements[2]()
    settlements[3]()
    settlements[4].discard()
    settlements[5]()
    clock.advance(0)
    assert writer.frames == [
        ("ack", 2, 1, True), ("reject", 2, 2, True), ("ack", 2, 4, True), ("reject", 2, 5, False),
        ("ack", 2, 6, True)]


def test_one_batch_per_reactor_turn_and_nothing_on_a_closed_channel():
    acks, writer, clock = batched()
    a, b = acks.received(1), acks.received(2)
    a()
    b()
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0)
    c = acks.received(3)
    acks.channel.closed = True
    c()
    clock.advance(0)
    assert writer.frames == [("ack", 2, 2, True)]
    assert acks.pending() == 0
    assert (ACK, RETRY, DISCARD) == ("ack", "retry", "discard")


# The client's fast path.

def connectedClient(clock=None):
    client = ResmonAMQClient(Delegate(None, None), vhost="/", spec=SPEC, heartbeat=0,
                             clock=clock or Clock())
    transport = StringTransport()
    client.makeConnection(transport)
    transport.clear()
    return client, transport


def packed(client, channel, payload):
    return client._pack_frame(Frame(channel, payload))


def delivery(client, channel, tag, body, routingKey="web-01.measure", header=None):
    deliver = BASIC.methods.byname["deliver"]
    header = header if header is not None else contentHeader(
        len(body), {"content-type": "application/json"})
    return b"".join([
        packed(client, channel, Method(deliver, "ctag", tag, False, "ex", routingKey)),
        struct.pack("!BHI", 2, channel, len(header)) + header + b"\xce",
        packed(client, channel, Body(body))])


def confirm(client, tag, multiple=False, ok=True):
    method = BASIC.methods.byname["ack" if ok else "nack"]
    args = (tag, multiple) if ok else (tag, multiple, False)
    return packed(client, 1, Method(method, *args))


def written(client, data):
    """
    The frames in C{data}, decoded by txAMQP: (channel, method name,
    arguments) for methods, (channel, properties) for headers, (channel,
    body) for bodies.
    """
    frames = []
    while data:
        size, = struct.unpack_from("!I", data, 3)
        frame = client._unpack_frame(data[:8 + size])
        data = data[8 + size:]
        payload = frame.payload
        if isinstance(payload, Method):
            fields = dict(zip((f.name for f in payload.method.fields), payload.args))
            frames.append((frame.channel, payload.method.name, fields))
        elif isinstance(payload, Body):
            frames.append((frame.channel, payload.content))
        else:
            frames.append((frame.channel, payload.properties))
    return frames


def test_deliveries_reach_the_sink_whole_however_tcp_cuts_them():
    client, _ = connectedClient()
    received = []
    client.consumeInto(3, lambda *delivered: received.append(delivered))
    big = b"x" * (client.MAX_LENGTH * 2 + 5)
    header = contentHeader(len(big), {})
    big = b"".join([
        packed(client, 3, Method(BASIC.methods.byname["deliver"], "c", 2, False, "ex", "b.measure")),
        struct.pack("!BHI", 2, 3, len(header)) + header + b"\xce"] + [
        packed(client, 3, Body(big[i:i + 4000])) for i in range(0, len(big), 4000)])
    data = (delivery(client, 3, 1, b'{"a":1}') + big
            + delivery(client, 3, 3, b"\xff", routingKey=b"h\xff.measure")
            + delivery(client, 3, 4, b"{}", header=contentHeader(2, {"headers": {"x": 2 ** 40}})))
    for i in range(0, len(data), 7):  # seven bytes at a time
        client.dataReceived(data[i:i + 7])
    assert [(tag, key, body[:3], len(body)) for tag, key, _, body in received] == [
        (1, "web-01.measure", b'{"a', 7), (2, "b.measure", b"xxx", client.MAX_LENGTH * 2 + 5),
        (3, b"h\xff.measure", b"\xff", 1), (4, "web-01.measure", b"{}", 2)]
    assert received[0][2] == {"content-type": "application/json"}
    assert received[3][2] == {"headers": {"x": 2 ** 40}}


def test_a_refused_header_is_handed_over_refused_and_the_connection_stays():
    client, transport = connectedClient()
    received = []
    client.consumeInto(2, lambda *delivered: received.append(delivered))
    client.dataReceived(delivery(client, 2, 9, b"body", header=contentHeader(4, {
        "headers": {"k" * 10: "v" * 20000}})))
    [(tag, _, properties, body)] = received
    assert (tag, body) == (9, b"body") and set(properties) == {REFUSED}
    assert not transport.disconnecting


def test_deliveries_on_a_channel_not_registered_go_through_txamqp():
    client, _ = connectedClient()
    fast = []
    client.consumeInto(2, lambda *delivered: fast.append(delivered))
    client.dataReceived(delivery(client, 3, 1, b"{}"))
    client.stopConsuming(2)
    client.dataReceived(delivery(client, 2, 2, b"{}"))
    assert fast == []
    messages = []
    queue = client.queue("ctag").result
    queue.get().addCallback(messages.append)
    queue.get().addCallback(messages.append)
    assert [m.delivery_tag for m in messages] == [1, 2]


def test_published_frames_decode_as_txamqps_own_with_the_json_and_persistent_properties():
    client, transport = connectedClient()
    body = b"{" + b"9" * (client.MAX_LENGTH + 10) + b"}"
    client.publishFrames(1, "resmon", "web-01.analysis", body)
    client.ackFrame(2, 7, True)
    client.rejectFrame(3, 8, False)
    frames = written(client, transport.value())
    assert frames[0] == (1, "publish", {"reserved-1": 0, "exchange": "resmon",
                                        "routing-key": "web-01.analysis", "mandatory": False,
                                        "immediate": False})
    assert frames[1] == (1, {"content-type": "application/json", "delivery-mode": 2})
    assert b"".join(f[1] for f in frames[2:-2]) == body
    assert all(len(f[1]) <= client.MAX_LENGTH - 8 for f in frames[2:-2])
    assert frames[-2:] == [(2, "ack", {"delivery-tag": 7, "multiple": True}),
                           (3, "reject", {"delivery-tag": 8, "requeue": False})]


def test_publications_remembered_by_routing_key_decode_as_txamqps_own_and_stay_bounded(monkeypatch):
    monkeypatch.setattr(frames, "CACHED_PUBLISH_HEADS", 3)
    client, transport = connectedClient()
    sent = [(channel, key, user, body) for channel, key, user, body in [
        (1, "a.analysis", None, b"{}"), (1, "a.analysis", None, b"[1, 2, 3]"),
        (1, "a.analysis", "agent-7", b"{}"), (5, "a.analysis", None, b"{}"),
        (1, "b.analysis", None, b"x" * 300), (1, "c.analysis", "u", b""),
        (1, "a.analysis", None, b"{}")]]
    for channel, key, user, body in sent:
        client.publishFrames(channel, "resmon", key, body, user)
        assert len(client._publishHeads) <= 3
    decoded = written(client, transport.value())
    for channel, key, user, body in sent:
        method, properties = decoded.pop(0), decoded.pop(0)
        assert method == (channel, "publish", {"reserved-1": 0, "exchange": "resmon",
                                               "routing-key": key, "mandatory": False,
                                               "immediate": False})
        expected = {"content-type": "application/json", "delivery-mode": 2}
        if user is not None:
            expected["user-id"] = user
        assert properties == (channel, expected)
        if body:
            assert decoded.pop(0) == (channel, body)
    assert decoded == []


def test_heartbeats_one_timer_each_way_with_txamqps_meaning():
    clock = Clock()
    client = ResmonAMQClient(Delegate(None, None), vhost="/", spec=SPEC, heartbeat=5, clock=clock)
    transport = StringTransport()
    client.makeConnection(transport)
    client.started.fire()
    transport.clear()
    for _ in range(10):  # writing much moves no timer
        client.ackFrame(2, 1, False)
        clock.advance(0.4)
    assert len(clock.getDelayedCalls()) == 2
    transport.clear()
    clock.advance(5)  # t = 9: 5 s since the last write (3.6): one heartbeat
    assert transport.value() == b"\x08\x00\x00\x00\x00\x00\x00\xce"
    clock.advance(0.59)
    client.dataReceived(b"\x08\x00\x00\x00\x00\x00\x00\xce")  # the broker's heartbeat
    clock.advance(9.9)
    assert not transport.disconnecting  # 2 heartbeats of silence are 10 s
    clock.advance(0.2)
    assert transport.disconnecting


# The guarantee: acknowledged only once the analysis is confirmed.

def wiredAnalyzer():
    clock = Clock()
    clock.advance(2000)  # the measures' ts are in the past
    bus = AMQPBus(parseBrokerURL("amqp://guest:guest@127.0.0.1/"), "resmon", clock)
    bus.running = True
    analyzer = AnalyzerService(bus, AnalysisPipeline([]), clock)
    analyzer.startService()
    client, transport = connectedClient(clock)
    publishChannel = client.channel(1).result
    consumerChannel = client.channel(2).result
    bus.useConnection(client, publishChannel)
    [subscription] = bus.subscriptions
    consumers = bus.consumers
    acks = BatchedAcks(consumerChannel, client, clock)
    client.consumeInto(2, lambda *d: consumers._received(subscription, acks, *d))
    return bus, client, transport, clock


def measureBody(seq):
    return wire.encodeMeasure("web-01", seq, 1000.0 + seq, 1.0, {"cpu": {"percent": 50.0}})


def test_a_measure_is_acknowledged_only_after_the_broker_confirmed_its_analysis():
    bus, client, transport, clock = wiredAnalyzer()
    client.dataReceived(delivery(client, 2, 1, measureBody(1)) + delivery(client, 2, 2, measureBody(2)))
    clock.advance(0)
    frames = written(client, transport.value())
    assert [f[1] for f in frames if len(f) == 3] == ["publish", "publish"]
    assert not [f for f in frames if f[0] == 2]  # nothing acknowledged yet
    transport.clear()
    client.dataReceived(confirm(client, 1))
    clock.advance(0)
    assert written(client, transport.value()) == [(2, "ack", {"delivery-tag": 1, "multiple": True})]
    transport.clear()
    client.dataReceived(confirm(client, 2, ok=False))  # refused: requeued, analysed anew later
    clock.advance(0)
    assert written(client, transport.value()) == [(2, "reject", {"delivery-tag": 2, "requeue": True})]
    assert bus.counters["confirmed"] == 1 and bus.counters["nacked"] == 1


def test_invalid_input_is_settled_at_once_and_a_later_confirm_acknowledges_all_before_it():
    bus, client, transport, clock = wiredAnalyzer()
    client.dataReceived(delivery(client, 2, 1, measureBody(1)) + delivery(client, 2, 2, b"nope")
                        + delivery(client, 2, 3, measureBody(3)))
    clock.advance(0)
    # The bad one (2) waits behind 1, whose analysis is not confirmed: alone, no multiple.
    assert [f for f in written(client, transport.value()) if f[0] == 2] == [
        (2, "ack", {"delivery-tag": 2, "multiple": False})]
    transport.clear()
    client.dataReceived(confirm(client, 2, multiple=True))
    clock.advance(0)
    assert written(client, transport.value()) == [(2, "ack", {"delivery-tag": 3, "multiple": True})]


class CountingTransport(StringTransport):
    """
    A StringTransport that counts the writes.
    """

    writes = 0

    def write(self, data):
        self.writes += 1
        StringTransport.write(self, data)


def test_a_reads_acknowledgements_go_out_first_and_with_its_publications_in_one_write():
    bus, client, transport, clock = wiredAnalyzer()
    client.dataReceived(delivery(client, 2, 1, measureBody(1)) + delivery(client, 2, 2, measureBody(2)))
    transport.clear()
    counting = CountingTransport()
    client.transport = counting
    # One read: two more deliveries, then the broker's confirms of the first two analyses.
    client.dataReceived(delivery(client, 2, 3, measureBody(3)) + delivery(client, 2, 4, measureBody(4))
                        + confirm(client, 2, multiple=True))
    frames = written(client, counting.value())
    assert frames[0] == (2, "ack", {"delivery-tag": 2, "multiple": True})
    assert [f[1] for f in frames[1:] if len(f) == 3] == ["publish", "publish"]
    assert counting.writes == 1
    counting.clear()
    clock.advance(0)
    assert counting.value() == b""  # nothing left for the next turn


def test_txamqps_frames_written_during_a_read_keep_their_place():
    client, transport = connectedClient()
    heartbeat = b"\x08\x00\x00\x00\x00\x00\x00\xce"

    def sink(tag, routingKey, properties, body):
        client.publishFrames(1, "ex", f"before-{tag}.analysis", body)
        client.ackFrame(2, tag, False)
        client.send_heartbeat()  # through txAMQP
        client.publishFrames(1, "ex", f"after-{tag}.analysis", body)

    client.consumeInto(2, sink)
    client.dataReceived(delivery(client, 2, 7, b"{}"))
    data = transport.value()
    cut = data.index(heartbeat)
    assert [(f[0], f[1]) for f in written(client, data[:cut]) if len(f) == 3] == [
        (2, "ack"), (1, "publish")]
    assert "before-7.analysis" in str(written(client, data[:cut]))
    assert [f[2]["routing-key"] for f in written(client, data[cut + len(heartbeat):])
            if len(f) == 3] == ["after-7.analysis"]


def test_outside_a_read_frames_are_written_at_once_and_acknowledgements_wait_for_the_turn():
    client, transport = connectedClient()
    client.publishFrames(1, "ex", "h.analysis", b"{}")
    assert [f[1] for f in written(client, transport.value()) if len(f) == 3] == ["publish"]
    assert client.atEndOfRead(lambda: None) is False
    acks = BatchedAcks(Channel(2), client, client.clock)
    settle = acks.received(5)
    transport.clear()
    settle()
    assert transport.value() == b""
    client.clock.advance(0)
    assert written(client, transport.value()) == [(2, "ack", {"delivery-tag": 5, "multiple": True})]


# The analyses' encoding: orjson when installed, the same document either way.

def test_a_built_analysis_encodes_to_the_same_document_with_or_without_orjson(monkeypatch):
    assert wire._orjson is not None, "the test extra installs orjson"
    measure = wire.decodeMeasure("web-01.measure", measureBody(1))
    analysis = AnalysisPipeline([], wallClock=lambda: 1234.5).analyze(measure)
    fast = wire.encodeBuiltAnalysis(analysis)
    assert fast == wire._orjson.dumps(analysis)
    monkeypatch.setattr(wire, "_orjson", None)
    plain = wire.encodeBuiltAnalysis(analysis)
    assert plain == wire.encodeAnalysis(analysis)
    assert wire.loadJSON(fast) == wire.loadJSON(plain) == analysis


def test_what_orjson_would_write_otherwise_goes_through_the_json_encoder():
    for document in ({"host": "h\u00f4te"}, {"seq": 2 ** 70}, {1: "x"}):
        assert wire.encodeBuiltAnalysis(document) == wire.encodeAnalysis(document)
    assert wire.encodeBuiltAnalysis({"host": "h\u00f4te"}) == b'{"host":"h\\u00f4te"}'


def test_headers_met_again_are_not_decoded_again_and_keep_their_own_body_size(monkeypatch):
    from resmon.bus import frames
    decoded = []
    original = frames.decodeContentHeader

    def counting(spec, payload, limits):
        decoded.append(payload)
        return original(spec, payload, limits)
    monkeypatch.setattr(frames, "decodeContentHeader", counting)
    client, transport = connectedClient()
    received = []
    client.consumeInto(2, lambda *delivered: received.append(delivered))
    refused = contentHeader(3, {"headers": {"k": "v" * 20000}})
    for tag, body in enumerate([b"{}", b"[1,2]", b"{}"], 1):
        client.dataReceived(delivery(client, 2, tag, body))
    client.dataReceived(delivery(client, 2, 4, b"abc", header=refused))
    client.dataReceived(delivery(client, 2, 5, b"xyz", header=refused))
    assert [(tag, body, set(properties)) for tag, _, properties, body in received] == [
        (1, b"{}", {"content-type"}), (2, b"[1,2]", {"content-type"}), (3, b"{}", {"content-type"}),
        (4, b"abc", {REFUSED}), (5, b"xyz", {REFUSED})]
    # The small one once; the large (refused) one every time, as it is not remembered.
    assert len(decoded) == 3
    assert not transport.disconnecting


def test_a_cancelled_subscription_sends_what_was_settled_before_closing_its_channel():
    from twisted.internet import defer

    clock = Clock()
    bus = AMQPBus(parseBrokerURL("amqp://guest:guest@127.0.0.1/"), "resmon", clock)
    sent = []

    class RecordingChannel(Channel):
        def basic_cancel(self, consumer_tag):
            sent.append(("basic_cancel", consumer_tag))
            return defer.succeed(None)

        def channel_close(self):
            sent.append(("channel_close",))
            return defer.succeed(None)

    class Client(Writer):
        def channel(self, id):
            return defer.succeed(channel)

        def ackFrame(self, channelId, tag, multiple):
            sent.append(("ack", tag, multiple))

    channel, client = RecordingChannel(), Client()
    release = defer.Deferred()
    subscription = bus.subscribe(["#.measure"], lambda key, body: release)
    bus.consumers.client = client
    subscription.channelId, subscription.consumerTags = 2, ["ctag"]
    subscription.acks = BatchedAcks(channel, client, clock)
    bus.consumers._received(subscription, subscription.acks, 1, "h.measure", {}, b"{}")
    cancelled = subscription.cancel()
    assert sent == [("basic_cancel", "ctag")]
    release.callback(None)  # the handler is done: settled, and the channel may close
    assert sent == [("basic_cancel", "ctag"), ("ack", 1, True), ("channel_close",)]
    assert cancelled.called and clock.getDelayedCalls() == []


# Memory: the fast path keeps nothing per delivery once it is settled.

def test_deliveries_settled_through_the_fast_path_leave_nothing_behind():
    """
    The web role consumes a burst of thousands of deliveries through the
    fast path (prefetch 1,000): once each is settled and its batch sent,
    nothing of it stays in the client (partial deliveries, the read
    buffer, the remembered headers) or in the channel's L{BatchedAcks},
    and traced memory does not grow from one burst to the next.
    """
    import gc
    import sys
    import tracemalloc
    from collections import Counter

    from resmon.bus.frames import CACHED_HEADERS

    clock = Clock()
    client, transport = connectedClient(clock)
    acks = BatchedAcks(Channel(3), client, clock)
    handled = Counter()

    def sink(tag, routingKey, properties, body):
        settlement = acks.received(tag)
        handled["deliveries"] += 1
        settlement()
    client.consumeInto(3, sink)
    tags = iter(range(1, 10 ** 6))

    def burst(count):
        data = b"".join(delivery(client, 3, next(tags), b'{"host": "h-%d"}' % n,
                                 routingKey=f"h-{n}.fleet.analysis") for n in range(count))
        return [data[start:start + 65536] for start in range(0, len(data), 65536)]

    def read(chunks):
        for chunk in chunks:  # as Twisted reads them
            client.dataReceived(chunk)
            clock.advance(0)  # the reactor turns: the batch is sent
        transport.clear()
        gc.collect()

    def heldByTheBus():
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*/resmon/bus/*")])
        return sum(stat.size for stat in snapshot.statistics("filename"))

    read(burst(2000))
    bursts = [burst(2000) for _ in range(4)]
    tracemalloc.start()
    try:
        read(bursts.pop())
        before = heldByTheBus()
        while bursts:
            read(bursts.pop())
        grown = heldByTheBus() - before
    finally:
        tracemalloc.stop()
    assert handled["deliveries"] == 10000
    assert client._incoming == {} and len(client._readBuffer) == 0
    assert sys.getsizeof(client._readBuffer) < 4 * 65536
    assert len(client._headerCache) <= CACHED_HEADERS
    assert acks.pending() == 0 and acks._settled == {} and not clock.getDelayedCalls()
    assert grown < 4096, f"the bus holds {grown} bytes more after 6,000 more deliveries"
