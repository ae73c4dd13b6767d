"""
Several events in one WebSocket message, for the clients that ask for it
(C{/ws?batch=1}, as the dashboard does): the events the fan-out has for
them while one turn of the reactor lasts go out together when it ends, as
C{{"kind": "batch", "events": [...]}}, with no timer and no delay beyond
that turn. A client that keeps up gets one event per message, as before; a
server that is behind (many events read from the broker at once) sends
each client one message per turn instead of one per event.

The fan-out gathers one L{EventBatch} per distinct subscription (its
audience), not per client: an event costs one append for all the clients
of a subscription, and the batch's message is made once for all of them.
"""

from resmon import wire

# A batch is sent when it holds this many events, or this many bytes of
# them, whatever the turn: a backlog read at once (or a few events of up to
# --max-body each) must not become one message of many megabytes, which
# each client's send buffer would hold whole.
MAX_BATCH = 500
MAX_BATCH_BYTES = 1024 * 1024

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
    The events of one turn for the clients of one subscription, in order:
    C{events} holds C{(document, body)}. What is sent is made once, for the
    first client that needs it, and shared by the others.
    """

    __slots__ = ("events", "size", "_message", "_separately")

    def __init__(self):
        self.events = []
        # The bytes of the events' bodies.
        self.size = 0
        self._message = None
        self._separately = None

    def __len__(self):
        return len(self.events)

    def add(self, document, body):
        """
        Add an event; return whether the batch is full (L{MAX_BATCH} events
        or L{MAX_BATCH_BYTES}) and must be sent now.
        """
        self.events.append((document, body))
        self.size += len(body)
        return len(self.events) >= MAX_BATCH or self.size >= MAX_BATCH_BYTES

    def message(self, prepare):
        """
        The one message of the batch, made by C{prepare(bytes)}: the event
        itself for a batch of one, else a C{batch} message.
        """
        if self._message is None:
            events = self.events
            body = events[0][1] if len(events) == 1 else batchBody([body for _, body in events])
            self._message = prepare(body)
        return self._message

    def separately(self, eventKey, prepare):
        """
        Each event as its own message, for a client whose flow holds events
        back: C{(eventKey(document), prepare(body))}, in order.
        """
        if self._separately is None:
            self._separately = [(eventKey(document), prepare(body)) for document, body in self.events]
        return self._separately
