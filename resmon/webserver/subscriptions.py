"""
What one client wants to receive: host patterns, event kinds, and which
history its snapshot carries. Parsed from a WebSocket C{subscribe} message or
from query parameters (C{/ws?...}, C{/api/stream?...}); the fan-out filters
every event through it, in the web process. Also the WebSocket's one-off
C{history} request for one host.
"""

import math

from resmon import topics
from resmon.webserver.history import DEFAULT_OVERVIEW_STEP, FULL, OVERVIEW

EVENT_KINDS = (topics.ANALYSIS, topics.STATUS)
MAX_PATTERNS = 1000
MAX_PATTERN_LENGTH = 255
# The values of a subscription's history field, as on the wire.
HISTORY_FULL = True
HISTORY_NONE = False
HISTORY_OVERVIEW = OVERVIEW
# What a client that asks for nothing gets: cheap enough for a whole fleet
# (at most 91 [ts, cpu, mem] per host for 15 minutes).
DEFAULT_HISTORY = HISTORY_OVERVIEW
MAX_STEP = 86400.0
# A smaller step than this divides a time into numbers too large for a float.
MIN_STEP = 0.001
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
    @param history: which history the snapshot includes: L{HISTORY_FULL}
        (every field of each point), L{HISTORY_OVERVIEW} (C{[ts, cpu, mem]}
        per point) or L{HISTORY_NONE}.
    @param since: only history points with a C{ts} after this.
    @param step: at most one history point per C{step} seconds (0: every
        point); L{None}: L{DEFAULT_OVERVIEW_STEP} for an overview, else 0.
    """

    def __init__(self, hosts=None, events=EVENT_KINDS, history=DEFAULT_HISTORY, since=None,
                 step=None):
        self.hosts = None if hosts is None else tuple(hosts)
        self.events = frozenset(events)
        self.history = history
        self.since = since
        if step is None:
            step = DEFAULT_OVERVIEW_STEP if history == HISTORY_OVERVIEW else 0
        self.step = step
        self._matched = {}

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

    def forgetHost(self, host):
        """
        Drop what is cached of C{host}, which the web role forgot.
        """
        self._matched.pop(host, None)

    def describe(self):
        """
        The subscription as the server understood it, echoed in snapshots.
        """
        return {
            "hosts": None if self.hosts is None else list(self.hosts),
            "events": [kind for kind in EVENT_KINDS if kind in self.events],
            "history": self.history,
            "step": self.step,
            "since": self.since,
        }


EVERYTHING = Subscription()


class HistoryRequest:
    """
    A WebSocket client's one-off request for the history of one host.

    @param host: the host's name or routing word, as asked.
    @param step: at most one point per C{step} seconds (0: every point).
    """

    def __init__(self, host, step=0):
        self.host = host
        self.step = step


def parseHistoryRequest(message):
    """
    The L{HistoryRequest} of a decoded C{{"kind": "history", "host": ...}}
    message (C{step} defaults to 0).

    @raise InvalidSubscription: naming the field at fault.
    """
    if not isinstance(message, dict):
        raise InvalidSubscription("a message must be a JSON object")
    unknown = set(message) - {"kind", "host", "step"}
    if unknown:
        raise InvalidSubscription(f"unknown field {sorted(unknown)[0][:40]!r}")
    host = message.get("host")
    if not isinstance(host, str) or not 1 <= len(host) <= MAX_PATTERN_LENGTH:
        raise InvalidSubscription(
            f"host: expected a host name or routing word of 1 to {MAX_PATTERN_LENGTH} characters")
    return HistoryRequest(host, parseStep(message.get("step", 0)))


def parseSubscribe(message):
    """
    The L{Subscription} asked for by a decoded C{{"kind": "subscribe", ...}}
    message. Absent fields take their defaults: every host, every kind,
    an overview history at one point per 10 s.

    @raise InvalidSubscription: naming the field at fault.
    """
    if not isinstance(message, dict):
        raise InvalidSubscription("a message must be a JSON object")
    unknown = set(message) - {"kind", "hosts", "events", "history", "since", "step"}
    if unknown:
        raise InvalidSubscription(f"unknown field {sorted(unknown)[0][:40]!r}")
    hosts = _strings(message, "hosts", "host names or patterns")
    if hosts is not None:
        hosts = _patterns(hosts)
    events = _strings(message, "events", "event kinds")
    if events is not None:
        events = _kinds(events)
    history = message.get("history", DEFAULT_HISTORY)
    if not (isinstance(history, bool) or history == HISTORY_OVERVIEW):
        raise InvalidSubscription('history: expected true, false or "overview"')
    since = message.get("since")
    if since is not None and not _isNumber(since):
        raise InvalidSubscription("since: expected a number (seconds since the epoch)")
    step = message.get("step")
    if step is not None:
        step = parseStep(step)
    return Subscription(hosts, events if events is not None else EVENT_KINDS, history, since, step)


def _isNumber(value):
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _strings(message, field, what):
    """
    C{message[field]} as a list of strings (one string counts as a list of
    one), or L{None} if absent.
    """
    value = message.get(field)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidSubscription(f"{field}: expected a list of {what}")
    return value


def parseStep(step):
    """
    A history step: 0 (every point), or a number of seconds from C{MIN_STEP}
    to C{MAX_STEP}.

    @raise InvalidSubscription: for anything else.
    """
    if not _isNumber(step) or not (step == 0 or MIN_STEP <= step <= MAX_STEP):
        raise InvalidSubscription(
            f"step: expected a number of seconds: 0 (every point) or {MIN_STEP:g} to {MAX_STEP:.0f}")
    return step


def parseQuery(args):
    """
    The L{Subscription} asked for by query parameters (a twisted.web
    C{request.args}: bytes keys, lists of bytes values; or Autobahn's
    C{params}: str keys and values): C{hosts=} and C{events=} comma-separated,
    C{history=0|1|overview}, C{since=}, C{step=}.

    @raise InvalidSubscription: naming the parameter at fault.
    """
    values = {}
    for key, found in args.items():
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        found = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in found]
        values[key] = ",".join(found)
    unknown = set(values) - {"hosts", "events", "history", "since", "step"}
    if unknown:
        raise InvalidSubscription(f"unknown parameter {sorted(unknown)[0][:40]!r}")
    message = {}
    if "hosts" in values:
        message["hosts"] = [p for p in values["hosts"].split(",") if p]
    if "events" in values:
        message["events"] = [e for e in values["events"].split(",") if e]
    if "history" in values:
        flag = values["history"].lower()
        if flag == HISTORY_OVERVIEW:
            message["history"] = HISTORY_OVERVIEW
        elif flag in ("0", "1", "true", "false"):
            message["history"] = flag in ("1", "true")
        else:
            raise InvalidSubscription("history: expected 0, 1 or overview")
    for name, what in (("since", "seconds since the epoch"), ("step", "seconds")):
        if name in values:
            try:
                message[name] = float(values[name])
            except ValueError:
                raise InvalidSubscription(f"{name}: expected a number ({what})")
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
