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
    name never takes two places, whatever the ports asked with it;
  - names that have not answered a delivery's lookup within the last
    L{DEFAULT_KNOWN_FOR} seconds (new names, names whose nameservers never
    answer, names whose last lookup failed or was given up) take at most
    half the places: the other half stays for the names known to answer,
    whoever registered the others.
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
# Answers kept at most (the oldest are forgotten first): a bound whatever
# names are asked for.
MAX_NAMES = 4096
# Names known to answer kept at most, the oldest forgotten first. Only the
# lookups of deliveries (of hooks registered) make a name known, so there
# are about as many as hooks.
MAX_KNOWN = 65536


class ResolutionTimedOut(Exception):
    """
    A name was not resolved within the resolver's timeout.
    """


class _Lookup:
    """
    One name's lookup, waiting for a place or running, and the outcomes
    waiting for it (each with its expiry call).
    """

    def __init__(self, host, port, known):
        self.host = host
        self.port = port
        self.known = known
        self.started = False
        # Whether a waiter gave up on it while it ran.
        self.givenUp = False
        # Whether its answer makes the name known to answer.
        self.learn = False
        self.waiters = {}


class NameResolver:
    """
    C{resolve(host, port)}: a L{Deferred} of every address C{host} resolves
    to, or failing with the lookup's error, or with L{ResolutionTimedOut}.

    A lookup runs in a daemon thread, which never holds up the process's
    exit; one given up still holds its place among the L{lookups} running
    until its thread returns, so slow names cannot make threads pile up.
    When a place is free, lookups of names known to answer go first.

    A name is known to answer once a lookup of it for a delivery
    (L{resolve}) answered within the timeout, for L{knownFor} seconds; a
    lookup of it that fails, or is given up while it runs, makes it unknown
    again. A registration's lookups (L{resolveToCheck}) make no name known:
    they are asked for names nobody may ever deliver to.

    @param reactor: an L{IReactorTime} and L{IReactorThreads}.
    @param lookups: how many lookups may run at once; lookups of names not
        known to answer may take half of them (at least one).
    @param timeout: seconds before a lookup is given up.
    @param lookup: the blocking lookup, C{(host, port)} to a list of
        addresses (default: L{addresses.resolve}, C{getaddrinfo}).
    @param cacheFor: seconds an answer is kept (0: none is).
    @param knownFor: seconds a name that answered counts as known to
        answer.
    @param maxNames: answers kept at most.
    @param maxKnown: names known to answer kept at most.
    """

    def __init__(self, reactor, lookups=DEFAULT_LOOKUPS, timeout=DEFAULT_TIMEOUT,
                 lookup=None, cacheFor=DEFAULT_CACHE_FOR, knownFor=DEFAULT_KNOWN_FOR,
                 maxNames=MAX_NAMES, maxKnown=MAX_KNOWN):
        self.reactor = reactor
        self.timeout = timeout
        self.lookups = lookups
        self.unknownLookups = max(1, lookups // 2)
        self.cacheFor = cacheFor
        self.knownFor = knownFor
        self.maxNames = maxNames
        self.maxKnown = maxKnown
        self._lookup = lookup
        # host -> (when it answered, its addresses), oldest first. The
        # addresses of a name do not depend on the port asked with it.
        self._answers = OrderedDict()
        # host -> when it last answered a delivery's lookup, oldest first.
        self._known = OrderedDict()
        # host -> its _Lookup, waiting for a place or running.
        self._lookups = {}
        # The lookups waiting for a place, first come first: known names, others.
        self._queues = {True: OrderedDict(), False: OrderedDict()}
        self.running = 0
        self.runningUnknown = 0
        self.counters = Counter({"resolved": 0, "failed": 0, "timed-out": 0, "cached": 0})

    def resolveToCheck(self, host, port):
        """
        L{resolve} for a registration: its answer does not make the name
        known to answer.
        """
        return self.resolve(host, port, learn=False)

    def resolve(self, host, port, learn=True):
        now = self.reactor.seconds()
        answer = self._answers.get(host)
        if answer is not None:
            if now - answer[0] < self.cacheFor:
                self.counters["cached"] += 1
                return defer.succeed(list(answer[1]))
            del self._answers[host]
        lookup = self._lookups.get(host)
        if lookup is None:
            lookup = self._lookups[host] = _Lookup(host, port, self._isKnown(host, now))
            self._queues[lookup.known][host] = lookup
        lookup.learn = lookup.learn or learn

        def cancelled(_):
            # Given up by the caller: a lookup nobody waits for never runs.
            if expiry.active():
                expiry.cancel()
            self._leave(lookup, outcome)

        def timedOut():
            self._leave(lookup, outcome)
            if lookup.started:
                # Its nameservers did not answer in time: no longer known to
                # answer, even if they answer later.
                lookup.givenUp = True
                self._known.pop(host, None)
            if not outcome.called:
                self.counters["timed-out"] += 1
                outcome.errback(ResolutionTimedOut(
                    f"{host} did not resolve within {self.timeout:g} s"))
        outcome = defer.Deferred(cancelled)
        expiry = self.reactor.callLater(self.timeout, timedOut)
        lookup.waiters[outcome] = expiry
        self._startWhatFits()
        return outcome

    def _isKnown(self, host, now):
        answered = self._known.get(host)
        if answered is None:
            return False
        if now - answered < self.knownFor:
            return True
        del self._known[host]
        return False

    def _leave(self, lookup, outcome):
        """
        C{outcome} no longer waits for C{lookup}; a lookup nobody waits for
        any more, and not started, never runs.
        """
        lookup.waiters.pop(outcome, None)
        if not lookup.waiters and not lookup.started:
            self._queues[lookup.known].pop(lookup.host, None)
            if self._lookups.get(lookup.host) is lookup:
                del self._lookups[lookup.host]

    def _startWhatFits(self):
        # A loop, not a recursion: a start that fails ends its lookup at once.
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
        thread = threading.Thread(target=self._run, args=(lookup,),
                                  name="resmon-webhook-dns", daemon=True)
        self.running += 1
        if not lookup.known:
            self.runningUnknown += 1
        try:
            thread.start()
        except RuntimeError as e:  # no thread to be had
            self._ended(lookup, False, e, startNext=False)

    def _run(self, lookup):
        # In the lookup's thread.
        resolve = self._lookup or addresses.resolve
        try:
            result, ok = resolve(lookup.host, lookup.port), True
        except Exception as e:
            result, ok = e, False
        self.reactor.callFromThread(self._ended, lookup, ok, result)

    def _ended(self, lookup, ok, result, startNext=True):
        self.running -= 1
        if not lookup.known:
            self.runningUnknown -= 1
        host = lookup.host
        if self._lookups.get(host) is lookup:
            del self._lookups[host]
        if ok:
            self._remember(host, result, lookup.learn and not lookup.givenUp)
        else:
            self._known.pop(host, None)
        waiters, lookup.waiters = lookup.waiters, {}
        for outcome, expiry in waiters.items():
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
        if startNext:
            self._startWhatFits()

    def _remember(self, host, found, learn):
        now = self.reactor.seconds()
        if self.cacheFor > 0:
            self._answers.pop(host, None)
            self._answers[host] = (now, tuple(found))
            while len(self._answers) > self.maxNames:
                self._answers.popitem(last=False)
        if learn:
            self._known.pop(host, None)
            self._known[host] = now
            while len(self._known) > self.maxKnown:
                self._known.popitem(last=False)
