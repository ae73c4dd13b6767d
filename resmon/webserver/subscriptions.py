"""
What one client wants to receive: host patterns, event kinds, and which
history its snapshot carries, from a WebSocket C{subscribe} message or from
query parameters (C{/ws?...}, C{/api/stream?...}), both decoded by
L{resmon.wire}; the fan-out filters every event through it, in the web
process.
"""

from resmon import topics, wire
from resmon.webserver.history import DEFAULT_OVERVIEW_STEP, FULL, OVERVIEW
# Re-exported: the names this module's callers know.
from resmon.wire import (  # noqa: F401
    DEFAULT_HISTORY, EVENT_KINDS, HISTORY_FULL, HISTORY_NONE, HISTORY_OVERVIEW, MAX_PATTERN_LENGTH,
    MAX_PATTERNS, MAX_STEP, MIN_STEP, HistoryRequest)
from resmon.wire import InvalidRequest as InvalidSubscription  # noqa: F401
from resmon.wire import decodeHistoryRequest as parseHistoryRequest  # noqa: F401
from resmon.wire import decodeStep as parseStep  # noqa: F401


class Subscription:
    """
    A filter over events.

    @param hosts: L{None} for every host, or patterns: a host matches when a
        pattern equals its name, or matches its routing word
        (L{topics.hostWord}) as an AMQP topic pattern (C{*}, C{#}).
    @param events: the event kinds wanted.
    @param history: which history the snapshot includes: L{HISTORY_FULL}
        (every field of each point), L{HISTORY_OVERVIEW} (C{[ts, cpu, mem]}
        per point) or L{HISTORY_NONE}.
    @param since: only history points with a C{ts} after this.
    @param step: at most one history point per C{step} seconds (0: every
        point); L{None}: L{DEFAULT_OVERVIEW_STEP} for an overview, else 0.
    """

    def __init__(self, hosts=None, events=EVENT_KINDS, history=DEFAULT_HISTORY, since=None,
                 step=None):
        self.hosts, self._literal, self._wild = _patterns(hosts)
        self.events = frozenset(events)
        self.history = history
        self.since = since
        if step is None:
            step = DEFAULT_OVERVIEW_STEP if history == HISTORY_OVERVIEW else 0
        self.step = step

    @property
    def historyForm(self):
        """
        L{resmon.webserver.history.FULL}, L{resmon.webserver.history.OVERVIEW}, or L{None} for no
        history.
        """
        if self.history is HISTORY_FULL:
            return FULL
        return OVERVIEW if self.history == HISTORY_OVERVIEW else None

    def matchesHost(self, host):
        # Set lookups (the patterns were judged once): nothing to cache. The
        # fan-out remembers which subscriptions match each host.
        if self.hosts is None:
            return True
        anyWord, wildWords = self._wild
        if anyWord or host in self._literal:
            return True
        word = topics.hostWord(host)
        return word in self._literal or word in wildWords

    def matches(self, document):
        return document["kind"] in self.events and self.matchesHost(document["host"])

    @property
    def matchKey(self):
        """
        What decides which events match: subscriptions with equal keys match
        the same events (the fan-out matches each event once for all of them).
        """
        return (self.hosts, self.events)

    def forgetHost(self, host):
        """
        Drop what is cached of C{host}, which the web role forgot (nothing:
        a subscription keeps nothing per host).
        """

    def describe(self):
        """
        The subscription as the server understood it, echoed in snapshots.
        """
        return wire.subscriptionDocument(self.hosts, self.events, self.history, self.step, self.since)

    @classmethod
    def fromRequest(cls, request):
        """
        The subscription a L{wire.SubscribeRequest} asks for.
        """
        return cls(request.hosts, request.events, request.history, request.since, request.step)


class _SharedPatterns:
    """
    Host patterns of the subscriptions made, shared by the equal ones (a
    thousand dashboards asking for the same hundred hosts keep them once).
    Entries outlive their subscriptions: beyond C{limit} patterns in all,
    the table is dropped (what it costs stays bounded whatever clients
    ask for; sharing starts again with the next subscriptions).
    """

    def __init__(self, limit=100_000):
        self.limit = limit
        self._table = {}
        self._size = 0

    def get(self, hosts):
        """
        C{hosts} as a tuple, the literal patterns among them as a set and
        what the others (with C{*} or C{#}) match, shared with equal
        subscriptions.

        A pattern without wildcards matches a host by its name or its
        routing word (a word has no dots): a set lookup, not a topic match
        each. A pattern with wildcards is matched against the host's word,
        one word: see L{_oneWordForm}.
        """
        hosts = tuple(hosts)
        shared = self._table.get(hosts)
        if shared is None:
            if self._size + len(hosts) > self.limit:
                self._table.clear()
                self._size = 0
            literal = frozenset(p for p in hosts if "*" not in p and "#" not in p)
            forms = {_oneWordForm(p) for p in hosts if p not in literal}
            wildWords = frozenset(form for form in forms if isinstance(form, str))
            shared = (hosts, literal, (True in forms, wildWords))
            self._table[hosts] = shared
            self._size += len(hosts)
        return shared


def _oneWordForm(pattern):
    """
    What a topic pattern with wildcards matches among keys of one word (a
    host's routing word has no dot): L{True} for every word (its words are
    C{#} but for at most one C{*}), a word for that word alone (it is the
    only word but C{#}), L{None} for none (two words or more besides C{#}).

    So a subscription's patterns are judged once, whatever they are (up to
    L{wire.MAX_PATTERNS} of 255 characters from any dashboard): matching a
    host costs set lookups, not a topic match per pattern
    (L{resmon.topics.topicMatches} agrees, C{tests/test_units_fanout_sharing.py}).
    """
    words = [word for word in pattern.split(".") if word != "#"]
    if not words or words == ["*"]:
        return True
    if len(words) == 1:
        return words[0]
    return None


_sharedPatterns = _SharedPatterns()


def _patterns(hosts):
    if hosts is None:
        return None, frozenset(), ()
    return _sharedPatterns.get(hosts)


EVERYTHING = Subscription()


def parseSubscribe(message):
    """
    The L{Subscription} asked for by a decoded C{{"kind": "subscribe", ...}}
    message (see L{wire.decodeSubscribe}).

    @raise InvalidSubscription: naming the field at fault.
    """
    return Subscription.fromRequest(wire.decodeSubscribe(message))


def parseQuery(args):
    """
    The L{Subscription} asked for by query parameters (see
    L{wire.decodeQuery}).

    @raise InvalidSubscription: naming the parameter at fault.
    """
    return Subscription.fromRequest(wire.decodeQuery(args))
