"""
The analyzer: consumes measures, runs the analysis pipeline, publishes
analyses.
"""

from collections import Counter, OrderedDict

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from resmon import topics, wire
from resmon.analysis.decoding import SharedMeasureDecoder
from resmon.auth.agents import FORBIDDEN
from resmon.bus.delivery import LATER, Discard, Retry, settlesLater
from resmon.bus.outbox import Unpublishable
from resmon.defaults import DEFAULT_DEAD_LETTER_QUEUE, DEFAULT_PREFETCH, DEFAULT_QUEUE  # noqa: F401
from resmon.periodic import Periodic
from resmon.ratelimit import LimitedLog

# Rejections logged at once per reason (and measures with unknown metrics
# dropped) before the log keeps to one line every LOG_PERIOD seconds.
LOGGED_REJECTIONS = 10
LOG_PERIOD = 6.0
# Why a measure whose analysis cannot be published at all is rejected.
UNPUBLISHABLE = "unpublishable"
# Measures whose analysis was confirmed, remembered to recognise redeliveries.
REMEMBERED_MEASURES = 10000


class AnalyzerService(service.Service):
    """
    Consumes C{#.measure} from a shared durable queue (competing consumers)
    and publishes one analysis per valid measure to C{<host>.analysis}.

    A measure is acknowledged only after the bus confirmed its analysis; an
    invalid one is logged, counted by reason in L{rejected} and acknowledged.

    A measure redelivered to this process (same host, seq and ts: the
    connection was lost before its acknowledgement reached the broker) is not
    analysed again: it is acknowledged once the analysis already published,
    or still being resent by the bus, is confirmed.

    A measure whose C{ts} is more than C{maxClockSkew} seconds ahead of
    C{clock} is rejected (reason C{future}) like any invalid one. Unknown
    metrics over the bound of L{wire.boundUnknownMetrics} are dropped from
    the measure, which is analysed; such measures are counted
    (C{unknown-metrics}) and logged like rejections.

    @param bus: an L{resmon.interfaces.IBus}.
    @param pipeline: an L{resmon.analysis.pipeline.AnalysisPipeline}.
    @param clock: an L{IReactorTime}: the time a measure's C{ts} is judged
        against, and the periodic stats log line.
    @param maxClockSkew: seconds a measure's C{ts} may be ahead of C{clock}.
    @param leftOut: names of analyzers discovered but not run (not selected
        with C{--analyzers}), for the start log.
    @param agentUsers: L{None}, or a L{resmon.auth.agents.AgentUsers}: a
        measure whose publisher (its C{user_id}, verified by RabbitMQ) may
        not speak for its host, or that carries none, is rejected (reason
        C{forbidden}) like any invalid one, and never analysed.
    @param decoder: L{None}, or the
        L{resmon.analysis.decoding.SharedMeasureDecoder} this process's
        liveness service also decodes with (built from C{maxBody} and
        C{maxClockSkew} otherwise).
    """

    name = "analyzer"
    log = Logger()

    def __init__(self, bus, pipeline, clock, queue=DEFAULT_QUEUE, prefetch=DEFAULT_PREFETCH,
                 maxBody=wire.DEFAULT_MAX_BODY, statsInterval=60.0, partitions=None,
                 processId=None, deadLetter=None, maxClockSkew=wire.DEFAULT_MAX_CLOCK_SKEW,
                 leftOut=(), agentUsers=None, decoder=None):
        self.bus = bus
        # The RabbitMQ bus publishes without a Deferred (see measureReceived).
        self._publishThen = getattr(bus, "publishThen", None)
        self.decoder = SharedMeasureDecoder(clock, maxBody, maxClockSkew) if decoder is None else decoder
        self.agentUsers = agentUsers
        self.leftOut = list(leftOut or ())
        self.clock = clock
        self.pipeline = pipeline
        self.queue = queue
        self.partitions = partitions
        self.processId = processId
        self.deadLetter = deadLetter
        self.prefetch = prefetch
        self.rejected = Counter()
        self.counters = {"analyzed": 0, "published": 0, "redelivered": 0}
        # Measures whose unknown metrics were dropped for being over the bound.
        self.unknownMetricsDropped = 0
        self._pending = {}
        self._confirmed = OrderedDict()
        self._subscription = None
        # Per reason: a flood of one kind of bad measure hides no other.
        self._rejectionLogs = {}
        self._unknownMetricsLog = self._limitedLog()
        self.statsInterval = statsInterval
        self._stats = Periodic(self.logStats, statsInterval, clock, self.log,
                               "logging the analyzer's counters failed; no longer logging them")
        # The pipeline forgets hosts silent for its forgetAfter.
        self._forget = Periodic(self.forgetSilentHosts, wire.forgetSweepInterval(pipeline.forgetAfter),
                                clock, self.log, "forgetting silent hosts failed; no longer forgetting")

    def startService(self):
        service.Service.startService(self)
        self._subscription = self.bus.subscribe(
            ["#." + topics.MEASURE], self.measureReceived,
            queue=self.queue, durable=True, prefetch=self.prefetch, partitions=self.partitions,
            deadLetter=self.deadLetter, rejected=self.rejected,
            publisher=self.agentUsers is not None)
        self.log.info("analyzing measures from queue {queue} with {analyzers}{notRun}",
                      queue=self.queue,
                      analyzers=", ".join(a.name for a in self.pipeline.analyzers) or "no analyzers",
                      notRun=f" (not selected: {', '.join(self.leftOut)})" if self.leftOut else "")
        if self.agentUsers is not None:
            self.log.info("accepting measures only from the {count} broker users of "
                          "--agent-users {source}, each for its hosts",
                          count=len(self.agentUsers), source=self.agentUsers.source)
        self._stats.start()
        self._forget.start()

    def stopService(self):
        service.Service.stopService(self)
        self._stats.stop()
        self._forget.stop()
        self.logStats()
        if self._subscription is not None:
            return self._subscription.cancel()

    def _limitedLog(self):
        return LimitedLog(self.clock, rate=1 / LOG_PERIOD, burst=LOGGED_REJECTIONS)

    @settlesLater
    def measureReceived(self, routingKey, body, publisher=None, settle=None):
        """
        Analyse one measure and publish its analysis. Settled once the
        broker confirmed the analysis: through C{settle} (the RabbitMQ bus,
        see L{resmon.bus.delivery.settlesLater}) where the bus publishes
        without a L{Deferred}, through the L{Deferred} returned otherwise.
        """
        try:
            measure = self.decoder.forAnalyzer(routingKey, body)
        except wire.Rejected as e:
            return self._reject(routingKey, e.reason, str(e))
        agentUsers = self.agentUsers
        if agentUsers is not None and not agentUsers.maySpeakFor(publisher, measure.host):
            return self._reject(routingKey, FORBIDDEN,
                                f"{FORBIDDEN}: {agentUsers.whyNot(publisher, measure.host)}")
        if measure.droppedUnknown:
            self.unknownMetricsDropped += 1
            self._unknownMetricsLog.warn(
                self.log,
                "dropped {dropped} unknown metrics of a measure under {routingKey}: over "
                "{keys} keys or {size} bytes; analysed its known metrics "
                "({count} measures so far)",
                dropped=measure.droppedUnknown, routingKey=routingKey[:80],
                keys=wire.MAX_UNKNOWN_METRICS, size=wire.MAX_UNKNOWN_METRICS_BYTES,
                count=self.unknownMetricsDropped)
        key = None if measure.seq is None else (measure.host, measure.seq, measure.ts)
        if key is not None and (key in self._pending or key in self._confirmed):
            self.counters["redelivered"] += 1
            if key in self._confirmed:
                return None
            waiter = defer.Deferred()
            self._pending[key].append(waiter)
            return waiter
        analysis = self.pipeline.analyze(measure)
        if self.processId is not None:
            analysis["analyzer"] = self.processId
        self.counters["analyzed"] += 1
        analysisKey = f"{measure.hostWord}.{topics.ANALYSIS}"
        encoded = wire.encodeBuiltAnalysis(analysis)
        if key is not None:
            self._pending[key] = []
        if settle is not None and self._publishThen is not None:
            self._publishThen(analysisKey, encoded, self._confirmedThen, self._droppedThen,
                              (key, settle))
            return LATER
        d = self.bus.publish(analysisKey, encoded)
        d.addCallbacks(self._published, self._notPublished, callbackArgs=(key,), errbackArgs=(key,))
        return d

    def _confirmedThen(self, context):
        key, settle = context
        try:
            self._published(None, key)
        except Exception:
            settle.fail(Failure())
            return
        settle.done()

    def _droppedThen(self, context, error):
        key, settle = context
        try:
            self._notPublished(Failure(error), key)
        except Exception:
            settle.fail(Failure())  # Retry: the broker redelivers the measure
            return
        settle.done()  # unpublishable, rejected without a dead-letter queue

    def _reject(self, routingKey, reason, why):
        """
        Count and log (within limits, per reason) a measure that is not
        analysed; dead-letter it if there is a dead-letter queue.
        """
        self.rejected[reason] += 1
        count = self.rejected[reason]
        if reason not in self._rejectionLogs:
            self._rejectionLogs[reason] = self._limitedLog()
        self._rejectionLogs[reason].warn(
            self.log, "rejected a message under {routingKey}: {reason} ({count} for this reason)",
            routingKey=routingKey[:80], reason=why[:200], count=count)
        if self.deadLetter:
            raise Discard(reason)
        return None

    def _published(self, _, key):
        self.counters["published"] += 1
        if key is not None:
            self._confirmed[key] = True
            if len(self._confirmed) > REMEMBERED_MEASURES:
                self._confirmed.popitem(last=False)
            for waiter in self._pending.pop(key, ()):
                waiter.callback(None)

    def _notPublished(self, failure, key):
        if failure.check(Unpublishable):
            # It would fail again: rejected as bad input is (counted, logged
            # within limits, dead-lettered where there is a dead-letter
            # queue), not redelivered.
            waiters = self._pending.pop(key, ())
            try:
                self._reject(key[0] if key else "(no host)", UNPUBLISHABLE,
                             failure.getErrorMessage())
            except Discard as e:
                for waiter in waiters:
                    waiter.errback(e)
                raise
            for waiter in waiters:
                waiter.callback(None)
            return None
        # Not acknowledged: the broker redelivers the measure, analysed anew.
        for waiter in self._pending.pop(key, ()):
            waiter.errback(Retry(failure.getErrorMessage()))
        raise Retry(failure.getErrorMessage())

    def forgetSilentHosts(self):
        """
        Drop the pipeline's state of the hosts silent for its C{forgetAfter}
        (the liveness judge announces them as C{forgotten}).
        """
        count = self.pipeline.forgetSilent()
        if count:
            self.log.info("forgot the analysis state of {count} hosts silent for {after} s",
                          count=count, after=self.pipeline.forgetAfter)

    def logStats(self):
        failures = self.pipeline.failures
        self.log.info(
            "{analyzed} measures analyzed, {published} analyses published, {redelivered} redelivered "
            "measures not analysed again, {rejected} rejected ({reasons}), "
            "{failed} analyzer failures ({failures}), {unknown} measures with unknown "
            "metrics over the bound (unknown-metrics, dropped), {shared} decodes shared with "
            "the liveness judge",
            analyzed=self.counters["analyzed"], published=self.counters["published"],
            redelivered=self.counters["redelivered"], unknown=self.unknownMetricsDropped,
            rejected=sum(self.rejected.values()),
            reasons=", ".join(f"{k}: {v}" for k, v in sorted(self.rejected.items())) or "none",
            failed=sum(failures.values()),
            failures=", ".join(f"{k}: {v}" for k, v in sorted(failures.items())) or "none",
            shared=self.decoder.counters["shared"])
