"""
The example rule, run as resmon runs it (resmon.rules.engine.RuleEngine)
with a fake clock. Run with resmon and this package installed:
python -m pytest tests/
"""

import pytest
from twisted.internet.task import Clock

from resmon import wire
from resmon.rules.engine import RuleEngine
from resmon_example_rules import PageUnlessDeploying


def event(key, payload):
    source, kind = key.split(".")
    return wire.Event(key, kind, source, "id", 0.0, "application/json", "json", payload)


def firing(host="web-01"):
    return event(f"{host}.alert", {"host": host, "check": "cpu", "state": "firing", "level": "HIGH"})


def emitted(engine, anEvent):
    return [(key, wire.decodeEventEnvelope(key, body).payload) for key, body in engine.handle(anEvent)]


@pytest.fixture
def clock():
    clock = Clock()
    clock.advance(10_000)
    return clock


def makeEngine(clock, options=None):
    rule = PageUnlessDeploying()
    rule.configure(options or {})
    return RuleEngine([rule], clock)


def test_a_firing_alert_pages(clock):
    engine = makeEngine(clock)
    [(key, page)] = emitted(engine, firing())
    assert key == "web-01.page" and page["alert"]["check"] == "cpu"


def test_a_deploy_mutes_that_host_only_for_a_while(clock):
    engine = makeEngine(clock, {"mute": "60"})
    [(key, muted)] = emitted(engine, event("web-01.event", {"deploy": "1.2.3"}))
    assert key == "web-01.muted" and muted == {"until": 10_060.0, "version": "1.2.3"}
    assert emitted(engine, firing()) == []
    assert [key for key, _ in emitted(engine, firing("db-02"))] == ["db-02.page"]
    clock.advance(60)
    assert [key for key, _ in emitted(engine, firing())] == ["web-01.page"]


def test_resolved_alerts_and_other_events_do_nothing(clock):
    engine = makeEngine(clock)
    resolved = event("web-01.alert", {"host": "web-01", "check": "cpu", "state": "resolved"})
    assert emitted(engine, resolved) == []
    assert emitted(engine, event("web-01.event", {"note": "hello"})) == []
    assert emitted(engine, event("web-01.event", "plain text")) == []


@pytest.mark.parametrize("options, error", [
    ({"mute": "soon"}, "mute: expected seconds"),
    ({"mute": "-1"}, "mute: must be between"),
    ({"mutes": "5"}, "unknown option(s) mutes"),
])
def test_bad_options(options, error):
    with pytest.raises(ValueError) as raised:
        PageUnlessDeploying().configure(options)
    assert error in str(raised.value)
