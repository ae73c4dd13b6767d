"""
The built-in disk analyzer: fill level per filesystem and time to full.
"""

from collections import deque

from resmon.analysis.base import Analyzer, classify, worstLevel
from resmon.wire import HIGH, MEDIUM

DEFAULTS = {"medium": 80.0, "high": 90.0, "window": 3600.0, "warn_hours": 24.0}
# Points kept per filesystem whatever the sampling interval, so the
# regression costs the same at 0.1 s as at 60 s.
MAX_POINTS = 120
HOUR = 3600.0


class DiskAnalyzer(Analyzer):
    """
    Fill level of every filesystem, and time to full from its trend.

    Each filesystem of C{metrics.disks} gets a check keyed by its mount
    point: the level from its fill percent (C{medium}, C{high}), raised to
    at least MEDIUM when the least-squares trend of its used bytes over the
    last C{window} seconds says it fills up within C{warn_hours}, and to
    HIGH within one hour. C{values["<mount>.seconds_to_full"]} holds the
    estimate, or L{None} when the filesystem is not growing or has less
    than a tenth of the window of history.

    Options (defaults): C{medium} (80), C{high} (90), C{window} (3600
    seconds), C{warn_hours} (24).
    """

    name = "disk"

    def __init__(self):
        self.thresholds = (DEFAULTS["medium"], DEFAULTS["high"])
        self.window = DEFAULTS["window"]
        self.warnSeconds = DEFAULTS["warn_hours"] * HOUR

    def configure(self, options):
        options = dict(options)
        medium = _parse(options, "medium", DEFAULTS["medium"], 0, 100)
        high = _parse(options, "high", DEFAULTS["high"], 0, 100)
        window = _parse(options, "window", DEFAULTS["window"], 1, 366 * 24 * HOUR)
        warnHours = _parse(options, "warn_hours", DEFAULTS["warn_hours"], 0, 100 * 366 * 24)
        if options:
            raise ValueError(f"unknown option(s) {', '.join(sorted(options))}; "
                             "known: medium, high, window, warn_hours")
        if not medium < high:
            raise ValueError(f"medium ({medium:g}) must be below high ({high:g})")
        self.thresholds = (medium, high)
        self.window = window
        self.warnSeconds = warnHours * HOUR

    def analyze(self, measure, state):
        disks = measure.metrics.get("disks")
        if not disks:
            return None
        series = state.setdefault("series", {})
        checks, values = {}, {}
        for disk in disks:
            mount = disk["mount"]
            secondsToFull = self._timeToFull(series, mount, measure.ts, disk)
            checks[mount] = self._check(disk, secondsToFull)
            values[f"{mount}.seconds_to_full"] = secondsToFull
        # Forget unmounted filesystems, so state stays bounded.
        if series.keys() != checks.keys():
            for mount in series.keys() - checks.keys():
                del series[mount]
        return {
            "level": worstLevel(check["level"] for check in checks.values()),
            "checks": checks,
            "values": values,
        }

    def _timeToFull(self, series, mount, ts, disk):
        if ts is None:
            return None
        history = series.get(mount)
        if history is None or (history.points and ts < history.points[-1][0]):
            # New filesystem, or the clock went back: start a new history.
            history = series[mount] = _History()
        points, used = history.points, disk["used"]
        changed = False
        if not points or ts - points[-1][0] >= self.window / MAX_POINTS:
            points.append((ts, used))
            changed = True
        while points[0][0] < ts - self.window:
            points.popleft()
            changed = True
        if changed:
            history.changed()
        count = len(points) + (points[-1][0] != ts)
        if count < 3 or ts - points[0][0] < self.window / 10:
            return None
        slope = history.slope(ts, used)
        if slope <= 0:
            return None
        return disk["free"] / slope

    def _check(self, disk, secondsToFull):
        level = classify(disk["percent"], self.thresholds)
        message = f"{disk['mount']} {disk['percent']:.1f} % full"
        if secondsToFull is not None:
            if secondsToFull < HOUR:
                level = HIGH
            elif secondsToFull < self.warnSeconds:
                level = worstLevel([level, MEDIUM])
            message += f", full in ~{formatDuration(secondsToFull)}"
        return {"level": level, "value": disk["percent"], "message": message}


class _History:
    """
    The points (time, used bytes) of one filesystem within the window, and
    the sums their least-squares line is drawn from, kept so that each
    measure costs the same whatever the length of the history: the points
    change once every C{window / MAX_POINTS} seconds, when the sums are
    taken again; a measure in between only adds its own point to them.

    Times and bytes are counted from the first point, so the sums stay
    small and the slope exact to the float's precision.
    """

    __slots__ = ("points", "_origin", "_sums")

    def __init__(self):
        self.points = deque()
        self._origin = (0.0, 0)
        self._sums = (0, 0.0, 0.0, 0.0, 0.0)

    def __len__(self):
        return len(self.points)

    def changed(self):
        """
        The points changed: take the sums again.
        """
        t0, u0 = self._origin = self.points[0]
        sums = (0, 0.0, 0.0, 0.0, 0.0)
        for t, u in self.points:
            sums = _withPoint(sums, t - t0, u - u0)
        self._sums = sums

    def slope(self, ts, used):
        """
        The least-squares slope of used bytes over time, in bytes per
        second, of the points and (C{ts}, C{used}) unless it is the last.
        """
        sums = self._sums
        if self.points[-1][0] != ts:
            t0, u0 = self._origin
            sums = _withPoint(sums, ts - t0, used - u0)
        count, st, su, stt, stu = sums
        spread = count * stt - st * st
        if spread <= 0:
            return 0.0
        return (count * stu - st * su) / spread


def _withPoint(sums, dt, du):
    """
    The least-squares sums (count, Σt, Σu, Σt², Σtu) with one more point.
    """
    count, st, su, stt, stu = sums
    return count + 1, st + dt, su + du, stt + dt * dt, stu + dt * du


def formatDuration(seconds):
    """
    A rough human duration: C{"45 s"}, C{"12 min"}, C{"3 h"}, C{"5 d"}.
    """
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * HOUR:
        return f"{seconds / HOUR:.0f} h"
    return f"{seconds / (24 * HOUR):.0f} d"


def _parse(options, key, default, minimum, maximum):
    """
    Pop C{key} from C{options} as a number within bounds, or C{default}.
    """
    if key not in options:
        return default
    text = options.pop(key)
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, not {text!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{key} must be between {minimum:g} and {maximum:g}, not {text!r}")
    return value
