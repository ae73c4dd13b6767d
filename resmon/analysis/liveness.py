"""
The host liveness judge: a table of the hosts heard of, and the rules that
turn their silence into C{online}, C{stale}, C{offline} and C{forgotten}.

Plain objects: every method takes the time it is called at, nothing here
knows the reactor or the bus. L{resmon.services.liveness.HostLiveness}
feeds the judge from the bus, sweeps it periodically and publishes what it
returns.
"""

from dataclasses import dataclass, field

from resmon import topics
from resmon.defaults import DEFAULT_GRACE, DEFAULT_OFFLINE_AFTER, STALE_INTERVALS
from resmon.wire import DEFAULT_FORGET_AFTER, FORGOTTEN, OFFLINE, ONLINE, STALE  # noqa: F401

# A proof-of-concept measure carries no interval: assume the agent's default.
ASSUMED_INTERVAL = 1.0
# How often the service publishes a tick into the liveness queue, and how
# long without a delivery (tick or measure) means another process receives
# that queue: see L{LivenessJudge}.
TICK_INTERVAL = 0.5
ACTIVE_WINDOW = 3.0


@dataclass(slots=True)
class HostRecord:
    """
    What the judge knows of one host: its name and routing word, its last
    status and since when, its last measure's time and seq, its interval.
    """

    name: str
    word: str
    status: str | None = None
    since: float | None = None
    lastSeen: float | None = None
    seq: int | None = None
    interval: float = ASSUMED_INTERVAL


@dataclass(slots=True)
class Change:
    """
    A host's new status, to announce: C{host} is its L{HostRecord} (already
    out of the table when C{status} is C{forgotten}), C{at} the time of the
    change.
    """

    host: HostRecord
    status: str
    at: float


@dataclass
class Sweep:
    """
    What one L{LivenessJudge.sweep} found.

    @ivar paused: the bus went away since the last sweep: judging stopped.
    @ivar resumed: the bus is (re)connected since the last sweep: hosts are
        judged again after the grace.
    @ivar role: C{True} when this process just became the judge, C{False}
        when it just started standing by, L{None} if neither.
    @ivar changes: the L{Change}s to announce, in order.
    @ivar forgotten: how many of them are C{forgotten}.
    """

    paused: bool = False
    resumed: bool = False
    role: bool | None = None
    changes: list = field(default_factory=list)
    forgotten: int = 0


class LivenessJudge:
    """
    Judges every host by the time since its last measure: C{online} on its
    first measure and when it comes back, C{stale} once it missed
    C{staleAfter} seconds (default: L{STALE_INTERVALS} of its own interval),
    C{offline} after C{offlineAfter} seconds, and C{forgotten} after
    C{forgetAfter} seconds, whatever its status then: the host leaves the
    table.

    Nothing is judged while the bus is disconnected, nor for C{grace}
    seconds after every (re)connection, and hosts count as seen at that
    moment: the analyzer's own outage is not the hosts'.

    Only the process that receives the liveness queue judges: it knows it
    does while deliveries (measures, or the ticks every process publishes
    into the queue every C{tickInterval}) keep coming, at most
    C{activeWindow} apart. On becoming the judge (again) it counts the hosts
    it knows as seen when deliveries resumed, and a host's silence is
    counted only up to shortly after the last delivery. While standing by,
    it learns every host's status from the judge's (L{learned}), and drops
    the hosts it has heard nothing of for C{forgetAfter}.

    @ivar hosts: host name -> L{HostRecord}.
    @ivar active: whether this process judges; L{None} until known.
    @ivar forgotten: how many hosts were forgotten so far.
    """

    def __init__(self, staleAfter=None, offlineAfter=DEFAULT_OFFLINE_AFTER, grace=DEFAULT_GRACE,
                 forgetAfter=DEFAULT_FORGET_AFTER, tickInterval=TICK_INTERVAL,
                 activeWindow=ACTIVE_WINDOW):
        self.staleAfter = staleAfter
        self.offlineAfter = offlineAfter
        self.grace = grace
        self.forgetAfter = forgetAfter
        self.tickInterval = tickInterval
        self.activeWindow = activeWindow
        self.hosts = {}
        self.active = None
        self.forgotten = 0
        self._lastDelivery = None
        self._resumedAt = None
        self._connection = None
        self._judgingFrom = None
        self._seenSince = None

    def delivered(self, now):
        """
        Note a delivery from the liveness queue (a measure or a tick).
        """
        if self._lastDelivery is None or now - self._lastDelivery > self.activeWindow:
            self._resumedAt = now  # the first delivery after a gap
        self._lastDelivery = now

    def seen(self, measure, now):
        """
        Note a valid measure (a L{resmon.wire.Measure}) that arrived at
        C{now}.

        @return: the L{Change} to announce, or L{None}.
        """
        host = self.hosts.get(measure.host)
        if host is None:
            host = self.hosts[measure.host] = HostRecord(measure.host, measure.hostWord)
        host.lastSeen = now
        host.seq = measure.seq
        if measure.interval:
            host.interval = measure.interval
        if host.status != ONLINE:
            return self._change(host, ONLINE, now)
        return None

    def learned(self, name, status, lastSeen, since, seq):
        """
        Note a status the judge published, if this process stands by (the
        judge itself knows better, and its own statuses come back late).
        Statuses other than those of a judge are ignored.
        """
        if self.active:
            return
        if status == FORGOTTEN:
            self.hosts.pop(name, None)
            return
        if status not in (ONLINE, STALE, OFFLINE) or not isinstance(lastSeen, (int, float)):
            return
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = HostRecord(name, topics.hostWord(name))
            host.lastSeen = lastSeen
        host.lastSeen = max(host.lastSeen, lastSeen)
        host.status = status
        host.since = since
        host.seq = seq

    def sweep(self, now, connection):
        """
        Judge every host at C{now}, unless the bus is or just was
        disconnected, or another process receives the liveness queue.

        @param connection: L{None} while the bus is disconnected, else
            something that changes on every (re)connection (the bus's
            connection count).
        @return: a L{Sweep}.
        """
        sweep = Sweep()
        if connection is None:
            sweep.paused = self._judgingFrom is not None
            self._judgingFrom = None
            return sweep
        if self._judgingFrom is None or connection != self._connection:
            # (Re)connected since the last sweep, however briefly it was down.
            self._connection = connection
            self._judgingFrom = now + self.grace
            self._seenSince = now
            sweep.resumed = True
        delivered = self._lastDelivery is not None and now - self._lastDelivery <= self.activeWindow
        if delivered and self.active is not True:
            self.active = sweep.role = True
            # Taking over, or back: what this process knows of the hosts is as
            # old as its deliveries before the gap; count them as seen when
            # deliveries resumed.
            self._seenSince = max(self._seenSince, self._resumedAt)
        elif not delivered and self.active is not False and (
                self.active or now - self._seenSince > self.activeWindow):
            self.active = sweep.role = False
        if not self.active:
            self._dropSilent(now)
            return sweep
        if now < self._judgingFrom:
            return sweep
        seenSince = self._seenSince
        # Silence is counted only as far as this process can vouch for it: while
        # it receives the queue (ticks every tickInterval), up to now; once
        # deliveries stop, not much past the last one.
        heardUntil = min(now, self._lastDelivery + self.tickInterval * 1.5)
        for host in list(self.hosts.values()):
            silent = heardUntil - max(host.lastSeen, seenSince)
            if silent > self.forgetAfter:
                del self.hosts[host.name]
                sweep.changes.append(Change(host, FORGOTTEN, now))
                sweep.forgotten += 1
            elif host.status == OFFLINE:
                continue
            elif silent > self.offlineAfter:
                sweep.changes.append(self._change(host, OFFLINE, now))
            elif host.status == ONLINE and silent > self._staleAfter(host):
                sweep.changes.append(self._change(host, STALE, now))
        self.forgotten += sweep.forgotten
        return sweep

    def _dropSilent(self, now):
        """
        While standing by: drop the hosts nothing was heard of (neither a
        measure nor the judge's status) for C{forgetAfter} seconds.
        """
        for host in [h for h in self.hosts.values() if now - h.lastSeen > self.forgetAfter]:
            del self.hosts[host.name]

    def _staleAfter(self, host):
        if self.staleAfter:
            return self.staleAfter
        return STALE_INTERVALS * host.interval

    def _change(self, host, status, now):
        host.status = status
        host.since = now
        return Change(host, status, now)
