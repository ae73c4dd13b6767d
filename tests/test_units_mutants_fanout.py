"""
The fan-out's promises pinned down where mutation testing
(.ci/mutation.sh) found them unchecked: which analyses are repeats, what
a paused client is held to, what is counted and logged, the snapshot's
notice when it sends the overview instead of a full history.
"""

import json

from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from resmon.webserver.fanout import (
    MAX_FULL_HISTORY_HOSTS, RECENT_ANALYSES_PER_HOST, ClientFlow, EventFanout, LatestAnalyses,
    LatestEvents, encodeJSON)
from resmon.webserver.history import DEFAULT_OVERVIEW_STEP, FleetHistory
from resmon.webserver.subscriptions import parseQuery


def analysis(host, seq, ts):
    return {"v": 1, "kind": "analysis", "host": host, "seq": seq, "ts": ts, "interval": 1.0,
            "analyzed_at": ts, "level": "LOW", "levels": {"cpu": "LOW", "memory": "LOW"},
            "cpu_result": "LOW", "metrics": {"cpu": {"percent": 10.0, "per_core": [10.0]}}}


def status(host, state="online"):
    return {"v": 1, "kind": "status", "host": host, "status": state, "since": 1.0, "last_seen": 1.0}


def body(document):
    return encodeJSON(document)


class Client:
    def __init__(self, fails=False):
        self.received = []
        self.fails = fails

    def sendEvent(self, document, body):
        if self.fails:
            raise RuntimeError("gone")
        self.received.append(document)


def logged(thing):
    events = []
    thing.log = Logger(observer=events.append)
    return events


def test_latest_events_know_their_hosts():
    latest = LatestEvents()
    latest.update(status("a"), b"{}")
    assert "a" in latest and "b" not in latest


def test_an_analysis_is_a_repeat_only_among_the_recent_ones_of_its_host():
    latest = LatestAnalyses(recent=2)
    for seq in (1, 2, 3):
        assert latest.accept(analysis("a", seq, seq), b"")
    assert not latest.accept(analysis("a", 3, 3), b"") and not latest.accept(analysis("a", 2, 2), b"")
    assert latest.accept(analysis("a", 1, 1), b"")  # forgotten: two recent ones are kept
    assert latest.accept(analysis("b", 3, 3), b"")  # per host
    default = LatestAnalyses()
    for seq in range(RECENT_ANALYSES_PER_HOST + 1):
        default.accept(analysis("a", seq, seq), b"")
    assert not default.accept(analysis("a", 1, 1), b"")
    assert default.accept(analysis("a", 0, 0), b"")


def test_an_analysis_with_a_seq_but_no_ts_is_still_recognised_as_a_repeat():
    latest = LatestAnalyses()
    assert latest.accept(analysis("a", 5, None), b"")
    assert not latest.accept(analysis("a", 5, None), b"")
    # No seq (the proof-of-concept format): never a repeat.
    assert latest.accept(analysis("a", None, 7.0), b"") and latest.accept(analysis("a", None, 7.0), b"")


def test_an_analysis_of_the_same_instant_replaces_the_latest():
    latest = LatestAnalyses()
    latest.accept(analysis("a", 1, 10.0), b"first")
    latest.accept(analysis("a", 2, 10.0), b"second")
    assert latest.get("a")["seq"] == 2 and latest.body("a") == b"second"
    latest.accept(analysis("a", 0, 9.0), b"older")
    assert latest.get("a")["seq"] == 2


def test_a_paused_client_is_held_to_the_latest_per_key_and_counts_what_it_missed():
    sent, clock = [], Clock()
    flow = ClientFlow(sent.append, lambda: None, clock, stallTimeout=6)
    assert flow.paused is False and flow.coalesced == 0
    flow.pauseProducing()
    for key, value in [("a", b"1"), ("a", b"2"), ("b", b"3"), ("a", b"4")]:
        flow.send(key, value)
    assert flow.coalesced == 2 and flow.pending == {"a": b"4", "b": b"3"}
    flow.send("b", b"5")
    flow.send("b", b"6")
    assert flow.coalesced == 4
    flow.resumeProducing()
    assert flow.paused is False and sent == [b"4", b"6"] and clock.getDelayedCalls() == []
    flow.pauseProducing()
    flow.send("a", b"5")
    flow.stopProducing()
    assert flow.pending == {} and clock.getDelayedCalls() == []
    flow.send("a", b"6")
    assert flow.pending == {} and sent == [b"4", b"6"]  # a client that went away holds nothing


def test_a_stalled_client_is_logged_and_dropped():
    dropped, clock = [], Clock()
    flow = ClientFlow(lambda body: None, lambda: dropped.append(True), clock, stallTimeout=6)
    events = logged(flow)
    flow.pauseProducing()
    flow.send("a", b"1")
    flow.send("b", b"2")
    clock.advance(6)
    assert dropped == [True] and flow.pending == {}
    assert [formatEvent(e) for e in events] == [
        "client stopped reading for 6 s (2 updates held back); disconnecting it"]
    flow.resumeProducing()  # the transport may still call it
    assert clock.getDelayedCalls() == []


def test_events_are_counted_and_a_broken_client_is_detached_alone():
    fanout = EventFanout()
    events = logged(fanout)
    assert fanout.counters == {"received": 0, "duplicates": 0, "sent": 0, "back-online": 0,
                               "unknown-metrics": 0, "forgotten": 0, "batches": 0}
    good, broken = Client(), Client(fails=True)
    fanout.attach(good)
    fanout.attach(broken)
    fanout.eventReceived("a.analysis", body(analysis("a", 1, 1.0)))
    fanout.eventReceived("a.analysis", body(analysis("a", 2, 2.0)))
    fanout.eventReceived("a.analysis", body(analysis("a", 2, 2.0)))
    assert fanout.counters == {"received": 3, "duplicates": 1, "sent": 2, "back-online": 0,
                               "unknown-metrics": 0, "forgotten": 0, "batches": 0}
    assert [d["seq"] for d in good.received] == [1, 2] and broken not in fanout.clients
    [failure] = events
    assert formatEvent(failure) == f"sending to {broken!r} failed; detaching it"
    assert failure["log_failure"].check(RuntimeError)
    fanout.detach(broken)  # twice, or never attached: nothing happens


def test_the_latest_analyses_given_are_the_ones_used():
    latest = LatestAnalyses()
    assert EventFanout(latest=latest).latest is latest


def test_hosts_known_from_analyses_and_statuses_count():
    fanout = EventFanout(history=FleetHistory(Clock()))
    fanout.eventReceived("old.analysis", body(analysis("old", 1, 1.0)))
    fanout.eventReceived("quiet.status", body(status("quiet")))
    assert fanout.knownHosts() == ["old", "quiet"]


def test_a_status_is_a_short_non_empty_string():
    fanout = EventFanout()
    events = logged(fanout)
    for state in ("x", "s" * 32):
        fanout.eventReceived("a.status", body(status("a", state)))
    for state in ("", "s" * 33, 1):
        fanout.eventReceived("a.status", body(status("a", state)))
    assert fanout.counters["received"] == 2 and dict(fanout.rejected) == {"type": 3}
    assert formatEvent(events[0]) == (
        "rejected an event under a.status: type: status: expected a short string (1 for this reason)")


def test_rejections_are_logged_ten_at_once_then_at_a_bounded_rate():
    clock = Clock()
    fanout = EventFanout(maxBody=100, clock=clock)
    events = logged(fanout)
    key = "k" * 100 + ".analysis"
    for _ in range(2000):
        fanout.eventReceived(key, b"{" + b" " * 100 + b"}")
    lines = [formatEvent(e) for e in events]
    assert len(lines) == 10 and fanout.rejected["too-large"] == 2000
    assert lines[0] == (f"rejected an event under {key[:80]}: too-large: 102 bytes is over the 100 byte "
                        "limit (1 for this reason)")
    assert lines[9].endswith("(10 for this reason)")
    # Then one every 6 s (resmon.ratelimit.LimitedLog), saying how many were not logged.
    clock.advance(6)
    fanout.eventReceived(key, b"{" + b" " * 100 + b"}")
    fanout.eventReceived(key, b"{" + b" " * 100 + b"}")
    assert len(events) == 11 and formatEvent(events[10]).endswith(
        "(2001 for this reason) (1990 similar warnings not logged before this one)")
    # Without a clock, time never passes: the first ten only.
    unclocked = EventFanout(maxBody=100)
    events = logged(unclocked)
    for _ in range(20):
        unclocked.eventReceived(key, b"{" + b" " * 100 + b"}")
    assert len(events) == 10 and unclocked.rejected["too-large"] == 20


def test_a_long_rejection_is_cut_in_the_log():
    fanout = EventFanout()
    events = logged(fanout)
    fanout.eventReceived("h.analysis", body({"v": 1, "kind": "analysis", "host": "h" * 300}))
    reason = formatEvent(events[0]).split("under h.analysis: ", 1)[1].rsplit(" (1 for", 1)[0]
    assert reason == "range: host is longer than 255 characters"
    key = "y" * 100 + ".analysis"
    fanout.eventReceived(key, body({"v": 1, "kind": "analysis", "host": "x" * 100}))
    reason = formatEvent(events[1]).split(f"under {key[:80]}: ", 1)[1].rsplit(" (1 for", 1)[0]
    assert len(reason) == 200 and reason.startswith("routing-key: host 'xxx")


def snapshot(fanout, query):
    return json.loads(fanout.snapshotBody(parseQuery(query)))


def test_full_history_for_up_to_fifty_hosts_then_the_overview_with_a_notice():
    fanout = EventFanout(history=FleetHistory(Clock()))
    for i in range(MAX_FULL_HISTORY_HOSTS):
        fanout.eventReceived(f"h{i}.analysis", body(analysis(f"h{i}", 1, 1.0)))
    full = snapshot(fanout, {"history": ["1"], "step": ["2"]})
    assert full["subscription"]["history"] is True and "notice" not in full["subscription"]
    fanout.eventReceived("one-more.analysis", body(analysis("one-more", 1, 1.0)))
    described = snapshot(fanout, {"history": ["1"], "step": ["2"], "events": ["analysis"]})["subscription"]
    assert described == dict(
        snapshot(fanout, {"history": ["overview"], "events": ["analysis"]})["subscription"],
        history="overview", step=max(2, DEFAULT_OVERVIEW_STEP),
        notice=f"full history is sent for at most {MAX_FULL_HISTORY_HOSTS} hosts; this is the "
               "overview: ask for fewer hosts, or one host's history")


def test_a_snapshot_carries_the_statuses_of_its_hosts_only():
    fanout = EventFanout()
    for host in ("a", "b"):
        fanout.eventReceived(f"{host}.status", body(status(host)))
    assert [s["host"] for s in snapshot(fanout, {"hosts": ["a"]})["statuses"]] == ["a"]


def test_a_history_reply_without_a_history_has_no_points():
    assert EventFanout().historyReplyBody("h") == b'{"kind":"history","host":"h","step":0,"points":[]}'


def test_json_for_clients_is_compact():
    assert encodeJSON({"a": [1, "\u00e9"]}) == b'{"a":[1,"\\u00e9"]}'


def test_clients_dropped_at_the_budget_and_refused_connections_are_logged_rate_limited():
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from resmon.webserver.httplimits import ConnectionLimits
    from resmon.webserver.sendbudget import SendBudget
    clock = Clock()
    budget = SendBudget(limit=1, clock=clock)
    events = logged(budget)
    for _ in range(15):
        budget.dropped("x")
    assert len(events) == 10 and budget.counters["dropped"] == 15
    clock.advance(6)
    budget.dropped("x")
    assert len(events) == 11 and formatEvent(events[-1]).endswith(
        "(16 so far) (5 similar warnings not logged before this one)")
    limits = ConnectionLimits(Site(Resource()), clock, maxClients=0)
    events = logged(limits)
    for _ in range(12):
        limits.buildProtocol(None)
    assert len(events) == 10 and limits.refused["max-clients"] == 12
    assert formatEvent(events[0]) == (
        "refused a connection from None: 0 connections already (--max-clients) (1 so far)")
