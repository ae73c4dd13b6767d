"""
Compatibility import path: the analysis pipeline lives in
L{resmon.analysis.pipeline}. C{from resmon.pipeline import validateFindings}
is documented public API (plugins' own tests use it) and keeps working.
"""

from resmon.analysis.pipeline import validateFindings

__all__ = ["validateFindings"]
