"""
The built-in alert rule, with a fake Clock: fires after `for` seconds at or
above the threshold, resolves after `clear` seconds below (no flapping),
offline fires at once; options per check. The real process:
test_integration_alerts.py.
"""

import pytest
from twisted.internet.task import Clock

from resmon import wire
from resmon.rules.builtin.alert import AlertRule, checkLevels
from resmon.rules.engine import RuleEngine


def analysis(host="web.01", cpu="LOW", memory="LOW", disk=None, value=50.0):
    document = {"v": 1, "kind": "analysis", "host": host, "ts": 1.0,
                "levels": {"cpu": cpu, "memory": memory},
                "analyses": {"usage": {"status": "ok", "checks": {
                    "cpu": {"level": cpu, "value": value},
                    "memory": {"level": memory, "value": 10.0}}}}}
    if disk is not None:
        document["analyses"]["disk"] = {"status": "ok", "checks": {"/var": {"level": disk, "value": 95.0}}}
    return document


def asEvent(document):
    kind = document["kind"]
    return wire.Event(f"web_01.{kind}", kind, "web_01", None, 1.0, "application/json", "json",
                      document)


class Alerts:
    def __init__(self, options=None):
        self.clock = Clock()
        self.clock.advance(1000)
        rule = AlertRule()
        rule.configure(options or {})
        self.engine = RuleEngine([rule], self.clock)

    def at(self, seconds, document):
        """
        Feed C{document} at 1000 + C{seconds}; the alerts emitted, decoded.
        """
        self.clock.advance(1000 + seconds - self.clock.seconds())
        return [(key, wire.decodeEventEnvelope(key, body).payload)
                for key, body in self.engine.handle(asEvent(document))]


def test_fires_after_for_seconds_at_or_above_the_threshold_and_resolves_after_clear():
    alerts = Alerts({"for": "60", "clear": "30"})
    assert alerts.at(0, analysis(cpu="HIGH", value=95.0)) == []
    assert alerts.at(59, analysis(cpu="HIGH", value=96.0)) == []
    [(key, fired)] = alerts.at(60, analysis(cpu="HIGH", value=97.0))
    assert key == "web_01.alert"
    assert fired == {"host": "web.01", "check": "cpu", "state": "firing", "level": "HIGH",
                     "since": 1000.0, "value": 97.0}
    assert alerts.at(61, analysis(cpu="HIGH")) == []  # fires once
    assert alerts.at(70, analysis(cpu="LOW", value=10.0)) == []
    assert alerts.at(99, analysis(cpu="MEDIUM", value=60.0)) == []
    [(_, resolved)] = alerts.at(100, analysis(cpu="LOW", value=5.0))
    assert resolved == {"host": "web.01", "check": "cpu", "state": "resolved", "level": "LOW",
                        "since": 1070.0, "value": 5.0}
    assert alerts.at(200, analysis()) == []


def test_a_value_hovering_at_the_line_does_not_flap():
    alerts = Alerts({"for": "10", "clear": "10"})
    emitted = []
    for second in range(0, 120, 2):
        level = "HIGH" if (second // 2) % 2 else "MEDIUM"
        emitted += alerts.at(second, analysis(cpu=level))
    assert emitted == []  # never 10 s on either side
    for second in range(120, 140, 2):
        emitted += alerts.at(second, analysis(cpu="HIGH"))
    assert [alert["state"] for _, alert in emitted] == ["firing"]
    for second in range(140, 160, 2):
        level = "HIGH" if (second // 2) % 2 else "MEDIUM"
        emitted += alerts.at(second, analysis(cpu=level))
    assert [alert["state"] for _, alert in emitted] == ["firing"]  # still firing, no flap


def test_offline_fires_at_once_and_resolves_when_online():
    alerts = Alerts()
    [(key, fired)] = alerts.at(0, wire.statusDocument("web.01", "offline", 1000.0, 990.0, 4))
    assert (key, fired["check"], fired["state"], fired["level"]) == (
        "web_01.alert", "offline", "firing", "HIGH")
    assert alerts.at(1, wire.statusDocument("web.01", "stale", 1000.0, 990.0, 4)) == []
    assert alerts.at(2, wire.statusDocument("web.01", "offline", 1000.0, 990.0, 4)) == []
    [(_, resolved)] = alerts.at(5, wire.statusDocument("web.01", "online", 1005.0, 1005.0, 5))
    assert (resolved["check"], resolved["state"]) == ("offline", "resolved")
    assert alerts.at(6, wire.statusDocument("web.01", "online", 1006.0, 1006.0, 6)) == []


def test_options_per_check_and_analyzer_checks():
    alerts = Alerts({"for": "100", "cpu.for": "0", "/var.threshold": "MEDIUM", "/var.for": "5"})
    [(_, cpu)] = alerts.at(0, analysis(cpu="HIGH", disk="MEDIUM"))
    assert cpu["check"] == "cpu"
    [(_, disk)] = alerts.at(5, analysis(cpu="HIGH", disk="MEDIUM"))
    assert (disk["check"], disk["level"], disk["value"]) == ("/var", "MEDIUM", 95.0)
    # memory at MEDIUM is below the default HIGH: nothing.
    assert alerts.at(500, analysis(cpu="HIGH", memory="MEDIUM", disk="MEDIUM")) == []


@pytest.mark.parametrize("options, error", [
    ({"after": "1"}, "unknown option 'after'"),
    ({"for": "soon"}, "for: expected seconds"),
    ({"cpu.threshold": "URGENT"}, "cpu.threshold: expected one of LOW, MEDIUM, HIGH"),
    ({"clear": "-1"}, "clear: must be between 0"),
])
def test_bad_options_are_refused(options, error):
    with pytest.raises(ValueError) as raised:
        AlertRule().configure(options)
    assert error in str(raised.value)


def test_check_levels_take_the_worst_of_levels_and_checks():
    document = analysis(cpu="MEDIUM")
    document["analyses"]["sustained"] = {"status": "ok", "checks": {"cpu": {"level": "HIGH", "value": 88.0}}}
    document["analyses"]["broken"] = {"status": "error", "error": "x"}
    levels = checkLevels(document)
    assert levels["cpu"] == ("HIGH", 88.0) and levels["memory"] == ("LOW", 10.0)
    assert checkLevels({"levels": {"cpu": "HIGH"}}) == {"cpu": ("HIGH", None)}
