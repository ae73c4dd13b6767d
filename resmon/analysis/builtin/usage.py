"""
The built-in usage analyzer: CPU and memory as LOW / MEDIUM / HIGH.
"""

from resmon.analysis.base import Analyzer, classify, parseThresholds, worstLevel

DEFAULT_CPU_THRESHOLDS = (25.0, 75.0)
DEFAULT_MEMORY_THRESHOLDS = (60.0, 85.0)


class UsageAnalyzer(Analyzer):
    """
    Classifies total CPU percent and memory percent.

    Options: C{cpu} and C{memory}, each C{"MEDIUM,HIGH"} thresholds in
    percent (defaults C{25,75} and C{60,85}).
    """

    name = "usage"

    def __init__(self, cpuThresholds=DEFAULT_CPU_THRESHOLDS,
                 memoryThresholds=DEFAULT_MEMORY_THRESHOLDS):
        self.thresholds = {"cpu": cpuThresholds, "memory": memoryThresholds}

    def configure(self, options):
        options = dict(options)
        for subject in ("cpu", "memory"):
            if subject in options:
                self.thresholds[subject] = parseThresholds(
                    options.pop(subject), f"usage.{subject}")
        if options:
            raise ValueError(f"unknown option(s) for 'usage': {', '.join(sorted(options))}")

    def analyze(self, measure, state):
        checks = {}
        cpu = measure.metrics.get("cpu")
        if cpu is not None:
            checks["cpu"] = self._check(cpu["percent"], "cpu")
        memory = measure.metrics.get("memory")
        if memory is not None:
            checks["memory"] = self._check(memory["percent"], "memory")
        if not checks:
            return None
        return {
            "level": worstLevel(check["level"] for check in checks.values()),
            "checks": checks,
        }

    def _check(self, value, subject):
        return {"level": classify(value, self.thresholds[subject]), "value": value}
