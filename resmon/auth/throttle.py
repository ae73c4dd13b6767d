"""
Login attempts, rate limited per client address and per user name with a
delay that doubles with each failure; the same for names that exist and
names that do not, so the limit reveals nothing about who has an account.

The wait of a name does not hold back the addresses that name logged in
from in the last L{TRUSTED_FOR} seconds: whoever fails on purpose, once
each time the wait runs out, keeps a name's guessers waiting, not the
user at their usual machine.
"""

from collections import OrderedDict

# Failures allowed before any wait.
FREE_FAILURES = 3
FIRST_DELAY = 2.0
MAX_DELAY = 300.0
# Addresses and names remembered; the oldest are forgotten beyond this.
MAX_KEYS = 10_000
# How long a successful login from an address exempts that name and address
# from the name's wait (not from the address's).
TRUSTED_FOR = 30 * 86400.0


class _Failures:
    __slots__ = ("count", "until", "last")

    def __init__(self):
        self.count = 0
        self.until = 0.0
        self.last = 0.0


class LoginThrottle:
    """
    @param clock: an L{IReactorTime}.
    """

    def __init__(self, clock, freeFailures=FREE_FAILURES, firstDelay=FIRST_DELAY,
                 maxDelay=MAX_DELAY, maxKeys=MAX_KEYS):
        self.clock = clock
        self.freeFailures = freeFailures
        self.firstDelay = firstDelay
        self.maxDelay = maxDelay
        self.maxKeys = maxKeys
        self._failures = OrderedDict()
        # (name, address) -> when that name last logged in from there, oldest first.
        self._trusted = OrderedDict()
        self.refused = 0

    def _keys(self, address, name):
        return (("address", address), ("user", name))

    def _trustedPair(self, address, name, now):
        since = self._trusted.get((name, address))
        return since is not None and now - since <= TRUSTED_FOR

    def wait(self, address, name):
        """
        Seconds to wait before an attempt from C{address} for C{name} may be
        checked (0: now). A refused attempt is counted in C{refused}.
        """
        now = self.clock.seconds()
        keys = self._keys(address, name)
        if self._trustedPair(address, name, now):
            keys = keys[:1]  # the address's wait only
        waits = [self._failures[key].until - now for key in keys if key in self._failures]
        wait = max(waits, default=0.0)
        if wait > 0:
            self.refused += 1
            return wait
        return 0.0

    def failed(self, address, name):
        now = self.clock.seconds()
        for key in self._keys(address, name):
            failures = self._failures.pop(key, None)
            if failures is None or now - failures.last > 2 * self.maxDelay:
                failures = _Failures()
            failures.count += 1
            failures.last = now
            beyond = failures.count - self.freeFailures
            if beyond > 0:
                failures.until = now + min(self.maxDelay, self.firstDelay * 2 ** (beyond - 1))
            self._failures[key] = failures
        while len(self._failures) > self.maxKeys:
            self._failures.popitem(last=False)

    def succeeded(self, address, name):
        # The address's failures stay: logging in to one's own account
        # between guesses must not reset the limit on guessing others'.
        self._failures.pop(("user", name), None)
        self._trusted.pop((name, address), None)
        self._trusted[(name, address)] = self.clock.seconds()
        while len(self._trusted) > self.maxKeys:
            self._trusted.popitem(last=False)
