"""
Compatibility import path: L{resmon.analysis.base} is the home of these
helpers. C{from resmon.analyzers.base import Analyzer, classify,
parseThresholds} is documented public API and keeps working.
"""

from resmon.analysis.base import Analyzer, classify, parseThresholds, worstLevel

__all__ = ["Analyzer", "classify", "parseThresholds", "worstLevel"]
