"""
What each user may see: a client's L{Subscription} composed with its
L{resmon.auth.principal.Principal}, so the fan-out's one per-client filter
sends nothing about a host the user may not see, in snapshots, live
events, history, the JSON API and the event stream alike.

An event is about the host it names: an analysis's or status's C{host}; an
alert's C{payload.host} when its source word is that host's word (one
naming another host than its key's is shown only to those who see every
host, L{alertSubject}), else its source; any other event's source (C{deploys} of C{POST /api/events/deploys}).
A user sees an event only if L{Principal.maySee} is true of what it is
about: events whose source is not a host reach only users whose host
patterns match the source word (admins and users who see every host).
"""

from resmon import topics
from resmon.auth.principal import UNRESTRICTED

# Cached results per composed subscription; beyond this the cache is dropped.
_CACHE_SIZE = 100_000
# Host sets whose answers are shared; beyond this the shared answers are dropped.
_SHARED_SETS = 1000

# host patterns -> {host: whether those patterns see it}: the clients of one
# user (or of users with the same patterns) ask Principal.maySee once per host.
_shared = {}


def _sharedAnswers(principal):
    answers = _shared.get(principal.hosts)
    if answers is None:
        if len(_shared) >= _SHARED_SETS:
            _shared.clear()
        answers = _shared[principal.hosts] = {}
    return answers


class VisibleSubscription:
    """
    C{subscription} seen through C{principal}: a host matches when the
    principal may see it and the subscription asks for it. Everything
    else (event kinds, history, the description echoed to the client) is
    the subscription's.

    @ivar principal: the L{Principal} its client speaks for (notifications
        go by it).
    """

    def __init__(self, principal, subscription):
        self.principal = principal
        self.subscription = subscription
        self.events = subscription.events
        self.history = subscription.history
        self.since = subscription.since
        self.step = subscription.step
        # Snapshots list every known host only when this is None.
        self.hosts = subscription.hosts if principal.seesEverything else (
            subscription.hosts if subscription.hosts is not None else principal.hosts)
        self._matched = {}

    @property
    def historyForm(self):
        return self.subscription.historyForm

    def _maySee(self, host):
        if self.principal.seesEverything:
            return True
        answers = _sharedAnswers(self.principal)
        seen = answers.get(host)
        if seen is None:
            if len(answers) >= _CACHE_SIZE:
                answers.clear()
            seen = answers[host] = self.principal.maySee(host)
        return seen

    def matchesHost(self, host):
        matched = self._matched.get(host)
        if matched is None:
            matched = self._maySee(host) and self.subscription.matchesHost(host)
            if len(self._matched) >= _CACHE_SIZE:
                self._matched.clear()
            self._matched[host] = matched
        return matched

    def matches(self, document):
        # Once per event and client: the cached answer without a call.
        if document["kind"] not in self.events:
            return False
        matched = self._matched.get(document["host"])
        return self.matchesHost(document["host"]) if matched is None else matched

    @property
    def matchKey(self):
        """
        The subscription's key and the host patterns of the principal: what
        a user may see depends on nothing else (L{Principal.maySee}).
        """
        return (self.principal.hosts, self.subscription.matchKey)

    def forgetHost(self, host):
        self._matched.pop(host, None)
        if not self.principal.seesEverything:
            _sharedAnswers(self.principal).pop(host, None)
        self.subscription.forgetHost(host)

    def describe(self):
        return self.subscription.describe()


def visibleTo(principal, subscription):
    """
    The subscription a client of C{principal} is attached with: C{subscription}
    itself without users (L{UNRESTRICTED}), else a L{VisibleSubscription}
    (also for admins, whose notifications go by it).
    """
    if principal is UNRESTRICTED or principal is None:
        return subscription
    return VisibleSubscription(principal, subscription)


def principalOfSubscription(subscription):
    """
    The named L{Principal} a fan-out client's subscription speaks for, or L{None}.
    """
    principal = getattr(subscription, "principal", None)
    return principal if principal is not None and principal.name is not None else None


def alertSubject(source, host):
    """
    What an alert under C{<source>.alert} naming C{host} (its payload's, or
    L{None}) is about: C{host} when C{source} is its word, C{source} when
    it names none; an alert under one host's key naming another host is
    about both, and shown only to those who see every host (its subject
    is a name no host pattern but C{*} and C{#} matches).
    """
    if not isinstance(host, str) or not host:
        return source
    if topics.hostWord(host) == source:
        return host
    return f"{source}\x00{host}"


def subjectOf(event):
    """
    What an event envelope (a L{resmon.wire.Event}) is about, as a host name
    or a source word (see the module's docstring).
    """
    if event.kind == topics.ALERT and isinstance(event.payload, dict):
        return alertSubject(event.source, event.payload.get("host"))
    return event.source


def visibleHosts(principal, hosts):
    """
    The hosts of C{hosts} C{principal} may see (C{hosts} itself when it sees every one).
    """
    if principal.seesEverything:
        return hosts
    return [host for host in hosts if principal.maySee(host)]
