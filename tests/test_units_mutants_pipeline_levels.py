"""
The level of one analyzer's findings (resmon.analysis.pipeline.findingsLevel), which
the analysis's own level is the worst of: pinned down where mutation testing
(.ci/mutation.sh) found it unchecked.
"""

from resmon.analysis.pipeline import findingsLevel


def test_findings_have_their_own_level_or_the_worst_of_their_checks_or_none():
    checks = {"a": {"level": "LOW"}, "b": {"level": "HIGH"}, "c": {"level": None}, "d": {}}
    assert findingsLevel({"level": "MEDIUM", "checks": checks}) == "MEDIUM"
    assert findingsLevel({"level": None, "checks": checks}) == "HIGH"
    assert findingsLevel({"checks": {"a": {"level": "LOW"}}}) == "LOW"
    assert findingsLevel({"checks": {}}) is None and findingsLevel({}) is None
