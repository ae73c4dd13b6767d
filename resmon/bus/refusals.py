"""
Publishes the broker refuses, said in one line each.

RabbitMQ checks every publish against the user's permissions: its write
permission on the exchange, its topic permissions on the routing key
(C{rabbitmqctl set_topic_permissions}), and a C{user_id} property that
must equal the user the connection logged in as. A publish it refuses
closes the publish channel with C{ACCESS_REFUSED} (403) or
C{PRECONDITION_FAILED} (406) naming the key or the user_id. No retry will
change that until someone changes the permissions: the bus drops the
refused message (counted as C{refused}), opens a new publish channel on the
same connection and carries on with the rest (see
L{resmon.bus.amqp.AMQPBus}); this module recognises such a close and says
it, once per routing key and reason (again after L{REPEAT_AFTER} seconds,
with how many were refused meanwhile).
"""

import re
from collections import Counter

from twisted.logger import Logger

ACCESS_REFUSED = 403
PRECONDITION_FAILED = 406
# Seconds after which a refusal said before is said again, with its count.
REPEAT_AFTER = 300.0

_TOPIC = re.compile(r"access to topic '(?P<key>[^']*)' in exchange '(?P<exchange>[^']*)'")
_USER_ID = re.compile(r"user_id property set to '(?P<given>[^']*)'")


class Refusal:
    """
    One refused publish, as the broker's channel.close describes it.

    @ivar routingKey: the refused routing key when the broker names it (a
        topic permission), else L{None}: every message then is refused
        alike (the exchange's write permission, the user_id).
    @ivar kind: C{"topic"}, C{"exchange"} or C{"user_id"}.
    @ivar text: the broker's reply text.
    """

    def __init__(self, kind, routingKey, text):
        self.kind = kind
        self.routingKey = routingKey
        self.text = text


def publishRefusal(code, text):
    """
    The L{Refusal} a channel.close of the publish channel stands for, or
    L{None} for a close that is not a refused publish (a deleted exchange:
    the bus reconnects and declares everything again).

    @param code: the reply code.
    @param text: the reply text.
    """
    text = str(text or "")
    if code == ACCESS_REFUSED:
        match = _TOPIC.search(text)
        if match is not None:
            return Refusal("topic", match.group("key"), text)
        if "access to exchange" in text:
            return Refusal("exchange", None, text)
        return None
    if code == PRECONDITION_FAILED and _USER_ID.search(text):
        return Refusal("user_id", None, text)
    return None


def refusalLine(refusal, user, exchange, vhost):
    """
    The line that says C{refusal} to an operator: what was refused, for
    whom, that it is a permission, and what to check.
    """
    if refusal.kind == "topic":
        return (f"the broker refused to let user {user!r} publish under routing key "
                f"{refusal.routingKey!r} to exchange {exchange!r} (ACCESS_REFUSED: a topic "
                f"permission); dropped; check 'rabbitmqctl list_topic_permissions -p {vhost}' "
                "for that user, or the host name this process publishes for (--name)")
    if refusal.kind == "exchange":
        return (f"the broker refused to let user {user!r} publish to exchange {exchange!r} "
                f"(ACCESS_REFUSED: no write permission); dropped; check 'rabbitmqctl "
                f"list_user_permissions {user}' on vhost {vhost!r}")
    return (f"the broker refused a message of user {user!r} for its user_id "
            f"(PRECONDITION_FAILED: {refusal.text[:120]}); dropped; the user_id must be the "
            "user of --broker")


class RefusalLog:
    """
    Says refusals, once per (kind, routing key), again after
    L{REPEAT_AFTER} seconds with how many were refused since.

    @param clock: an L{IReactorTime}.
    @param log: the L{Logger} to say it with.
    """

    def __init__(self, clock, log=None):
        self.clock = clock
        self.log = log if log is not None else Logger()
        self.counts = Counter()
        self._saidAt = {}

    def refused(self, refusal, count, user, exchange, vhost):
        """
        C{count} messages were refused for C{refusal}: say it, unless it
        was said less than L{REPEAT_AFTER} seconds ago.
        """
        key = (refusal.kind, refusal.routingKey)
        self.counts[key] += count
        now = self.clock.seconds()
        saidAt = self._saidAt.get(key)
        if saidAt is not None and now - saidAt < REPEAT_AFTER:
            return
        self._saidAt[key] = now
        self.log.error("{line} ({count} refused so far)",
                       line=refusalLine(refusal, user, exchange, vhost), count=self.counts[key])
