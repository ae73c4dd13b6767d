"""
The built-in sustained-load analyzer: a CPU level with hysteresis.
"""

from collections import deque

from resmon.analysis.base import Analyzer
from resmon.wire import LEVELS
DEFAULTS = {"samples": 5, "medium": 50.0, "high": 80.0, "margin": 10.0}


class SustainedLoadAnalyzer(Analyzer):
    """
    CPU level that changes only on sustained load, so it never flaps.

    The level rises only after C{samples} consecutive measures at or above
    the threshold of a higher level (C{medium}, C{high}, in percent), and
    falls only after C{samples} consecutive measures below the current
    level's threshold minus C{margin} percentage points. On the way down it
    lands on the highest level whose lowered threshold the samples still
    reach.

    Options (defaults): C{samples} (5), C{medium} (50), C{high} (80),
    C{margin} (10).
    """

    name = "sustained"

    def __init__(self):
        self.samples = DEFAULTS["samples"]
        self.enter = (float("-inf"), DEFAULTS["medium"], DEFAULTS["high"])
        self.margin = DEFAULTS["margin"]

    def configure(self, options):
        options = dict(options)
        samples = _parse(options, "samples", DEFAULTS["samples"], int, 1, 10000)
        medium = _parse(options, "medium", DEFAULTS["medium"], float, 0, 100)
        high = _parse(options, "high", DEFAULTS["high"], float, 0, 100)
        margin = _parse(options, "margin", DEFAULTS["margin"], float, 0, 100)
        if options:
            raise ValueError(f"unknown option(s) {', '.join(sorted(options))}; "
                             "known: samples, medium, high, margin")
        if not medium < high:
            raise ValueError(f"medium ({medium:g}) must be below high ({high:g})")
        if not margin < medium:
            raise ValueError(
                f"margin ({margin:g}) must be below medium ({medium:g}), "
                "or the level could never fall back")
        self.samples = samples
        self.enter = (float("-inf"), medium, high)
        self.margin = margin

    def analyze(self, measure, state):
        cpu = measure.metrics.get("cpu")
        if cpu is None:
            return None
        value = cpu["percent"]
        recent = state.get("recent")
        if recent is None or recent.maxlen != self.samples:
            recent = state["recent"] = deque(recent or (), maxlen=self.samples)
        recent.append(value)
        level = state.get("level", 0)
        if len(recent) == self.samples:
            level = self._nextLevel(level, min(recent), max(recent))
        state["level"] = level
        return {
            "level": LEVELS[level],
            "checks": {"cpu": {
                "level": LEVELS[level], "value": value,
                "message": self._message(level, value, recent),
            }},
        }

    def _exit(self, level):
        """
        The value every sample must fall below to leave C{level} downwards.
        """
        return self.enter[level] - self.margin

    def _nextLevel(self, level, lowest, highest):
        """
        The level after a full window whose samples span C{lowest} to
        C{highest}. Rising and falling exclude each other: rising needs
        C{lowest} at or above a higher threshold, falling needs C{highest}
        below a lower one.
        """
        up = [higher for higher in range(level + 1, len(LEVELS))
              if lowest >= self.enter[higher]]
        if up:
            return up[-1]
        if level > 0 and highest < self._exit(level):
            return max(lower for lower in range(level) if highest >= self._exit(lower))
        return level

    def _message(self, level, value, recent):
        text = f"CPU {value:.1f} %, {LEVELS[level]}"
        if level + 1 < len(LEVELS) and value >= self.enter[level + 1]:
            count = _trailing(recent, lambda v: v >= self.enter[level + 1])
            text += (f"; {count} of {self.samples} samples at or above "
                     f"{self.enter[level + 1]:g} %")
        elif level > 0 and value < self._exit(level):
            count = _trailing(recent, lambda v: v < self._exit(level))
            text += f"; {count} of {self.samples} samples below {self._exit(level):g} %"
        return text


def _trailing(values, predicate):
    count = 0
    for value in reversed(values):
        if not predicate(value):
            break
        count += 1
    return count


def _parse(options, key, default, kind, minimum, maximum):
    """
    Pop C{key} from C{options} as a C{kind} within bounds, or C{default}.
    """
    if key not in options:
        return default
    text = options.pop(key)
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise ValueError(
            f"{key} must be {'an integer' if kind is int else 'a number'}, not {text!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{key} must be between {minimum:g} and {maximum:g}, not {text!r}")
    return value
