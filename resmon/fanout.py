"""
Fan-out of events from the bus to every connected client, each through its
own L{Subscription}, with the latest analysis and status of each host and a
bounded history kept for clients that connect later.
"""

import json
from collections import Counter, deque

from twisted.logger import Logger

from resmon import topics, wire
from resmon.history import DEFAULT_OVERVIEW_STEP, FULL, OVERVIEW, isLateCopy
from resmon.subscriptions import EVERYTHING

DEFAULT_STALL_TIMEOUT = 30.0
MAX_STATUS_LENGTH = 32
# The status of a host that sends (as in resmon.liveness).
ONLINE = "online"
# Full history of a whole fleet is hundreds of MiB built on the reactor:
# beyond this many hosts a snapshot carries the overview instead.
MAX_FULL_HISTORY_HOSTS = 50
# Redelivered analyses come back within seconds, a few per host at most.
RECENT_ANALYSES_PER_HOST = 32


class LatestEvents:
    """
    The latest event of one kind for every host seen, as decoded documents
    and as the bytes received (so they are sent without encoding them again).
    """

    def __init__(self):
        self._documents = {}
        self._bodies = {}

    def update(self, document, body):
        self._documents[document["host"]] = document
        self._bodies[document["host"]] = body

    def forget(self, host):
        """
        Drop the latest event of C{host}; return whether there was one.
        """
        self._bodies.pop(host, None)
        return self._documents.pop(host, None) is not None

    def hosts(self):
        return sorted(self._documents)

    def get(self, host):
        return self._documents.get(host)

    def body(self, host):
        return self._bodies.get(host)

    def documents(self):
        return [self._documents[host] for host in self.hosts()]

    def __contains__(self, host):
        return host in self._documents

    def arrayBody(self, hosts=None):
        """
        A JSON array of the latest events of C{hosts} (default: all), sorted
        by host, as bytes.
        """
        hosts = self.hosts() if hosts is None else sorted(h for h in hosts if h in self._bodies)
        return b"[" + b",".join(self._bodies[host] for host in hosts) + b"]"


class LatestAnalyses(LatestEvents):
    """
    The latest analysis of every host seen, and the C{(seq, ts)} of each
    host's last C{recent} analyses, to recognise the ones delivered twice.

    Delivery is at least once: a measure redelivered after a reconnect, or
    after an analyzer was killed before acking it, is analysed and published
    again, possibly after later ones (5, 6, 5, 6). A repeat of any of the
    recent analyses is a duplicate; an older analysis not seen before is
    new, but does not replace a newer latest one. Older means older by both
    C{seq} and C{ts} (L{resmon.history.isLateCopy}): an analysis with a later
    C{seq} but an earlier C{ts} comes from an agent whose clock went back,
    and replaces the latest, as received.
    """

    def __init__(self, recent=RECENT_ANALYSES_PER_HOST):
        LatestEvents.__init__(self)
        self._recent = {}
        self._recentSize = recent

    def accept(self, document, body):
        """
        Take C{document} (a decoded analysis) unless it is a duplicate.

        @return: whether it is new (and so goes to the clients).
        """
        host = document["host"]
        identity = (document.get("seq"), document.get("ts"))
        if identity[0] is not None:  # a proof-of-concept analysis has no seq: never a repeat
            recent = self._recent.get(host)
            if recent is None:
                recent = self._recent[host] = deque(maxlen=self._recentSize)
            if identity in recent:
                return False
            recent.append(identity)
        latest = self._documents.get(host)
        if latest is None or not _olderThan(document, latest):
            self.update(document, body)
        return True

    def forget(self, host):
        self._recent.pop(host, None)
        return LatestEvents.forget(self, host)

    def snapshotBody(self):
        """
        A snapshot of every latest analysis and nothing else (see
        L{EventFanout.snapshotBody} for the full one).
        """
        return b'{"kind":"snapshot","events":' + self.arrayBody() + b"}"


class ClientFlow:
    """
    Flow control for one client: an L{IPushProducer} registered on the
    client's transport. While the transport's buffer is full, only the
    latest event per key (kind and host) is kept, bounded by the number of
    hosts; a client paused for longer than C{stallTimeout} seconds is
    disconnected.

    @param send: sends one message (bytes) to the client.
    @param disconnect: drops the client.
    """

    log = Logger()

    def __init__(self, send, disconnect, clock, stallTimeout=DEFAULT_STALL_TIMEOUT):
        self._send = send
        self._disconnect = disconnect
        self._clock = clock
        self.stallTimeout = stallTimeout
        self.paused = False
        self.pending = {}
        self.coalesced = 0
        self._stallCall = None

    def send(self, key, body):
        if self.paused:
            if self.pending.pop(key, None) is not None:
                self.coalesced += 1
            # Held back in the order of their latest update: a host's
            # forgotten status goes after its analysis held back earlier.
            self.pending[key] = body
        else:
            self._send(body)

    def restart(self, snapshot):
        """
        Send C{snapshot} ahead of every later event, dropping the events held
        back so far: the snapshot supersedes them (not the replies to
        C{history} requests, which it does not answer).
        """
        if self.paused:
            replies = {key: body for key, body in self.pending.items()
                       if isinstance(key, tuple) and key[0] == "history"}
            self.pending = {_SNAPSHOT: snapshot, **replies}
        else:
            self._send(snapshot)

    # IPushProducer

    def pauseProducing(self):
        if self.paused:
            return
        self.paused = True
        self._stallCall = self._clock.callLater(self.stallTimeout, self._stalled)

    def resumeProducing(self):
        if not self.paused:
            return
        self.paused = False
        self._cancelStall()
        pending, self.pending = self.pending, {}
        # At most one message per key: sent in full even if the buffer fills
        # again meanwhile (later events are then held back behind them).
        for body in pending.values():
            self._send(body)

    def stopProducing(self):
        self._cancelStall()
        self.pending = {}

    def _cancelStall(self):
        if self._stallCall is not None and self._stallCall.active():
            self._stallCall.cancel()
        self._stallCall = None

    def _stalled(self):
        self._stallCall = None
        self.log.warn("client stopped reading for {timeout} s ({pending} updates held back); disconnecting it",
                      timeout=self.stallTimeout, pending=len(self.pending))
        self.pending = {}
        self._disconnect()


_SNAPSHOT = object()


class EventFanout:
    """
    Receives events from the bus (a handler for L{IBus.subscribe}) and sends
    each to every attached client whose subscription matches it; keeps the
    latest analysis and status of each host, and their history.

    A client is anything with C{sendEvent(document, body)}.

    An analysis or status whose C{host} does not map to its routing key, and
    an analysis whose C{ts} or C{analyzed_at} is more than C{maxClockSkew}
    seconds ahead of C{clock}, are rejected and counted. A new latest
    analysis of a host whose latest status is not C{online} records and
    sends an C{online} status for it (L{backOnline}).

    @param history: a L{resmon.history.FleetHistory}, or L{None} for none.
    @param clock: an L{IReactorTime} judging times from the future and
        dating the C{online} statuses recorded here, or L{None}: no judging,
        and those statuses carry no time.
    @param maxClockSkew: seconds an analysis's times may be ahead of C{clock}.
    @param forgetAfter: seconds (by C{clock}) after the last analysis of a
        host (or its first status, if no analysis came) before
        L{forgetSilent} forgets it. A C{forgotten} status (the analyzer's)
        forgets its host at once. Forgetting drops the host from every table
        here and from the history, and sends the C{forgotten} status to the
        clients.
    """

    log = Logger()

    def __init__(self, latest=None, maxBody=wire.DEFAULT_MAX_BODY, history=None, clock=None,
                 maxClockSkew=wire.DEFAULT_MAX_CLOCK_SKEW, forgetAfter=wire.DEFAULT_FORGET_AFTER):
        self.clock = clock
        self.forgetAfter = forgetAfter
        # host -> when it was last heard of (by clock), least recently first.
        self._lastHeard = {}
        self.maxClockSkew = maxClockSkew
        self.latest = latest if latest is not None else LatestAnalyses()
        self.statuses = LatestEvents()
        self.history = history
        self.maxBody = maxBody
        self.clients = {}
        self.rejected = Counter()
        self.counters = {"received": 0, "duplicates": 0, "sent": 0,
                         "back-online": 0, "unknown-metrics": 0, "forgotten": 0}

    def attach(self, client, subscription=EVERYTHING):
        """
        Send C{client} every later event that matches C{subscription}.
        """
        self.clients[client] = subscription

    def subscribe(self, client, subscription):
        """
        Attach C{client} with C{subscription} and return its snapshot (bytes),
        which the caller sends before returning to the reactor: events come
        from this same fan-out in order, so none is missed or repeated between
        the snapshot and the live events.
        """
        snapshot = self.snapshotBody(subscription)
        self.attach(client, subscription)
        return snapshot

    def detach(self, client):
        self.clients.pop(client, None)

    def knownHosts(self):
        hosts = set(self.latest.hosts()) | set(self.statuses.hosts())
        if self.history is not None:
            hosts.update(self.history.hosts())
        return sorted(hosts)

    def resolveHost(self, nameOrWord):
        """
        The host names that C{nameOrWord} designates: the host of that name,
        else every host whose routing word it is (several names can map to
        one word).
        """
        hosts = self.knownHosts()
        if nameOrWord in hosts:
            return [nameOrWord]
        return [host for host in hosts if topics.hostWord(host) == nameOrWord]

    def snapshotBody(self, subscription=EVERYTHING):
        """
        The snapshot message of C{subscription}: C{subscription} (as
        understood), C{events} (latest analyses), C{statuses} (latest
        statuses) and C{history} (points or overviews per host, one per
        C{step} seconds), all for matching hosts.
        """
        hosts = [h for h in self.knownHosts() if subscription.matchesHost(h)]
        analyses = statuses = b"[]"
        history = b"{}"
        described = subscription.describe()
        if topics.ANALYSIS in subscription.events:
            analyses = self.latest.arrayBody(hosts)
            form, step = subscription.historyForm, subscription.step
            if form == FULL and len(hosts) > MAX_FULL_HISTORY_HOSTS:
                form, step = OVERVIEW, max(step, DEFAULT_OVERVIEW_STEP)
                described = dict(described, history=OVERVIEW, step=step, notice=(
                    f"full history is sent for at most {MAX_FULL_HISTORY_HOSTS} hosts; "
                    "this is the overview: ask for fewer hosts, or one host's history"))
            if form is not None and self.history is not None:
                self.history.expire()
                history = self.history.historyBody(hosts, subscription.since, step, form)
        if topics.STATUS in subscription.events:
            statuses = self.statuses.arrayBody(hosts)
        return b"".join([
            b'{"kind":"snapshot","subscription":', encodeJSON(described),
            b',"events":', analyses, b',"statuses":', statuses, b',"history":', history, b"}",
        ])

    def historyReplyBody(self, host, step=0):
        """
        The reply to a WebSocket C{history} request: C{host}'s full points,
        at most one per C{step} seconds.
        """
        points = b"[]"
        if self.history is not None:
            points = self.history.pointsBody(host, step=step)
        return b"".join([
            b'{"kind":"history","host":', encodeJSON(host), b',"step":', encodeJSON(step),
            b',"points":', points, b"}"])

    def eventReceived(self, routingKey, body):
        now = None if self.clock is None else self.clock.seconds()
        try:
            document = wire.decodeEvent(routingKey, body, self.maxBody,
                                        notAfter=None if now is None else now + self.maxClockSkew)
            if document["kind"] == topics.STATUS:
                status = document.get("status")
                if not isinstance(status, str) or not 0 < len(status) <= MAX_STATUS_LENGTH:
                    raise wire.Rejected("type", "status: expected a short string")
        except wire.Rejected as e:
            self.rejected[e.reason] += 1
            count = self.rejected[e.reason]
            # The first few of each reason, then one in a thousand: junk must not flood the log.
            if count <= 10 or count % 1000 == 0:
                self.log.warn("rejected an event under {routingKey}: {reason} ({count} for this reason)",
                              routingKey=routingKey[:80], reason=str(e)[:200], count=count)
            return
        self.counters["received"] += 1
        online = None
        if document["kind"] == topics.ANALYSIS:
            metrics = document.get("metrics")
            if isinstance(metrics, dict) and wire.boundUnknownMetrics(metrics):
                # A third party's analysis: the analyzer bounds its own.
                self.counters["unknown-metrics"] += 1
                body = wire.encodeEvent(document)
            if not self.latest.accept(document, body):
                self.counters["duplicates"] += 1
                return
            self._heard(document["host"], now)
            if self.history is not None:
                self.history.add(document)
            if self.latest.get(document["host"]) is document:
                online = self.backOnline(document, now)
        elif document["kind"] == topics.STATUS:
            if document["status"] == wire.FORGOTTEN:
                if self.knows(document["host"]):
                    # Sent first: forgetting also clears the clients' caches of the host.
                    self._send(document, body)
                    self.forget(document["host"])
                return
            self.statuses.update(document, body)
            if document["host"] not in self._lastHeard:
                self._heard(document["host"], now)
        self._send(document, body)
        if online is not None:
            self._send(*online)

    def _heard(self, host, now):
        self._lastHeard.pop(host, None)
        self._lastHeard[host] = now  # None without a clock: then never forgotten for silence

    def knows(self, host):
        """
        Whether anything of C{host} is kept here.
        """
        return (host in self._lastHeard or host in self.latest or host in self.statuses
                or (self.history is not None and host in self.history))

    def forget(self, host):
        """
        Drop everything kept of C{host}: latest analysis and status, the
        analyses recently seen, history, and what the clients' subscriptions
        cached of it.

        @return: whether anything of it was kept.
        """
        known = self._lastHeard.pop(host, None) is not None
        known = self.latest.forget(host) or known
        known = self.statuses.forget(host) or known
        if self.history is not None and host in self.history:
            self.history.forget(host)
            known = True
        if known:
            self.counters["forgotten"] += 1
            for subscription in self.clients.values():
                subscription.forgetHost(host)
        return known

    def forgetSilent(self):
        """
        Forget every host not heard of for C{forgetAfter} seconds (in case
        the analyzer's C{forgotten} status was lost), and send clients a
        C{forgotten} status for each.

        @return: how many hosts were forgotten.
        """
        if self.clock is None:
            return 0
        now = self.clock.seconds()
        limit = now - self.forgetAfter
        silent = []
        for host, heard in self._lastHeard.items():
            if heard >= limit:
                break  # the others were heard of later
            silent.append((host, heard))
        for host, heard in silent:
            latest = self.latest.get(host) or {}
            document = {
                "v": wire.VERSION, "kind": topics.STATUS, "host": host, "status": wire.FORGOTTEN,
                "since": now, "last_seen": heard, "seq": latest.get("seq"),
            }
            self._send(document, wire.encodeEvent(document))
            self.forget(host)
        return len(silent)

    def backOnline(self, analysis, now):
        """
        Record an C{online} status for the host of C{analysis}, its new
        latest one, if its latest status says otherwise and C{analysis} is
        of a measure taken after that status (L{_after}): a host that sends
        again is online on every dashboard, in the API and in snapshots, even
        if its C{offline} status was forged or the analyzer's C{online}
        never came.

        @return: the status C{(document, body)} to send, or L{None}.
        """
        host = analysis["host"]
        latest = self.statuses.get(host)
        if latest is None or latest.get("status") == ONLINE or not _after(analysis, latest):
            return None
        document = {
            "v": wire.VERSION, "kind": topics.STATUS, "host": host, "status": ONLINE,
            "since": now, "last_seen": now, "seq": analysis.get("seq"),
        }
        body = wire.encodeEvent(document)
        self.statuses.update(document, body)
        self.counters["back-online"] += 1
        return document, body

    def _send(self, document, body):
        for client, subscription in list(self.clients.items()):
            if subscription.matches(document):
                try:
                    client.sendEvent(document, body)
                except Exception:
                    # One broken client must not cost the others this event.
                    self.log.failure("sending to {client!r} failed; detaching it", client=client)
                    self.detach(client)
                    continue
                self.counters["sent"] += 1


def _after(analysis, status):
    """
    Whether C{analysis} is of a measure the judge had not seen when it
    decided C{status}: a later C{seq} than the status's, or a C{ts} after
    its C{last_seen}. An analysis of a measure that waited in the
    analyzer's queue while its host went silent is neither. Without
    numbers to compare, it is.
    """
    seq, statusSeq = analysis.get("seq"), status.get("seq")
    ts, lastSeen = analysis.get("ts"), status.get("last_seen")
    comparable = False
    for mine, theirs in ((seq, statusSeq), (ts, lastSeen)):
        if _isNumber(mine) and _isNumber(theirs):
            if mine > theirs:
                return True
            comparable = True
    return not comparable


def _isNumber(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _olderThan(document, other):
    return isLateCopy(document.get("seq"), document.get("ts"), other.get("seq"), other.get("ts"))


def encodeJSON(document):
    return json.dumps(document, separators=(",", ":")).encode("utf-8")
