"""
One decode per measure for the two consumers of an analyzer process that
judges host liveness.

The process that receives the liveness queue gets every measure of the
fleet twice: once in the analyzers' queue (its share of them) and once in
the liveness queue (all of them). Both validate a measure the same way, so
L{SharedMeasureDecoder} decodes a body once: whichever consumer receives it
first decodes it and, while the other one also receives measures, keeps the
result for it; the other takes it instead of decoding the same bytes again.
"""

from collections import OrderedDict

from resmon import wire

# Decoded measures kept for each consumer at most. In a steady flow the two
# queues deliver the same measure within a few messages of each other (64
# kept let a fifth of them be decoded twice at 5,000 measures/s; 512, none).
KEPT_MEASURES = 512
# And at most this many bytes of their bodies: a decoded measure holds up to
# about 8 times its body's size (a body of nothing but numbers), so
# measures of the largest size allowed make the kept ones hold at most about
# 4 MiB each way (a measure of 8 cores and a few disks is under 1 KiB).
KEPT_BYTES = 512 * 1024
# What is kept for a consumer that takes less than half of it is not worth
# keeping: catching up after an outage, one queue runs far ahead of the
# other; with several analyzer processes, the judge's analyzer takes only
# its share of the fleet's measures. Then keeping for that consumer stops
# for this many of its measures; then it is tried again.
PAUSE_MEASURES = 8 * KEPT_MEASURES


class _Kept:
    """
    The decoded measures kept for one consumer, oldest first, within a
    count and a size (of their bodies), and whether keeping them pays: of
    every C{size} of them taken or dropped, at least half must have been
    taken, or keeping pauses for C{pause} measures.
    """

    def __init__(self, size, maxBytes, pause):
        self.measures = OrderedDict()
        self.size = size
        self.maxBytes = maxBytes
        self.pause = pause
        self.bytes = 0
        self.paused = 0
        self._taken = 0
        self._dropped = 0

    def take(self, key):
        kept = self.measures.pop(key, None)
        if kept is None:
            return None
        self.bytes -= len(key[1])
        self._taken += 1
        self._judge()
        return kept

    def keep(self, key, measure):
        if self.paused:
            self.paused -= 1
            return
        size = len(key[1])
        if size > self.maxBytes:
            return
        measures = self.measures
        if key in measures:
            return  # the same body twice (a redelivery): once is enough
        measures[key] = measure
        self.bytes += size
        while len(measures) > self.size or self.bytes > self.maxBytes:
            dropped, _ = measures.popitem(last=False)
            self.bytes -= len(dropped[1])
            self._dropped += 1
            self._judge()

    def _judge(self):
        if self._taken + self._dropped < self.size:
            return
        worth = self._taken >= self._dropped
        self._taken = self._dropped = 0
        if not worth and self.pause:
            self.clear()
            self.paused = self.pause

    def clear(self):
        self.measures.clear()
        self.bytes = 0
        self.paused = self._taken = self._dropped = 0


class JudgedMeasure(tuple):
    """
    What the liveness judge reads of a measure the analyzer decoded: its
    host, host word, C{seq} and interval, copied when it was decoded (what
    an analyzer plugin does to the L{wire.Measure} afterwards does not reach
    the judge).
    """

    __slots__ = ()

    host = property(lambda self: self[0])
    hostWord = property(lambda self: self[1])
    seq = property(lambda self: self[2])
    interval = property(lambda self: self[3])


def _judged(measure):
    return JudgedMeasure((measure.host, measure.hostWord, measure.seq, measure.interval))


def _itself(measure):
    return measure


class SharedMeasureDecoder:
    """
    Decodes measures (L{wire.decodeMeasure}) for the analyzer
    (L{forAnalyzer}) and the liveness judge (L{forJudge}) of one process, at
    most once per body while L{sharing}.

    What one of them decoded is kept for the other under its routing key and
    its exact body, and taken at most once: a third delivery of the same
    body (a redelivery) is decoded again. A rejected body is not kept; each
    decodes it and is told why. The judge gets, of what the analyzer
    decoded, a L{JudgedMeasure}; the analyzer gets the L{wire.Measure} the
    judge decoded, which the judge only reads.

    @param clock: an L{IReactorTime}: a measure's C{ts} may be at most
        C{maxClockSkew} seconds ahead of C{clock.seconds()} when it is
        decoded (kept, it is only older when taken).
    @param maxBody: the largest body accepted, in bytes.
    @param maxClockSkew: seconds a measure's C{ts} may be ahead of the clock.
    @param kept: how many decoded measures are kept for each at most.
    @param keptBytes: how many bytes of their bodies at most.
    @param pause: for how many of its measures keeping for a consumer stops
        once it took less than half of the last C{kept} taken or dropped
        (0: it never stops).

    @ivar sharing: whether decoded measures are kept for the other; set by
        the liveness service while this process judges (otherwise only the
        analyzers' queue delivers here, and nothing would be taken).
    @ivar counters: C{decoded} (bodies decoded) and C{shared} (decodes saved).
    """

    def __init__(self, clock, maxBody=wire.DEFAULT_MAX_BODY,
                 maxClockSkew=wire.DEFAULT_MAX_CLOCK_SKEW, kept=KEPT_MEASURES,
                 keptBytes=KEPT_BYTES, pause=PAUSE_MEASURES):
        self.clock = clock
        self.maxBody = maxBody
        self.maxClockSkew = maxClockSkew
        self.sharing = False
        self.counters = {"decoded": 0, "shared": 0}
        self._forAnalyzer = _Kept(kept, keptBytes, pause)
        self._forJudge = _Kept(kept, keptBytes, pause)

    def forAnalyzer(self, routingKey, body):
        """
        The L{wire.Measure} in C{body}, received under C{routingKey}, for
        the analyzer.

        @raise wire.Rejected: for a body that is not a valid measure.
        """
        return self._decode(routingKey, body, self._forAnalyzer, self._forJudge, _judged)

    def forJudge(self, routingKey, body):
        """
        The measure in C{body}, received under C{routingKey}, for the
        liveness judge: a L{wire.Measure} or a L{JudgedMeasure}.

        @raise wire.Rejected: for a body that is not a valid measure.
        """
        return self._decode(routingKey, body, self._forJudge, self._forAnalyzer, _itself)

    def _decode(self, routingKey, body, mine, theirs, theirCopy):
        """
        What C{mine} keeps of C{body}, or C{body} decoded, and kept in
        C{theirs} (as C{theirCopy} of it) while L{sharing}.
        """
        key = (routingKey, body)
        if mine.measures:
            measure = mine.take(key)
            if measure is not None:
                self.counters["shared"] += 1
                return measure
        self.counters["decoded"] += 1
        measure = wire.decodeMeasure(routingKey, body, self.maxBody,
                                     notAfter=self.clock.seconds() + self.maxClockSkew)
        if self.sharing:
            theirs.keep(key, theirCopy(measure))
        return measure

    def stopSharing(self):
        """
        Keep nothing more, and drop what is kept: the judge no longer
        receives measures here.
        """
        self.sharing = False
        self._forAnalyzer.clear()
        self._forJudge.clear()

    def waiting(self):
        """
        How many decoded measures are kept, for the analyzer and for the
        judge.
        """
        return len(self._forAnalyzer.measures), len(self._forJudge.measures)
