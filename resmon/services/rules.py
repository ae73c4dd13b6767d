"""
The rules service: consumes every event its rules listen to from a shared
durable queue, runs the rule engine and publishes what the actions emit.
"""

from collections import Counter

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from resmon import wire
from resmon.bus.delivery import Retry
from resmon.defaults import DEFAULT_PREFETCH, DEFAULT_QUEUE, RULES_QUEUE_SUFFIX
from resmon.ratelimit import LimitedLog

# resmon's internal traffic on the exchange (docs/protocol.md, "Internal
# traffic"): not events, never handed to rules.
INTERNAL_PREFIX = "resmon.internal."


class RulesService(service.Service):
    """
    Subscribes to the union of the rules' patterns on the durable queue
    C{queue} (shared by every rules process, as competing consumers; with
    C{partitions}, partitioned by routing key as the analyzers' queue is), and
    hands each event to the L{resmon.rules.engine.RuleEngine}.

    An event is acknowledged once every event its rules emitted was
    confirmed by the bus (so nothing is lost: on a failure it is returned
    to the queue and run again). A message that is not a valid event is
    counted by reason in L{rejected}, logged (rate limited) and acknowledged.

    @param engine: a L{resmon.rules.engine.RuleEngine}.
    @param clock: an L{IReactorTime}.
    @param maxBody: the largest payload of an event envelope (and body of a
        measure, analysis or status).
    @param leftOut: names of rules discovered but not selected, for the start log.
    """

    name = "rules"
    log = Logger()

    def __init__(self, bus, engine, clock, queue=DEFAULT_QUEUE + RULES_QUEUE_SUFFIX,
                 prefetch=DEFAULT_PREFETCH,
                 maxBody=wire.DEFAULT_MAX_BODY, maxClockSkew=wire.DEFAULT_MAX_CLOCK_SKEW,
                 statsInterval=60.0, partitions=None, leftOut=()):
        self.bus = bus
        self.engine = engine
        self.clock = clock
        self.queue = queue
        self.prefetch = prefetch
        self.maxBody = maxBody
        self.maxClockSkew = maxClockSkew
        self.partitions = partitions
        self.leftOut = list(leftOut or ())
        self.rejected = Counter()
        self.counters = Counter({"received": 0, "published": 0})
        self.warnings = LimitedLog(clock)
        self._subscription = None
        self._stats = LoopingCall(self.logStats)
        self._stats.clock = clock
        self.statsInterval = statsInterval

    def startService(self):
        service.Service.startService(self)
        patterns = self.engine.patterns()
        if patterns:
            self._subscription = self.bus.subscribe(
                patterns, self.eventReceived, queue=self.queue, durable=True,
                prefetch=self.prefetch, partitions=self.partitions, rejected=self.rejected)
        self.log.info("running rules {rules} on queue {queue} ({patterns}){notRun}",
                      rules=", ".join(r.name for r in self.engine.rules) or "(none)",
                      queue=self.queue, patterns=", ".join(patterns) or "nothing to listen to",
                      notRun=f" (not selected: {', '.join(self.leftOut)})" if self.leftOut else "")
        self._stats.start(self.statsInterval, now=False)

    def stopService(self):
        service.Service.stopService(self)
        if self._stats.running:
            self._stats.stop()
        self.logStats()
        if self._subscription is not None:
            return self._subscription.cancel()

    def eventReceived(self, routingKey, body):
        if routingKey.startswith(INTERNAL_PREFIX):
            # The analyzers' liveness ticks, which a rule listening to '#' also gets.
            self.counters["internal"] += 1
            return None
        now = self.clock.seconds()
        try:
            event = wire.decodeBusEvent(
                routingKey, body, self.maxBody, notAfter=now + self.maxClockSkew,
                maxChain=self.engine.maxChain, receivedAt=now)
        except wire.Rejected as e:
            self.rejected[e.reason] += 1
            self.warnings.warn(
                self.log, "rejected a message under {routingKey}: {reason} ({count} for this reason)",
                routingKey=routingKey[:80], reason=str(e)[:200], count=self.rejected[e.reason])
            return None
        self.counters["received"] += 1
        emitted = self.engine.handle(event)
        if not emitted:
            return None
        d = defer.gatherResults([self.bus.publish(key, out) for key, out in emitted],
                                consumeErrors=True)
        d.addCallbacks(self._published, self._notPublished, callbackArgs=(len(emitted),))
        return d

    def _published(self, _, count):
        self.counters["published"] += count

    def _notPublished(self, failure):
        # Returned to the queue: its rules run again and emit anew.
        error = failure.value.subFailure if isinstance(failure.value, defer.FirstError) else failure
        raise Retry(error.getErrorMessage())

    def logStats(self):
        engine = self.engine
        self.log.info(
            "{received} events received, {acted} rule actions, {emitted} events emitted, "
            "{published} published, {chainLimit} refused at the chain limit, {rateLimited} "
            "dropped by rate limits, {rejected} rejected ({reasons}), {failed} rule failures "
            "({failures})",
            received=self.counters["received"], acted=engine.counters["acted"],
            emitted=engine.counters["emitted"], published=self.counters["published"],
            chainLimit=engine.counters["chain-limit"],
            rateLimited=engine.counters["rate-limited"], rejected=sum(self.rejected.values()),
            reasons=", ".join(f"{k}: {v}" for k, v in sorted(self.rejected.items())) or "none",
            failed=sum(engine.failures.values()),
            failures=", ".join(f"{rule} {kind}: {count}" for (rule, kind), count
                               in sorted(engine.failures.items())) or "none")


def makeRulesService(options, bus, reactor):
    """
    The L{RulesService} of the parsed options of C{twistd resmon}: the
    rules queue is the analyzers' C{--queue} with L{RULES_QUEUE_SUFFIX}.
    """
    from resmon.rules.engine import RuleEngine
    engine = RuleEngine(options["rule-plugins"] or (), reactor, timeBudget=options["time-budget"],
                        maxChain=options["max-chain"], emitRate=options["rule-rate"])
    partitions = None
    if options["partitions"]:
        partitions = (options["partitions"], options["own-partitions"])
    return RulesService(
        bus, engine, reactor, queue=options["queue"] + RULES_QUEUE_SUFFIX,
        prefetch=options["prefetch"], maxBody=options["max-body"],
        maxClockSkew=options["max-clock-skew"], statsInterval=options["stats-interval"],
        partitions=partitions, leftOut=options["rules-left-out"])
