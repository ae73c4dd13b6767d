"""
A token bucket: allows bursts up to a size, and a sustained rate after that.
"""


class TokenBucket:
    """
    Up to C{burst} actions at once, then C{rate} per second.

    @param clock: an L{IReactorTime}, whose C{seconds()} is the time.
    @param rate: tokens added per second.
    @param burst: the most tokens held (and the bucket starts full).
    """

    def __init__(self, clock, rate, burst):
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._refilled = clock.seconds()

    def take(self):
        """
        Take one token if there is one.

        @return: whether the action may go ahead.
        """
        now = self._clock.seconds()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
