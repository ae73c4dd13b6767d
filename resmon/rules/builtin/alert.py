"""
The C{alert} rule: analyses and statuses in, C{<host>.alert} events out.
"""

from zope.interface import implementer

from resmon import topics, wire
from resmon.interfaces import IRule

FIRING, RESOLVED = "firing", "resolved"
OFFLINE_CHECK = "offline"
DEFAULTS = {"threshold": wire.HIGH, "for": 60.0, "clear": 60.0}


@implementer(IRule)
class AlertRule:
    """
    Fires an alert when a check stays at or above a level for a while, resolves it when it stays below.

    For each host and check (the C{levels} of its analyses and the subjects
    of their analyzers' checks, the worst level of each), an alert fires
    once the level has been at or above C{threshold} (default HIGH) for
    C{for} seconds (default 60), and resolves once it has been below for
    C{clear} seconds (default 60): a value hovering at the line does not
    flap. A host going C{offline} fires the C{offline} check at once; it
    resolves when the host is C{online} again (or forgotten). Each change
    is an event under C{<host>.alert}: C{host}, C{check}, C{state}
    (C{firing} or C{resolved}), C{level}, C{since} (when the level crossed
    the line) and C{value}.

    Options: C{threshold}, C{for}, C{clear}, and the same per check as
    C{<check>.<option>} (C{cpu.for=30}, C{/var.threshold=MEDIUM}).
    """

    name = "alert"
    patterns = ("*." + topics.ANALYSIS, "*." + topics.STATUS)

    def __init__(self):
        self.defaults = dict(DEFAULTS)
        self.perCheck = {}

    def configure(self, options):
        defaults, perCheck = dict(DEFAULTS), {}
        for key, value in options.items():
            check, dot, option = key.rpartition(".")
            if option not in DEFAULTS:
                raise ValueError(f"unknown option {key!r}; options are threshold, for and clear, "
                                 "or <check>.threshold, <check>.for and <check>.clear")
            parsed = _parse(option, value, key)
            if dot:
                perCheck.setdefault(check, {})[option] = parsed
            else:
                defaults[option] = parsed
        self.defaults, self.perCheck = defaults, perCheck

    def setting(self, check, option):
        return self.perCheck.get(check, {}).get(option, self.defaults[option])

    def check(self, event, state):
        return event.kind in (topics.ANALYSIS, topics.STATUS) and isinstance(event.payload, dict)

    def action(self, event, state, act):
        document = event.payload
        host = document.get("host") or event.source
        now = act.now()
        if event.kind == topics.STATUS:
            status = document.get("status")
            if status == wire.OFFLINE:
                self._firing(state, host, OFFLINE_CHECK, wire.HIGH, None, now, act, force=True)
            elif status in (wire.ONLINE, wire.FORGOTTEN):
                self._below(state, host, OFFLINE_CHECK, None, None, now, act, force=True)
            return
        for check, (level, value) in checkLevels(document).items():
            threshold = self.setting(check, "threshold")
            if level is not None and wire.LEVEL_ORDER[level] >= wire.LEVEL_ORDER[threshold]:
                self._firing(state, host, check, level, value, now, act)
            else:
                self._below(state, host, check, level, value, now, act)

    def _firing(self, state, host, check, level, value, now, act, force=False):
        entry = state.setdefault(check, {"firing": False, "above": None, "below": None})
        entry["below"] = None
        if entry["above"] is None:
            entry["above"] = now
        if not entry["firing"] and (force or now - entry["above"] >= self.setting(check, "for")):
            entry["firing"] = True
            act.emit(f"{topics.hostWord(host)}.{topics.ALERT}", _alert(
                host, check, FIRING, level, entry["above"], value))

    def _below(self, state, host, check, level, value, now, act, force=False):
        entry = state.get(check)
        if entry is None:
            return
        entry["above"] = None
        if not entry["firing"]:
            del state[check]
            return
        if entry["below"] is None:
            entry["below"] = now
        if force or now - entry["below"] >= self.setting(check, "clear"):
            since = entry["below"]
            del state[check]
            act.emit(f"{topics.hostWord(host)}.{topics.ALERT}", _alert(
                host, check, RESOLVED, level, since, value))


def checkLevels(analysis):
    """
    C{{check: (level, value)}} of an analysis: its C{levels}, and the
    subjects of every analyzer's checks, each with its worst level and
    that check's value.
    """
    found = {}
    for analyzer in (analysis.get("analyses") or {}).values():
        if not isinstance(analyzer, dict):
            continue
        for subject, check in (analyzer.get("checks") or {}).items():
            if not isinstance(check, dict):
                continue
            level, value = check.get("level"), check.get("value")
            if level not in wire.LEVEL_ORDER:
                level = None
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                value = None
            current = found.get(subject)
            if current is None or _rank(level) > _rank(current[0]):
                found[subject] = (level, value)
    for subject, level in (analysis.get("levels") or {}).items():
        if level in wire.LEVEL_ORDER and _rank(level) > _rank(found.get(subject, (None,))[0]):
            found[subject] = (level, found.get(subject, (None, None))[1])
    return found


def _rank(level):
    return -1 if level is None else wire.LEVEL_ORDER[level]


def _alert(host, check, state, level, since, value):
    return {"host": host, "check": check, "state": state, "level": level, "since": since,
            "value": value}


def _parse(option, value, key):
    if option == "threshold":
        level = value.strip().upper()
        if level not in wire.LEVELS:
            raise ValueError(f"{key}: expected one of {', '.join(wire.LEVELS)}, not {value!r}")
        return level
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{key}: expected seconds, not {value!r}")
    if not 0 <= seconds <= 7 * 86400:
        raise ValueError(f"{key}: must be between 0 and 604800 seconds, not {value!r}")
    return seconds
