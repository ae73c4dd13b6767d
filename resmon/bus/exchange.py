"""
Joining the topic exchange: use it as it is when it exists, declare it
only when it is missing.

Another program (the proof of concept resmon grew from, or an operator)
may have declared the exchange first, with other arguments: the proof of
concept declares it non-durable. Declaring it again with resmon's own
arguments would get a C{PRECONDITION_FAILED} from the broker, which closes
the channel, and every reconnect would meet it again. So a role first
declares the exchange passively, on a channel of its own that may fail,
and declares it (durable or not, as configured) only on a C{NOT_FOUND}.

An exchange that exists is then checked with one non-passive declaration
of a topic exchange: the broker compares the type before anything else, so
a C{PRECONDITION_FAILED} about any other argument (durability, auto-delete,
arguments) proves it is a topic exchange, usable as it is. One of another
type, or an internal one (nothing may publish to it), cannot be used: that
is L{ExchangeUnusable}, whose message names the exchange, what resmon
expected and what the broker has. A user without the permission to
declare it (C{ACCESS_REFUSED}) uses an existing exchange unchecked.
"""

import re

from twisted.internet import defer
from txamqp.client import ChannelClosed

ACCESS_REFUSED = 403
NOT_FOUND = 404
PRECONDITION_FAILED = 406
TOPIC = "topic"
# RabbitMQ's text for a declaration that does not match the exchange.
_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for exchange .*: "
    r"received '(?P<received>[^']*)' but current is '(?P<current>[^']*)'")
# What a channel of ours says when the broker may close it without the
# connection being at fault (see resmon.bus.workarounds.WorkaroundClient.channel_failed).
PROBING = "probing"

JOINED = "joined"
DECLARED = "declared"


class ExchangeUnusable(Exception):
    """
    The exchange exists but resmon cannot use it. Reconnecting would not
    change that: the bus gives up, with this exception's message as its
    one error line.
    """

    def __init__(self, exchange, expected, actual, detail=""):
        self.exchange = exchange
        self.expected = expected
        self.actual = actual
        message = (f"exchange {exchange!r} cannot be used: resmon expected {expected}, "
                   f"the broker has {actual}")
        if detail:
            message += f" ({detail})"
        Exception.__init__(self, message)


def replyOf(error):
    """
    The C{(reply code, reply text)} of a L{ChannelClosed}, or C{(None, text)}
    when it carries no channel.close.
    """
    reason = error.args[0] if error.args else None
    code = getattr(reason, "reply_code", None)
    text = getattr(reason, "reply_text", None)
    return code, text if text is not None else str(error)


def inequivalent(text):
    """
    The argument a C{PRECONDITION_FAILED} complains about, with what was
    asked and what the broker has: C{(arg, received, current)}, or L{None}
    for another text.
    """
    match = _INEQUIVALENT.search(text or "")
    if match is None:
        return None
    return match.group("arg"), match.group("received"), match.group("current")


@defer.inlineCallbacks
def _probeChannel(client, channelId):
    channel = yield client.channel(channelId)
    setattr(channel, PROBING, True)
    yield channel.channel_open()
    return channel


@defer.inlineCallbacks
def _declare(client, channelIds, **arguments):
    """
    Declare on a fresh probe channel: L{None} when the broker agrees, else
    its C{(code, text)} (the broker closed that channel, and only that one).
    """
    channel = yield _probeChannel(client, next(channelIds))
    try:
        yield channel.exchange_declare(**arguments)
    except ChannelClosed as e:
        return replyOf(e)
    yield channel.channel_close()
    return None


@defer.inlineCallbacks
def joinExchange(client, channelIds, exchange, durable):
    """
    Make sure the topic exchange C{exchange} exists and can be used.

    @param client: an authenticated txAMQP client whose C{channel_failed}
        leaves alone the channels marked L{PROBING}.
    @param channelIds: an iterator of unused channel numbers; each
        declaration takes one (the broker closes it on a refusal).
    @param durable: whether to declare the exchange durable if it is missing.
    @return: a L{Deferred} firing with L{DECLARED} or L{JOINED}.
    @raise ExchangeUnusable: it exists with another type, or is internal.
    """
    refused = yield _declare(client, channelIds, exchange=exchange, type=TOPIC, passive=True)
    if refused is not None:
        code, text = refused
        if code != NOT_FOUND:
            raise ChannelClosed(text)
        refused = yield _declare(client, channelIds, exchange=exchange, type=TOPIC, durable=durable)
        if refused is None:
            return DECLARED
        if refused[0] != PRECONDITION_FAILED:
            raise ChannelClosed(refused[1])
        # Someone declared it between the two: check theirs, as below.
    else:
        refused = yield _declare(client, channelIds, exchange=exchange, type=TOPIC, durable=durable)
    for attempt in range(2):
        if refused is None:
            return JOINED
        code, text = refused
        if code == ACCESS_REFUSED:
            return JOINED  # it exists, and this user may not declare: used unchecked
        if code != PRECONDITION_FAILED:
            raise ChannelClosed(text)
        difference = inequivalent(text)
        if difference is None:
            raise ExchangeUnusable(exchange, "a topic exchange", "another kind", text)
        arg, received, current = difference
        if arg == "type":
            raise ExchangeUnusable(exchange, f"type {TOPIC!r}", f"type {current!r}")
        if arg == "internal" and current == "true":
            raise ExchangeUnusable(exchange, "an exchange clients may publish to",
                                   "an internal exchange")
        if arg != "durable" or attempt:
            return JOINED  # the type matched: auto-delete or arguments differ, used as it is
        # Durability differs: ask again with the broker's, to check what comes after it.
        refused = yield _declare(client, channelIds, exchange=exchange, type=TOPIC,
                                 durable=current == "true")
    return JOINED
