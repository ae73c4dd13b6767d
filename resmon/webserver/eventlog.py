"""
What the web role keeps of rules' events and alerts, for C{GET /api/events}
and C{GET /api/alerts}: the latest events (bounded), and the alerts firing
now (the latest C{firing} alert of each host and check, until its
C{resolved} one).
"""

from collections import OrderedDict, deque

from resmon.webserver.visibility import alertSubject


DEFAULT_RECENT_EVENTS = 1000
# Bytes of the recent events kept, all together: 1,000 envelopes of up to
# --max-body each would be 350 MB; past this the oldest go first.
DEFAULT_RECENT_EVENTS_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_ALERTS = 10_000


class RecentEvents:
    """
    The last C{limit} events and alerts received, oldest first, as their
    C{(ts, kind, subject, body)} (the subject: what the event is about,
    L{resmon.webserver.visibility.subjectOf}), at most C{maxBytes} of
    bodies in all.
    """

    def __init__(self, limit=DEFAULT_RECENT_EVENTS, maxBytes=DEFAULT_RECENT_EVENTS_BYTES):
        self.limit = limit
        self.maxBytes = maxBytes
        self._events = deque()
        self._bytes = 0

    def add(self, event, body, subject=None):
        """
        Keep C{event} (a L{resmon.wire.Event}) received as C{body}, about
        C{subject} (default: its source).
        """
        events = self._events
        events.append((event.ts, event.kind, event.source if subject is None else subject,
                       body))
        self._bytes += len(body)
        while len(events) > self.limit or (self._bytes > self.maxBytes and len(events) > 1):
            self._bytes -= len(events.popleft()[3])

    def since(self, ts=None, wanted=None):
        """
        The bodies of the events kept whose C{ts} is after C{ts} (all for
        L{None}) and, with C{wanted}, for whose subject C{wanted(subject)}
        is true, oldest first.
        """
        return [body for when, _, subject, body in self._events
                if (ts is None or when > ts) and (wanted is None or wanted(subject))]

    def latest(self, count, wanted):
        """
        The bodies of the last C{count} events for which C{wanted(kind,
        subject)} is true, oldest first.
        """
        found = []
        for _, kind, source, body in reversed(self._events):
            if len(found) >= count:
                break
            if wanted(kind, source):
                found.append(body)
        found.reverse()
        return found

    def __len__(self):
        return len(self._events)


class FiringAlerts:
    """
    The alerts firing now, by host and check, in the order they fired; at
    most C{limit} (the oldest is dropped beyond, and counted in C{dropped}).
    """

    def __init__(self, limit=DEFAULT_MAX_ALERTS):
        self.limit = limit
        self.dropped = 0
        self._firing = OrderedDict()

    def update(self, event, body):
        """
        Take an alert (a L{resmon.wire.Event} of kind C{alert}) received as C{body}.
        """
        payload = event.payload
        if not isinstance(payload, dict):
            return
        key = (event.source, str(payload.get("host")), str(payload.get("check")))
        state = payload.get("state")
        if state == "firing":
            self._firing.pop(key, None)
            self._firing[key] = (body, alertSubject(event.source, payload.get("host")))
            if len(self._firing) > self.limit:
                self._firing.popitem(last=False)
                self.dropped += 1
        elif state == "resolved":
            self._firing.pop(key, None)

    def forgetSource(self, source):
        """
        Drop the alerts of one source (a host's routing word), forgotten.
        """
        for key in [key for key in self._firing if key[0] == source]:
            del self._firing[key]

    def bodies(self, wanted=None):
        """
        The bodies of the firing alerts (of the subjects for which
        C{wanted(subject)} is true: the alert's host when its source is that
        host's word, else its source), in the order they fired.
        """
        return [body for body, subject in self._firing.values()
                if wanted is None or wanted(subject)]

    def __len__(self):
        return len(self._firing)
