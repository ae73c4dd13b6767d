"""
Resolving webhook targets' names, apart from everything else.

C{getaddrinfo} blocks the thread that calls it for as long as the name's
nameservers take to answer, 30 s and more for one that never does, and
whoever registers a hook chooses its name. Run in the reactor's thread
pool, a few such names would take every one of its threads: the logins
(their password hashing runs there), every other hook's lookups and the
registrations behind them would wait as long. Here each lookup runs in a
thread of its own, at most L{DEFAULT_LOOKUPS} at once, and is given up
after a timeout: slow names hold up neither logins nor the reactor.

Nor do they hold up the other hooks:

  - a name's answer is kept for L{DEFAULT_CACHE_FOR} seconds, so a hook
    delivering steadily looks its name up twice a minute, not at every
    connection (the addresses are still checked at every connection, and
    a kept answer cannot rebind the name to another address meanwhile);
  - a name asked for while its lookup waits or runs joins that lookup: one
    name never takes two places;
  - names that have not answered within the last L{DEFAULT_KNOWN_FOR}
    seconds (new names, and names whose nameservers never answer) take at
    most half the places: the other half stays for the names known to
    answer, whoever registered the others. A name whose lookup is given up
    is no longer known to answer.
"""

import threading
from collections import Counter, OrderedDict

from twisted.internet import defer

from resmon.webhooks import addresses

# Lookups running at once; more wait for one of them to end.
DEFAULT_LOOKUPS = 8
# Seconds a lookup (waiting for its turn included) may take.
DEFAULT_TIMEOUT = 10.0
# Seconds a name's answer is kept.
DEFAULT_CACHE_FOR = 30.0
# Seconds a name that answered counts as known to answer.
DEFAULT_KNOWN_FOR = 3600.0
# Answers kept, and names known to answer, at most (the oldest are
# forgotten first): a bound whatever hooks are registered.
MAX_NAMES = 4096


class ResolutionTimedOut(Exception):
    """
    A name was not resolved within the resolver's timeout.
    """


class _Lookup:
    """
    One name's lookup, waiting for a place or running, and the outcomes
    (with their expiry calls) waiting for it.
    """

    def __init__(self, name, known):
        self.name = name
        self.known = known
        self.started = False
        self.waiters = []


class NameResolver:
    """
    C{resolve(host, port)}: a L{Deferred} of every address C{host} resolves
    to, or failing with the lookup's error, or with L{ResolutionTimedOut}.

    A lookup runs in a daemon thread, which never holds up the process's
    exit; one given up still holds its place among the L{lookups} running
    until its thread returns, so slow names cannot make threads pile up.
    When a place is free, lookups of names known to answer go first.

    @param reactor: an L{IReactorTime} and L{IReactorThreads}.
    @param lookups: how many lookups may run at once; lookups of names not
        known to answer may take half of them (at least one).
    @param timeout: seconds before a lookup is given up.
    @param lookup: the blocking lookup, C{(host, port)} to a list of
        addresses (default: L{addresses.resolve}, C{getaddrinfo}).
    @param cacheFor: seconds an answer is kept (0: none is).
    @param knownFor: seconds a name that answered counts as known to
        answer.
    @param maxNames: answers kept, and names known to answer, at most.
    """

    def __init__(self, reactor, lookups=DEFAULT_LOOKUPS, timeout=DEFAULT_TIMEOUT,
                 lookup=None, cacheFor=DEFAULT_CACHE_FOR, knownFor=DEFAULT_KNOWN_FOR,
                 maxNames=MAX_NAMES):
        self.reactor = reactor
        self.timeout = timeout
        self.lookups = lookups
        self.unknownLookups = max(1, lookups // 2)
        self.cacheFor = cacheFor
        self.knownFor = knownFor
        self.maxNames = maxNames
        self._lookup = lookup
        # (host, port) -> (when it answered, its addresses), oldest first.
        self._answers = OrderedDict()
        # (host, port) -> when it last answered, oldest first.
        self._known = OrderedDict()
        # (host, port) -> its _Lookup, waiting for a place or running.
        self._lookups = {}
        # The lookups waiting for a place, first come first: known names, others.
        self._queues = {True: OrderedDict(), False: OrderedDict()}
        self.running = 0
        self.runningUnknown = 0
        self.counters = Counter({"resolved": 0, "failed": 0, "timed-out": 0, "cached": 0})

    def resolve(self, host, port):
        name = (host, port)
        now = self.reactor.seconds()
        answer = self._answers.get(name)
        if answer is not None:
            if now - answer[0] < self.cacheFor:
                self.counters["cached"] += 1
                return defer.succeed(list(answer[1]))
            del self._answers[name]
        lookup = self._lookups.get(name)
        if lookup is None:
            lookup = self._lookups[name] = _Lookup(name, self._isKnown(name, now))
            self._queues[lookup.known][name] = lookup

        def cancelled(_):
            # Given up by the caller: a lookup nobody waits for never runs.
            if expiry.active():
                expiry.cancel()
            self._leave(lookup, outcome)

        def timedOut():
            self._leave(lookup, outcome)
            # No longer known to answer: its next lookup takes a place of the unknown names'.
            self._known.pop(name, None)
            if not outcome.called:
                self.counters["timed-out"] += 1
                outcome.errback(ResolutionTimedOut(
                    f"{host} did not resolve within {self.timeout:g} s"))
        outcome = defer.Deferred(cancelled)
        expiry = self.reactor.callLater(self.timeout, timedOut)
        lookup.waiters.append((outcome, expiry))
        self._startWhatFits()
        return outcome

    def _isKnown(self, name, now):
        answered = self._known.get(name)
        if answered is None:
            return False
        if now - answered < self.knownFor:
            return True
        del self._known[name]
        return False

    def _leave(self, lookup, outcome):
        """
        C{outcome} no longer waits for C{lookup}; a lookup nobody waits for
        any more, and not started, never runs.
        """
        lookup.waiters = [(o, e) for (o, e) in lookup.waiters if o is not outcome]
        if not lookup.waiters and not lookup.started:
            self._queues[lookup.known].pop(lookup.name, None)
            if self._lookups.get(lookup.name) is lookup:
                del self._lookups[lookup.name]

    def _startWhatFits(self):
        while self.running < self.lookups:
            known, unknown = self._queues[True], self._queues[False]
            if known:
                _, lookup = known.popitem(last=False)
            elif unknown and self.runningUnknown < self.unknownLookups:
                _, lookup = unknown.popitem(last=False)
            else:
                return
            self._start(lookup)

    def _start(self, lookup):
        lookup.started = True
        self.running += 1
        if not lookup.known:
            self.runningUnknown += 1
        thread = threading.Thread(target=self._run, args=(lookup,),
                                  name="resmon-webhook-dns", daemon=True)
        try:
            thread.start()
        except RuntimeError as e:  # no thread to be had
            self._ended(lookup, False, e)

    def _run(self, lookup):
        # In the lookup's thread.
        resolve = self._lookup or addresses.resolve
        try:
            result, ok = resolve(*lookup.name), True
        except Exception as e:
            result, ok = e, False
        self.reactor.callFromThread(self._ended, lookup, ok, result)

    def _ended(self, lookup, ok, result):
        self.running -= 1
        if not lookup.known:
            self.runningUnknown -= 1
        if self._lookups.get(lookup.name) is lookup:
            del self._lookups[lookup.name]
        if ok:
            self._remember(lookup.name, result)
        waiters, lookup.waiters = lookup.waiters, []
        for outcome, expiry in waiters:
            if expiry.active():
                expiry.cancel()
            if outcome.called:
                continue
            if ok:
                self.counters["resolved"] += 1
                outcome.callback(list(result))
            else:
                self.counters["failed"] += 1
                outcome.errback(result)
        self._startWhatFits()

    def _remember(self, name, addresses):
        now = self.reactor.seconds()
        for table, value in ((self._known, now), (self._answers, (now, tuple(addresses)))):
            if table is self._answers and self.cacheFor <= 0:
                continue
            table.pop(name, None)
            table[name] = value
            while len(table) > self.maxNames:
                table.popitem(last=False)
