"""
A bounded in-memory history of every host's analyses, for clients that
connect later: one compact point per analysis, kept for a time window and up
to a number of points per host.

Each point is stored already encoded as JSON (about 150 bytes with 8 cores),
so a snapshot is a concatenation of bytes rather than a re-encoding of
hundreds of thousands of objects; their times are kept apart in an array, so
a snapshot downsampled to one point per C{step} seconds picks its points by
bisection. An overview (C{[ts, cpu, mem]} per point) is cut out of the
encoded points' text; the overview at the default step, which every
dashboard asks for, is kept up to date as points arrive, so the default
snapshot of a whole fleet is a join. C{bench/history_memory.py} measures the
cost; C{docs/protocol.md} gives the figures.
"""

import math
from array import array
from bisect import bisect_left, bisect_right

from resmon.defaults import DEFAULT_HISTORY_POINTS as DEFAULT_MAX_POINTS  # noqa: F401 (defined here before)
from resmon.defaults import DEFAULT_HISTORY_WINDOW as DEFAULT_WINDOW  # noqa: F401 (defined here before)
from resmon.wire import (  # noqa: F401 (MAX_CORES, re-exported)
    FULL, MAX_CORES, OVERVIEW, encodePoint, historyKey, historyPoint, jsonArray, overviewPoint)

# The step of the overview a client gets by default, kept ready per host.
DEFAULT_OVERVIEW_STEP = 10.0

# The point format is resmon.wire's; the name history's callers know.
makePoint = historyPoint


def sampledIndexes(times, start, step, end=None):
    """
    The indexes from C{start} on (up to C{end}, default all) of the points
    to keep at one per C{step} seconds: the last point of each bucket
    C{[k * step, (k + 1) * step)}; every index if C{step} is 0. C{times} is
    sorted.
    """
    if end is None:
        end = len(times)
    if step <= 0:
        return range(start, end)
    kept = []
    i = end - 1
    while i >= start:
        kept.append(i)
        bucket = math.floor(times[i] / step)
        first = bisect_left(times, bucket * step, start, i)
        # Settle float rounding at the edge on the bucket numbers themselves.
        while first < i and math.floor(times[first] / step) != bucket:
            first += 1
        while first > start and math.floor(times[first - 1] / step) == bucket:
            first -= 1
        i = first - 1
    kept.reverse()
    return kept


# A point placed by receipt follows the newest one by at least this much.
MIN_RECEIPT_STEP = 0.001
# Exactly these (not bool) are numbers in a seq or ts.
_NUMBERS = (int, float)


def isLateCopy(seq, ts, newestSeq, newestTs):
    """
    Whether an analysis of C{seq} and C{ts} is a late copy of an older
    sample of a host whose newest analysis has C{newestSeq} and
    C{newestTs}: older (or the same) by both, so from the same agent run and
    the same clock (a redelivery, or competing analyzers crossing). An
    analysis older by C{ts} only is new: its agent's clock went back.
    """
    return (type(seq) in _NUMBERS and type(ts) in _NUMBERS and type(newestSeq) in _NUMBERS
            and type(newestTs) in _NUMBERS and seq <= newestSeq and ts <= newestTs)


class _HostHistory:
    __slots__ = ("points", "times", "overview", "overviewTimes", "lastSeen", "newestSeq",
                 "newestTs")

    def __init__(self, now):
        self.points = []
        self.times = array("d")
        # The overview at FleetHistory.overviewStep: the last point of each bucket.
        self.overview = []
        self.overviewTimes = array("d")
        self.lastSeen = now
        # The seq and own ts of the newest analysis added.
        self.newestSeq = None
        self.newestTs = None


class FleetHistory:
    """
    The recent analyses of every host, as compact points.

    Bounds: per host, points older than C{window} seconds before the host's
    newest point are dropped, and at most C{maxPoints} are kept; a host not
    seen for C{window} seconds (by C{clock}) is forgotten by L{expire}.

    Points are kept in order of receipt, and their times only move forward:
    a point's C{ts} is its analysis's C{ts} when that is after the host's
    newest point; otherwise (the agent's clock went back) the newest point's
    time plus the time since that point was received (by C{clock}, at least
    L{MIN_RECEIPT_STEP}), so a host whose clock went back keeps its history,
    at the pace its analyses arrive, until its C{ts} overtakes again. A late
    copy of an older sample (L{isLateCopy}: a redelivery, or competing
    analyzers crossing) is not added.

    @param window: seconds of history to keep; 0 keeps none.
    @param overviewStep: the step of the overview kept ready (0: none).
    """

    def __init__(self, clock, window=DEFAULT_WINDOW, maxPoints=DEFAULT_MAX_POINTS,
                 overviewStep=DEFAULT_OVERVIEW_STEP):
        self.clock = clock
        self.window = window
        self.maxPoints = maxPoints
        self.overviewStep = overviewStep
        self._hosts = {}
        self.counters = {"added": 0, "out-of-order": 0, "placed-by-receipt": 0, "forgotten": 0}

    def add(self, analysis):
        """
        Add the point of C{analysis} (a decoded analysis document).

        @return: the point (a dict), or L{None} if it was not kept.
        """
        if self.window <= 0 or self.maxPoints <= 0:
            return None
        now = self.clock.seconds()
        point = makePoint(analysis, now)
        host = analysis["host"]
        history = self._hosts.get(host)
        if history is None:
            history = self._hosts[host] = _HostHistory(now)
        receivedBefore, history.lastSeen = history.lastSeen, now
        points, times = history.points, history.times
        ownTs = point["ts"]
        if isLateCopy(point["seq"], ownTs, history.newestSeq, history.newestTs):
            self.counters["out-of-order"] += 1
            return None
        history.newestSeq, history.newestTs = point["seq"], ownTs
        if times and ownTs <= times[-1]:
            point["ts"] = times[-1] + max(now - receivedBefore, MIN_RECEIPT_STEP)
            self.counters["placed-by-receipt"] += 1
        encoded = encodePoint(point)
        points.append(encoded)
        times.append(point["ts"])
        drop = max(bisect_left(times, point["ts"] - self.window), len(times) - self.maxPoints)
        if drop > 0:
            del points[:drop]
            del times[:drop]
        if self.overviewStep > 0:
            self._addOverview(history, point["ts"], encoded)
        self.counters["added"] += 1
        return point

    def _addOverview(self, history, ts, encoded):
        overview, overviewTimes, step = history.overview, history.overviewTimes, self.overviewStep
        if overviewTimes and math.floor(overviewTimes[-1] / step) == math.floor(ts / step):
            overview[-1] = overviewPoint(encoded)
            overviewTimes[-1] = ts
        else:
            overview.append(overviewPoint(encoded))
            overviewTimes.append(ts)
        # A bucket whose last point is gone has no point left.
        drop = bisect_left(overviewTimes, history.times[0])
        if drop > 0:
            del overview[:drop]
            del overviewTimes[:drop]

    def expire(self):
        """
        Forget every host not seen for longer than the window.
        """
        limit = self.clock.seconds() - self.window
        for host in [h for h, history in self._hosts.items() if history.lastSeen < limit]:
            del self._hosts[host]
            self.counters["forgotten"] += 1

    def forget(self, host):
        """
        Drop the history of C{host} (forgotten before its window ended).
        """
        if self._hosts.pop(host, None) is not None:
            self.counters["forgotten"] += 1

    def hosts(self):
        return sorted(self._hosts)

    def __contains__(self, host):
        return host in self._hosts

    def pointCount(self):
        return sum(len(history.points) for history in self._hosts.values())

    def encodedPoints(self, host, since=None, step=0, until=None):
        """
        The encoded points of C{host}, oldest first; only those with a C{ts}
        after C{since} if given (and not after C{until}); at most one per
        C{step} seconds (the last of each C{step}-long bucket of time) if
        C{step} is not 0.
        """
        history = self._hosts.get(host)
        if history is None:
            return []
        points, times = history.points, history.times
        start = 0 if since is None else bisect_right(times, since)
        end = len(times) if until is None else bisect_right(times, until)
        if step <= 0:
            return points[start:end]
        return [points[i] for i in sampledIndexes(times, start, step, end)]

    def pointsBody(self, host, since=None, step=0, form=FULL, until=None):
        """
        The JSON array of C{host}'s points, as bytes: full points, or
        C{[ts,cpu,mem]} arrays if C{form} is L{OVERVIEW}; none after C{until}.
        """
        history = self._hosts.get(host)
        ready = self.overviewStep > 0 and step == self.overviewStep
        if form == OVERVIEW and ready and history is not None:
            times = history.overviewTimes
            start = 0 if since is None else bisect_right(times, since)
            end = len(times) if until is None else bisect_right(times, until)
            points = history.overview[start:end]
        else:
            points = self.encodedPoints(host, since, step, until)
            if form == OVERVIEW:
                points = [overviewPoint(p) for p in points]
        return jsonArray(points)

    def historyBody(self, hosts, since=None, step=0, form=FULL):
        """
        A JSON object mapping each of C{hosts} that has history to its array
        of points (see L{pointsBody}), as bytes.
        """
        return b"{" + b",".join(
            historyKey(host) + self.pointsBody(host, since, step, form)
            for host in hosts if host in self._hosts
        ) + b"}"

    def frozen(self, hosts, since=None, step=0, form=FULL):
        """
        The history object of L{historyBody} for C{hosts} as it is now, made
        later: C{pieces()} cuts each host's points out when asked, leaving
        out points added since (those reach the client as live events) and
        hosts forgotten since.
        """
        names, cutoffs = [], array("d")
        for host in hosts:
            history = self._hosts.get(host)
            if history is not None and history.times:
                names.append(host)
                cutoffs.append(history.times[-1])
        return _FrozenHistory(self, names, cutoffs, since, step, form)


class _FrozenHistory:
    def __init__(self, history, names, cutoffs, since, step, form):
        self._history = history
        self._names = names
        self._cutoffs = cutoffs
        self._since, self._step, self._form = since, step, form

    def pieces(self):
        yield b"{"
        first = True
        for host, until in zip(self._names, self._cutoffs):
            if host not in self._history:
                continue
            body = self._history.pointsBody(host, self._since, self._step, self._form, until)
            yield (b"" if first else b",") + historyKey(host) + body
            first = False
        yield b"}"
