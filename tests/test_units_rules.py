"""
Unit tests of events and rules: the event envelope (resmon.wire), the POST
resource, the rule engine's isolation, state, chain limit and rate limit,
the rules service, discovery and options, with fakes (FakeBus, Clock,
DummyRequest). The real broker and processes: test_integration_rules.py.
"""

import base64
import io
import json

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from fakebus import SettlingBus
from resmon import wire
from resmon.bus.delivery import Retry
from resmon.interfaces import IRule
from resmon.rules import discovery
from resmon.rules.engine import RuleEngine
from resmon.services.rules import RulesService
from resmon.webserver.events import EventsResource


def envelope(source="deploys", kind="event", **changes):
    document = wire.eventDocument(source, kind, 100.0, "id-1", "application/json", "json",
                                  {"a": 1})
    document.update(changes)
    return json.dumps(document).encode()


# The envelope


@pytest.mark.parametrize("contentType, body, encoding, payload", [
    ("application/json", b'{"version": "1.2"}', "json", {"version": "1.2"}),
    ("application/json; charset=utf-8", b"[1, 2]", "json", [1, 2]),
    ("application/vnd.x+json", b"3", "json", 3),
    ("application/json", b"{not json", "text", "{not json"),
    ("text/plain", b"done\n", "text", "done\n"),
    ("text/csv", b"a,b\n1,2\n", "text", "a,b\n1,2\n"),
    ("application/xml", b"<a/>", "text", "<a/>"),
    ("application/x-www-form-urlencoded", b"a=1&b=2", "text", "a=1&b=2"),
    ("text/plain", b"\xff\xfe", "base64", "//4="),
    ("application/octet-stream", b"\x00\x01", "base64", "AAE="),
    (None, b"anything", "base64", base64.b64encode(b"anything").decode()),
])
def test_a_body_becomes_an_envelope_by_its_content_type(contentType, body, encoding, payload):
    encoded = wire.encodeEventFromBody("src", body, contentType, 10.0, "abc")
    event = wire.decodeEventEnvelope("src.event", encoded)
    assert (event.encoding, event.payload, event.source, event.kind, event.id, event.ts) == (
        encoding, payload, "src", "event", "abc", 10.0)
    assert event.data == body or encoding == "json"
    assert event.chain == wire.Chain((), 0)


def test_a_payload_that_would_grow_past_the_limit_goes_in_base64():
    body = "\u0001".encode() * 10_000  # 6 bytes each as JSON text
    event = wire.decodeEventEnvelope(
        "s.event", wire.encodeEventFromBody("s", body, "text/plain", 1.0, "x"), maxBody=10_000)
    assert event.encoding == "base64" and event.data == body


@pytest.mark.parametrize("name, word", [
    ("deploys", "deploys"), ("cron job", "cron_job"), ("a.b*c", "a_b_c"), ("ci-01_x", "ci-01_x")])
def test_sources_are_sanitized_as_host_names(name, word):
    assert wire.eventSource(name) == word


@pytest.mark.parametrize("name", ["", "...", "*#", "x" * 65, " "])
def test_a_source_that_cannot_be_a_word_is_rejected(name):
    with pytest.raises(wire.Rejected) as raised:
        wire.eventSource(name)
    assert raised.value.reason == "source"


@pytest.mark.parametrize("key, body, reason", [
    ("a.event", b"junk", "json"),
    ("a.event", envelope(v=2), "version"),
    ("a.event", envelope(source="a", kind="alert"), "kind"),
    ("a.event", envelope(source="b"), "routing-key"),
    ("a.event", envelope(source="a", id=None), "type"),
    ("a.event", envelope(source="a", id="x" * 65), "range"),
    ("a.event", envelope(source="a", ts=-1), "range"),
    ("a.event", envelope(source="a", encoding="rot13"), "type"),
    ("a.event", envelope(source="a", encoding="text", payload=3), "type"),
    ("a.event", envelope(source="a", encoding="base64", payload="!!"), "encoding"),
    ("a.event", envelope(source="a", chain={"rules": [3], "depth": 1}), "type"),
    ("a.event", envelope(source="a", chain={"rules": [], "depth": -1}), "type"),
    ("a.event", envelope(source="a", chain={"rules": [], "depth": 9}), "chain-limit"),
    ("a.event", envelope(source="a", extra=1), "shape"),
    ("a.measure", envelope(source="a", kind="measure"), "routing-key"),
    ("a.b.event", envelope(source="a"), "routing-key"),
])
def test_junk_envelopes_are_rejected_with_a_reason(key, body, reason):
    with pytest.raises(wire.Rejected) as raised:
        wire.decodeEventEnvelope(key, body, maxChain=8)
    assert raised.value.reason == reason


def test_analyses_statuses_and_measures_are_events_too():
    analysis = {"v": 1, "kind": "analysis", "host": "web.01", "ts": 5.0, "level": "LOW"}
    event = wire.decodeBusEvent("web_01.analysis", json.dumps(analysis).encode())
    assert (event.kind, event.source, event.ts, event.payload["host"], event.id) == (
        "analysis", "web_01", 5.0, "web.01", None)
    status = wire.encodeStatus("h", "offline", 7.0, 6.0, 3)
    assert wire.decodeBusEvent("h.status", status).payload["status"] == "offline"
    legacy = wire.decodeBusEvent("poc.analysis", b'{"cpu_result": "HIGH"}', receivedAt=9.0)
    assert (legacy.payload["levels"], legacy.payload["analyzed_at"], legacy.source) == (
        {"cpu": "HIGH"}, 9.0, "poc")
    measure = wire.encodeMeasure("h", 1, 2.0, 1.0, {"cpu": {"percent": 5.0}})
    assert wire.decodeBusEvent("h.measure", measure).payload["metrics"]["cpu"]["percent"] == 5.0


@pytest.mark.parametrize("key", ["a.analysis", "a.status", "a.measure", "a", "a.b.c", "a*.x", "a.x y"])
def test_rules_cannot_emit_under_resmons_own_kinds_or_bad_keys(key):
    with pytest.raises(wire.Rejected):
        wire.checkEmittedKey(key)


# POST /api/events/<source>


ConfirmingBus = SettlingBus


def postEvent(resource, source, body, contentType=b"application/json"):
    request = DummyRequest([source])
    request.method = b"POST"
    request.requestHeaders.setRawHeaders(b"content-type", [contentType])
    request.content = io.BytesIO(body)
    result = resource.render(request)
    if result is not NOT_DONE_YET:
        request.write(result)
        request.finish()
    return request


def answer(request):
    return request.responseCode or 200, json.loads(b"".join(request.written))


def test_a_posted_event_is_answered_202_only_once_the_bus_confirmed_it():
    bus, clock = ConfirmingBus(), Clock()
    clock.advance(1000)
    resource = EventsResource(bus, clock, maxBody=100, newId=lambda: "the-id")
    request = postEvent(resource, b"deploys", b'{"v": "1"}')
    assert request.written == [] and not request.finished
    [(key, body, d)] = bus.published
    event = wire.decodeEventEnvelope(key, body)
    assert (key, event.id, event.ts, event.payload) == ("deploys.event", "the-id", 1000.0, {"v": "1"})
    d.callback(None)
    assert answer(request) == (202, {"id": "the-id"})


def test_the_bus_refusing_or_away_is_a_503_with_retry_after():
    bus = ConfirmingBus()
    resource = EventsResource(bus, Clock(), retryAfter=7)
    request = postEvent(resource, b"x", b"1")
    bus.published[0][2].errback(RuntimeError("nacked"))
    assert answer(request)[0] == 503
    assert request.responseHeaders.getRawHeaders(b"retry-after") == [b"7"]
    bus.connected = False
    request = postEvent(resource, b"x", b"1")
    code, body = answer(request)
    assert code == 503 and "not connected" in body["error"] and len(bus.published) == 1
    assert request.responseHeaders.getRawHeaders(b"retry-after") == [b"7"]


def test_a_client_gone_before_the_confirm_gets_nothing_written():
    bus = ConfirmingBus()
    request = postEvent(EventsResource(bus, Clock()), b"x", b"1")
    # The connection is lost: DummyRequest fails what notifyFinish returned.
    for d in request._finishedDeferreds:
        d.errback(RuntimeError("connection lost"))
    request._finishedDeferreds = []
    bus.published[0][2].callback(None)
    assert request.written == []


def test_bad_sources_and_large_bodies_are_refused():
    bus = ConfirmingBus()
    resource = EventsResource(bus, Clock(), maxBody=10)
    code, body = answer(postEvent(resource, b"...", b"1"))
    assert code == 400 and body["source"] == "..." and body["error"].startswith("source:")
    assert answer(postEvent(resource, b"\xff", b"1"))[0] == 400
    assert answer(postEvent(resource, b"ok", b"x" * 11))[0] == 413
    assert bus.published == []


# The engine


@implementer(IRule)
class Recorder:
    def __init__(self, name="rec", patterns=("*.event",), emit=None, fail=None, applies=True):
        self.name, self.patterns = name, patterns
        self.emitKey, self.fail, self.applies = emit, fail, applies
        self.seen = []

    def configure(self, options):
        pass

    def check(self, event, state):
        if self.fail == "check":
            raise ValueError("bad check")
        return self.applies

    def action(self, event, state, act):
        state["n"] = state.get("n", 0) + 1
        self.seen.append((event.key, state["n"]))
        if self.fail == "action":
            act.emit("x.event", {})
            raise KeyError("bad action")
        if self.emitKey:
            act.emit(self.emitKey, {"n": state["n"]})


def event(key="a.event", depth=0, payload=None):
    source, kind = key.split(".")
    return wire.Event(key, kind, source, "i", 1.0, "application/json", "json", payload,
                      wire.Chain(("r",) * min(depth, 3), depth))


@pytest.fixture
def logged(monkeypatch):
    events = []
    monkeypatch.setattr(RuleEngine, "log", Logger(observer=events.append))
    return events


def test_state_is_per_rule_and_source_and_only_matching_rules_run():
    first, second, other = Recorder("a"), Recorder("b"), Recorder("c", patterns=("*.alert",))
    engine = RuleEngine([first, second, other], Clock())
    for key in ("x.event", "x.event", "y.event", "x.alert"):
        engine.handle(event(key))
    assert first.seen == second.seen == [("x.event", 1), ("x.event", 2), ("y.event", 1)]
    assert other.seen == [("x.alert", 1)]
    assert engine.patterns() == ["*.event", "*.alert"]
    both = Recorder("both", patterns=("#",))
    engine = RuleEngine([both], Clock())
    for key in ("x.event", "x.alert", "y.event"):
        engine.handle(event(key))
    assert both.seen == [("x.event", 1), ("x.alert", 2), ("y.event", 1)]


def test_a_failing_rule_is_logged_once_per_kind_counted_and_stops_nothing(logged):
    good = Recorder("good", emit="out.event")
    engine = RuleEngine([Recorder("checks", fail="check"), Recorder("acts", fail="action"), good],
                        Clock())
    for _ in range(3):
        emitted = engine.handle(event())
        # What the failing action asked for before raising is dropped.
        assert [key for key, _ in emitted] == ["out.event"]
    assert len(good.seen) == 3
    assert engine.failures == {("checks", "check-error"): 3, ("acts", "action-error"): 3}
    lines = [e["log_format"].format(**e) for e in logged if e["log_level"].name == "error"]
    assert len(lines) == 2
    assert "rule checks failed (check-error)" in lines[0] and "ValueError: bad check" in lines[0]


def test_an_over_budget_rule_has_its_effects_dropped():
    ticks = iter(range(100))
    engine = RuleEngine([Recorder("slow", emit="o.event")], Clock(), timeBudget=0.5,
                        timer=lambda: next(ticks))
    assert engine.handle(event()) == []
    assert engine.failures == {("slow", "over-budget"): 1}


def test_emitted_events_carry_the_chain_and_stop_at_the_limit(logged):
    clock = Clock()
    clock.advance(50)
    engine = RuleEngine([Recorder("r1", emit="out.thing")], clock, maxChain=3, newId=lambda: "n")
    [(key, body)] = engine.handle(event(depth=2))
    out = wire.decodeEventEnvelope(key, body)
    assert (out.kind, out.source, out.ts, out.id, out.payload) == ("thing", "out", 50.0, "n", {"n": 1})
    assert out.chain == wire.Chain(("r", "r", "r1"), 3)
    assert engine.handle(event(depth=3)) == []
    assert engine.counters["chain-limit"] == 1
    assert any("chain depth 4 is over --max-chain 3" in e["log_format"].format(**e)
               for e in logged)


def test_emission_is_rate_limited_per_rule_with_a_log_line(logged):
    clock = Clock()
    noisy, quiet = Recorder("noisy", emit="n.event"), Recorder("quiet", emit="q.event")
    engine = RuleEngine([noisy, quiet], clock, emitRate=1, emitBurst=2)
    keys = [key for _ in range(4) for key, _ in engine.handle(event())]
    assert keys == ["n.event", "q.event", "n.event", "q.event"]
    assert engine.counters["rate-limited"] == 4
    clock.advance(1)
    assert [key for key, _ in engine.handle(event())] == ["n.event", "q.event"]
    lines = [e["log_format"].format(**e) for e in logged]
    assert any("rule noisy emits faster than its limit of 1 events/s" in line for line in lines)
    assert any("rule quiet emits faster" in line for line in lines)


def test_state_is_bounded_by_sources():
    rule = Recorder()
    engine = RuleEngine([rule], Clock(), maxKeys=2)
    for key in ("a.event", "b.event", "c.event", "a.event"):
        engine.handle(event(key))
    assert rule.seen[-1] == ("a.event", 1) and engine.counters["state-evicted"] == 2


# The service


def test_the_service_acks_after_the_emitted_events_are_confirmed_and_counts_junk():
    bus, clock = ConfirmingBus(), Clock()
    service = RulesService(bus, RuleEngine([Recorder(emit="o.event")], clock), clock, queue="q")
    service.startService()
    subscription = bus.last
    assert subscription.patterns == ["*.event"]
    assert subscription.options["queue"] == "q" and subscription.options["durable"]
    assert subscription.handler("j.event", b"junk") is None
    assert service.rejected == {"json": 1}
    done = subscription.handler("a.event", envelope(source="a"))
    results = []
    done.addBoth(results.append)
    assert results == []
    bus.published[0][2].callback(None)
    assert results == [None] and service.counters["published"] == 1
    failed = subscription.handler("a.event", envelope(source="a"))
    bus.published[1][2].errback(RuntimeError("nacked"))
    failures = []
    failed.addErrback(failures.append)
    assert failures[0].check(Retry)
    service.stopService()


# Discovery and options


def test_rules_are_discovered_as_analyzers_are_and_bad_patterns_refused(tmp_path):
    (tmp_path / "mine.py").write_text(
        "from zope.interface import implementer\n"
        "from resmon.interfaces import IRule\n"
        "@implementer(IRule)\n"
        "class Good:\n"
        "    '''Says hello.'''\n"
        "    name = 'good'\n"
        "    patterns = ('*.event',)\n"
        "    def configure(self, options): pass\n"
        "    def check(self, event, state): return True\n"
        "    def action(self, event, state, act): pass\n"
        "@implementer(IRule)\n"
        "class BadPatterns(Good):\n"
        "    name = 'bad'\n"
        "    patterns = ('a*.event',)\n"
        "@implementer(IRule)\n"
        "class NoCheck:\n"
        "    name = 'nocheck'\n"
        "    patterns = ('#',)\n")
    found = discovery.discoverRules([str(tmp_path)])
    assert found.names() == ["alert", "good"]
    refused = {r.what: r.reason for r in found.refused}
    assert "AMQP topic syntax" in refused["bad"] and "IRule" in refused["NoCheck"]
    listing = discovery.formatRuleList(found)
    assert "good" in listing and "Says hello." in listing and "REFUSED" in listing
    with pytest.raises(discovery.RuleConfigurationError) as raised:
        discovery.configureRules(found, ["nope"])
    assert raised.value.option == "rules" and "unknown rule 'nope'" in str(raised.value)
    with pytest.raises(discovery.RuleConfigurationError) as raised:
        discovery.configureRules(found, None, {"alert": {"for": "soon"}})
    assert raised.value.option == "rule-option" and "alert.for" not in str(raised.value)
    assert "expected seconds" in str(raised.value)


def test_twistd_options_for_rules():
    from resmon.tap import Options
    options = Options()
    options.parseOptions(["--role=rules", "--rules=alert", "--rule-option=alert.cpu.for=5",
                          "--max-chain=3", "--rule-rate=2.5"])
    [alert] = options["rule-plugins"]
    assert alert.setting("cpu", "for") == 5.0 and alert.setting("memory", "for") == 60.0
    assert (options["max-chain"], options["rule-rate"]) == (3, 2.5)
    for argv, text in [(["--rules=nope"], "--rules: unknown rule 'nope'"),
                       (["--rule-option=alert.x=1"], "--rule-option: rule 'alert'"),
                       (["--rule-option=alert"], "--rule-option: expected NAME.KEY=VALUE"),
                       (["--max-chain=-1"], "--max-chain: must be between 0 and 1000")]:
        with pytest.raises(SystemExit) as raised:
            Options().parseOptions(["--role=rules"] + argv)
        assert text in str(raised.value), (argv, raised.value)
    web = Options()
    web.parseOptions(["--role=web"])
    assert web["rule-plugins"] is None
    with pytest.raises(SystemExit) as raised:
        Options().parseOptions(["--role=web", "--rules=alert"])
    assert "--rules: means nothing for --role=web; it is for roles with rules" in str(raised.value)
    with pytest.raises(SystemExit) as raised:
        Options().parseOptions(["--role=agent", "--queue=q"])
    assert "roles with an analyzer (analyzer, server, standalone) or rules" in str(raised.value)
    rules = Options()
    rules.parseOptions(["--role=rules", "--queue=q", "--prefetch=5", "--max-body=1000"])
    assert (rules["queue"], rules["prefetch"], rules["max-body"]) == ("q", 5, 1000)


def test_the_rules_counters_are_prometheus_metrics():
    from prometheus_client import CollectorRegistry, generate_latest

    from resmon.operations.metrics import RulesCollector
    bus, clock = ConfirmingBus(), Clock()
    service = RulesService(bus, RuleEngine([Recorder("bad", fail="check")], clock), clock)
    service.startService()
    bus.last.handler("j.event", b"junk")
    bus.last.handler("a.event", envelope(source="a"))
    registry = CollectorRegistry()
    registry.register(RulesCollector(service))
    text = generate_latest(registry).decode()
    assert 'resmon_rules_rejected_total{reason="json"} 1.0' in text
    assert 'resmon_rule_failures_total{kind="check-error",rule="bad"} 1.0' in text
    assert 'resmon_rules_events_total{result="received"} 1.0' in text
    service.stopService()


def test_internal_traffic_is_not_an_event():
    bus, clock = ConfirmingBus(), Clock()
    rule = Recorder(patterns=("#",))
    service = RulesService(bus, RuleEngine([rule], clock), clock)
    service.startService()
    tick = wire.encodeTick("resmon.analyzer.liveness", 1.0)
    assert bus.last.handler("resmon.internal.resmon_analyzer_liveness.liveness-tick", tick) is None
    assert service.rejected == {} and service.counters["internal"] == 1 and rule.seen == []
    service.stopService()


def test_rules_options_in_a_config_file(tmp_path):
    from resmon.tap import Options
    config = tmp_path / "rules.toml"
    config.write_text('role = "rules"\nrules = ["alert"]\nmax-chain = 4\n'
                      '[rule-option.alert]\nfor = 30\n"cpu.threshold" = "MEDIUM"\n')
    options = Options()
    options.parseOptions([f"--config={config}"])
    [alert] = options["rule-plugins"]
    assert alert.setting("memory", "for") == 30.0 and alert.setting("cpu", "threshold") == "MEDIUM"
    assert options["max-chain"] == 4
