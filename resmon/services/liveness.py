"""
Host liveness on the bus: feeds the judge (L{resmon.analysis.liveness}) the
measures of the liveness queue and the statuses of the other processes,
sweeps it periodically, publishes what it decides as C{<host>.status}
events, and publishes the ticks that tell a process whether it is the one
receiving the liveness queue.
"""

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from resmon import topics, wire
from resmon.analysis.decoding import SharedMeasureDecoder
from resmon.analysis.liveness import (  # noqa: F401
    ACTIVE_WINDOW, ASSUMED_INTERVAL, OFFLINE, ONLINE, STALE, TICK_INTERVAL, LivenessJudge)
from resmon.defaults import DEFAULT_GRACE, DEFAULT_OFFLINE_AFTER, LIVENESS_QUEUE_SUFFIX, STALE_INTERVALS  # noqa: F401
from resmon.periodic import Periodic

FORGOTTEN = wire.FORGOTTEN

DEFAULT_QUEUE = "resmon.analyzer.liveness"
CHECK_INTERVAL = 0.5
# Hosts silent for this long are forgotten (and announced so), so hosts that
# went away and junk host names cannot grow the table without bound.
FORGET_AFTER = wire.DEFAULT_FORGET_AFTER
LIVENESS_PREFETCH = 500
# Every analyzer publishes a tick into the liveness queue every
# TICK_INTERVAL; only the process the broker delivers to (the active
# consumer) receives them, so a process that has received nothing for
# ACTIVE_WINDOW seconds knows it stands by, and judges nothing. Its table
# would otherwise age without measures and declare every host offline after
# another process took over.
TICK = wire.TICK
# Ticks are resmon's own traffic on the user's exchange: their routing key,
# INTERNAL.<queue word>.liveness-tick, has four words, so no binding on host
# traffic (<host>.<kind>: '*.measure', '#.measure', '*.analysis', ...) matches
# it, and a '#' consumer cannot take it for a host's (docs/protocol.md).
INTERNAL = "resmon.internal"


class HostLiveness(service.Service):
    """
    Publishes a C{<host>.status} event each time the judge
    (L{resmon.analysis.liveness.LivenessJudge}, where the rules are) finds
    a host C{online}, C{stale}, C{offline} or C{forgotten}; every role that
    receives a C{forgotten} drops what it keeps of the host.

    Measures come from their own subscription, a named queue consumed by one
    process at a time (the other analyzers stand by and take over when it
    goes): every process would otherwise see only its share of the measures,
    and several judges would publish every change several times. Each
    process also publishes a tick into that queue every L{TICK_INTERVAL}
    seconds, so the one receiving deliveries knows it judges. The others
    learn every host's status from the judge's C{<host>.status} events, so
    on taking over they also judge the hosts that went silent before.

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
    @param agentUsers: L{None}, or a L{resmon.auth.agents.AgentUsers}: a
        measure whose publisher may not speak for its host is ignored, as
        the analyzer rejects it.
    @param forgetAfter: seconds without a measure before a host is
        forgotten. A process standing by drops, without announcing them, the
        hosts it has heard nothing of for as long (the judge's C{forgotten}
        may have been lost).
    @param decoder: L{None}, or the
        L{resmon.analysis.decoding.SharedMeasureDecoder} this process's
        analyzer also decodes with (built from C{maxBody} and
        C{maxClockSkew} otherwise): while this process judges, it keeps
        what one of them decoded for the other.
    """

    name = "liveness"
    log = Logger()

    def __init__(self, bus, clock, staleAfter=None, offlineAfter=DEFAULT_OFFLINE_AFTER,
                 grace=DEFAULT_GRACE, queue=DEFAULT_QUEUE, checkInterval=CHECK_INTERVAL,
                 maxBody=wire.DEFAULT_MAX_BODY, forgetAfter=FORGET_AFTER,
                 maxClockSkew=wire.DEFAULT_MAX_CLOCK_SKEW, agentUsers=None, decoder=None):
        self.bus = bus
        self.decoder = SharedMeasureDecoder(clock, maxBody, maxClockSkew) if decoder is None else decoder
        # As the analyzer: a measure from a publisher that may not speak for
        # its host keeps no host alive (the analyzer counts it).
        self.agentUsers = agentUsers
        self.clock = clock
        self.staleAfter = staleAfter
        self.offlineAfter = offlineAfter
        self.grace = grace
        self.queue = queue
        self.checkInterval = checkInterval
        self.maxBody = maxBody
        self.forgetAfter = forgetAfter
        self.judge = LivenessJudge(staleAfter=staleAfter, offlineAfter=offlineAfter, grace=grace,
                                   forgetAfter=forgetAfter)
        self.counters = {"published": 0, "failed": 0}
        self.tickKey = f"{INTERNAL}.{topics.hostWord(queue)}.{TICK}"
        self._subscription = None
        self._statusSubscription = None
        self._check = Periodic(self.check, checkInterval, clock, self.log,
                               "judging host liveness failed; no longer judging")
        self._tick = Periodic(self.tick, TICK_INTERVAL, clock, self.log,
                              "publishing liveness ticks failed; no longer publishing them", now=True)

    @property
    def hosts(self):
        """
        The judge's table: host name -> L{resmon.analysis.liveness.HostRecord}.
        """
        return self.judge.hosts

    @property
    def active(self):
        """
        Whether this process judges (L{None} until known).
        """
        return self.judge.active

    @property
    def forgotten(self):
        """
        How many hosts were forgotten so far.
        """
        return self.judge.forgotten

    def startService(self):
        service.Service.startService(self)
        self._subscription = self.bus.subscribe(
            ["#." + topics.MEASURE, self.tickKey], self.measureReceived, queue=self.queue,
            prefetch=LIVENESS_PREFETCH, singleActive=True,
            publisher=self.agentUsers is not None)
        self.log.info(
            "host liveness from queue {queue} (judged by the analyzer that receives it): "
            "stale after {stale}, offline after {offline} s",
            queue=self.queue, offline=self.offlineAfter,
            stale=f"{self.staleAfter} s" if self.staleAfter else f"{STALE_INTERVALS} intervals")
        # What the judge publishes, for the processes standing by: the one
        # that takes over knows every host's last status, not only the hosts
        # it hears from afterwards.
        self._statusSubscription = self.bus.subscribe(["#." + topics.STATUS], self.statusReceived)
        self._check.start()
        self._tick.start()

    def stopService(self):
        service.Service.stopService(self)
        self._check.stop()
        self._tick.stop()
        self.decoder.stopSharing()
        subscriptions = [sub for sub in (self._subscription, self._statusSubscription) if sub is not None]
        return defer.gatherResults([defer.maybeDeferred(sub.cancel) for sub in subscriptions])

    def tick(self):
        """
        Publish a tick into the liveness queue, for whichever process
        consumes it (see L{HostLiveness}).
        """
        if not self.bus.connected:
            return  # kept in the outbox, it would arrive late and mean nothing
        body = wire.encodeTick(self.queue, self.clock.seconds())
        self.bus.publish(self.tickKey, body).addErrback(lambda failure: None)

    def measureReceived(self, routingKey, body, publisher=None):
        now = self.clock.seconds()
        self.judge.delivered(now)
        decoder = self.decoder
        if not decoder.sharing and self.running:
            decoder.sharing = True  # this process judges: the analyzer keeps for it
        if routingKey == self.tickKey:
            return
        try:
            measure = decoder.forJudge(routingKey, body)
        except wire.Rejected:
            return  # the analyzer logs and counts bad measures (and those from the future)
        if self.agentUsers is not None and not self.agentUsers.maySpeakFor(publisher, measure.host):
            return
        self.seen(measure)

    def statusReceived(self, routingKey, body):
        """
        Note a status the judge published, while this process stands by.
        """
        if self.active:
            return
        try:
            event = wire.decodeStatus(routingKey, body, self.maxBody)
        except wire.Rejected:
            return  # the web logs and counts bad events
        self.judge.learned(event["host"], event.get("status"), event.get("last_seen"),
                           event.get("since"), event.get("seq"))

    def seen(self, measure):
        """
        Note a valid measure (a L{wire.Measure}) that just arrived.
        """
        change = self.judge.seen(measure, self.clock.seconds())
        if change is not None:
            self._announce(change)

    def check(self):
        """
        Sweep the judge, and publish the changes it found.
        """
        connection = self.bus.counters["connections"] if self.bus.connected else None
        sweep = self.judge.sweep(self.clock.seconds(), connection)
        if sweep.paused:
            self.log.info("bus disconnected: host liveness paused")
        if sweep.resumed:
            self.log.info("bus connected: judging host liveness again in {grace} s", grace=self.grace)
        if sweep.role is True:
            self.log.info("judging host liveness: this process receives {queue}", queue=self.queue)
        elif sweep.role is False:
            self.log.info("standing by: another analyzer process receives {queue} and judges",
                          queue=self.queue)
        if not self.active and self.decoder.sharing:
            self.decoder.stopSharing()  # the analyzer alone decodes here now
        for change in sweep.changes:
            self._announce(change)
        if sweep.forgotten:
            self.log.info("forgot {count} hosts silent for over {after} s ({total} so far)",
                          count=sweep.forgotten, after=self.forgetAfter, total=self.forgotten)

    def _announce(self, change):
        host, status, now = change.host, change.status, change.at
        if status != FORGOTTEN:
            self.log.info("{host} is {status} (last measure at {lastSeen:.3f}, seq {seq})",
                          host=host.name, status=status, lastSeen=host.lastSeen, seq=host.seq)
        body = wire.encodeStatus(host.name, status, now, host.lastSeen, host.seq)
        d = self.bus.publish(f"{host.word}.{topics.STATUS}", body)
        d.addCallbacks(self._published, self._failed, errbackArgs=(host.name,))

    def _published(self, _):
        self.counters["published"] += 1

    def _failed(self, failure, host):
        self.counters["failed"] += 1
        self.log.warn("status of {host} not published: {why}",
                      host=host, why=failure.getErrorMessage())
