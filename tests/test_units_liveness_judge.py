"""
The host liveness judge on its own: plain objects, every time given as an
argument, no reactor and no bus.
"""

from resmon import wire
from resmon.analysis.liveness import FORGOTTEN, OFFLINE, ONLINE, STALE, LivenessJudge


def measure(host, seq=0, interval=1.0):
    body = wire.encodeMeasure(host, seq, 0.0, interval, {})
    return wire.decodeMeasure(f"{host.replace('.', '_')}.measure", body, wire.DEFAULT_MAX_BODY)


def statuses(sweep):
    return [(change.host.name, change.status, change.at) for change in sweep.changes]


def judging(**kwargs):
    """
    A judge that receives the liveness queue from time 0 on.
    """
    judge = LivenessJudge(**kwargs)
    judge.delivered(0.0)
    sweep = judge.sweep(0.0, 1)
    assert (sweep.paused, sweep.resumed, sweep.role, sweep.changes) == (False, True, True, [])
    return judge


def test_a_host_goes_online_stale_offline_and_is_forgotten():
    judge = judging(grace=0, offlineAfter=5, forgetAfter=10)
    change = judge.seen(measure("a.b", seq=7), 0.5)
    assert (change.host.name, change.host.word, change.status, change.at) == ("a.b", "a_b", ONLINE, 0.5)
    assert judge.seen(measure("a.b", seq=8), 0.5) is None
    found = []
    for tenth in range(5, 120, 5):
        now = tenth / 10
        judge.delivered(now)
        found += statuses(judge.sweep(now, 1))
    assert found == [("a.b", STALE, 4.0), ("a.b", OFFLINE, 6.0), ("a.b", FORGOTTEN, 11.0)]
    assert judge.hosts == {} and judge.forgotten == 1


def test_nothing_is_judged_while_disconnected_nor_during_the_grace():
    judge = judging(grace=5, offlineAfter=2, forgetAfter=100)
    judge.seen(measure("h"), 0.0)
    assert judge.sweep(1.0, None).paused
    assert not judge.sweep(1.5, None).paused  # said once
    judge.delivered(20.0)
    sweep = judge.sweep(20.0, 2)
    assert sweep.resumed and sweep.changes == []
    judge.delivered(24.9)
    assert judge.sweep(24.9, 2).changes == []  # in the grace
    judge.delivered(25.0)
    # Counted as seen at the reconnection (20): silent 5 s > offlineAfter.
    assert statuses(judge.sweep(25.0, 2)) == [("h", OFFLINE, 25.0)]


def test_a_judge_without_deliveries_stands_by_learns_and_drops_the_silent():
    judge = judging(forgetAfter=20)
    judge.seen(measure("mine"), 0.0)
    sweep = judge.sweep(3.5, 1)
    assert sweep.role is False and judge.active is False and sweep.changes == []
    judge.learned("a.b", OFFLINE, 2.0, 1.5, 4)
    judge.learned("c", "zombie", 2.0, 1.0, 1)
    judge.learned("d", ONLINE, "yesterday", 1.0, 1)
    host = judge.hosts["a.b"]
    assert (host.word, host.status, host.lastSeen, host.since, host.seq) == ("a_b", OFFLINE, 2.0, 1.5, 4)
    judge.learned("mine", FORGOTTEN, 0.0, 0.0, 0)
    assert list(judge.hosts) == ["a.b"]
    judge.sweep(22.5, 1)
    assert judge.hosts == {}  # heard nothing of it for 20 s


def test_the_active_judge_ignores_other_statuses():
    judge = judging()
    judge.learned("h", OFFLINE, 0.0, 0.0, 1)
    assert judge.hosts == {}
