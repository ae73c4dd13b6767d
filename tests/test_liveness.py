"""
Unit tests of host liveness with Twisted's Clock and a fake bus.
"""

import json

from twisted.internet import defer
from twisted.internet.task import Clock

from fakebus import FakeBus
from resmon import wire
from resmon.bus.local import LocalBus
from resmon.services.liveness import OFFLINE, ONLINE, HostLiveness
from resmon.tap import Options


class LivenessBus(FakeBus):
    """
    A bus that records publications, confirms them at once, and whose
    connection the test switches on and off like an C{AMQPBus}'s. Liveness
    ticks go back to the subscriber while C{receiving} (this process is the
    liveness queue's active consumer), and are not recorded.
    """

    def __init__(self):
        FakeBus.__init__(self)
        self.published = []
        self.ticks = 0
        self.receiving = True

    def publish(self, routingKey, body):
        if routingKey.endswith(".liveness-tick"):
            self.ticks += 1
            if self.receiving:
                for subscription in self.subscriptions:
                    if routingKey in subscription.patterns:
                        subscription.handler(routingKey, body)
            return defer.succeed(None)
        self.published.append((routingKey, json.loads(body)))
        return defer.succeed(None)

    def disconnect(self):
        self.connected = False

    def reconnect(self):
        self.connected = True
        self.counters["connections"] += 1

    def statuses(self):
        return [(body["host"], body["status"]) for _, body in self.published]


def measure(host="web-01.example.com", seq=0, interval=1.0):
    # Taken around the start of the test's Clock: not from the future.
    return wire.encodeMeasure(host, seq, float(seq), interval, {"cpu": {"percent": 5.0}})


def started(bus, clock, **kwargs):
    liveness = HostLiveness(bus, clock, checkInterval=0.5, **kwargs)
    liveness.startService()
    clock.advance(0)
    return liveness


def feed(liveness, clock, host, seconds, interval=1.0, firstSeq=0):
    """
    Send a measure of C{host} every C{interval} for C{seconds}, advancing
    the clock; returns the next seq.
    """
    seq = firstSeq
    for _ in range(int(seconds / interval)):
        liveness.measureReceived(f"{host.replace('.', '_')}.measure", measure(host, seq, interval))
        seq += 1
        clock.advance(interval)
    return seq


def advance(clock, seconds, step=0.5):
    for _ in range(int(seconds / step)):
        clock.advance(step)


def test_subscribes_to_measures_on_a_single_active_queue():
    bus, clock = LivenessBus(), Clock()
    liveness = started(bus, clock)
    [measures, statuses] = bus.subscriptions
    assert measures.patterns == ["#.measure", "resmon.internal.resmon_analyzer_liveness.liveness-tick"]
    assert statuses.patterns == ["#.status"] and statuses.options["queue"] is None  # a private queue
    assert measures.options["queue"] == "resmon.analyzer.liveness"
    assert measures.options["singleActive"] is True
    liveness.stopService()
    assert clock.getDelayedCalls() == []


def test_online_then_stale_after_three_intervals_then_offline_then_online_again():
    bus, clock = LivenessBus(), Clock()
    liveness = started(bus, clock, offlineAfter=10, grace=0)
    host = "web-01.example.com"
    seq = feed(liveness, clock, host, 5, interval=0.5)
    assert bus.statuses() == [(host, "online")]
    key, online = bus.published[0]
    assert key == "web-01_example_com.status"
    assert online["v"] == 1 and online["kind"] == "status" and online["seq"] == 0
    lastSeen = clock.seconds() - 0.5

    advance(clock, 1.0)  # two intervals missed: still online
    assert bus.statuses() == [(host, "online")]
    advance(clock, 1.0)  # past three intervals of 0.5 s
    assert bus.statuses() == [(host, "online"), (host, "stale")]
    stale = bus.published[-1][1]
    assert stale["last_seen"] == lastSeen and stale["seq"] == seq - 1
    assert stale["since"] > lastSeen + 1.5

    advance(clock, 6.0)
    assert bus.statuses()[-1] == (host, "stale")  # offline only after 10 s
    advance(clock, 3.0)
    assert bus.statuses() == [(host, "online"), (host, "stale"), (host, "offline")]
    advance(clock, 30.0)
    assert len(bus.published) == 3  # every change once

    feed(liveness, clock, host, 1, interval=0.5, firstSeq=0)  # the agent restarted
    assert bus.statuses()[-1] == (host, "online")
    assert bus.published[-1][1]["since"] == bus.published[-1][1]["last_seen"]
    liveness.stopService()
    assert clock.getDelayedCalls() == []


def test_a_fixed_stale_after_and_offline_before_stale():
    bus, clock = LivenessBus(), Clock()
    liveness = started(bus, clock, staleAfter=5, offlineAfter=30, grace=0)
    feed(liveness, clock, "a", 2)
    advance(clock, 3.5)
    assert bus.statuses() == [("a", "online")]
    advance(clock, 1.0)
    assert bus.statuses() == [("a", "online"), ("a", "stale")]
    liveness.stopService()

    bus, clock = LivenessBus(), Clock()
    liveness = started(bus, clock, offlineAfter=2, grace=0)
    feed(liveness, clock, "b", 2, interval=1.0)
    advance(clock, 3.0)
    assert bus.statuses() == [("b", "online"), ("b", "offline")]
    liveness.stopService()


def test_hosts_are_judged_each_by_its_own_interval():
    bus, clock = LivenessBus(), Clock()
    liveness = started(bus, clock, offlineAfter=60, grace=0)
    liveness.measureReceived("fast.measure", measure("fast", 0, 0.5))
    liveness.measureReceived("slow.measure", measure("slow", 0, 10.0))
    advance(clock, 2.5)
    assert ("fast", "stale") in bus.statuses() and ("slow", "stale") not in bus.statuses()
    advance(clock, 29.0)
    assert ("slow", "stale") in bus.statuses()
    liveness.stopService()


def test_no_judgement_while_disconnected_and_a_grace_period_after():
    bus, clock = LivenessBus(), Clock()
    liveness = started(bus, clock, offlineAfter=10, grace=3)
    advance(clock, 3.5)  # the first connection's grace
    for seq in range(3):
        liveness.measureReceived("a.measure", measure("a", seq))
        liveness.measureReceived("b.measure", measure("b", seq))
        clock.advance(1.0)
    assert bus.statuses() == [("a", "online"), ("b", "online")]

    bus.disconnect()
    advance(clock, 60.0)  # a long broker outage
    assert bus.statuses() == [("a", "online"), ("b", "online")]

    bus.reconnect()
    advance(clock, 2.5)  # within the grace period: nothing judged
    assert len(bus.published) == 2
    liveness.measureReceived("a.measure", measure("a", 3))  # a's agent is back
    advance(clock, 1.5)
    # b counts as seen at the reconnection: stale once the grace is over.
    assert bus.statuses()[2:] == [("b", "stale")]
    advance(clock, 8.0)
    assert bus.statuses()[2:] == [("b", "stale"), ("a", "stale"), ("b", "offline")]
    liveness.stopService()


def test_a_short_disconnection_between_two_checks_still_gets_the_grace_period():
    bus, clock = LivenessBus(), Clock()
    liveness = started(bus, clock, offlineAfter=10, grace=3)
    advance(clock, 3.5)
    feed(liveness, clock, "a", 1)
    advance(clock, 1.0)
    # Lost and back between two checks: only the connection count shows it.
    bus.reconnect()
    advance(clock, 3.0)
    assert bus.statuses() == [("a", "online")]
    # Judged again one check after the grace ended, as seen when reconnected.
    advance(clock, 1.5)
    assert bus.statuses() == [("a", "online"), ("a", "stale")]
    liveness.stopService()


def test_bad_measures_are_ignored_and_offline_hosts_are_eventually_forgotten():
    bus, clock = LivenessBus(), Clock()
    liveness = started(bus, clock, offlineAfter=5, grace=0, forgetAfter=100)
    liveness.measureReceived("a.measure", b"{not json")
    liveness.measureReceived("b.measure", measure("not-b"))
    assert bus.published == [] and liveness.hosts == {}
    liveness.measureReceived("c.measure", b'{"cpu_percentage": 10}')
    assert bus.statuses() == [("c", "online")] and bus.published[0][1]["seq"] is None
    advance(clock, 10)
    assert bus.statuses()[-1] == ("c", "offline")
    advance(clock, 100)
    assert liveness.hosts == {}
    liveness.stopService()


def test_a_failed_publication_is_counted_and_logged():
    bus, clock = LivenessBus(), Clock()
    bus.publish = lambda key, body: defer.fail(RuntimeError("outbox full"))
    liveness = started(bus, clock, grace=0)
    liveness.measureReceived("a.measure", measure("a"))
    assert liveness.counters == {"published": 0, "failed": 1}
    liveness.stopService()


def test_on_the_in_process_bus_statuses_reach_subscribers():
    clock = Clock()
    bus = LocalBus(clock)
    bus.startService()
    received = []
    bus.subscribe(["#.status"], lambda key, body: received.append((key, json.loads(body))))
    liveness = started(bus, clock, offlineAfter=5, grace=0)
    bus.publish("a.measure", measure("a"))
    clock.advance(0)
    advance(clock, 6)
    assert [(key, body["status"]) for key, body in received] == [
        ("a.status", "online"), ("a.status", "stale"), ("a.status", "offline")]
    liveness.stopService()


def test_options():
    options = Options()
    options.parseOptions(["--role=server", "--offline-after=12", "--stale-after=4",
                          "--liveness-grace=2"])
    assert (options["offline-after"], options["stale-after"], options["liveness-grace"]) == (12, 4, 2)
    options = Options()
    options.parseOptions(["--role=analyzer"])
    assert options["stale-after"] is None and options["offline-after"] == 30
    assert options["outbox-limit"] == 10000


def test_the_agents_outbox_holds_ten_minutes_of_samples_by_default():
    for interval, limit in (("1", 600), ("0.2", 3000), ("0.1", 6000), ("30", 100)):
        options = Options()
        options.parseOptions(["--role=agent", f"--interval={interval}"])
        assert options["outbox-limit"] == limit
    options = Options()
    options.parseOptions(["--role=agent", "--outbox-limit=50"])
    assert options["outbox-limit"] == 50


def test_a_process_that_no_longer_receives_the_queue_stands_by_and_judges_nothing():
    """
    Two analyzers: the broker hands the liveness queue to the other one (this
    one's connection blinked). This one hears nothing more, and must not
    declare every host offline; when the queue comes back to it, it counts
    its hosts as seen at that moment.
    """
    bus, clock = LivenessBus(), Clock()
    liveness = started(bus, clock, offlineAfter=10, grace=1)
    advance(clock, 1.5)
    feed(liveness, clock, "a", 3)
    assert liveness.active and bus.statuses() == [("a", "online")]

    bus.receiving = False  # another process is the active consumer now
    advance(clock, 60.0)
    assert not liveness.active and bus.statuses() == [("a", "online")]
    assert bus.ticks >= 60  # it kept publishing ticks for the active one

    bus.receiving = True  # the other process went: the queue is ours again
    advance(clock, 1.0)
    assert liveness.active  # deliveries resumed at most 1 s ago
    advance(clock, 1.5)  # a counts as seen when they resumed: 2.5 s at most, not stale
    assert bus.statuses() == [("a", "online")]
    advance(clock, 1.5)  # 3.5 s at least
    assert bus.statuses() == [("a", "online"), ("a", "stale")]
    advance(clock, 5.5)
    assert bus.statuses() == [("a", "online"), ("a", "stale")]
    advance(clock, 1.5)  # over 10 s since deliveries resumed
    assert bus.statuses() == [("a", "online"), ("a", "stale"), ("a", "offline")]
    liveness.stopService()
    assert clock.getDelayedCalls() == []


def test_no_ticks_while_disconnected():
    bus, clock = LivenessBus(), Clock()
    liveness = started(bus, clock)
    ticks = bus.ticks
    bus.disconnect()
    advance(clock, 10.0)
    assert bus.ticks == ticks
    bus.reconnect()
    advance(clock, 2.0)
    assert bus.ticks >= ticks + 2
    liveness.stopService()


def status(host, state, lastSeen, since=None, seq=7):
    return json.dumps({"v": 1, "kind": "status", "host": host, "status": state,
                       "since": since or lastSeen, "last_seen": lastSeen, "seq": seq}).encode()


def standingBy(**kwargs):
    """
    A started liveness service that stands by: another process receives the
    liveness queue (its ticks do not come back), for five seconds now.

    @return: the bus, the clock and the service.
    """
    bus, clock = LivenessBus(), Clock()
    # Times on the wire are Unix times: statuses about the past must not
    # read as negative (refused).
    clock.advance(1_700_000_000)
    bus.receiving = False
    liveness = started(bus, clock, **kwargs)
    advance(clock, 5.0)
    assert liveness.active is False
    return bus, clock, liveness


def test_standing_by_it_learns_the_judges_statuses_and_judges_those_hosts_once_it_takes_over():
    bus, clock, liveness = standingBy(offlineAfter=10, grace=1)
    now = clock.seconds()
    # The judge's statuses: a host it has seen go quiet, one offline for long,
    # one alive; and junk, which is ignored.
    liveness.statusReceived("quiet.status", status("quiet", ONLINE, now - 1))
    liveness.statusReceived("gone.status", status("gone", OFFLINE, now - 500))
    liveness.statusReceived("alive.status", status("alive", ONLINE, now - 0.5))
    liveness.statusReceived("junk.status", b'{"v": 1, "kind": "status", "host": "junk", "status": 5}')
    liveness.statusReceived("junk.status", b"{")
    assert sorted(liveness.hosts) == ["alive", "gone", "quiet"]
    advance(clock, 30.0)
    assert bus.published == []  # standing by: nothing judged

    bus.receiving = True  # the judge went: this process takes over
    advance(clock, 1.0)
    assert liveness.active
    feed(liveness, clock, "alive", 12)  # alive keeps sending: no second "online"
    # quiet counts as seen at the take-over: stale, then offline 10 s after it.
    assert bus.statuses() == [("quiet", "stale"), ("quiet", "offline")]
    # Now the judge, it ignores statuses (its own come back late).
    liveness.statusReceived("alive.status", status("alive", OFFLINE, clock.seconds()))
    assert liveness.hosts["alive"].status == ONLINE
    liveness.stopService()
    assert clock.getDelayedCalls() == []
