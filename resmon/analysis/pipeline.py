"""
The analysis pipeline: runs every analyzer on a measure, isolated from each
other, and composes their findings into one analysis.
"""

import math
import time
import traceback
from collections import Counter

from twisted.logger import Logger

from resmon.defaults import DEFAULT_TIME_BUDGET  # noqa: F401 (defined here before)
from resmon.analysis.base import worstLevel
from resmon.ratelimit import LimitedLog
from resmon.wire import DEFAULT_FORGET_AFTER, LEVEL_ORDER, LEVELS, analysisDocument

# Failures of one analyzer logged at once, before the log keeps to one line
# every FAILURE_LOG_PERIOD seconds.
LOGGED_FAILURES = 10
FAILURE_LOG_PERIOD = 60.0
# The check subjects summarised in an analysis' C{levels}; C{cpu} is also
# the proof of concept's C{cpu_result}.
SUMMARY_SUBJECTS = ("cpu", "memory")


class InvalidFindings(ValueError):
    """
    An analyzer returned something that is not valid findings.
    """


class OverBudget(Exception):
    """
    An analyzer took longer than its time budget on one measure.
    """


def raisedAt(error):
    """
    Where C{error} was raised, as C{file:line in function}, or L{None}
    when it carries no traceback.
    """
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return None
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno} in {frame.name}"


# The keys findings and one check may have.
_FINDINGS_KEYS = frozenset({"level", "checks", "values", "messages"})
_CHECK_KEYS = frozenset({"level", "value", "message"})


def _finite(value):
    kind = type(value)
    if kind is float:
        # NaN and the infinities give NaN.
        return value - value == 0.0
    if value is None:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validateFindings(findings):
    """
    Check findings returned by an analyzer (see L{resmon.interfaces.IAnalyzer}).

    @return: a clean copy, safe to serialise.
    @raise InvalidFindings: naming what is wrong.
    """
    # Each check tests the common case first (exact types, finite floats);
    # the general check decides the rest. An analyzer runs on every measure.
    if type(findings) is not dict and not isinstance(findings, dict):
        raise InvalidFindings(f"findings must be a dict or None, not {type(findings).__name__}")
    if not findings.keys() <= _FINDINGS_KEYS:
        unknown = set(findings) - _FINDINGS_KEYS
        raise InvalidFindings(f"unknown key(s) {sorted(map(str, unknown))}")
    clean = {}
    if "level" in findings:
        level = findings["level"]
        if level is not None and level not in LEVELS:
            raise InvalidFindings(f"level must be one of {LEVELS} or None, not {level!r}")
        clean["level"] = level
    if "checks" in findings:
        checks = findings["checks"]
        if not isinstance(checks, dict):
            raise InvalidFindings("checks must be a dict")
        cleanChecks = clean["checks"] = {}
        for subject, check in checks.items():
            if not (type(subject) is str and type(check) is dict) and (
                    not isinstance(subject, str) or not isinstance(check, dict)):
                raise InvalidFindings("checks must map str subjects to dicts")
            if not check.keys() <= _CHECK_KEYS:
                raise InvalidFindings(f"check {subject!r} has unknown keys")
            level = check.get("level")
            if level is not None and level not in LEVELS:
                raise InvalidFindings(f"check {subject!r} has level {check['level']!r}")
            value = check.get("value")
            if not (value is None or (type(value) is float and value - value == 0.0)
                    or _finite(value)):
                raise InvalidFindings(f"check {subject!r} value must be a finite number or None")
            if "message" in check and not isinstance(check["message"], str):
                raise InvalidFindings(f"check {subject!r} message must be a str")
            cleanChecks[subject] = dict(check)
    if "values" in findings:
        values = findings["values"]
        if not isinstance(values, dict):
            raise InvalidFindings("values must map str to finite numbers or None")
        for key, value in values.items():
            if not (type(key) is str or isinstance(key, str)) or not (
                    value is None or (type(value) is float and value - value == 0.0)
                    or _finite(value)):
                raise InvalidFindings("values must map str to finite numbers or None")
        clean["values"] = dict(values)
    if "messages" in findings:
        messages = findings["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
            raise InvalidFindings("messages must be a list of str")
        clean["messages"] = list(messages)
    return clean


def findingsLevel(findings):
    """
    The level of one analyzer's (validated) findings: its C{level}, or when
    it gives none, the worst level of its checks, or L{None}.
    """
    if findings.get("level") is not None:
        return findings["level"]
    return worstLevel(check.get("level") for check in findings.get("checks", {}).values())


def summaryLevels(results):
    """
    The C{levels} of an analysis: for each subject of L{SUMMARY_SUBJECTS},
    the worst level of the checks of that subject among C{results}
    (validated findings); a subject no analyzer judged is left out. No
    analyzer is special, and the order they run in does not matter: the
    built-in C{usage} and C{sustained} both supply a C{cpu} check, and
    without C{usage} the CPU level is C{sustained}'s alone.
    """
    # subject -> its worst level so far (None until one is known), in the
    # order the subjects first appear.
    found = {}
    for findings in results:
        checks = findings.get("checks")
        if checks:
            _summarise(found, checks)
    return {subject: level for subject, level in found.items() if level is not None}


def _summarise(found, checks):
    """
    Take the levels of the L{SUMMARY_SUBJECTS} among C{checks} into
    C{found} (subject -> its worst level so far, L{None} until one is
    known, in the order the subjects first appear).
    """
    for subject, check in checks.items():
        if subject not in SUMMARY_SUBJECTS:
            continue
        level, worst = check.get("level"), found.get(subject)
        if level in LEVEL_ORDER and (worst is None or LEVEL_ORDER[level] > LEVEL_ORDER[worst]):
            found[subject] = level
        elif subject not in found:
            found[subject] = None


def analysisLevels(results):
    """
    The overall level of an analysis and its C{levels}, from C{results}
    (validated findings) in one pass: what
    C{worstLevel(findingsLevel(r) for r in results)} and
    L{summaryLevels}C{(results)} give.
    """
    worst, worstRank = None, -1
    found = {}
    for findings in results:
        checks = findings.get("checks")
        level = findings.get("level")
        if level is None and checks:
            level = worstLevel(check.get("level") for check in checks.values())
        if level in LEVEL_ORDER:
            rank = LEVEL_ORDER[level]
            if rank > worstRank:
                worst, worstRank = level, rank
        if checks:
            _summarise(found, checks)
    return worst, {subject: level for subject, level in found.items() if level is not None}


class _MonotonicClock:
    seconds = staticmethod(time.monotonic)


class AnalysisPipeline:
    """
    Runs analyzers over measures and builds analyses.

    An analyzer that raises, returns invalid findings or runs over its time
    budget has its entry in that analysis marked C{"status": "error"}; the
    others and the pipeline carry on. Failures are counted per analyzer in
    L{failures} and logged (the first L{LOGGED_FAILURES} per analyzer at
    once, then one every L{FAILURE_LOG_PERIOD} seconds).

    @param analyzers: L{IAnalyzer} providers, already configured.
    @param timeBudget: seconds one analyzer may take on one measure.
    @param wallClock: returns the current time (for C{analyzed_at}).
    @param timer: a monotonic clock to measure analyzer run time.
    @param forgetAfter: seconds (by C{wallClock}) without a measure of a
        host before L{forgetSilent} drops its analyzers' state.
    @param clock: an L{IReactorTime} that paces the failure log lines; by
        default the monotonic time.
    """

    log = Logger()

    def __init__(self, analyzers, timeBudget=DEFAULT_TIME_BUDGET,
                 wallClock=time.time, timer=time.perf_counter,
                 forgetAfter=DEFAULT_FORGET_AFTER, clock=None):
        self.analyzers = list(analyzers)
        self._clock = _MonotonicClock() if clock is None else clock
        self._failureLogs = {}
        self.timeBudget = timeBudget
        self.forgetAfter = forgetAfter
        self._wallClock = wallClock
        self._timer = timer
        self._state = {}
        # host -> time of its last measure, least recently seen first.
        self._lastSeen = {}
        self.forgotten = 0
        self.failures = Counter()
        # analyzer name -> seconds spent in its analyze() (runs that returned).
        self.seconds = Counter()
        # host -> names of the analyzers whose failure on it was located in the log.
        self._located = {}

    def analyze(self, measure):
        """
        Build the analysis of one decoded L{resmon.wire.Measure}.
        """
        host = measure.host
        hostState = self._state.get(host)
        if hostState is None:
            hostState = self._state[host] = {}
        lastSeen = self._lastSeen
        lastSeen.pop(host, None)
        lastSeen[host] = self._wallClock()
        results = {}
        run = self._run
        for analyzer in self.analyzers:
            name = analyzer.name
            state = hostState.get(name)
            if state is None:
                state = hostState[name] = {}
            results[name] = run(analyzer, measure, state)
        level, levels = analysisLevels(results.values())
        return analysisDocument(measure, self._wallClock(), level, levels, results)

    def _run(self, analyzer, measure, state):
        started = self._timer()
        try:
            findings = analyzer.analyze(measure, state)
        except Exception as e:
            return self._failed(analyzer, measure, e, raisedAt(e))
        elapsed = self._timer() - started
        self.seconds[analyzer.name] += elapsed
        try:
            if elapsed > self.timeBudget:
                raise OverBudget(
                    f"took {elapsed * 1000:.1f} ms, over its {self.timeBudget * 1000:.0f} ms "
                    "time budget (--time-budget)")
            if findings is None:
                return {"status": "ok"}
            result = validateFindings(findings)
        except Exception as e:
            return self._failed(analyzer, measure, e)
        result["status"] = "ok"
        return result

    def _failed(self, analyzer, measure, error, where=None):
        """
        Count and log a failure; one that C{analyzer} raised is logged with
        C{where} it was raised the first time per analyzer and host.
        """
        self.failures[analyzer.name] += 1
        count = self.failures[analyzer.name]
        reason = f"{type(error).__name__}: {error}"[:300]
        located = self._located.setdefault(measure.host, set())
        if where is not None and analyzer.name not in located:
            located.add(analyzer.name)
            self.log.error(
                "analyzer {analyzer} raised on {host} (failure #{count}): {reason} (at {where})",
                analyzer=analyzer.name, host=measure.host, count=count, reason=reason,
                where=where)
            return {"status": "error", "error": reason}
        if analyzer.name not in self._failureLogs:
            self._failureLogs[analyzer.name] = LimitedLog(
                self._clock, rate=1 / FAILURE_LOG_PERIOD, burst=LOGGED_FAILURES)
        self._failureLogs[analyzer.name].error(
            self.log, "analyzer {analyzer} failed on {host} (failure #{count}): {reason}",
            analyzer=analyzer.name, host=measure.host, count=count, reason=reason)
        return {"status": "error", "error": reason}

    def forgetHost(self, host):
        """
        Drop the per-host state of C{host}.
        """
        self._state.pop(host, None)
        self._lastSeen.pop(host, None)
        self._located.pop(host, None)

    def forgetSilent(self):
        """
        Drop the state of every host without a measure for more than
        C{forgetAfter} seconds.

        @return: how many hosts were forgotten.
        """
        limit = self._wallClock() - self.forgetAfter
        silent = []
        for host, seen in self._lastSeen.items():
            if seen >= limit:
                break  # the others were seen later
            silent.append(host)
        for host in silent:
            self.forgetHost(host)
        self.forgotten += len(silent)
        return len(silent)

    def hostCount(self):
        """
        How many hosts this pipeline keeps state for.
        """
        return len(self._state)
