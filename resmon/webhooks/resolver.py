"""
Resolving webhook targets' names, apart from everything else.

C{getaddrinfo} blocks the thread that calls it for as long as the name's
nameservers take to answer, 30 s and more for one that never does, and
whoever registers a hook chooses its name. Run in the reactor's thread
pool, a few such names would take every one of its threads: the logins
(their password hashing runs there), every other hook's lookups and the
registrations behind them would wait as long. Here each lookup runs in a
thread of its own, at most L{DEFAULT_LOOKUPS} at once, and is given up
after a timeout: slow names hold up only other hooks' lookups (which wait
for a place, and fail after the timeout while every place is taken by a
lookup that has not returned), never logins or the reactor.
"""

import threading
from collections import Counter

from twisted.internet import defer

from resmon.webhooks import addresses

# Lookups running at once; more wait for one of them to end.
DEFAULT_LOOKUPS = 8
# Seconds a lookup (waiting for its turn included) may take.
DEFAULT_TIMEOUT = 10.0


class ResolutionTimedOut(Exception):
    """
    A name was not resolved within the resolver's timeout.
    """


class NameResolver:
    """
    C{resolve(host, port)}: a L{Deferred} of every address C{host} resolves
    to, or failing with the lookup's error, or with L{ResolutionTimedOut}.

    A lookup runs in a daemon thread, which never holds up the process's
    exit; one given up still holds its place among the L{lookups} running
    until its thread returns, so slow names cannot make threads pile up.

    @param reactor: an L{IReactorTime} and L{IReactorThreads}.
    @param lookups: how many lookups may run at once.
    @param timeout: seconds before a lookup is given up.
    @param lookup: the blocking lookup, C{(host, port)} to a list of
        addresses (default: L{addresses.resolve}, C{getaddrinfo}).
    """

    def __init__(self, reactor, lookups=DEFAULT_LOOKUPS, timeout=DEFAULT_TIMEOUT,
                 lookup=None):
        self.reactor = reactor
        self.timeout = timeout
        self.lookups = lookups
        self._lookup = lookup
        self._slots = defer.DeferredSemaphore(lookups)
        self.running = 0
        self.counters = Counter({"resolved": 0, "failed": 0, "timed-out": 0})

    def resolve(self, host, port):
        def cancelled(_):
            # Given up by the caller: a lookup still waiting for its turn never runs.
            if not turn.called:
                turn.cancel()
            if expiry.active():
                expiry.cancel()
        outcome = defer.Deferred(cancelled)
        turn = self._slots.acquire()

        def timedOut():
            if not turn.called:
                turn.cancel()  # still waiting for a place: it never runs
            if not outcome.called:
                self.counters["timed-out"] += 1
                outcome.errback(ResolutionTimedOut(
                    f"{host} did not resolve within {self.timeout:g} s"))
        expiry = self.reactor.callLater(self.timeout, timedOut)
        turn.addCallbacks(lambda _: self._start(host, port, outcome, expiry),
                          lambda failure: failure.trap(defer.CancelledError))
        return outcome

    def _start(self, host, port, outcome, expiry):
        self.running += 1
        thread = threading.Thread(target=self._run, args=(host, port, outcome, expiry),
                                  name="resmon-webhook-dns", daemon=True)
        try:
            thread.start()
        except RuntimeError as e:  # no thread to be had
            self._ended(outcome, expiry, False, e)

    def _run(self, host, port, outcome, expiry):
        # In the lookup's thread.
        lookup = self._lookup or addresses.resolve
        try:
            result, ok = lookup(host, port), True
        except Exception as e:
            result, ok = e, False
        self.reactor.callFromThread(self._ended, outcome, expiry, ok, result)

    def _ended(self, outcome, expiry, ok, result):
        self.running -= 1
        self._slots.release()
        if expiry.active():
            expiry.cancel()
        if outcome.called:
            return  # given up already
        if ok:
            self.counters["resolved"] += 1
            outcome.callback(result)
        else:
            self.counters["failed"] += 1
            outcome.errback(result)
