"""
Fan-out of events from the bus to every connected client, each through its
own L{Subscription}, with the latest analysis and status of each host and a
bounded history kept for clients that connect later.
"""

from bisect import bisect_right
from collections import Counter, deque

from twisted.internet.task import Clock
from twisted.logger import Logger

from resmon import topics, wire
from resmon.ratelimit import LimitedLog
from resmon.defaults import DEFAULT_STALL_TIMEOUT  # noqa: F401 (defined here before)
from resmon.webserver.batches import EventBatch
from resmon.webserver.eventlog import FiringAlerts, RecentEvents
from resmon.webserver.history import DEFAULT_OVERVIEW_STEP, FULL, OVERVIEW, isLateCopy
from resmon.webserver.sendbudget import CHUNK_SIZE, HIGH_WATER
from resmon.webserver.subscriptions import EVERYTHING
from resmon.webserver.visibility import subjectOf

MAX_STATUS_LENGTH = wire.MAX_STATUS_LENGTH
# The status of a host that sends (as in resmon.services.liveness).
ONLINE = wire.ONLINE
# The one JSON encoder (kept here for the modules that imported it from here).
encodeJSON = wire.encodeJSON
# Full history of a whole fleet is hundreds of MiB built on the reactor:
# beyond this many hosts a snapshot carries the overview instead.
MAX_FULL_HISTORY_HOSTS = 50
# Redelivered analyses come back within seconds, a few per host at most.
RECENT_ANALYSES_PER_HOST = 32


class HostIndex:
    """
    The hosts the web role knows, by name and by routing word, with their
    sorted order kept until the set changes: per-host lookups cost the same
    with 20 hosts or 20,000. At most C{maxHosts} (0: no limit).
    """

    def __init__(self, maxHosts=0):
        self.maxHosts = maxHosts
        self._names = set()
        self._byWord = {}
        self._sorted = None

    def __contains__(self, host):
        return host in self._names

    def __len__(self):
        return len(self._names)

    def full(self):
        return 0 < self.maxHosts <= len(self._names)

    def add(self, host):
        if host in self._names:
            return
        self._names.add(host)
        self._byWord.setdefault(topics.hostWord(host), set()).add(host)
        self._sorted = None

    def discard(self, host):
        if host not in self._names:
            return
        self._names.discard(host)
        word = topics.hostWord(host)
        names = self._byWord.get(word)
        if names is not None:
            names.discard(host)
            if not names:
                del self._byWord[word]
        self._sorted = None

    def sorted(self):
        """
        Every host, sorted: a list shared until the set changes (do not modify it).
        """
        if self._sorted is None:
            self._sorted = sorted(self._names)
        return self._sorted

    def resolve(self, nameOrWord):
        """
        The host of that name, else every host whose routing word it is.
        """
        if nameOrWord in self._names:
            return [nameOrWord]
        return sorted(self._byWord.get(nameOrWord, ()))


class LatestEvents:
    """
    The latest event of one kind for every host seen, as decoded documents
    and as the bytes received (so they are sent without encoding them again).

    @ivar index: the L{HostIndex} every new host is added to.
    """

    def __init__(self, index=None):
        self._documents = {}
        self._bodies = {}
        self.index = index if index is not None else HostIndex()
        self._sorted = None

    def update(self, document, body):
        host = document["host"]
        if host not in self._documents:
            self._sorted = None
            self.index.add(host)
        self._documents[host] = document
        self._bodies[host] = body

    def forget(self, host):
        """
        Drop the latest event of C{host}; return whether there was one.
        """
        self._bodies.pop(host, None)
        if self._documents.pop(host, None) is None:
            return False
        self._sorted = None
        return True

    def hosts(self):
        if self._sorted is None:
            self._sorted = sorted(self._documents)
        return list(self._sorted)

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
        if hosts is None:
            if self._sorted is None:
                self._sorted = sorted(self._documents)
            return wire.jsonArray([self._bodies[host] for host in self._sorted])
        hosts = sorted(h for h in hosts if h in self._bodies)
        return wire.jsonArray([self._bodies[host] for host in hosts])


class LatestAnalyses(LatestEvents):
    """
    The latest analysis of every host seen, and the C{(seq, ts)} of each
    host's last C{recent} analyses, to recognise the ones delivered twice.

    Delivery is at least once: a measure redelivered after a reconnect, or
    after an analyzer was killed before acking it, is analysed and published
    again, possibly after later ones (5, 6, 5, 6). A repeat of any of the
    recent analyses is a duplicate; an older analysis not seen before is
    new, but does not replace a newer latest one. Older means older by both
    C{seq} and C{ts} (L{resmon.webserver.history.isLateCopy}): an analysis with a later
    C{seq} but an earlier C{ts} comes from an agent whose clock went back,
    and replaces the latest, as received.
    """

    def __init__(self, recent=RECENT_ANALYSES_PER_HOST, index=None):
        LatestEvents.__init__(self, index)
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
        return wire.analysesSnapshotBody(self.arrayBody())


class Snapshot:
    """
    A snapshot message frozen at one moment, as a sequence of byte pieces
    made as they are written: a client that does not read costs the few
    references frozen here, not a copy of the fleet.
    """

    def __init__(self, pieces):
        self._pieces = pieces

    def pieces(self):
        return self._pieces()

    def body(self):
        return b"".join(self.pieces())


class _WholeMessage:
    """
    A message written at once with the flow's C{send} (a snapshot given as
    bytes, or with no stream to write it in pieces).
    """

    def __init__(self, body, send):
        self._body = body
        self._send = send

    def nextSize(self):
        return 0 if self._body is None else len(self._body)

    def writeNext(self):
        body, self._body = self._body, None
        if body is None:
            return None
        self._send(body)
        return len(body)


class _StreamedMessage:
    """
    A snapshot written in pieces of about L{CHUNK_SIZE} through a stream
    (C{begin()}, C{write(chunk)}, C{end()}).
    """

    def __init__(self, snapshot, stream):
        self._pieces = snapshot.pieces()
        self._stream = stream
        self._begun = False

    def nextSize(self):
        return CHUNK_SIZE

    def writeNext(self):
        parts, size = [], 0
        for piece in self._pieces:
            parts.append(piece)
            size += len(piece)
            if size >= CHUNK_SIZE:
                break
        if not self._begun:
            self._begun = True
            self._stream.begin()
        if not parts:
            self._stream.end()
            return None
        chunk = b"".join(parts)
        self._stream.write(chunk)
        return len(chunk)


class ClientFlow:
    """
    Flow control for one client: an L{IPushProducer} registered on the
    client's transport. Snapshots are written in pieces as the client reads
    them. While the transport's buffer is full (or a snapshot is being
    written), only the latest event per key (kind and host) is kept,
    bounded by the number of hosts; a client paused for longer than
    C{stallTimeout} seconds is disconnected.

    @param send: sends one message (whatever L{send} was given) to the client.
    @param disconnect: drops the client.
    @param budget: the L{resmon.webserver.sendbudget.SendBudget} shared by all clients.
    @param stream: writes one message in pieces: C{begin()}, C{write(bytes)},
        C{end()}; without it a L{Snapshot} is sent whole with C{send}.
    @param sendKeyed: sends one event given its key and message (default:
        C{send(message)}), so what is held back needs no object per client.
    """

    log = Logger()

    def __init__(self, send, disconnect, clock, stallTimeout=DEFAULT_STALL_TIMEOUT,
                 budget=None, stream=None, name="a client", sendKeyed=None):
        self._send = send
        self._sendKeyed = sendKeyed
        self._disconnect = disconnect
        self._clock = clock
        self.stallTimeout = stallTimeout
        self.budget = budget
        self.stream = stream
        self.name = name
        self.paused = False
        self.pending = {}
        self.coalesced = 0
        self.charged = 0
        self._message = None
        self._nextSnapshot = None
        self._stallCall = None
        self._draining = False
        self._stopped = False

    @property
    def busy(self):
        """
        Whether a snapshot is being written (nothing else may go in between).
        """
        return self._message is not None

    @property
    def writesAtOnce(self):
        """
        Whether L{send} would write a message now, not hold it back.
        """
        return not (self._stopped or self.paused or self._message is not None
                    or self._nextSnapshot is not None or self.pending)

    def send(self, key, message):
        if self._stopped:
            return
        if self.paused or self._message is not None or self._nextSnapshot is not None or self.pending:
            if self.pending.pop(key, None) is not None:
                self.coalesced += 1
            # Held back in the order of their latest update: a host's
            # forgotten status goes after its analysis held back earlier.
            self.pending[key] = message
            self._drain()
        else:
            self._write(key, message)

    def restart(self, snapshot):
        """
        Send C{snapshot} (bytes or a L{Snapshot}) ahead of every later event,
        dropping the events held back so far: the snapshot supersedes them
        (not the replies to C{history} requests, which it does not answer).
        """
        self.pending = {key: body for key, body in self.pending.items()
                        if isinstance(key, tuple) and key[0] == "history"}
        self._nextSnapshot = snapshot
        self._drain()

    def budgetAvailable(self):
        self._drain()

    def _drain(self):
        if self._draining:
            return
        self._draining = True
        try:
            while not self.paused and not self._stopped:
                if self._message is None and self._nextSnapshot is not None:
                    snapshot, self._nextSnapshot = self._nextSnapshot, None
                    if isinstance(snapshot, Snapshot) and self.stream is not None:
                        self._message = _StreamedMessage(snapshot, self.stream)
                    else:
                        body = snapshot.body() if isinstance(snapshot, Snapshot) else snapshot
                        self._message = _WholeMessage(body, self._send)
                if self._message is not None:
                    size = self._message.nextSize()
                    if self.budget is not None and not self.budget.allows(size):
                        self.budget.wait(self, size)
                        return
                    before = self.paused
                    written = self._message.writeNext()
                    if written is None:
                        self._message = None
                    else:
                        self._charge(before, written)
                    continue
                if not self.pending:
                    return
                key = next(iter(self.pending))
                self._write(key, self.pending.pop(key))
        finally:
            self._draining = False

    def _write(self, key, message):
        # Once per event and client: no call that is not needed.
        before = self.paused
        if self._sendKeyed is None:
            self._send(message)
        else:
            self._sendKeyed(key, message)
        if self.paused and not before:
            self._charge(before, len(message))

    def _charge(self, wasPaused, size):
        # The write paused the transport: it holds at most HIGH_WATER + size.
        if self.budget is None or wasPaused or not self.paused or self.charged:
            return
        self.charged = HIGH_WATER + size
        self.budget.charge(self.charged)
        if self.budget.exceeded:
            self.budget.dropped(self.name)
            self._drop()

    def _release(self):
        if self.budget is not None:
            charged, self.charged = self.charged, 0
            self.budget.release(charged)

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
        self._release()
        # At most one message per key: sent in full even if the buffer fills
        # again meanwhile (later events are then held back behind them).
        self._drain()

    def stopProducing(self):
        self._stopped = True
        self._cancelStall()
        self.pending = {}
        self._message = self._nextSnapshot = None
        if self.budget is not None:
            self.budget.forget(self)
        self._release()

    def _cancelStall(self):
        if self._stallCall is not None and self._stallCall.active():
            self._stallCall.cancel()
        self._stallCall = None

    def _stalled(self):
        self._stallCall = None
        self.log.warn("client stopped reading for {timeout} s ({pending} updates held back); disconnecting it",
                      timeout=self.stallTimeout, pending=len(self.pending))
        if self.budget is not None:
            self.budget.counters["stalled"] += 1
        self._drop()

    def _drop(self):
        self.stopProducing()
        self._disconnect()




class EventFanout:
    """
    Receives events from the bus (a handler for L{IBus.subscribe}) and sends
    each to every attached client whose subscription matches it; keeps the
    latest analysis and status of each host, and their history.

    A client is anything with C{sendEvent(document, body)}. A client with a
    true C{batching} attribute is given instead, once the reactor turn in
    which they came is over (C{clock.callLater(0)}; at once without a
    clock), the events of that turn in one L{EventBatch}, with
    C{sendBatch(batch)}: shared by every client of its subscription with
    the same C{batching} (its value says how the client sends a batch, so
    clients that send them alike share what they send).

    Events are decoded by L{wire.decodeAnalysis} and L{wire.decodeStatus}
    (times more than C{maxClockSkew} seconds ahead of C{clock} are
    C{future}); what they reject is counted by reason in C{rejected} and
    logged, rate limited. The documents kept and passed on are theirs, with
    the types they guarantee. A new latest
    analysis of a host whose latest status is not C{online} records and
    sends an C{online} status for it (L{backOnline}).

    @param history: a L{resmon.webserver.history.FleetHistory}, or L{None} for none.
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
                 maxClockSkew=wire.DEFAULT_MAX_CLOCK_SKEW, maxHosts=0,
                 forgetAfter=wire.DEFAULT_FORGET_AFTER):
        self.clock = clock
        self.forgetAfter = forgetAfter
        # host -> when it was last heard of (by clock), least recently first.
        self._lastHeard = {}
        self.maxClockSkew = maxClockSkew
        self.hostIndex = HostIndex(maxHosts)
        self.latest = latest if latest is not None else LatestAnalyses()
        self.statuses = LatestEvents(self.hostIndex)
        self.latest.index = self.hostIndex
        for host in self.latest.hosts():
            self.hostIndex.add(host)
        self.history = history
        self.maxBody = maxBody
        self.clients = {}
        # The clients by what their subscriptions match (_matchKey): each
        # event is matched once per distinct subscription, not per client.
        self._audiences = {}
        # What each event is about (its "host": a host, a source word) ->
        # a _Subject: the audiences whose subscriptions match it for some
        # kind, in the order they were made: an event costs the audiences it
        # concerns, not one match per distinct subscription (_audiencesOf).
        self._bySubject = {}
        # Entries of the index (a subject, and each audience listed for it).
        self._indexed = 0
        # The audiences the index may list, in the order they were made
        # (by their number; the last made is number _made).
        self._live = []
        self._made = 0
        # The audiences whose subscriptions the index cannot hold, by key.
        self._unindexed = {}
        self.rejected = Counter()
        # Junk must not flood the log; without a clock (a Clock never advanced), the first ones only.
        self.warnings = LimitedLog(clock if clock is not None else Clock())
        self.counters = {"received": 0, "duplicates": 0, "sent": 0,
                         "back-online": 0, "unknown-metrics": 0, "forgotten": 0, "batches": 0}
        self._eventKeys = {}
        self.recentEvents = RecentEvents()
        self.firingAlerts = FiringAlerts()
        # Called with every alert (event, body): the notifications to users.
        self.alertListener = None
        # The audiences of batching clients with events of this turn not
        # sent yet, and the call that sends them when the turn is over.
        self._batched = []
        self._batchCall = None
        self._frames = {}

    def attach(self, client, subscription=EVERYTHING):
        """
        Send C{client} every later event that matches C{subscription}.
        """
        # A batching client moving to another subscription is first sent
        # what its old one gathered this turn, as it would have been
        # unbatched (before the new snapshot).
        self.detach(client, handOver=True)
        self.clients[client] = subscription
        key = _audienceKey(client, subscription)
        audience = self._audiences.get(key)
        if audience is None:
            audience = self._audiences[key] = _Audience(subscription, getattr(client, "batching", False))
            if _indexable(subscription):
                # Matched against each subject when an event about it comes.
                self._made += 1
                audience.number = self._made
                self._live.append(audience)
            else:
                self._unindexed[key] = audience
        if audience.batch is None:
            audience.clients[client] = 0
        else:
            # What the audience gathered so far this turn came before this
            # client's snapshot: it is sent only what comes after.
            audience.clients[client] = len(audience.batch)
            audience.late = True

    def subscribe(self, client, subscription):
        """
        Attach C{client} with C{subscription} and return its snapshot (bytes),
        which the caller sends before returning to the reactor: events come
        from this same fan-out in order, so none is missed or repeated between
        the snapshot and the live events.
        """
        return self.subscribeStreamed(client, subscription).body()

    def subscribeStreamed(self, client, subscription):
        """
        Like L{subscribe}, but the snapshot is a L{Snapshot}, frozen now and
        made as it is written: the caller holds back later events until it
        is written (L{ClientFlow} does).
        """
        snapshot = self.snapshot(subscription)
        self.attach(client, subscription)
        return snapshot

    def detach(self, client, handOver=False):
        """
        Send C{client} nothing more; with C{handOver}, first what its
        subscription gathered for it this turn (a batching client's).
        """
        subscription = self.clients.pop(client, None)
        if subscription is None:
            return
        key = _audienceKey(client, subscription)
        audience = self._audiences[key]
        start = audience.clients.pop(client)
        if handOver and audience.batch is not None:
            part = audience.batch.tail(start)
            if part is not None:
                self._giveBatch(client, part)
        if not audience.clients:
            del self._audiences[key]
            if self._unindexed.pop(key, None) is None:
                self._live.remove(audience)
            # Left in the lists of the index (counted in its bound), skipped
            # and dropped from a list when an event finds it there; light
            # meanwhile.
            audience.gone = True
            audience.subscription = None

    def eventKey(self, document):
        """
        C{(kind, host)} of an event: one tuple per host and kind, shared by
        every client that holds the event back.
        """
        kind = document["kind"]
        if kind not in _LATEST_KINDS:
            # Rules' events and alerts: each one is sent, none replaces another.
            return (kind, document["host"], document.get("id"))
        key = (kind, document["host"])
        return self._eventKeys.setdefault(key, key)

    def knownHosts(self):
        """
        Every host seen, sorted (a list shared until a new host is seen: do
        not modify it).
        """
        return self.hostIndex.sorted()

    def resolveHost(self, nameOrWord):
        """
        The host names that C{nameOrWord} designates: the host of that name,
        else every host whose routing word it is (several names can map to
        one word).
        """
        return self.hostIndex.resolve(nameOrWord)

    def admitHost(self, host):
        """
        Refuse an event of a new host once the host table is full.

        @raise wire.Rejected: C{max-hosts}.
        """
        if host not in self.hostIndex and self.hostIndex.full():
            raise wire.Rejected(
                "max-hosts", f"{self.hostIndex.maxHosts} hosts known already (--max-hosts)")

    def snapshotBody(self, subscription=EVERYTHING):
        """
        The snapshot message of C{subscription} as bytes (see L{snapshot}).
        """
        return self.snapshot(subscription).body()

    def snapshot(self, subscription=EVERYTHING):
        """
        The snapshot message of C{subscription}: C{subscription} (as
        understood), C{events} (latest analyses), C{statuses} (latest
        statuses) and C{history} (points or overviews per host, one per
        C{step} seconds), all for matching hosts, as a L{Snapshot}; when
        the subscription asks for alerts, C{alerts} (those firing now), and
        for events or alerts, C{recent} (the last ones of those kinds).

        What it holds is frozen now: the latest bodies (references to the
        bytes received), and for each host the time of its newest history
        point; history points are cut out when written, up to that time.
        """
        # Matched as the clients attached with an equal subscription are
        # (with their answers cached once for all, not again per client).
        audience = self._audiences.get(_matchKey(subscription))
        matchesHost = (subscription if audience is None else audience.subscription).matchesHost
        hosts = self.knownHosts()
        if subscription.hosts is not None:
            hosts = [h for h in hosts if matchesHost(h)]
        analyses = statuses = ()
        history = None
        described = subscription.describe()
        if topics.ANALYSIS in subscription.events:
            analyses = [body for body in map(self.latest.body, hosts) if body is not None]
            form, step = subscription.historyForm, subscription.step
            if form == FULL and len(hosts) > MAX_FULL_HISTORY_HOSTS:
                form, step = OVERVIEW, max(step, DEFAULT_OVERVIEW_STEP)
                described = dict(described, history=OVERVIEW, step=step, notice=(
                    f"full history is sent for at most {MAX_FULL_HISTORY_HOSTS} hosts; "
                    "this is the overview: ask for fewer hosts, or one host's history"))
            if form is not None and self.history is not None:
                self.history.expire()
                history = self.history.frozen(hosts, subscription.since, step, form)
        if topics.STATUS in subscription.events:
            statuses = [body for body in map(self.statuses.body, hosts) if body is not None]
        alerts = recent = None
        if topics.ALERT in subscription.events:
            alerts = self.firingAlerts.bodies(matchesHost)
        if topics.ALERT in subscription.events or topics.EVENT in subscription.events:
            recent = self.recentEvents.latest(
                SNAPSHOT_RECENT_EVENTS,
                lambda kind, source: kind in subscription.events and matchesHost(source))
        return Snapshot(lambda: wire.snapshotPieces(
            described, analyses, statuses, None if history is None else history.pieces(),
            alerts, recent))

    def historyReplyBody(self, host, step=0):
        """
        The reply to a WebSocket C{history} request: C{host}'s full points,
        at most one per C{step} seconds.
        """
        points = b"[]"
        if self.history is not None:
            points = self.history.pointsBody(host, step=step)
        return wire.historyReplyBody(host, step, points)

    def eventReceived(self, routingKey, body):
        now = None if self.clock is None else self.clock.seconds()
        if routingKey.endswith(_ENVELOPE_SUFFIXES):
            return self.envelopeReceived(routingKey, body, now)
        try:
            document, legacy = wire.decodeEventOrLegacy(
                routingKey, body, now, self.maxBody,
                notAfter=None if now is None else now + self.maxClockSkew)
            if legacy:  # a proof-of-concept analyzer's: clients get the v1 form
                body = wire.encodeAnalysis(document)
            self.admitHost(document["host"])
        except wire.Rejected as e:
            self.rejected[e.reason] += 1
            self.warnings.warn(
                self.log, "rejected an event under {routingKey}: {reason} ({count} for this reason)",
                routingKey=routingKey[:80], reason=str(e)[:200], count=self.rejected[e.reason])
            return
        self.counters["received"] += 1
        online = None
        if document["kind"] == topics.ANALYSIS:
            if document.get("metrics") and wire.boundUnknownMetrics(document["metrics"]):
                # A third party's analysis: the analyzer bounds its own.
                self.counters["unknown-metrics"] += 1
                body = wire.encodeAnalysis(document)
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

    def envelopeReceived(self, routingKey, body, now):
        """
        An event envelope (C{<source>.event}, C{<host>.alert}): checked with
        L{wire.decodeEventEnvelope} and sent as received to the clients that
        asked for its kind, its source standing for the host.
        """
        try:
            event = wire.decodeEventEnvelope(
                routingKey, body, self.maxBody,
                notAfter=None if now is None else now + self.maxClockSkew)
        except wire.Rejected as e:
            self._rejected(routingKey, e)
            return
        self.counters["received"] += 1
        subject = subjectOf(event)
        self.recentEvents.add(event, body, subject)
        if event.kind == topics.ALERT:
            self.firingAlerts.update(event, body)
            if self.alertListener is not None:
                self.alertListener(event, body)
        self._send({"kind": event.kind, "host": subject, "id": event.id}, body)

    def _rejected(self, routingKey, e):
        self.rejected[e.reason] += 1
        self.warnings.warn(
            self.log, "rejected an event under {routingKey}: {reason} ({count} for this reason)",
            routingKey=routingKey[:80], reason=str(e)[:200], count=self.rejected[e.reason])

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
        self.hostIndex.discard(host)
        self.firingAlerts.forgetSource(topics.hostWord(host))
        for kind in (topics.ANALYSIS, topics.STATUS):
            self._eventKeys.pop((kind, host), None)
        self._unindex(host)
        if known:
            self.counters["forgotten"] += 1
            # Once per distinct subscription, not per client: what one keeps
            # of a host (the users' answers) is kept by its match key.
            for audience in self._audiences.values():
                forgetHost = getattr(audience.subscription, "forgetHost", None)
                if forgetHost is not None:
                    forgetHost(host)
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
            document = wire.statusDocument(host, wire.FORGOTTEN, now, heard, latest.get("seq"))
            self._send(document, wire.encodeJSON(document))
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
        document = wire.statusDocument(host, ONLINE, now, now, analysis.get("seq"))
        body = wire.encodeJSON(document)
        self.statuses.update(document, body)
        self.counters["back-online"] += 1
        return document, body

    def _audiencesOf(self, subject):
        """
        The audiences whose subscriptions match C{subject} (for some event
        kind), some perhaps gone since: from the index, after asking the
        audiences made since the subject was last looked up. Each
        subscription is asked about each subject once, when an event about
        it comes (a new subscription costs nothing until then); the index
        holds at most L{MAX_INDEXED} entries.
        """
        entry = self._bySubject.get(subject)
        if entry is None:
            entry = self._bySubject[subject] = _Subject()
            self._indexed += 1
            newer = self._live
        elif entry.checked < self._made:
            newer = self._live[bisect_right(self._live, entry.checked, key=_number):]
        else:
            return entry.audiences
        entry.checked = self._made
        matched = [audience for audience in newer if audience.subscription.matchesHost(subject)]
        if matched:
            entry.audiences += matched
            self._indexed += len(matched)
        if self._indexed > MAX_INDEXED:
            # Bounded whatever the sources and subscriptions: start again.
            self._bySubject = {subject: entry}
            self._indexed = len(entry.audiences) + 1
        return entry.audiences

    def _unindex(self, subject):
        entry = self._bySubject.pop(subject, None)
        if entry is not None:
            self._indexed -= len(entry.audiences) + 1

    def _send(self, document, body):
        # Every client is given the same body (bytes): what it is sent as
        # (a WebSocket frame, an event stream's event) is made once per
        # event too, by each kind of client (DashboardFactory.prepareEvent).
        sent = 0
        eventKey = None
        kind, subject = document["kind"], document["host"]
        indexed = self._audiencesOf(subject)
        audiences = []
        gone = 0
        for audience in indexed:
            if audience.gone:
                gone += 1
            elif kind in audience.subscription.events:
                audiences.append(audience)
        if gone:
            indexed[:] = [audience for audience in indexed if not audience.gone]
            self._indexed -= gone
        if self._unindexed:
            # Subscriptions that cannot be indexed (no matchesHost) match each event.
            audiences += [audience for audience in self._unindexed.values()
                          if audience.subscription.matches(document)]
        for audience in audiences:
            if audience.batching:
                if eventKey is None:
                    # Now: a forgotten host's key is dropped once it is sent.
                    eventKey = self.eventKey(document)
                self._gather(audience, eventKey, body)
                sent += len(audience.clients)
                continue
            for client in list(audience.clients):
                try:
                    client.sendEvent(document, body)
                except Exception:
                    # One broken client must not cost the others this event.
                    self.log.failure("sending to {client!r} failed; detaching it", client=client)
                    self.detach(client)
                    continue
                sent += 1
        self.counters["sent"] += sent

    def _gather(self, audience, key, body):
        batch = audience.batch
        if batch is None:
            if self.clock is None:
                batch = audience.batch = EventBatch()
            else:
                batch = audience.batch = EventBatch(self._frames)
                self._batched.append(audience)
                if self._batchCall is None:
                    self._batchCall = self.clock.callLater(0, self.sendBatches)
        if batch.add(key, body) or self.clock is None:
            # Full; or no turn to wait for the end of (no clock): now.
            self._sendBatch(audience)

    def sendAlone(self, client, document, body):
        """
        C{client.sendEvent(document, body)} for an event that is C{client}'s
        alone, not the fan-out's (a notification), after what its
        subscription gathered for it this turn (a batching client's): the
        events that came before it are not overtaken.
        """
        self._sendPendingTo(client)
        client.sendEvent(document, body)

    def _sendPendingTo(self, client):
        # The client's part of its audience's batch now; at the turn's end
        # it gets only what comes after.
        subscription = self.clients.get(client)
        if subscription is None:
            return
        audience = self._audiences.get(_audienceKey(client, subscription))
        if audience is None or audience.batch is None:
            return
        start = audience.clients[client]
        part = audience.batch.tail(start)
        if part is None:
            return
        audience.clients[client] = len(audience.batch)
        audience.late = True
        if not self._giveBatch(client, part):
            self.detach(client)

    def sendBatches(self):
        """
        Send the batching clients the events gathered for them this turn
        (called once the turn's work is done).
        """
        if self._batchCall is not None and self._batchCall.active():
            self._batchCall.cancel()
        self._batchCall = None
        batched, self._batched = self._batched, []
        try:
            for audience in batched:
                self._sendBatch(audience)
        finally:
            # The frames of this turn's single events, shared by its batches.
            self._frames = {}

    def _sendBatch(self, audience):
        batch, audience.batch = audience.batch, None
        if batch is None or audience.gone:
            return
        if len(batch) > 1:
            self.counters["batches"] += 1
        if audience.late:
            # Some attached after the first events of this batch (their
            # snapshots have them): each is sent the rest, and starts the
            # next batch with the others (all before anything is sent).
            audience.late = False
            parts = [(client, batch.tail(start)) for client, start in audience.clients.items()]
            audience.clients = dict.fromkeys(audience.clients, 0)
        else:
            parts = [(client, batch) for client in audience.clients]
        for client, part in parts:
            if part is not None and not self._giveBatch(client, part):
                self.detach(client)

    def _giveBatch(self, client, batch):
        """
        C{client.sendBatch(batch)}; whether it did not raise (a broken
        client must not cost the others their batch).
        """
        try:
            client.sendBatch(batch)
        except Exception:
            self.log.failure("sending a batch to {client!r} failed", client=client)
            return False
        return True


class _Audience:
    """
    The clients attached with subscriptions of one L{_matchKey}, in the
    order they were attached; C{subscription} (the first one's) matches
    each event for all of them.
    """

    __slots__ = ("subscription", "clients", "number", "gone", "batching", "batch", "late")

    def __init__(self, subscription, batching=False):
        self.subscription = subscription
        # Each client, with (when batching) how many events of the current
        # batch it came after (0 for most).
        self.clients = {}
        # Whether its clients take their events in batches, the EventBatch
        # of this turn (None: no event yet), and whether a client came after
        # its first events.
        self.batching = batching
        self.batch = None
        self.late = False
        # Its place among the audiences the fan-out's index may list (0: not
        # one of them), and whether it is detached.
        self.number = 0
        self.gone = False


class _Subject:
    """
    An entry of the fan-out's index: the audiences matching one subject,
    and the number of the last audience asked about it.
    """

    __slots__ = ("audiences", "checked")

    def __init__(self):
        self.audiences = []
        self.checked = 0


def _number(audience):
    return audience.number


def _indexable(subscription):
    """
    Whether the fan-out's index can hold C{subscription}'s audience: it
    answers C{matchesHost} and has C{events}; another is asked
    C{matches(document)} for each event.
    """
    return (getattr(subscription, "matchesHost", None) is not None
            and getattr(subscription, "events", None) is not None)


def _audienceKey(client, subscription):
    """
    The key of the audience of C{client}: what its subscription matches,
    and whether (and how) it takes its events in batches.
    """
    key = _matchKey(subscription)
    batching = getattr(client, "batching", False)
    return (key, "batch", batching) if batching else key


def _matchKey(subscription):
    """
    What decides the events C{subscription} matches (its C{matchKey}), or
    the subscription itself for one without a key (shared by no other).
    """
    key = getattr(subscription, "matchKey", None)
    return (subscription,) if key is None else key


# Entries of the fan-out's index of subjects (a subject and each audience
# matching it); past this the index is made again as events come.
MAX_INDEXED = 2_000_000
_LATEST_KINDS = (topics.ANALYSIS, topics.STATUS)
# The recent events and alerts a snapshot carries (when asked for).
SNAPSHOT_RECENT_EVENTS = 100
_ENVELOPE_SUFFIXES = ("." + topics.EVENT, "." + topics.ALERT)


def _after(analysis, status):
    """
    Whether C{analysis} is of a measure the judge had not seen when it
    decided C{status}: a later C{seq} than the status's, or a C{ts} after
    its C{last_seen}. An analysis of a measure that waited in the
    analyzer's queue while its host went silent is neither. Without
    numbers to compare, it is (L{wire.decodeAnalysis} and
    L{wire.decodeStatus} make them numbers or L{None}).
    """
    seq, statusSeq = analysis.get("seq"), status.get("seq")
    ts, lastSeen = analysis.get("ts"), status.get("last_seen")
    comparable = False
    for mine, theirs in ((seq, statusSeq), (ts, lastSeen)):
        if mine is not None and theirs is not None:
            if mine > theirs:
                return True
            comparable = True
    return not comparable


def _olderThan(document, other):
    return isLateCopy(document.get("seq"), document.get("ts"), other.get("seq"), other.get("ts"))
