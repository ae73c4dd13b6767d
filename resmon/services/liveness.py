"""
Host liveness: which hosts still send measures, published as C{<host>.status}
events whenever a host turns C{online}, C{stale} or C{offline}.
"""

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from resmon import topics, wire
from resmon.defaults import DEFAULT_GRACE, DEFAULT_OFFLINE_AFTER, LIVENESS_QUEUE_SUFFIX, STALE_INTERVALS  # noqa: F401

ONLINE = "online"
STALE = "stale"
OFFLINE = "offline"
FORGOTTEN = wire.FORGOTTEN

DEFAULT_QUEUE = "resmon.analyzer.liveness"
# A proof-of-concept measure carries no interval: assume the agent's default.
ASSUMED_INTERVAL = 1.0
CHECK_INTERVAL = 0.5
# Hosts silent for this long are forgotten (and announced so), so hosts that
# went away and junk host names cannot grow the table without bound.
FORGET_AFTER = wire.DEFAULT_FORGET_AFTER
LIVENESS_PREFETCH = 500
# Every analyzer publishes a tick into the liveness queue this often; only
# the process the broker delivers to (the active consumer) receives them,
# so a process that has received nothing for ACTIVE_WINDOW seconds knows
# it stands by, and judges nothing. Its table would otherwise age without
# measures and declare every host offline after another process took over.
TICK_INTERVAL = 0.5
ACTIVE_WINDOW = 3.0
TICK = "liveness-tick"
# Ticks are resmon's own traffic on the user's exchange: their routing key,
# INTERNAL.<queue word>.liveness-tick, has four words, so no binding on host
# traffic (<host>.<kind>: '*.measure', '#.measure', '*.analysis', ...) matches
# it, and a '#' consumer cannot take it for a host's (docs/protocol.md).
INTERNAL = "resmon.internal"


class _Host:
    __slots__ = ("name", "word", "status", "since", "lastSeen", "seq", "interval")

    def __init__(self, name, word):
        self.name = name
        self.word = word
        self.status = None
        self.since = None
        self.lastSeen = None
        self.seq = None
        self.interval = ASSUMED_INTERVAL


class HostLiveness(service.Service):
    """
    Tracks the last measure of every host and publishes a status event on
    each change: C{online} on a host's first measure and when it comes back,
    C{stale} once it missed C{staleAfter} seconds (default: three of its own
    intervals), C{offline} after C{offlineAfter} seconds without a measure,
    and C{forgotten} after C{forgetAfter} seconds without one, whatever its
    status then (so a C{forgetAfter} shorter than C{offlineAfter} forgets
    hosts without ever saying they are offline): the host leaves the table,
    and every role that receives the status drops what it keeps of it.

    It judges nothing while the bus is disconnected, and for C{grace}
    seconds after every (re)connection hosts are not judged either, and count
    as seen at that moment: the analyzer's own outage is not the hosts'.

    Measures come from their own subscription, a named queue consumed by one
    process at a time (the other analyzers stand by and take over when it
    goes): every process would otherwise see only its share of the measures,
    and several judges would publish every change several times. Each
    process also publishes a tick into that queue every L{TICK_INTERVAL}
    seconds: a process judges only while it receives deliveries (ticks or
    measures), that is while it is the active consumer, and on becoming it
    (again) counts the hosts it knows as seen at that moment; a host's
    silence is counted only up to shortly after the last delivery, so a
    process that stops receiving stops judging at once. While it stands by,
    it learns every host's status from the judge's C{<host>.status} events,
    so on taking over it also judges the hosts that went silent before.

    @param bus: an L{resmon.interfaces.IBus}; an C{AMQPBus} also tells,
        through C{connected} and C{counters["connections"]}, whether and since
        when it is connected (a bus without them counts as always connected).
    @param clock: an L{IReactorTime}; its C{seconds()} dates everything.
    @param staleAfter: seconds without a measure before a host is stale, or
        L{None} for L{STALE_INTERVALS} of the host's own interval.
    @param offlineAfter: seconds without a measure before a host is offline.
    @param grace: seconds after a (re)connection during which no host is
        judged.
    @param maxClockSkew: seconds a measure's C{ts} may be ahead of C{clock};
        a measure further ahead is ignored, as the analyzer rejects it.
    @param forgetAfter: seconds without a measure before a host is
        forgotten. A process standing by drops, without announcing them, the
        hosts it has heard nothing of for as long (the judge's C{forgotten}
        may have been lost).
    """

    name = "liveness"
    log = Logger()

    def __init__(self, bus, clock, staleAfter=None, offlineAfter=DEFAULT_OFFLINE_AFTER,
                 grace=DEFAULT_GRACE, queue=DEFAULT_QUEUE, checkInterval=CHECK_INTERVAL,
                 maxBody=wire.DEFAULT_MAX_BODY, forgetAfter=FORGET_AFTER,
                 maxClockSkew=wire.DEFAULT_MAX_CLOCK_SKEW):
        self.bus = bus
        self.maxClockSkew = maxClockSkew
        self.clock = clock
        self.staleAfter = staleAfter
        self.offlineAfter = offlineAfter
        self.grace = grace
        self.queue = queue
        self.checkInterval = checkInterval
        self.maxBody = maxBody
        self.forgetAfter = forgetAfter
        self.hosts = {}
        self.counters = {"published": 0, "failed": 0}
        self.forgotten = 0
        self.tickKey = f"{INTERNAL}.{topics.hostWord(queue)}.{TICK}"
        self.active = None  # not known yet; then whether this process judges
        self._lastDelivery = None
        self._resumedAt = None
        self._connection = None
        self._judgingFrom = None
        self._seenSince = None
        self._subscription = None
        self._statusSubscription = None
        self._check = LoopingCall(self.check)
        self._check.clock = clock
        self._tick = LoopingCall(self.tick)
        self._tick.clock = clock

    def startService(self):
        service.Service.startService(self)
        self._subscription = self.bus.subscribe(
            ["#." + topics.MEASURE, self.tickKey], self.measureReceived, queue=self.queue,
            prefetch=LIVENESS_PREFETCH, singleActive=True)
        self.log.info(
            "host liveness from queue {queue} (judged by the analyzer that receives it): "
            "stale after {stale}, offline after {offline} s",
            queue=self.queue, offline=self.offlineAfter,
            stale=f"{self.staleAfter} s" if self.staleAfter else f"{STALE_INTERVALS} intervals")
        # What the judge publishes, for the processes standing by: the one
        # that takes over knows every host's last status, not only the hosts
        # it hears from afterwards.
        self._statusSubscription = self.bus.subscribe(["#." + topics.STATUS], self.statusReceived)
        self._check.start(self.checkInterval, now=False).addErrback(self._checkFailed)
        self._tick.start(TICK_INTERVAL, now=True)

    def stopService(self):
        service.Service.stopService(self)
        for call in (self._check, self._tick):
            if call.running:
                call.stop()
        subscriptions = [sub for sub in (self._subscription, self._statusSubscription) if sub is not None]
        return defer.gatherResults([defer.maybeDeferred(sub.cancel) for sub in subscriptions])

    def _checkFailed(self, failure):
        self.log.failure("judging host liveness failed; no longer judging", failure)

    def tick(self):
        """
        Publish a tick into the liveness queue, for whichever process
        consumes it (see L{HostLiveness}).
        """
        if not self.bus.connected:
            return  # kept in the outbox, it would arrive late and mean nothing
        body = wire.encodeTick(self.queue, self.clock.seconds())
        self.bus.publish(self.tickKey, body).addErrback(lambda failure: None)

    def measureReceived(self, routingKey, body):
        now = self.clock.seconds()
        if self._lastDelivery is None or now - self._lastDelivery > ACTIVE_WINDOW:
            self._resumedAt = now  # the first delivery after a gap
        self._lastDelivery = now
        if routingKey == self.tickKey:
            return
        try:
            measure = wire.decodeMeasure(routingKey, body, self.maxBody,
                                         notAfter=now + self.maxClockSkew)
        except wire.Rejected:
            return  # the analyzer logs and counts bad measures (and those from the future)
        self.seen(measure)

    def statusReceived(self, routingKey, body):
        """
        Note a status the judge published, while this process stands by (the
        judge itself knows better, and its own statuses come back late).
        """
        if self.active:
            return
        try:
            event = wire.decodeEvent(routingKey, body, self.maxBody)
        except wire.Rejected:
            return  # the web logs and counts bad events
        status, lastSeen = event.get("status"), event.get("last_seen")
        if status == FORGOTTEN:
            self.hosts.pop(event["host"], None)
            return
        if status not in (ONLINE, STALE, OFFLINE) or not isinstance(lastSeen, (int, float)):
            return
        host = self.hosts.get(event["host"])
        if host is None:
            host = self.hosts[event["host"]] = _Host(event["host"], topics.hostWord(event["host"]))
            host.lastSeen = lastSeen
        host.lastSeen = max(host.lastSeen, lastSeen)
        host.status = status
        host.since = event.get("since")
        host.seq = event.get("seq")

    def seen(self, measure):
        """
        Note a valid measure (a L{wire.Measure}) that just arrived.
        """
        host = self.hosts.get(measure.host)
        if host is None:
            host = self.hosts[measure.host] = _Host(measure.host, measure.hostWord)
        now = self.clock.seconds()
        host.lastSeen = now
        host.seq = measure.seq
        if measure.interval:
            host.interval = measure.interval
        if host.status != ONLINE:
            self._change(host, ONLINE, now)

    def check(self):
        """
        Judge every host, unless the bus is or just was disconnected, or
        another process receives the liveness queue (this one stands by).
        """
        now = self.clock.seconds()
        if not self.bus.connected:
            if self._judgingFrom is not None:
                self.log.info("bus disconnected: host liveness paused")
            self._judgingFrom = None
            return
        connection = self.bus.counters["connections"]
        if self._judgingFrom is None or connection != self._connection:
            # (Re)connected since the last check, however briefly it was down.
            self._connection = connection
            self._judgingFrom = now + self.grace
            self._seenSince = now
            self.log.info("bus connected: judging host liveness again in {grace} s", grace=self.grace)
        delivered = self._lastDelivery is not None and now - self._lastDelivery <= ACTIVE_WINDOW
        if delivered and self.active is not True:
            self.active = True
            # Taking over, or back: what this process knows of the hosts is as
            # old as its deliveries before the gap; count them as seen when
            # deliveries resumed.
            self._seenSince = max(self._seenSince, self._resumedAt)
            self.log.info("judging host liveness: this process receives {queue}", queue=self.queue)
        elif not delivered and self.active is not False and (
                self.active or now - self._seenSince > ACTIVE_WINDOW):
            self.active = False
            self.log.info("standing by: another analyzer process receives {queue} and judges",
                          queue=self.queue)
        if not self.active:
            self._dropSilent(now)
            return
        if now < self._judgingFrom:
            return
        seenSince = self._seenSince
        # Silence is counted only as far as this process can vouch for it: while
        # it receives the queue (ticks every TICK_INTERVAL), up to now; once
        # deliveries stop, not much past the last one.
        heardUntil = min(now, self._lastDelivery + TICK_INTERVAL * 1.5)
        forgotten = 0
        for host in list(self.hosts.values()):
            silent = heardUntil - max(host.lastSeen, seenSince)
            if silent > self.forgetAfter:
                del self.hosts[host.name]
                self._announce(host, FORGOTTEN, now)
                forgotten += 1
            elif host.status == OFFLINE:
                continue
            elif silent > self.offlineAfter:
                self._change(host, OFFLINE, now)
            elif host.status == ONLINE and silent > self._staleAfter(host):
                self._change(host, STALE, now)
        if forgotten:
            self.forgotten += forgotten
            self.log.info("forgot {count} hosts silent for over {after} s ({total} so far)",
                          count=forgotten, after=self.forgetAfter, total=self.forgotten)

    def _dropSilent(self, now):
        """
        While standing by: drop the hosts nothing was heard of (neither a
        measure nor the judge's status) for C{forgetAfter} seconds.
        """
        for host in [h for h in self.hosts.values() if now - h.lastSeen > self.forgetAfter]:
            del self.hosts[host.name]

    def _staleAfter(self, host):
        if self.staleAfter:
            return self.staleAfter
        return STALE_INTERVALS * host.interval

    def _change(self, host, status, now):
        host.status = status
        host.since = now
        self.log.info("{host} is {status} (last measure at {lastSeen:.3f}, seq {seq})",
                      host=host.name, status=status, lastSeen=host.lastSeen, seq=host.seq)
        self._announce(host, status, now)

    def _announce(self, host, status, now):
        body = wire.encodeStatus(host.name, status, now, host.lastSeen, host.seq)
        d = self.bus.publish(f"{host.word}.{topics.STATUS}", body)
        d.addCallbacks(self._published, self._failed, errbackArgs=(host.name,))

    def _published(self, _):
        self.counters["published"] += 1

    def _failed(self, failure, host):
        self.counters["failed"] += 1
        self.log.warn("status of {host} not published: {why}",
                      host=host, why=failure.getErrorMessage())
