"""
Rule discovery, selection and configuration: the analyzers' machinery
(L{resmon.analysis.plugins}) for L{IRule}, plus a check of each rule's
C{patterns}.
"""

from resmon.analysis import plugins
from resmon.analysis.plugins import AnalyzerConfigurationError
from resmon.interfaces import IRule
from resmon.wire import MAX_PATTERN_LENGTH

ENTRY_POINT_GROUP = "resmon.rules"
MAX_RULE_PATTERNS = 100

# A bad --rules or --rule-option: C{option} names the option at fault.
RuleConfigurationError = AnalyzerConfigurationError


def discoverRules(ruleDirs=()):
    """
    Find every rule: entry points of the C{resmon.rules} group, then the
    drop-in files of C{ruleDirs}. A candidate whose C{patterns} are not a
    non-empty list of valid topic patterns is refused, like one failing
    C{verifyObject}.

    @return: a L{resmon.analysis.plugins.Discovery} of rules.
    """
    discovery = plugins.discoverPlugins(ruleDirs, IRule, ENTRY_POINT_GROUP, "rule")
    for found in list(discovery.analyzers):
        reason = patternsProblem(found.analyzer.patterns)
        if reason is not None:
            discovery.analyzers.remove(found)
            discovery._refuse(found.name, found.origin, reason)
    return discovery


def patternsProblem(patterns):
    """
    Why C{patterns} are not a rule's valid patterns, or L{None}.
    """
    if isinstance(patterns, str) or not isinstance(patterns, (list, tuple)) or not patterns:
        return "patterns must be a non-empty list or tuple of routing-key patterns"
    if len(patterns) > MAX_RULE_PATTERNS:
        return f"at most {MAX_RULE_PATTERNS} patterns"
    for pattern in patterns:
        if not isinstance(pattern, str) or not 0 < len(pattern) <= MAX_PATTERN_LENGTH:
            return f"pattern {pattern!r} must be a string of 1 to {MAX_PATTERN_LENGTH} characters"
        for word in pattern.split("."):
            if not word or (word not in ("*", "#") and ("*" in word or "#" in word)):
                return (f"pattern {pattern!r}: words must be non-empty, and '*' and '#' "
                        "whole words (AMQP topic syntax)")
    return None


def configureRules(discovery, selected=None, options=None):
    """
    Keep the C{selected} rules of C{discovery} (all, in discovery order, for
    L{None}) and configure them with C{options} (C{{rule: {key: value}}}).

    @return: the configured L{IRule} providers.
    @raise RuleConfigurationError: naming C{rules} or C{rule-option}.
    """
    return plugins.configureAnalyzers(discovery, selected, options)


def formatRuleList(discovery):
    """
    The text of C{--list-rules}.
    """
    return plugins.formatAnalyzerList(discovery)
