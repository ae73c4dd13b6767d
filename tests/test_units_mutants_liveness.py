"""
Host liveness pinned down where mutation testing (.ci/mutation.sh) found
it unchecked: the exact story its log tells, the status events' fields and
timing, the tick, what a process standing by learns from the judge.
"""

import json

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from resmon import wire
from resmon.services.liveness import HostLiveness


class Bus:
    def __init__(self):
        self.published = []
        self.ticks = []
        self.receiving = True
        self.connected = True
        self.counters = {"connections": 1}
        self.subscriptions = []
        self.cancelled = 0
        self.fails = False

    def publish(self, routingKey, body):
        if routingKey.endswith(".liveness-tick"):
            self.ticks.append(json.loads(body))
            if self.receiving:
                self.subscriptions[0][1](routingKey, body)
            return defer.succeed(None)
        if self.fails:
            return defer.fail(RuntimeError("outbox full"))
        self.published.append((routingKey, json.loads(body)))
        return defer.succeed(None)

    def subscribe(self, patterns, handler, **kwargs):
        self.subscriptions.append((patterns, handler, kwargs))
        return self

    def cancel(self):
        self.cancelled += 1
        return defer.succeed(None)


def liveness(**kwargs):
    bus, clock, lines = Bus(), Clock(), []
    service = HostLiveness(bus, clock, checkInterval=0.5, queue="q", **kwargs)
    service.log = Logger(observer=lambda e: lines.append((clock.seconds(), formatEvent(e))))
    return service, bus, clock, lines


def advanceTo(clock, t):
    while clock.seconds() < t:
        clock.advance(0.5)


def measure(host, seq, interval=1.0):
    return wire.encodeMeasure(host, seq, float(seq), interval, {"cpu": {"percent": 5.0}})


def test_the_story_of_a_host_in_the_log_and_on_the_bus():
    service, bus, clock, lines = liveness(offlineAfter=4, grace=1, forgetAfter=10)
    service.startService()
    assert bus.ticks == [{"v": 1, "kind": "liveness-tick", "queue": "q", "ts": 0}]  # at once
    assert bus.subscriptions[0][2] == {"queue": "q", "prefetch": 500, "singleActive": True,
                                          "publisher": False}
    clock.advance(0.5)
    service.measureReceived("a_b.measure", measure("a.b", 7))
    advanceTo(clock, 10.5)
    assert "a.b" in service.hosts
    clock.advance(0.5)
    assert "a.b" not in service.hosts
    assert lines == [
        (0, "host liveness from queue q (judged by the analyzer that receives it): "
            "stale after 3 intervals, offline after 4 s"),
        (0.5, "bus connected: judging host liveness again in 1 s"),
        (0.5, "judging host liveness: this process receives q"),
        (0.5, "a.b is online (last measure at 0.500, seq 7)"),
        (4.0, "a.b is stale (last measure at 0.500, seq 7)"),
        (5.0, "a.b is offline (last measure at 0.500, seq 7)"),
        (11.0, "forgot 1 hosts silent for over 10 s (1 so far)"),
    ]
    assert bus.published == [
        ("a_b.status", {"v": 1, "kind": "status", "host": "a.b", "status": status, "since": since,
                        "last_seen": 0.5, "seq": 7})
        for status, since in (("online", 0.5), ("stale", 4.0), ("offline", 5.0),
                              ("forgotten", 11.0))]
    assert service.counters == {"published": 4, "failed": 0}
    assert len(bus.ticks) == 23 and bus.ticks[-1]["ts"] == 11.0
    assert service.stopService().result == [None, None] and bus.cancelled == 2
    assert clock.getDelayedCalls() == []


def test_a_fixed_stale_delay_is_announced():
    service, _, _, lines = liveness(staleAfter=2)
    service.startService()
    assert lines[0][1].endswith("stale after 2 s, offline after 30.0 s")
    service.stopService()


def test_a_disconnection_pauses_judging_and_the_ticks_and_says_so_once():
    service, bus, clock, lines = liveness(grace=2)
    service.startService()
    clock.advance(0.5)
    bus.connected = False
    clock.advance(0.5)
    clock.advance(0.5)
    ticks = len(bus.ticks)
    clock.advance(0.5)
    assert len(bus.ticks) == ticks
    bus.connected = True
    bus.counters["connections"] += 1
    clock.advance(0.5)
    assert [line for _, line in lines[1:]] == [
        "bus connected: judging host liveness again in 2 s",
        "judging host liveness: this process receives q",
        "bus disconnected: host liveness paused",
        "bus connected: judging host liveness again in 2 s",
    ]
    service.stopService()


def test_a_process_that_receives_nothing_for_three_seconds_stands_by():
    service, bus, clock, lines = liveness()
    service.startService()
    clock.advance(0.5)
    bus.receiving = False  # the last delivery: the tick at 0.5
    advanceTo(clock, 3.5)
    assert service.active is True
    clock.advance(0.5)
    assert service.active is False
    assert lines[-1] == (4.0, "standing by: another analyzer process receives q and judges")
    service.stopService()


def test_a_status_not_published_is_counted_and_logged():
    service, bus, clock, lines = liveness()
    bus.fails = True
    service.startService()
    clock.advance(0.5)
    service.measureReceived("h.measure", measure("h", 1))
    assert service.counters == {"published": 0, "failed": 1}
    assert lines[-1] == (0.5, "status of h not published: outbox full")
    service.stopService()


def status(host, state, lastSeen, since=1.0, seq=3):
    return json.dumps({"v": 1, "kind": "status", "host": host, "status": state, "since": since,
                       "last_seen": lastSeen, "seq": seq}).encode()


def test_a_process_standing_by_learns_each_host_from_the_judge():
    service, _, _, _ = liveness()
    service.statusReceived("a_b.status", status("a.b", "online", 10.0))
    service.statusReceived("a_b.status", status("a.b", "stale", 5.0, since=12.0, seq=4))
    host = service.hosts["a.b"]
    assert (host.word, host.status, host.lastSeen, host.since, host.seq) == ("a_b", "stale", 10.0, 12.0, 4)
    service.statusReceived("c.status", status("c", "zombie", 1.0))
    service.statusReceived("c.status", status("c", "online", "yesterday"))
    assert list(service.hosts) == ["a.b"]


def test_the_body_limit_is_the_one_given():
    limit = len(measure("b", 1))
    service, _, _, _ = liveness(maxBody=limit)
    service.statusReceived("a.status", status("a", "online", 1.0) + b" " * limit)
    service.measureReceived("b.measure", measure("b", 1) + b" ")
    assert service.hosts == {}
    service.measureReceived("b.measure", measure("b", 1))
    assert list(service.hosts) == ["b"]


def test_stopping_a_service_never_started():
    service, bus, _, _ = liveness()
    assert service.stopService().result == [] and bus.cancelled == 0


def test_after_a_reconnection_hosts_are_judged_from_the_end_of_the_grace_on():
    service, bus, clock, lines = liveness(grace=5, offlineAfter=100)
    service.startService()
    clock.advance(0.5)
    service.measureReceived("h.measure", measure("h", 1))
    advanceTo(clock, 1.0)
    bus.connected = False
    advanceTo(clock, 10.0)
    bus.connected = True
    bus.counters["connections"] += 1
    advanceTo(clock, 25.0)
    assert lines[4:] == [
        (1.5, "bus disconnected: host liveness paused"),
        (10.5, "bus connected: judging host liveness again in 5 s"),
        (10.5, "standing by: another analyzer process receives q and judges"),
        (11.0, "judging host liveness: this process receives q"),
        # Silent for 3 intervals since deliveries resumed (11.0) at 14.0,
        # but judged only once the grace is over.
        (15.5, "h is stale (last measure at 0.500, seq 1)"),
    ]
    service.stopService()


def test_every_status_not_published_is_counted():
    service, bus, clock, _ = liveness()
    bus.fails = True
    for host in ("a", "b", "c"):
        service.measureReceived(f"{host}.measure", measure(host, 1))
    assert service.counters == {"published": 0, "failed": 3}


def test_the_judges_statuses_reach_a_process_through_its_status_subscription():
    service, bus, _, _ = liveness()
    service.startService()
    [(patterns, handler, kwargs)] = bus.subscriptions[1:]
    assert patterns == ["#.status"] and kwargs == {}
    handler("a.status", status("a", "offline", 5.0))
    assert service.hosts["a"].status == "offline"
    service.stopService()
