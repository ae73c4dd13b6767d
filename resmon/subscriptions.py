"""
What one client wants to receive: host patterns, event kinds, and whether
its snapshot carries history. Parsed from a WebSocket C{subscribe} message or
from query parameters (C{/ws?...}, C{/api/stream?...}); the fan-out filters
every event through it, in the web process.
"""

import math

from resmon import topics

EVENT_KINDS = (topics.ANALYSIS, topics.STATUS)
MAX_PATTERNS = 1000
MAX_PATTERN_LENGTH = 255
# Cached pattern results per subscription; beyond this the cache is dropped.
_MATCH_CACHE_SIZE = 100_000


class InvalidSubscription(ValueError):
    """
    A subscription request that cannot be honoured; the message says why.
    """


class Subscription:
    """
    A filter over events.

    @param hosts: L{None} for every host, or patterns: a host matches when a
        pattern equals its name, or matches its routing word
        (L{topics.hostWord}) as an AMQP topic pattern (C{*}, C{#}).
    @param events: the event kinds wanted.
    @param history: whether the snapshot includes the hosts' history.
    @param since: only history points with a C{ts} after this.
    """

    def __init__(self, hosts=None, events=EVENT_KINDS, history=True, since=None):
        self.hosts = None if hosts is None else tuple(hosts)
        self.events = frozenset(events)
        self.history = history
        self.since = since
        self._matched = {}

    def matchesHost(self, host):
        if self.hosts is None:
            return True
        matched = self._matched.get(host)
        if matched is None:
            word = topics.hostWord(host)
            matched = any(
                pattern == host or topics.topicMatches(pattern, word) for pattern in self.hosts)
            if len(self._matched) >= _MATCH_CACHE_SIZE:
                self._matched.clear()
            self._matched[host] = matched
        return matched

    def matches(self, document):
        return document["kind"] in self.events and self.matchesHost(document["host"])

    def describe(self):
        """
        The subscription as the server understood it, echoed in snapshots.
        """
        return {
            "hosts": None if self.hosts is None else list(self.hosts),
            "events": [kind for kind in EVENT_KINDS if kind in self.events],
            "history": self.history,
            "since": self.since,
        }


EVERYTHING = Subscription()


def parseSubscribe(message):
    """
    The L{Subscription} asked for by a decoded C{{"kind": "subscribe", ...}}
    message. Absent fields take their defaults: every host, every kind,
    with history.

    @raise InvalidSubscription: naming the field at fault.
    """
    if not isinstance(message, dict):
        raise InvalidSubscription("a message must be a JSON object")
    unknown = set(message) - {"kind", "hosts", "events", "history", "since"}
    if unknown:
        raise InvalidSubscription(f"unknown field {sorted(unknown)[0][:40]!r}")
    hosts = message.get("hosts")
    if hosts is not None:
        if isinstance(hosts, str):
            hosts = [hosts]
        if not isinstance(hosts, list) or not all(isinstance(p, str) for p in hosts):
            raise InvalidSubscription("hosts: expected a list of host names or patterns")
        hosts = _patterns(hosts)
    events = message.get("events")
    if events is not None:
        if isinstance(events, str):
            events = [events]
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise InvalidSubscription("events: expected a list of event kinds")
        events = _kinds(events)
    history = message.get("history", True)
    if not isinstance(history, bool):
        raise InvalidSubscription("history: expected true or false")
    since = message.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))
                              or not math.isfinite(since)):
        raise InvalidSubscription("since: expected a number (seconds since the epoch)")
    return Subscription(hosts, events if events is not None else EVENT_KINDS, history, since)


def parseQuery(args):
    """
    The L{Subscription} asked for by query parameters (a twisted.web
    C{request.args}: bytes keys, lists of bytes values; or Autobahn's
    C{params}: str keys and values): C{hosts=} and C{events=} comma-separated,
    C{history=0|1}, C{since=}.

    @raise InvalidSubscription: naming the parameter at fault.
    """
    values = {}
    for key, found in args.items():
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        found = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in found]
        values[key] = ",".join(found)
    unknown = set(values) - {"hosts", "events", "history", "since"}
    if unknown:
        raise InvalidSubscription(f"unknown parameter {sorted(unknown)[0][:40]!r}")
    message = {}
    if "hosts" in values:
        message["hosts"] = [p for p in values["hosts"].split(",") if p]
    if "events" in values:
        message["events"] = [e for e in values["events"].split(",") if e]
    if "history" in values:
        flag = values["history"].lower()
        if flag not in ("0", "1", "true", "false"):
            raise InvalidSubscription("history: expected 0 or 1")
        message["history"] = flag in ("1", "true")
    if "since" in values:
        try:
            message["since"] = float(values["since"])
        except ValueError:
            raise InvalidSubscription("since: expected a number (seconds since the epoch)")
    return parseSubscribe(message)


def _patterns(patterns):
    if not patterns:
        raise InvalidSubscription("hosts: empty list (leave it out for every host)")
    if len(patterns) > MAX_PATTERNS:
        raise InvalidSubscription(f"hosts: at most {MAX_PATTERNS} patterns")
    for pattern in patterns:
        if not 1 <= len(pattern) <= MAX_PATTERN_LENGTH:
            raise InvalidSubscription(f"hosts: a pattern must be 1 to {MAX_PATTERN_LENGTH} characters")
        for word in pattern.split("."):
            if word not in ("*", "#") and ("*" in word or "#" in word):
                raise InvalidSubscription(
                    f"hosts: {pattern[:60]!r}: '*' and '#' match whole words only "
                    "(AMQP topic syntax, not a glob)")
    return patterns


def _kinds(events):
    if not events:
        raise InvalidSubscription("events: empty list (leave it out for every kind)")
    for kind in events:
        if kind not in EVENT_KINDS:
            raise InvalidSubscription(
                f"events: unknown kind {kind[:40]!r}; expected {', '.join(EVENT_KINDS)}")
    return events
