"""
An example resmon analyzer plugin, distributed on its own.
"""

from resmon.analyzers.base import Analyzer, classify, parseThresholds

DEFAULT_THRESHOLDS = (20.0, 50.0)


class SwapAnalyzer(Analyzer):
    """
    Swap usage as LOW / MEDIUM / HIGH, and whether the host is swapping more.

    Options: C{thresholds}, the swap percent at which the level is MEDIUM and
    HIGH (default C{20,50}). A host without swap gets no level. The analyzer
    remembers each host's previous swap use, so its message says when swap
    use grows.
    """

    name = "swap"

    def __init__(self):
        self.thresholds = DEFAULT_THRESHOLDS

    def configure(self, options):
        options = dict(options)
        if "thresholds" in options:
            self.thresholds = parseThresholds(options.pop("thresholds"), "swap.thresholds")
        if options:
            raise ValueError(f"unknown option(s) {', '.join(sorted(options))}; known: thresholds")

    def analyze(self, measure, state):
        swap = measure.metrics.get("swap")
        if swap is None:
            return None
        if not swap.get("total"):
            return {"checks": {"swap": {"level": None, "value": None, "message": "no swap"}}}
        percent = swap["percent"]
        level = classify(percent, self.thresholds)
        message = f"swap {percent:.1f} % used"
        # Per-host state: the previous measure's swap use of this host.
        previous = state.get("used")
        state["used"] = swap["used"]
        if previous is not None and swap["used"] > previous:
            message += f", growing by {(swap['used'] - previous) / 2 ** 20:.1f} MiB"
        return {
            "level": level,
            "checks": {"swap": {"level": level, "value": percent, "message": message}},
        }
