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


class LimitedLog:
    """
    Warnings about misbehaving peers, at most C{burst} at once and C{rate} a
    second after that: a thousand flooding clients must not flood the log.
    The lines held back are counted, and the next line logged says how many.

    @param clock: an L{IReactorTime}.
    """

    def __init__(self, clock, rate=1 / 6, burst=10):
        self._bucket = TokenBucket(clock, rate, burst)
        self.suppressed = 0

    def warn(self, logger, format, **fields):
        """
        C{logger.warn(format, **fields)} unless too many lines came lately.

        @return: whether the line was logged.
        """
        return self._emit(logger.warn, format, fields, "warnings")

    def error(self, logger, format, **fields):
        """
        C{logger.error(format, **fields)}, limited like L{warn}.

        @return: whether the line was logged.
        """
        return self._emit(logger.error, format, fields, "errors")

    def _emit(self, emit, format, fields, kind):
        if not self._bucket.take():
            self.suppressed += 1
            return False
        if self.suppressed:
            format += f" ({{suppressed}} similar {kind} not logged before this one)"
            fields["suppressed"] = self.suppressed
            self.suppressed = 0
        emit(format, **fields)
        return True
