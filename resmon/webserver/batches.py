"""
The events of one reactor turn sent together when it ends, with no timer
and no delay beyond that turn: in one WebSocket message for the clients
that ask for it (C{/ws?batch=1}, as the dashboard does), as C{{"kind":
"batch", "events": [...]}}; in one write of their events, one after the
other, for every event-stream client (C{/api/stream}, whose clients see
the same events as before). A client that keeps up gets one event per
message, as before; a server that is behind (many events read from the
broker at once) sends each client one message per turn instead of one per
event.

The fan-out gathers one L{EventBatch} per distinct subscription (its
audience), not per client: an event costs one append for all the clients
of a subscription, and the batch's message is made once for all of them.
"""

from resmon import wire

# A batch is sent when it holds this many events, or this many bytes of
# them, whatever the turn: a batch bigger than the transport's buffer
# (Twisted's 64 KiB, resmon.webserver.sendbudget.HIGH_WATER) would pause
# even a client that reads at once, and be charged whole to the budget of
# bytes queued for all clients; a few events of up to --max-body each
# must not make one message of megabytes either.
MAX_BATCH = 500
MAX_BATCH_BYTES = 32 * 1024

# The key of batches in a client's flow (resmon.webserver.fanout.ClientFlow):
# a batch goes out only when the flow would write it at once, never held back.
BATCH_KEY = (wire.BATCH, None)

_OPENING = b'{"kind":"' + wire.BATCH.encode("ascii") + b'","events":['
_CLOSING = b"]}"


def batchBody(bodies):
    """
    The message of a batch of events, given each one's body (the JSON text
    of an event, as the fan-out gives it): C{{"kind":"batch","events":[...]}}.
    """
    return _OPENING + b",".join(bodies) + _CLOSING


class EventBatch:
    """
    Events for the clients of one subscription, in order: C{events} holds
    C{(key, body)}, the key a client's flow holds the event back by. What
    is sent is made once, for the first client that needs it, and shared by
    the others (until another event is added).

    @param frames: the frames of single events made in this turn, shared by
        every batch of it (C{{(prepare, id(body)): (body, frame)}}), or
        L{None}.
    """

    __slots__ = ("events", "size", "_frames", "_message", "_joined", "_separately", "_tails")

    def __init__(self, frames=None):
        self.events = []
        # The bytes of the events' bodies.
        self.size = 0
        self._frames = frames
        self._forget()

    def _forget(self):
        self._message = self._joined = self._separately = self._tails = None

    def __len__(self):
        return len(self.events)

    def add(self, key, body):
        """
        Add an event; return whether the batch is full (L{MAX_BATCH} events
        or L{MAX_BATCH_BYTES}) and must be sent now.
        """
        self.events.append((key, body))
        self.size += len(body)
        if (self._message is not None or self._joined is not None or self._tails is not None
                or self._separately is not None):
            self._forget()
        return len(self.events) >= MAX_BATCH or self.size >= MAX_BATCH_BYTES

    def message(self, prepare):
        """
        The one message of the batch, made by C{prepare(bytes)}: the event
        itself for a batch of one, else a C{batch} message.
        """
        if self._message is None:
            events = self.events
            if len(events) == 1:
                self._message = self._frame(prepare, events[0][1])
            else:
                self._message = prepare(batchBody([body for _, body in events]))
        return self._message

    def joined(self, frame):
        """
        Every event made by C{frame(key, body)}, one after the other, in one
        string of bytes: a batch for a stream of events (C{/api/stream}),
        which its clients read as the events sent one by one.
        """
        if self._joined is None:
            self._joined = b"".join([self._frameKeyed(frame, key, body) for key, body in self.events])
        return self._joined

    def separately(self, prepare):
        """
        Each event as its own message, for a client whose flow holds events
        back: C{(key, prepare(body))}, in order.
        """
        if self._separately is None:
            self._separately = [(key, self._frame(prepare, body)) for key, body in self.events]
        return self._separately

    def tail(self, start):
        """
        The batch of the events from the C{start}th on (for a client that
        came after the first C{start}), or L{None} if there are none. For
        0, the batch itself, which may grow: a client given a batch sends
        it at once and keeps nothing of it.
        """
        if start >= len(self.events):
            return None
        if start == 0:
            return self
        if self._tails is None:
            self._tails = {}
        tail = self._tails.get(start)
        if tail is None:
            tail = self._tails[start] = EventBatch(self._frames)
            tail.events = self.events[start:]
        return tail

    def _frame(self, prepare, body):
        frames = self._frames
        if frames is None:
            return prepare(body)
        key = (prepare, id(body))
        made = frames.get(key)
        if made is None:
            # The body is kept with its frame: its id is not reused meanwhile.
            made = frames[key] = (body, prepare(body))
        return made[1]

    def _frameKeyed(self, frame, key, body):
        # As _frame, for a frame made of the event's key too (the key is
        # the event's: one body, one key).
        frames = self._frames
        if frames is None:
            return frame(key, body)
        cacheKey = (frame, id(body))
        made = frames.get(cacheKey)
        if made is None:
            made = frames[cacheKey] = (body, frame(key, body))
        return made[1]
