"""
Acknowledgements in batches: one C{basic.ack} with C{multiple} per channel
and reactor turn, instead of one per delivery.

A delivery is settled (acknowledged, requeued or discarded) only when its
handler is done with it, for the analyzer once the broker confirmed its
analysis. L{BatchedAcks} remembers every delivery of its channel in the
order the broker numbered them and, once per reactor turn after a
settlement, sends for the settled ones at the head of that order a single
C{basic.ack} with C{multiple} (a requeue or a discard among them is sent on
its own, in its place, so the C{multiple} that follows does not cover it);
one settled behind a delivery still being handled is sent on its own, as
C{multiple} would cover the one being handled. A settlement made while the
client handles a read (a publisher confirm read with deliveries) is sent at
the end of that read instead, ahead of the publications written in it
(L{resmon.bus.frames}).
"""

from collections import deque

ACK, RETRY, DISCARD = "ack", "retry", "discard"


class BatchedAcks:
    """
    The acknowledgements of one consumer channel.

    @param channel: the txAMQP channel (C{closed}, C{id}).
    @param client: what writes the frames: C{ackFrame(channelId, tag,
        multiple)} and C{rejectFrame(channelId, tag, requeue)} (see
        L{resmon.bus.frames.FastFrames}).
    @param clock: an L{IReactorTime}: a batch is sent in the reactor turn
        after its first settlement (C{callLater(0)}), or at the end of the
        read the client is handling, where it has one (C{atEndOfRead}).

    @ivar sent: how many frames were sent (acknowledgements and
        rejections).
    """

    def __init__(self, channel, client, clock):
        self.channel = channel
        self.client = client
        self.clock = clock
        self._outstanding = deque()
        self._settled = {}
        self._call = None
        self._atEndOfRead = False
        self.sent = 0

    def received(self, tag):
        """
        The broker delivered C{tag} on the channel: from now on no
        C{multiple} acknowledgement covers it before it is settled.

        @return: its L{Settlement}, which the bus hands to
            L{resmon.bus.delivery.deliver}.
        """
        self._outstanding.append(tag)
        return Settlement(self, tag)

    def settle(self, tag, how):
        """
        Delivery C{tag} is done with: L{ACK}, L{RETRY} or L{DISCARD}; sent
        in the next batch.
        """
        self._settled[tag] = how
        if self._call is None and not self._atEndOfRead:
            atEndOfRead = getattr(self.client, "atEndOfRead", None)
            if atEndOfRead is not None and atEndOfRead(self.flush):
                self._atEndOfRead = True
            else:
                self._call = self.clock.callLater(0, self.flush)

    def pending(self):
        """
        How many deliveries were received and not sent settled yet.
        """
        return len(self._outstanding)

    def flush(self):
        """
        Send what was settled (see the module's docstring): in the reactor
        turn after a settlement, or at once before the channel is closed.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._atEndOfRead = False
        settled, outstanding = self._settled, self._outstanding
        if self.channel.closed:
            # The broker redelivers whatever this channel did not settle.
            settled.clear()
            outstanding.clear()
            return
        channelId, client = self.channel.id, self.client
        lastAck = None
        while outstanding and outstanding[0] in settled:
            tag = outstanding.popleft()
            how = settled.pop(tag)
            if how == ACK:
                lastAck = tag
                continue
            if lastAck is not None:
                client.ackFrame(channelId, lastAck, True)
                self.sent += 1
                lastAck = None
            client.rejectFrame(channelId, tag, how == RETRY)
            self.sent += 1
        if lastAck is not None:
            client.ackFrame(channelId, lastAck, True)
            self.sent += 1
        for tag, how in settled.items():
            # Behind one still being handled: alone. A tag no longer
            # outstanding was settled and sent before: not again.
            try:
                outstanding.remove(tag)
            except ValueError:
                continue
            if how == ACK:
                client.ackFrame(channelId, tag, False)
            else:
                client.rejectFrame(channelId, tag, how == RETRY)
            self.sent += 1
        settled.clear()


class Settlement:
    """
    Settles one delivery through its channel's L{BatchedAcks}: called, it
    acknowledges; L{retry} requeues; L{discard} rejects without requeueing
    (the interface of L{resmon.bus.consumer.Acknowledger}).
    """

    __slots__ = ("acks", "tag")

    def __init__(self, acks, tag):
        self.acks = acks
        self.tag = tag

    def __call__(self):
        self.acks.settle(self.tag, ACK)

    def retry(self):
        self.acks.settle(self.tag, RETRY)

    def discard(self):
        self.acks.settle(self.tag, DISCARD)
