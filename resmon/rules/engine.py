"""
The rule engine: runs every rule whose patterns match an event, isolated
from the others, and turns what their actions asked for into events to
publish, within the chain limit and each rule's emission rate.
"""

import dataclasses
import time
import uuid
from collections import Counter, OrderedDict

from twisted.logger import Logger

from resmon import topics, wire
from resmon.ratelimit import LimitedLog, TokenBucket
from resmon.rules.act import Act

DEFAULT_TIME_BUDGET = 0.05
DEFAULT_EMIT_RATE = 100.0
# Sources whose state is kept (per rule); beyond, the least recently used goes.
DEFAULT_MAX_KEYS = 100_000
# Routing keys whose matching rules are remembered.
_MATCH_CACHE_SIZE = 10_000
# How a rule can fail, each logged once per rule and counted.
CHECK_ERROR, ACTION_ERROR, OVER_BUDGET = "check-error", "action-error", "over-budget"


class RuleEngine:
    """
    Runs rules on events.

    A rule whose C{check} or C{action} raises, or whose call (check and
    action together) takes longer than C{timeBudget}, does nothing for that
    event (what its action asked for is dropped); the other rules run as
    usual. Failures are counted per rule and kind in L{failures}; the first
    of each kind of each rule is logged.

    An emitted event carries the chain of the event acted on, one deeper;
    one deeper than C{maxChain} is not emitted but counted (C{chain-limit})
    and logged, rate limited. Each rule may emit C{emitRate} events a
    second (bursts of C{emitBurst}); beyond, its events are dropped and
    counted (C{rate-limited}) with a log line, rate limited too.

    @param rules: configured L{resmon.interfaces.IRule} providers.
    @param clock: an L{IReactorTime}: event times, rate limits, C{act.now()}.
    @param timer: a monotonic clock measuring the rules' run time.
    @param newId: returns a new unique event id.
    """

    log = Logger()

    def __init__(self, rules, clock, timeBudget=DEFAULT_TIME_BUDGET, maxChain=wire.DEFAULT_MAX_CHAIN,
                 emitRate=DEFAULT_EMIT_RATE, emitBurst=None, timer=time.perf_counter,
                 newId=None, maxKeys=DEFAULT_MAX_KEYS):
        self.rules = list(rules)
        self.clock = clock
        self.timeBudget = timeBudget
        self.maxChain = maxChain
        self.emitRate = emitRate
        self.emitBurst = emitBurst if emitBurst is not None else max(10, int(emitRate))
        self._timer = timer
        self._newId = newId or (lambda: uuid.uuid4().hex)
        self.maxKeys = maxKeys
        self._buckets = {rule.name: TokenBucket(clock, emitRate, self.emitBurst)
                         for rule in self.rules}
        self._rateLogs = {rule.name: LimitedLog(clock) for rule in self.rules}
        self._chainLog = LimitedLog(clock)
        self._state = OrderedDict()
        self._matching = {}
        self.failures = Counter()
        self.counters = Counter({"events": 0, "acted": 0, "emitted": 0, "chain-limit": 0,
                                 "rate-limited": 0, "state-evicted": 0})
        self.emittedBy = Counter()

    def patterns(self):
        """
        Every rule's patterns, once each, in order: what to subscribe to.
        """
        return list(dict.fromkeys(p for rule in self.rules for p in rule.patterns))

    def rulesFor(self, routingKey):
        """
        The rules listening to C{routingKey}, in order.
        """
        found = self._matching.get(routingKey)
        if found is None:
            found = tuple(rule for rule in self.rules
                          if any(topics.topicMatches(p, routingKey) for p in rule.patterns))
            if len(self._matching) >= _MATCH_CACHE_SIZE:
                self._matching.clear()
            self._matching[routingKey] = found
        return found

    def handle(self, event):
        """
        Run every rule listening to C{event} (a L{wire.Event}).

        @return: the events to publish, a L{list} of C{(routingKey, body)}.
        """
        self.counters["events"] += 1
        published = []
        for rule in self.rulesFor(event.key):
            for effect in self._run(rule, event):
                if effect.kind == "emit":
                    emitted = self._emit(rule, event, **effect.arguments)
                    if emitted is not None:
                        published.append(emitted)
                elif effect.kind == "notify":
                    notified = self._notify(rule, effect.arguments["notification"])
                    if notified is not None:
                        published.append(notified)
        return published

    def _stateFor(self, rule, source):
        key = (rule.name, source)
        state = self._state.get(key)
        if state is None:
            state = self._state[key] = {}
            if len(self._state) > self.maxKeys:
                self._state.popitem(last=False)
                self.counters["state-evicted"] += 1
        else:
            self._state.move_to_end(key)
        return state

    def _run(self, rule, event):
        state = self._stateFor(rule, event.source)
        started = self._timer()
        try:
            applies = rule.check(event, state)
        except Exception as e:
            self._failed(rule, CHECK_ERROR, event, e)
            return ()
        act = None
        if applies:
            act = Act(self.clock)
            try:
                rule.action(event, state, act)
            except Exception as e:
                self._failed(rule, ACTION_ERROR, event, e)
                return ()
        elapsed = self._timer() - started
        if elapsed > self.timeBudget:
            self._failed(rule, OVER_BUDGET, event, f"took {elapsed * 1000:.1f} ms, over its "
                                                   f"{self.timeBudget * 1000:.0f} ms budget")
            return ()
        if act is None:
            return ()
        self.counters["acted"] += 1
        return act.effects

    def _failed(self, rule, kind, event, error):
        self.failures[(rule.name, kind)] += 1
        if self.failures[(rule.name, kind)] == 1:
            reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            self.log.error(
                "rule {rule} failed ({kind}) on an event under {key}: {reason}; further "
                "{kind} failures of this rule are counted, not logged",
                rule=rule.name, kind=kind, key=event.key[:80], reason=str(reason)[:300])

    def _notify(self, rule, notification):
        # Within the rule's emission rate, as its events are.
        if not self._buckets[rule.name].take():
            self.counters["rate-limited"] += 1
            return None
        notification = dataclasses.replace(
            notification, id=self._newId(), ts=self.clock.seconds())
        self.counters["notified"] += 1
        return notification.routingKey, wire.encodeNotification(notification)

    def _emit(self, rule, event, key, payload):
        chain = event.chain.then(rule.name)
        if chain.depth > self.maxChain:
            self.counters["chain-limit"] += 1
            self._chainLog.warn(
                self.log, "refused an event under {key} from rule {rule}: chain depth {depth} "
                "is over --max-chain {limit} (rules: {rules}); a loop of rules? "
                "({count} refused so far)", key=key, rule=rule.name, depth=chain.depth,
                limit=self.maxChain, rules=" > ".join(chain.rules),
                count=self.counters["chain-limit"])
            return None
        if not self._buckets[rule.name].take():
            self.counters["rate-limited"] += 1
            self._rateLogs[rule.name].warn(
                self.log, "rule {rule} emits faster than its limit of {rate:g} events/s "
                "(bursts of {burst}): dropped an event under {key} ({count} dropped so far, "
                "all rules)", rule=rule.name, rate=self.emitRate, burst=self.emitBurst, key=key,
                count=self.counters["rate-limited"])
            return None
        source, kind = wire.checkEmittedKey(key)
        body = wire.encodeEmitted(source, kind, self.clock.seconds(), self._newId(), payload, chain)
        self.counters["emitted"] += 1
        self.emittedBy[rule.name] += 1
        return key, body
