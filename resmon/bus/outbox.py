"""
The RabbitMQ bus's outbox and publisher confirms.

A published message waits in the outbox until there is a channel in
confirm mode, goes out on it, and waits among the unconfirmed until the
broker acknowledges it (its L{Deferred} fires) or refuses it (it fails with
L{Dropped}). What the broker had not confirmed when a connection was lost
goes out again first, in order, on the next one. The outbox is bounded:
past its limit the oldest unsent message is dropped.

L{Outbox.publishThen} does the same without a L{Deferred}: it calls back
plain functions, for the analyzer's one publication per measure.
"""

from collections import OrderedDict, deque
from itertools import count

from twisted.internet import defer
from twisted.logger import Logger
from txamqp.content import Content

from resmon.ratelimit import LimitedLog
from resmon.topics import MAX_ROUTING_KEY


class Dropped(Exception):
    """
    A message was dropped before the broker confirmed it: the outbox
    overflowed, the broker refused it, or the bus stopped.
    """


class Refused(Dropped):
    """
    The broker refused to take a message: it closed the publish channel
    with C{ACCESS_REFUSED} (the user may not publish under that routing
    key) or C{PRECONDITION_FAILED} (a C{user_id} that is not the user's).
    See L{resmon.bus.refusals}.
    """


class Unpublishable(Dropped):
    """
    A message that cannot be published at all (its routing key is over the
    255 bytes AMQP allows, or its frames could not be made): dropped at
    once, without a delivery tag. Publishing it again would fail again.
    """


class _Outgoing:
    """
    A message on its way: told of its fate through C{deferred}, or through
    C{then}, C{(confirmed, dropped, context)} (see L{Outbox.publishThen}),
    or both once L{Outbox.pending} gave it a L{Deferred} too.
    """

    __slots__ = ("routingKey", "body", "deferred", "then")

    def __init__(self, routingKey, body, deferred, then=None):
        self.routingKey = routingKey
        self.body = body
        self.deferred = deferred
        self.then = then


class Outbox:
    """
    Messages for C{exchange} on their way to the broker.

    @param exchange: the exchange every message is published to.
    @param limit: how many messages may wait (unsent and unconfirmed
        together); past that the oldest unsent is dropped.
    @param counters: the bus's counters, where C{published}, C{confirmed},
        C{nacked} and C{dropped} are counted.
    @param clock: an L{IReactorTime}, for rate-limiting warnings.
    @param userId: the AMQP C{user_id} property every message carries (the
        broker user the bus logs in as, which RabbitMQ verifies), or
        L{None} for none.

    @ivar unsent: the L{_Outgoing} messages not published yet, oldest first.
    @ivar unconfirmed: the published ones by delivery tag, oldest first.
    """

    log = Logger()

    def __init__(self, exchange, limit, counters, clock, userId=None):
        self.exchange = exchange
        self.properties = {"delivery-mode": 2, "content-type": "application/json"}
        if userId is not None:
            self.properties["user-id"] = userId
        self._userId = userId
        self.limit = limit
        self.counters = counters
        self.unsent = deque()
        self.unconfirmed = OrderedDict()
        self._channel = None
        self._deliveryTags = None
        self._publishFrames = None
        self._dropWarnings = LimitedLog(clock)

    def useChannel(self, channel):
        """
        Publish through C{channel} from now on: an open channel in confirm
        mode, whose deliveries the broker numbers from 1. Sends what waits.
        """
        self._channel = channel
        self._deliveryTags = count(1)
        # resmon's client writes publications and reads confirms itself
        # (resmon.bus.frames); another goes through txAMQP's channel.
        client = getattr(channel, "client", None)
        self._publishFrames = getattr(client, "publishFrames", None)
        confirmInto = getattr(client, "confirmInto", None)
        if confirmInto is not None:
            confirmInto(channel.id, self.confirmed)
        self.flush()

    @property
    def channel(self):
        """
        The channel published on, or L{None} while disconnected.
        """
        return self._channel

    def channelLost(self):
        """
        The channel is gone with its connection: whatever the broker did not
        confirm goes out again, first and in order.
        """
        self._channel = None
        self.unsent.extendleft(reversed(self.unconfirmed.values()))
        self.unconfirmed.clear()

    def publish(self, routingKey, body):
        """
        Queue a message, drop the oldest unsent if over the limit, and send
        what can be sent.

        @return: a L{Deferred} that fires once the broker confirmed the
            message, or fails with L{Dropped}.
        """
        d = defer.Deferred()
        self._send(_Outgoing(routingKey, body, d))
        return d

    def publishThen(self, routingKey, body, confirmed, dropped, context):
        """
        Queue a message as L{publish} does, without a L{Deferred}: once the
        broker confirmed it, call C{confirmed(context)}; if it is dropped
        (the outbox overflowed, the broker refused it, the bus stopped),
        call C{dropped(context, error)}, C{error} a L{Dropped}. Either may
        be called before this returns. What they raise is logged.
        """
        self._send(_Outgoing(routingKey, body, None, (confirmed, dropped, context)))

    def _send(self, outgoing):
        key = outgoing.routingKey
        # Up to 255 ASCII characters are as many bytes: no need to encode.
        if len(key) > MAX_ROUTING_KEY or not key.isascii():
            try:
                size = len(key.encode("utf-8"))
            except UnicodeEncodeError:
                self._unpublishable(outgoing, "its routing key is not valid UTF-8")
                return
            if size > MAX_ROUTING_KEY:
                self._unpublishable(outgoing, f"its routing key is over {MAX_ROUTING_KEY} bytes")
                return
        channel, publishFrames = self._channel, self._publishFrames
        if (publishFrames is not None and not self.unsent and len(self.unconfirmed) < self.limit
                and channel is not None and not channel.closed):
            # What flush() would do with this one message, without the queue.
            self._publishFast(channel, publishFrames, outgoing)
            return
        self.unsent.append(outgoing)
        self._enforceLimit()
        self.flush()

    def _publishFast(self, channel, publishFrames, outgoing):
        """
        Write C{outgoing} with the client's C{publishFrames}, then number it
        as the broker does: one whose frames cannot be made takes no number.
        """
        try:
            publishFrames(channel.id, self.exchange, outgoing.routingKey, outgoing.body,
                          self._userId)
        except Exception as e:
            self._unpublishable(outgoing, f"its frames could not be made ({e})")
            return
        self.unconfirmed[next(self._deliveryTags)] = outgoing
        self.counters["published"] += 1

    def _unpublishable(self, outgoing, why):
        self.counters["dropped"] += 1
        self._dropWarnings.warn(
            self.log, "dropped a message under {routingKey}: {why} ({count} dropped so far)",
            routingKey=outgoing.routingKey[:80], why=why, count=self.counters["dropped"])
        self._dropped(outgoing, Unpublishable(f"cannot be published: {why}"))

    def _confirmed(self, outgoing):
        then = outgoing.then
        if then is not None:
            try:
                then[0](then[2])
            except Exception:
                self.log.failure("handling the confirm of a message under {routingKey} failed",
                                 routingKey=outgoing.routingKey)
        if outgoing.deferred is not None:
            outgoing.deferred.callback(None)

    def _dropped(self, outgoing, error):
        then = outgoing.then
        if then is not None:
            try:
                then[1](then[2], error)
            except Exception:
                self.log.failure("handling a message dropped under {routingKey} failed",
                                 routingKey=outgoing.routingKey)
            if outgoing.deferred is not None:
                outgoing.deferred.callback(None)  # pending()'s: only waited for
        elif outgoing.deferred is not None:
            outgoing.deferred.errback(error)

    def _enforceLimit(self):
        while self.unsent and len(self) > self.limit:
            dropped = self.unsent.popleft()
            self.counters["dropped"] += 1
            self._dropWarnings.warn(
                self.log, "outbox full ({limit}): dropped the oldest message ({count} so far)",
                limit=self.limit, count=self.counters["dropped"])
            self._dropped(dropped, Dropped("outbox full"))

    def flush(self):
        """
        Publish what waits, if the channel is open.
        """
        channel = self._channel
        publishFrames = self._publishFrames
        while channel is not None and self.unsent and not channel.closed:
            outgoing = self.unsent.popleft()
            if publishFrames is not None:
                self._publishFast(channel, publishFrames, outgoing)
                continue
            tag = next(self._deliveryTags)
            self.unconfirmed[tag] = outgoing
            self.counters["published"] += 1
            content = Content(outgoing.body, properties=self.properties)
            channel.basic_publish(
                exchange=self.exchange, routing_key=outgoing.routingKey, content=content,
            ).addErrback(lambda f: None)  # a closed channel: channelLost() requeues it

    def confirmed(self, tag, multiple, ok):
        """
        The broker acknowledged (C{ok}) or refused delivery C{tag}, or with
        C{multiple} every delivery up to it.
        """
        if multiple:
            # Oldest first: the ones up to tag are at the head.
            tags = []
            for t in self.unconfirmed:
                if t > tag:
                    break
                tags.append(t)
        else:
            tags = [tag] if tag in self.unconfirmed else []
        for t in tags:
            outgoing = self.unconfirmed.pop(t)
            if ok:
                self.counters["confirmed"] += 1
                self._confirmed(outgoing)
            else:
                self.counters["nacked"] += 1
                self.log.warn("broker refused a message under {routingKey}",
                              routingKey=outgoing.routingKey)
                self._dropped(outgoing, Dropped("the broker refused the message (basic.nack)"))

    def refused(self, routingKey, why):
        """
        The broker refused a message under C{routingKey} (every unconfirmed
        message when L{None}) and closed the channel: fail each unconfirmed
        message under it with L{Refused} (the broker refuses the key, not
        one message) and count it in C{refused}. Call L{channelLost} next.

        @return: how many were refused.
        """
        tags = [tag for tag, outgoing in self.unconfirmed.items()
                if routingKey is None or outgoing.routingKey == routingKey]
        for tag in tags:
            self.counters["refused"] += 1
            self._dropped(self.unconfirmed.pop(tag), Refused(why))
        return len(tags)

    def pending(self):
        """
        The L{Deferred}s of every message not confirmed yet (one is made for
        a message of L{publishThen}).
        """
        pending = []
        for outgoing in list(self.unconfirmed.values()) + list(self.unsent):
            if outgoing.deferred is None:
                # Fires whatever happens to the message: its dropped() is told.
                outgoing.deferred = defer.Deferred()
            pending.append(outgoing.deferred)
        return pending

    def fail(self, why):
        """
        Drop every message not confirmed yet, failing it with L{Dropped}.
        """
        pending = list(self.unconfirmed.values()) + list(self.unsent)
        self.unconfirmed.clear()
        self.unsent.clear()
        for outgoing in pending:
            self._dropped(outgoing, Dropped(why))

    def __len__(self):
        return len(self.unsent) + len(self.unconfirmed)
