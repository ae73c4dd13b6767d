"""
What each user may see: a client's L{Subscription} composed with its
L{resmon.auth.principal.Principal}, so the fan-out's one per-client filter
sends nothing about a host the user may not see, in snapshots, live
events, history, the JSON API and the event stream alike.

An event is about the host it names: an analysis's or status's C{host}; an
alert's C{payload.host} when its source word is that host's word (one
naming another host than its key's is shown only to those who may see
both, L{alertSubject}), else its source; any other event's source (C{deploys} of C{POST /api/events/deploys}).
A user sees an event only if L{Principal.maySee} is true of what it is
about: events whose source is not a host reach only users whose host
patterns match the source word (admins and users who see every host).
"""

from resmon import topics
from resmon.auth.principal import UNRESTRICTED
# What an alert is about is decided with the routing words (re-exported).
from resmon.topics import alertSubject  # noqa: F401

# Answers of Principal.maySee kept, for every user together; beyond this
# they are all dropped (and found again as needed).
_SHARED_ANSWERS = 200_000

# host patterns -> {host: whether those patterns see it}: the clients of one
# user (or of users with the same patterns) ask Principal.maySee once per host.
_shared = {}
_sharedCount = 0


def _maySee(principal, host):
    """
    L{Principal.maySee}, remembered per set of host patterns (the users
    file's, not a client's), within one global budget whatever the subjects
    events come about.
    """
    global _sharedCount
    answers = _shared.get(principal.hosts)
    if answers is None:
        answers = _shared[principal.hosts] = {}
    seen = answers.get(host)
    if seen is None:
        if _sharedCount >= _SHARED_ANSWERS:
            _shared.clear()
            _sharedCount = 0
            answers = _shared[principal.hosts] = {}
        seen = answers[host] = principal.maySee(host)
        _sharedCount += 1
    return seen


def _forgetAnswer(principal, host):
    global _sharedCount
    answers = _shared.get(principal.hosts)
    if answers is not None and answers.pop(host, None) is not None:
        _sharedCount -= 1


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

    @property
    def historyForm(self):
        return self.subscription.historyForm

    def matchesHost(self, host):
        # Nothing kept per subscription: the fan-out remembers which
        # subscriptions match each host, the users' answers are shared.
        principal = self.principal
        return ((principal.seesEverything or _maySee(principal, host))
                and self.subscription.matchesHost(host))

    def matches(self, document):
        return document["kind"] in self.events and self.matchesHost(document["host"])

    @property
    def matchKey(self):
        """
        The subscription's key and the host patterns of the principal: what
        a user may see depends on nothing else (L{Principal.maySee}).
        """
        return (self.principal.hosts, self.subscription.matchKey)

    def forgetHost(self, host):
        if not self.principal.seesEverything:
            _forgetAnswer(self.principal, host)
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
