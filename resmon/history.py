"""
A bounded in-memory history of every host's analyses, for clients that
connect later: one compact point per analysis, kept for a time window and up
to a number of points per host.

Each point is stored already encoded as JSON (about 150 bytes with 8 cores),
so a snapshot is a concatenation of bytes rather than a re-encoding of
hundreds of thousands of objects. C{bench/history_memory.py} measures the
cost; C{docs/protocol.md} gives the figures.
"""

import json
import math
from collections import deque

DEFAULT_WINDOW = 900.0
DEFAULT_MAX_POINTS = 1800
# A host with more cores than this keeps only the first ones in its history.
MAX_CORES = 256

_TS_PREFIX = b'{"ts":'


def _number(value, digits):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return None
    if digits is None:
        return float(value)
    rounded = round(value, digits)
    return int(rounded) if digits == 0 else rounded


def _dig(document, *path):
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def _level(value):
    return value if isinstance(value, str) and len(value) <= 16 else None


def makePoint(analysis, now):
    """
    The compact history point of one analysis document, as a dict.

    @param now: the time used when the analysis carries neither C{ts} nor
        C{analyzed_at} (a proof-of-concept measure's analysis).
    """
    # ts is kept exact: it identifies the analysis, as seq does.
    ts = _number(analysis.get("ts"), None)
    if ts is None:
        ts = _number(analysis.get("analyzed_at"), None)
    if ts is None:
        ts = now
    seq = analysis.get("seq")
    metrics = analysis.get("metrics")
    cores = _dig(metrics, "cpu", "per_core")
    disks = _dig(metrics, "disks")
    load = _dig(metrics, "load")
    diskPercents = [
        p for p in (_number(_dig(d, "percent"), 1) for d in disks) if p is not None
    ] if isinstance(disks, list) else []
    levels = analysis.get("levels")
    return {
        "ts": ts,
        "seq": seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        "cpu": _number(_dig(metrics, "cpu", "percent"), 1),
        "mem": _number(_dig(metrics, "memory", "percent"), 1),
        "cores": [_number(c, 1) for c in cores[:MAX_CORES]] if isinstance(cores, list) else [],
        "load1": _number(load[0], 2) if isinstance(load, list) and load else None,
        "disk": max(diskPercents) if diskPercents else None,
        "rx": _number(_dig(metrics, "net_io", "bytes_recv_per_s"), 0),
        "tx": _number(_dig(metrics, "net_io", "bytes_sent_per_s"), 0),
        "level": _level(analysis.get("level")),
        "levels": {
            "cpu": _level(_dig(levels, "cpu")),
            "memory": _level(_dig(levels, "memory")),
        },
    }


def encodePoint(point):
    return json.dumps(point, separators=(",", ":"), allow_nan=False).encode("utf-8")


def pointTime(encoded):
    """
    The C{ts} of an encoded point: every point starts with C{{"ts":<number>,}.
    """
    return float(encoded[len(_TS_PREFIX):encoded.index(b",", len(_TS_PREFIX))])


class _HostHistory:
    __slots__ = ("points", "lastSeen")

    def __init__(self, maxPoints, now):
        self.points = deque(maxlen=maxPoints)
        self.lastSeen = now


class FleetHistory:
    """
    The recent analyses of every host, as compact points.

    Bounds: per host, points older than C{window} seconds before the host's
    newest point are dropped, and at most C{maxPoints} are kept; a host not
    seen for C{window} seconds (by C{clock}) is forgotten by L{expire}.
    Points arrive in order of their C{ts}: an analysis older than the host's
    newest point (from a competing analyzer) is not added.

    @param window: seconds of history to keep; 0 keeps none.
    """

    def __init__(self, clock, window=DEFAULT_WINDOW, maxPoints=DEFAULT_MAX_POINTS):
        self.clock = clock
        self.window = window
        self.maxPoints = maxPoints
        self._hosts = {}
        self.counters = {"added": 0, "out-of-order": 0, "forgotten": 0}

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
            history = self._hosts[host] = _HostHistory(self.maxPoints, now)
        history.lastSeen = now
        points = history.points
        if points and pointTime(points[-1]) > point["ts"]:
            self.counters["out-of-order"] += 1
            return None
        points.append(encodePoint(point))
        oldest = point["ts"] - self.window
        while points and pointTime(points[0]) < oldest:
            points.popleft()
        self.counters["added"] += 1
        return point

    def expire(self):
        """
        Forget every host not seen for longer than the window.
        """
        limit = self.clock.seconds() - self.window
        for host in [h for h, history in self._hosts.items() if history.lastSeen < limit]:
            del self._hosts[host]
            self.counters["forgotten"] += 1

    def hosts(self):
        return sorted(self._hosts)

    def __contains__(self, host):
        return host in self._hosts

    def pointCount(self):
        return sum(len(history.points) for history in self._hosts.values())

    def encodedPoints(self, host, since=None):
        """
        The encoded points of C{host}, oldest first; only those with a C{ts}
        after C{since} if given.
        """
        history = self._hosts.get(host)
        if history is None:
            return []
        points = history.points
        if since is None:
            return list(points)
        newer = []
        for encoded in reversed(points):
            if pointTime(encoded) <= since:
                break
            newer.append(encoded)
        newer.reverse()
        return newer

    def pointsBody(self, host, since=None):
        """
        The JSON array of C{host}'s points, as bytes.
        """
        return b"[" + b",".join(self.encodedPoints(host, since)) + b"]"

    def historyBody(self, hosts, since=None):
        """
        A JSON object mapping each of C{hosts} that has history to its array
        of points, as bytes.
        """
        return b"{" + b",".join(
            _key(host) + self.pointsBody(host, since)
            for host in hosts if host in self._hosts
        ) + b"}"


def _key(host):
    return json.dumps(host).encode("utf-8") + b":"
