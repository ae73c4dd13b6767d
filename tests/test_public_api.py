"""
The import paths C{docs/plugins.md} gives third parties are public API: a
restructure keeps them working, naming the same objects as their new homes.
"""

import importlib


def test_analyzers_base_is_still_importable():
    from resmon.analysis import base
    from resmon.analyzers.base import Analyzer, classify, parseThresholds, worstLevel

    assert (Analyzer, classify, parseThresholds, worstLevel) == (
        base.Analyzer, base.classify, base.parseThresholds, base.worstLevel)


def test_pipeline_validateFindings_is_still_importable():
    from resmon.analysis.pipeline import validateFindings as new
    from resmon.pipeline import validateFindings

    assert validateFindings is new


def test_documented_names_exist():
    for module, name in [("resmon.interfaces", "IAnalyzer"), ("resmon.interfaces", "IBus"),
                         ("resmon.wire", "Measure"), ("resmon.wire", "LEVELS")]:
        assert getattr(importlib.import_module(module), name) is not None


def test_builtin_analyzers_registered_at_their_new_home():
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group="resmon.analyzers")
             if ep.value.startswith("resmon.")}
    assert found == {
        "usage": "resmon.analysis.builtin.usage:UsageAnalyzer",
        "sustained": "resmon.analysis.builtin.sustained:SustainedLoadAnalyzer",
        "disk": "resmon.analysis.builtin.disk:DiskAnalyzer",
    }
