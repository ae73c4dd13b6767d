"""
Helpers for analyzer authors: level classification and a base class.
"""

from zope.interface import implementer

from resmon.interfaces import IAnalyzer
# The levels are resmon.wire's; LEVEL_ORDER is re-exported for analyzer authors.
from resmon.wire import HIGH, LEVEL_ORDER, LOW, MEDIUM


def parseThresholds(text, name="thresholds"):
    """
    Parse C{"25,75"} into C{(25.0, 75.0)}: the MEDIUM and HIGH boundaries,
    both within 0-100 and MEDIUM below HIGH.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        medium, high = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{name} must be two numbers 'MEDIUM,HIGH' such as 25,75, not {text!r}")
    if not (0 <= medium < high <= 100):
        raise ValueError(f"{name} must satisfy 0 <= MEDIUM < HIGH <= 100, not {text!r}")
    return medium, high


def classify(value, thresholds):
    """
    C{"LOW"} below the first threshold, C{"MEDIUM"} from it to below the
    second, C{"HIGH"} from the second on.
    """
    medium, high = thresholds
    if value >= high:
        return HIGH
    if value >= medium:
        return MEDIUM
    return LOW


def worstLevel(levels):
    """
    The highest of C{levels} (ignoring L{None}), or L{None}.
    """
    worst, worstRank = None, -1
    for level in levels:
        if level in LEVEL_ORDER:
            rank = LEVEL_ORDER[level]
            if rank > worstRank:
                worst, worstRank = level, rank
    return worst


@implementer(IAnalyzer)
class Analyzer:
    """
    A convenient base for analyzers: accepts no options unless a subclass
    overrides L{configure}.
    """

    name = None

    def configure(self, options):
        if options:
            raise ValueError(f"analyzer {self.name!r} takes no options, got {sorted(options)}")

    def analyze(self, measure, state):
        raise NotImplementedError()
