"""
The hot path of the RabbitMQ bus: frames read and written without txAMQP's
per-message machinery.

txAMQP 0.8.2 hands every incoming frame through a L{DeferredLock}, two
L{DeferredQueue}s and two C{inlineCallbacks} coroutines before a delivery
reaches a consumer's own queue, re-arms its heartbeat timers on every frame
read or written, copies its whole read buffer for every frame it cuts off,
and encodes every outgoing frame through a L{BytesIO} codec. At thousands of
messages a second that machinery costs more than the analysis does
(docs/performance.md).

L{FastFrames}, mixed into resmon's client, keeps txAMQP for everything but
the three kinds of frames that make up the traffic:

 - deliveries (C{basic.deliver} and its content) on the channels a consumer
   registered with L{FastFrames.consumeInto} are decoded with L{struct} and
   handed, whole, straight to that consumer's callable;
 - publisher confirms (C{basic.ack}, C{basic.nack} from the broker) on a
   channel registered with L{FastFrames.confirmInto} go straight to its
   callable;
 - publications and acknowledgements are packed with L{struct}
   (L{FastFrames.publishFrames}, L{FastFrames.ackFrame},
   L{FastFrames.rejectFrame}) and written at once, or, while the client
   handles what it read, once that read is handled (see below).

What the fast path writes while the client handles a read (the analyses of
the deliveries in it, the acknowledgements its confirms allow) is written
at the end of that read in one write, acknowledgements and rejections
first: the broker then hands the acknowledgements to their queues before
it reads the publications, and sends the next deliveries while it routes
them. Before txAMQP writes any frame, what is held goes out first, so every
other frame keeps its place. Acknowledgements moved before publications
never cover a delivery whose analysis is among them: a delivery is
acknowledged only once its analysis is confirmed, after it went out.

Every other frame, on any channel, goes through txAMQP as before. Content
headers are still decoded within L{resmon.bus.properties}' bounds, and
frames on one channel keep their order. Heartbeats keep their meaning (one
sent after a heartbeat interval without sending; the broker given up after
C{MAX_UNSEEN_HEARTBEAT} intervals without a frame) with one timer each,
moved only when it fires.
"""

import struct

from twisted.logger import Logger
from txamqp.protocol import GarbageException

from resmon.bus.properties import decodeContentHeader

METHOD, HEADER, BODY, HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
BASIC = 60
DELIVER, CONFIRM_ACK, CONFIRM_NACK = 60, 80, 120

_FRAME = struct.Struct("!BHI")
_METHOD_ID = struct.Struct("!HH")
_LONGLONG = struct.Struct("!Q")
_ACK = struct.Struct("!BHIHHQBB")  # frame header, class, method, delivery tag, bits, frame end
_PUBLISH_HEAD = struct.Struct("!BHIHHH")  # frame header, class, method, reserved-1
_CONTENT_HEADER = struct.Struct("!BHIHHQH")  # frame header, class, weight, body size, flags
_BODY_SIZE_AND_FLAGS = struct.Struct("!QH")
# content-type (bit 15) and delivery-mode (bit 12), nothing else.
_JSON_PERSISTENT_FLAGS = 0x9000
# user-id (bit 4): the broker user the publisher logged in as, verified by RabbitMQ.
_USER_ID_FLAG = 0x0010
_JSON = b"application/json"
_END = bytes([FRAME_END])
# Content headers whose properties are remembered (see _decodeHeader): how
# many, and up to what size.
CACHED_HEADERS = 64
CACHED_HEADER_BYTES = 512
# Publications' frames but their body size and body, remembered by channel,
# exchange, routing key and user: how many (the routing keys of a fleet's
# hosts; all forgotten at once past it).
CACHED_PUBLISH_HEADS = 16384


def _shortstr(text):
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    return bytes([len(raw)]) + raw


class _Incoming:
    """
    A delivery being read: its method's fields, then its header, then its
    body's parts.
    """

    __slots__ = ("sink", "deliveryTag", "routingKey", "properties", "size", "parts", "read")

    def __init__(self, sink, deliveryTag, routingKey):
        self.sink = sink
        self.deliveryTag = deliveryTag
        self.routingKey = routingKey
        self.properties = None
        self.size = None
        self.parts = []
        self.read = 0


class FastFrames:
    """
    A mixin for a txAMQP L{AMQClient} (before it in the bases): the fast
    path described in this module's docstring.
    """

    _fastLog = Logger()
    _consumers = None
    _confirms = None
    _incoming = None
    _lastReadAt = None
    _lastSentAt = None
    _sendHeartbeatCall = None
    _readBuffer = None
    _headerCache = None
    _publishHeads = None

    def _fastState(self):
        if self._consumers is None:
            self._consumers, self._confirms, self._incoming = {}, {}, {}
            self._headerCache = {}
            self._readBuffer = bytearray()

    # Registration

    def consumeInto(self, channelId, sink):
        """
        Hand every delivery on channel C{channelId} to C{sink(deliveryTag,
        routingKey, properties, body)} from now on: C{routingKey} is L{str},
        or L{bytes} when it is not UTF-8; C{properties} a L{dict}, holding
        only L{resmon.bus.properties.REFUSED} when refused; C{body} L{bytes}.
        """
        self._fastState()
        self._consumers[channelId] = sink

    def stopConsuming(self, channelId):
        """
        Hand nothing more from C{channelId} to its sink: deliveries still
        coming on it go to txAMQP, unread, and are redelivered by the
        broker once the channel closes.
        """
        self._fastState()
        self._consumers.pop(channelId, None)
        self._incoming.pop(channelId, None)

    def confirmInto(self, channelId, confirmed):
        """
        Hand the broker's publisher confirms on C{channelId} to
        C{confirmed(deliveryTag, multiple, ok)}.
        """
        self._fastState()
        self._confirms[channelId] = confirmed

    # Reading

    # What the fast path wrote while a read is handled (see the module's
    # docstring): acknowledgements and rejections, the rest, and what is to
    # be called before they are written (BatchedAcks' flushes); None
    # outside a read.
    _heldSettlements = None
    _heldFrames = None
    _beforeWrite = None

    def dataReceived(self, data):
        if self._heldFrames is not None:
            self._readFrames(data)  # not expected: Twisted does not re-enter
            return
        self._heldSettlements, self._heldFrames, self._beforeWrite = [], [], []
        try:
            self._readFrames(data)
        finally:
            try:
                self.writeHeld()
            finally:
                self._heldSettlements = self._heldFrames = self._beforeWrite = None

    def atEndOfRead(self, flush):
        """
        Call C{flush} before what is held is written, if a read is being
        handled.

        @return: whether one is (otherwise C{flush} is not called).
        """
        if self._beforeWrite is None:
            return False
        self._beforeWrite.append(flush)
        return True

    def writeHeld(self):
        """
        Write what was held while a read is handled: first what is to be
        called before (each once), then acknowledgements and rejections,
        then the rest, in one write.
        """
        before = self._beforeWrite
        while before:
            flushes = before[:]
            del before[:]
            for flush in flushes:
                try:
                    flush()
                except Exception:
                    # Logged, and the other flushes and the writes still happen.
                    self._fastLog.failure("sending acknowledgements at the end of a read failed")
        settlements, frames = self._heldSettlements, self._heldFrames
        if settlements or frames:
            data = b"".join(settlements + frames)
            del settlements[:], frames[:]
            self._write(data)

    def send_frame(self, frame):
        # txAMQP's own frames: after what the fast path wrote before them.
        if self._heldFrames is not None:
            self.writeHeld()
        super().send_frame(frame)

    def _readFrames(self, data):
        self._fastState()
        self._lastReadAt = self.clock.seconds()
        buffer = self._readBuffer
        buffer += data
        offset, size = 0, len(buffer)
        try:
            while not self.paused:
                if size - offset < 8:
                    break
                kind, channelId, length = _FRAME.unpack_from(buffer, offset)
                end = offset + 7 + length
                if end >= size:
                    if size - offset > self.MAX_LENGTH:
                        raise GarbageException(f"a frame of {length} bytes, over the frame_max")
                    break
                if buffer[end] != FRAME_END:
                    raise GarbageException(
                        f"frame error: expected {FRAME_END!r}, got {buffer[end]!r}")
                if not self._fastFrame(kind, channelId, buffer, offset + 7, end):
                    self.frame_received(self._unpack_frame(bytes(buffer[offset:end + 1])))
                offset = end + 1
                if self.transport is not None and self.transport.disconnecting:
                    break
        finally:
            del buffer[:offset]

    def _fastFrame(self, kind, channelId, buffer, start, end):
        """
        Handle one frame if it is on the fast path.

        @return: whether it was.
        """
        if kind == METHOD:
            classId, methodId = _METHOD_ID.unpack_from(buffer, start)
            if classId != BASIC:
                return False
            if methodId == DELIVER:
                sink = self._consumers.get(channelId)
                if sink is None or channelId in self._incoming:
                    return False
                self._incoming[channelId] = self._decodeDeliver(sink, buffer, start + 4)
                return True
            if methodId == CONFIRM_ACK or methodId == CONFIRM_NACK:
                confirmed = self._confirms.get(channelId)
                if confirmed is None:
                    return False
                tag, = _LONGLONG.unpack_from(buffer, start + 4)
                confirmed(tag, bool(buffer[start + 12] & 1), methodId == CONFIRM_ACK)
                return True
            return False
        if kind == HEARTBEAT:
            return True  # _lastReadAt is all a heartbeat is for
        incoming = self._incoming.get(channelId) if self._incoming else None
        if incoming is None:
            return False
        if kind == HEADER and incoming.size is None:
            incoming.properties, incoming.size = self._decodeHeader(bytes(buffer[start:end]))
        elif kind == BODY and incoming.size is not None:
            incoming.parts.append(bytes(buffer[start:end]))
            incoming.read += end - start
        else:
            raise GarbageException(f"unexpected frame of type {kind} in a delivery")
        if incoming.read >= incoming.size:
            del self._incoming[channelId]
            parts = incoming.parts
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            incoming.sink(incoming.deliveryTag, incoming.routingKey, incoming.properties, body)
        return True

    def _decodeHeader(self, payload):
        """
        A content header's properties and body size. A publisher sends the
        same properties with every message: the properties of the last
        few small headers are remembered by their bytes (all but the body
        size), so most headers are not decoded again.
        """
        key = payload[:4] + payload[12:]
        properties = self._headerCache.get(key)
        if properties is None or len(payload) < 12:
            header = decodeContentHeader(self.spec, payload, self.propertyLimits)
            if len(payload) <= CACHED_HEADER_BYTES:
                if len(self._headerCache) >= CACHED_HEADERS:
                    self._headerCache.clear()
                self._headerCache[key] = header.properties
            return header.properties, header.size
        return properties, _LONGLONG.unpack_from(payload, 4)[0]

    @staticmethod
    def _decodeDeliver(sink, buffer, offset):
        # consumer-tag, delivery-tag, redelivered, exchange, routing-key
        offset += 1 + buffer[offset]
        tag, = _LONGLONG.unpack_from(buffer, offset)
        offset += 9
        offset += 1 + buffer[offset]
        length = buffer[offset]
        raw = bytes(buffer[offset + 1:offset + 1 + length])
        try:
            routingKey = raw.decode("utf-8")
        except UnicodeDecodeError:
            routingKey = raw  # as txAMQP hands it over
        return _Incoming(sink, tag, routingKey)

    # Writing

    def publishFrames(self, channelId, exchange, routingKey, body, userId=None):
        """
        Publish C{body} (L{bytes}) to C{exchange} under C{routingKey} on
        C{channelId}: persistent, C{application/json}, with the C{user-id}
        property when C{userId} is given.
        """
        cacheKey = (channelId, exchange, routingKey, userId)
        if self._publishHeads is None:
            self._publishHeads = {}
        cached = self._publishHeads.get(cacheKey)
        if cached is None:
            head = _shortstr(exchange) + _shortstr(routingKey) + b"\x00"
            flags, userIdBytes = _JSON_PERSISTENT_FLAGS, b""
            if userId is not None:
                flags, userIdBytes = flags | _USER_ID_FLAG, _shortstr(userId)
            # The method frame, then the content header cut where its body size goes.
            header = _CONTENT_HEADER.pack(HEADER, channelId,
                                          14 + 1 + len(_JSON) + 1 + len(userIdBytes), BASIC, 0,
                                          0, flags)
            cached = (_PUBLISH_HEAD.pack(METHOD, channelId, 6 + len(head), BASIC, 40, 0) + head
                      + _END + header[:-10], flags,
                      bytes([len(_JSON)]) + _JSON + b"\x02" + userIdBytes + _END)
            if len(self._publishHeads) >= CACHED_PUBLISH_HEADS:
                self._publishHeads.clear()
            self._publishHeads[cacheKey] = cached
        frames = [cached[0], _BODY_SIZE_AND_FLAGS.pack(len(body), cached[1]), cached[2]]
        chunk = self.MAX_LENGTH - 8
        for start in range(0, len(body), chunk):
            part = body[start:start + chunk]
            frames += [_FRAME.pack(BODY, channelId, len(part)), part, _END]
        held = self._heldFrames
        if held is not None:
            held.append(b"".join(frames))
            return
        self._write(b"".join(frames))

    def ackFrame(self, channelId, deliveryTag, multiple):
        """
        Send C{basic.ack} for C{deliveryTag} (and, with C{multiple}, every
        unacknowledged delivery before it) on C{channelId}.
        """
        self._settlement(_ACK.pack(METHOD, channelId, 13, BASIC, 80, deliveryTag, bool(multiple),
                                   FRAME_END))

    def rejectFrame(self, channelId, deliveryTag, requeue):
        """
        Send C{basic.reject} for C{deliveryTag} on C{channelId}.
        """
        self._settlement(_ACK.pack(METHOD, channelId, 13, BASIC, 90, deliveryTag, bool(requeue),
                                   FRAME_END))

    def _settlement(self, frame):
        held = self._heldSettlements
        if held is not None:
            held.append(frame)
        else:
            self._write(frame)

    def _write(self, data):
        if self.transport is None:
            return  # lost: whatever was not acknowledged or confirmed is redone
        self._lastSentAt = self.clock.seconds()
        if self.heartbeatInterval > 0 and self._sendHeartbeatCall is None:
            self._scheduleHeartbeat()
        self.transport.write(data)

    # Heartbeats: one timer each way, moved when it fires.

    def reschedule_send_heartbeat(self):
        self._lastSentAt = self.clock.seconds()
        if self.heartbeatInterval > 0 and self._sendHeartbeatCall is None:
            self._scheduleHeartbeat()

    def _scheduleHeartbeat(self):
        self._sendHeartbeatCall = self.clock.callLater(
            self._lastSentAt + self.heartbeatInterval - self.clock.seconds(), self._heartbeatDue)

    def _heartbeatDue(self):
        self._sendHeartbeatCall = None
        if self.clock.seconds() - self._lastSentAt >= self.heartbeatInterval:
            self.send_heartbeat()
            self._lastSentAt = self.clock.seconds()
        self._scheduleHeartbeat()

    def reschedule_check_heartbeat(self):
        self._lastReadAt = self.clock.seconds()
        if not self.checkHB.active():
            self.checkHB = self.clock.callLater(
                self.heartbeatInterval * self.MAX_UNSEEN_HEARTBEAT, self.check_heartbeat)

    def check_heartbeat(self):
        limit = self.heartbeatInterval * self.MAX_UNSEEN_HEARTBEAT
        silent = self.clock.seconds() - (self._lastReadAt or 0)
        if silent < limit:
            self.checkHB = self.clock.callLater(limit - silent, self.check_heartbeat)
            return
        super().check_heartbeat()

    def connectionLost(self, reason):
        if self._sendHeartbeatCall is not None and self._sendHeartbeatCall.active():
            self._sendHeartbeatCall.cancel()
        self._sendHeartbeatCall = None
        super().connectionLost(reason)
