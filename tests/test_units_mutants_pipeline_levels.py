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


# The pipeline computes both levels of an analysis in one pass
# (analysisLevels): the same as the two functions that say what they mean.

from hypothesis import given, strategies as st  # noqa: E402

from resmon.analysis.base import worstLevel  # noqa: E402
from resmon.analysis.pipeline import analysisLevels, summaryLevels  # noqa: E402

_levels = st.sampled_from(["LOW", "MEDIUM", "HIGH", None])
_checks = st.dictionaries(st.sampled_from(["cpu", "memory", "disk", "swap", "load"]),
                          st.one_of(st.just({}), st.fixed_dictionaries({"level": _levels})))
_findings = st.one_of(
    st.just({"status": "error", "error": "boom"}),
    st.fixed_dictionaries({"status": st.just("ok")}, optional={"level": _levels, "checks": _checks}))


@given(st.lists(_findings, max_size=5))
def test_one_pass_gives_both_levels_as_the_two_functions_do(results):
    level, levels = analysisLevels(results)
    assert level == worstLevel(findingsLevel(r) for r in results)
    expected = summaryLevels(results)
    assert levels == expected and list(levels) == list(expected)  # the same order, too


def test_one_pass_on_examples():
    results = [{"checks": {"memory": {"level": "LOW"}, "cpu": {"level": "MEDIUM"}}},
               {"level": "LOW", "checks": {"cpu": {"level": "HIGH"}, "disk": {"level": "HIGH"}}},
               {"status": "error"}]
    assert analysisLevels(results) == ("MEDIUM", {"memory": "LOW", "cpu": "HIGH"})
    assert list(analysisLevels(results)[1]) == ["memory", "cpu"]
    assert analysisLevels([]) == (None, {})


def test_a_subject_keeps_its_place_from_its_first_check_even_without_a_level():
    results = [{"checks": {"cpu": {}}}, {"checks": {"memory": {"level": "LOW"}}},
               {"checks": {"cpu": {"level": "HIGH"}}}]
    assert list(analysisLevels(results)[1]) == ["cpu", "memory"] == list(summaryLevels(results))
