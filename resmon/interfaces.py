"""
The contracts between resmon's parts, and the one third parties implement.
"""

from zope.interface import Attribute, Interface


class IBus(Interface):
    """
    Topic publish/subscribe, with RabbitMQ topic-exchange semantics.

    Routing keys are dot-separated words; in subscription patterns C{*}
    matches exactly one word and C{#} zero or more words.

    This is everything a caller may use: services, tests and fakes go
    through it and nothing else (fakes are checked with
    L{zope.interface.verify.verifyObject}).
    """

    connected = Attribute(
        "L{True} while the bus can publish and deliver: for RabbitMQ, while "
        "a connection is up and declared; L{False} while it reconnects (what "
        "is published meanwhile waits in the outbox). The in-process bus is "
        "always connected.")

    counters = Attribute(
        "A L{dict} of L{str} to L{int}, counted since the bus was made, with "
        "at least these keys: C{published} (messages handed to the broker), "
        "C{confirmed} and C{nacked} (publisher confirms: taken, refused), "
        "C{dropped} (dropped from a full outbox), C{connections} (successful "
        "(re)connections: a change means the bus was disconnected in "
        "between), C{delivered} (deliveries received), C{rejected} "
        "(deliveries the bus refused before any handler, see L{rejected}) and "
        "C{consumer-cancels} (consumers the broker cancelled, for instance "
        "because their queue was deleted; each is consumed again) and "
        "C{refused} (published messages the broker refused for the user's "
        "permissions: a topic it may not publish under, see "
        "C{docs/security.md}).")

    rejected = Attribute(
        "A L{collections.Counter} of the deliveries the bus rejected itself, "
        "before any handler, by reason (C{properties}, C{routing-key}).")

    waiting = Attribute(
        "How many published messages wait for the broker now, an L{int}: "
        "not yet sent (while disconnected) or sent and not yet confirmed. "
        "Always 0 on the in-process bus, which delivers without a broker.")

    subscriptions = Attribute(
        "A L{tuple} of the live L{ISubscription}s made with L{subscribe} and "
        "not cancelled.")

    def whenConnected():
        """
        A L{Deferred} that fires (with L{None}) once the bus is connected,
        as L{twisted.application.internet.ClientService.whenConnected} does:
        at once if it is, else at the next successful connection. Call it
        once the bus is started; it fails with
        L{twisted.internet.defer.CancelledError} if the bus stops first.
        """

    def publish(routingKey, body):
        """
        Publish C{body} (L{bytes}) under C{routingKey} (L{str}).

        @return: a L{Deferred} that fires once the bus has taken
            responsibility for the message (for RabbitMQ: the broker confirmed
            it), or fails if the message was dropped.
        """

    def subscribe(patterns, handler, queue=None, durable=False, prefetch=100,
                  partitions=None, deadLetter=None, singleActive=False, rejected=None,
                  publisher=False):
        """
        Deliver every message whose routing key matches one of C{patterns}
        to C{handler(routingKey, body)}.

        Messages are acknowledged once C{handler} returns, or once the
        L{Deferred} it returns fires; a handler that raises or fails gets the
        message acknowledged all the same (and logged), so bad input never
        blocks a queue.

        @param queue: a queue name shared by competing consumers, or L{None}
            for a private queue that lives as long as this subscription.
        @param durable: whether a named queue survives a broker restart.
        @param prefetch: how many unacknowledged messages may be in flight.
        @param partitions: L{None}, or C{(count, owned)}: route each routing
            key consistently to one of C{count} durable queues named
            C{<queue>.<i>}, each consumed by one process at a time, and
            consume the partitions in C{owned} (see C{docs/plugins.md}).
        @param deadLetter: L{None}, or the name of a bounded durable queue
            that receives the messages the handler discards (raising
            L{resmon.bus.delivery.Discard}), for inspection.
        @param singleActive: with a named C{queue}: one subscriber at a time
            receives its messages, the others (in other processes) stand by
            and take over when it goes; the queue is not durable and is
            deleted with its last subscriber.
        @param rejected: a L{collections.Counter} the bus counts the
            messages it rejects itself, before the handler, into by reason
            (C{properties}: a message whose AMQP properties are over the
            bus's limits or cannot be decoded; see C{docs/operations.md}).
        @param publisher: if true, C{handler} is called as
            C{handler(routingKey, body, publisher)}: C{publisher} is the
            AMQP C{user_id} the message carries (L{str}), which RabbitMQ
            verified to be the broker user that published it, or L{None}
            when it carries none (always on the in-process bus).
        @return: an L{ISubscription}.
        """


    def unbind(queue, patterns):
        """
        Remove the bindings of the named queue C{queue} (a C{queue} given
        to L{subscribe}) to C{patterns}: messages under keys that only
        those patterns matched no longer reach it. A binding or a queue
        that does not exist is no error.

        Bindings otherwise only grow: a subscription to a named queue binds
        its patterns, and cancelling it leaves them (a durable queue keeps
        collecting messages for the next consumer). A caller whose set of
        patterns shrinks subscribes again with the new set, cancels the old
        subscription, then unbinds what it dropped.

        @return: a L{Deferred} that fires once the bindings are gone (for
            RabbitMQ: the broker confirmed), or fails if the bus is not
            connected or the broker failed; the caller tries again later.
        """


class ISubscription(Interface):
    """
    A live subscription made with L{IBus.subscribe}.
    """

    patterns = Attribute("The routing-key patterns this subscription receives.")

    def whenReady():
        """
        A L{Deferred} that fires (with L{None}) once this subscription is
        consuming: its queue and bindings are declared and messages flow to
        the handler. It fires at once if it is; after a lost connection or a
        queue deleted under it, it fires once consuming again. It fails
        with L{twisted.internet.defer.CancelledError} if the subscription
        is cancelled first.
        """

    def cancel():
        """
        Stop receiving messages. Returns a L{Deferred}.
        """


class IAnalyzer(Interface):
    """
    An analyzer plugin: it judges one measure and returns findings.

    resmon calls L{analyze} once per measure, on the reactor thread, in the
    order measures of one host arrive. The findings appear in the published
    analysis under C{analyses[<name>]}.

    Findings are a L{dict} with these optional keys (anything else is
    refused, so a typo cannot hide a result):

      - C{"level"}: C{"LOW"}, C{"MEDIUM"} or C{"HIGH"}: the overall verdict.
      - C{"checks"}: a L{dict} mapping a subject name (C{"cpu"}, C{"/var"})
        to a L{dict} with C{"level"} (as above or L{None}), C{"value"}
        (a finite number or L{None}) and optionally C{"message"} (L{str}).
      - C{"values"}: a L{dict} of extra named numbers (finite or L{None}).
      - C{"messages"}: a L{list} of human-readable L{str}.

    Returning L{None} means "nothing to say about this measure" (for example
    the metric it looks at is missing).
    """

    name = Attribute(
        "A unique, stable name: lowercase letters, digits, '-' and '_'. "
        "It keys the findings in every analysis and the analyzer's options."
    )

    def configure(options):
        """
        Receive this analyzer's options (a L{dict} of L{str} to L{str},
        possibly empty) before the first measure. Raise L{ValueError} with a
        clear message to refuse a bad option.
        """

    def analyze(measure, state):
        """
        Judge one decoded measure.

        @param measure: a L{resmon.wire.Measure}; its C{metrics} is the
            decoded metrics dict documented in C{docs/protocol.md}.
        @param state: a L{dict} private to this analyzer and this host, kept
            between calls; store per-host history here.
        @return: findings (see the interface docstring) or L{None}.
        """


class IRule(Interface):
    """
    A rule plugin: it watches events on the bus, decides whether one
    applies, and acts (C{docs/rules.md}).

    resmon calls L{check} for every event whose routing key matches one of
    L{patterns}, and L{action} when L{check} returned true, on the reactor
    thread, in the order the events of one routing key arrive.
    """

    name = Attribute(
        "A unique, stable name: lowercase letters, digits, '-' and '_'. It "
        "keys the rule's options, C{--rules}, its counters and the chains of "
        "the events it emits.")

    patterns = Attribute(
        "The routing-key patterns (AMQP topic syntax: C{*} one word, C{#} "
        "any number) of the events this rule listens to, e.g. "
        "C{(\"*.event\", \"*.analysis\")}: a non-empty sequence of strings.")

    def configure(options):
        """
        Receive this rule's options (a L{dict} of L{str} to L{str}, possibly
        empty) before the first event. Raise L{ValueError} with a clear
        message to refuse a bad option.
        """

    def check(event, state):
        """
        Decide whether this rule applies to C{event}.

        @param event: a L{resmon.wire.Event}.
        @param state: a L{dict} private to this rule and the event's source
            (the first word of its routing key: the host of a measure,
            analysis, status or alert), kept between calls.
        @return: true to have L{action} called.
        """

    def action(event, state, act):
        """
        Act on C{event}, through C{act} only (an L{IAct}).

        @param state: as for L{check}: the same L{dict}.
        """


class IAct(Interface):
    """
    What a rule's action may do. Everything is done once the action has
    returned, and only if it returned in its time budget: an action that
    raises does nothing at all.
    """

    def emit(key, payload):
        """
        Publish an event under routing key C{key} (C{<source>.<kind>}, kind
        neither C{measure}, C{analysis} nor C{status}) with C{payload}, any
        JSON value. It carries the chain of the event acted on, one deeper,
        with this rule's name.
        """

    def notify(title, text="", user=None, group=None, level="info", host=None):
        """
        Notify one user (C{user}) or every member of one group (C{group}):
        published under C{user.<name>.notify} or C{group.<group>.notify},
        shown on their open dashboards. C{level}: C{info}, C{warning} or
        C{critical}; with C{host}, only users who may see it receive it.
        """

    def now():
        """
        The current time (seconds since the epoch) by the rules service's clock.
        """
