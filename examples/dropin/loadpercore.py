"""
A single-file resmon analyzer: the 1-minute load average per CPU core.

Copy this file into a plugin directory and start resmon with
C{--plugin-dir DIRECTORY}; C{twistd resmon --plugin-dir DIRECTORY
--list-analyzers} shows it. It uses nothing of resmon but the interface, to
show the whole contract.
"""

from zope.interface import implementer

from resmon.interfaces import IAnalyzer


@implementer(IAnalyzer)
class LoadPerCoreAnalyzer:
    """
    The 1-minute load average divided by the number of CPU cores.

    Options: C{medium} and C{high}, the load per core at which the level is
    MEDIUM and HIGH (defaults 0.7 and 1.0: at 1.0 every core is busy and
    more work is waiting).
    """

    name = "loadpercore"

    def __init__(self):
        self.medium, self.high = 0.7, 1.0

    def configure(self, options):
        options = dict(options)
        medium = self._number(options.pop("medium", self.medium), "medium")
        high = self._number(options.pop("high", self.high), "high")
        if options:
            raise ValueError(f"unknown option(s) {', '.join(sorted(options))}; known: medium, high")
        if not 0 < medium < high:
            raise ValueError(f"need 0 < medium < high, not medium={medium:g} high={high:g}")
        self.medium, self.high = medium, high

    def analyze(self, measure, state):
        load = measure.metrics.get("load")
        cores = len(measure.metrics.get("cpu", {}).get("per_core", []))
        if load is None or cores == 0:
            # Nothing to say: this agent sends no load or no per-core CPU.
            return None
        perCore = load[0] / cores
        if perCore >= self.high:
            level = "HIGH"
        elif perCore >= self.medium:
            level = "MEDIUM"
        else:
            level = "LOW"
        return {
            "level": level,
            "checks": {"load_per_core": {
                "level": level,
                "value": round(perCore, 3),
                "message": f"load {load[0]:.2f} on {cores} cores",
            }},
        }

    @staticmethod
    def _number(text, key):
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, not {text!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{key} must be finite, not {text!r}")
        return value
