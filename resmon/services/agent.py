"""
The agent: samples this machine and publishes a measure per sample.
"""

import time

from twisted.application import service
from twisted.logger import Logger

from resmon import topics, wire
from resmon.bus.outbox import Refused
from resmon.periodic import Periodic


FIRST_SAMPLE_DELAY = 1.0


class TrackerService(service.Service):
    """
    Publishes one measure every C{interval} seconds to C{<host>.measure}.

    @param bus: an L{resmon.interfaces.IBus}.
    @param sampler: has C{sample()} returning a metrics dict.
    @param host: this machine's name as it appears in measures.
    @param interval: seconds between samples.
    @param clock: an L{IReactorTime}.
    @param wallClock: returns the sample time, seconds since the epoch.
    @param statsInterval: seconds between two log lines with counts.
    """

    name = "tracker"
    log = Logger()

    def __init__(self, bus, sampler, host, interval, clock, wallClock=time.time,
                 statsInterval=60.0):
        self.bus = bus
        self.sampler = sampler
        self.host = host
        self.routingKey = topics.routingKey(host, topics.MEASURE)
        self.interval = interval
        self.clock = clock
        self.wallClock = wallClock
        self.statsInterval = statsInterval
        self.seq = 0
        self.counters = {"sampled": 0, "confirmed": 0, "dropped": 0, "failed": 0, "refused": 0}
        self._loop = Periodic(self.sampleAndPublish, interval, clock, self.log, "sampling stopped",
                              now=True)
        self._stats = Periodic(self.logStats, statsInterval, clock, self.log,
                               "logging the tracker's counters failed; no longer logging them")
        self._first = None

    def startService(self):
        service.Service.startService(self)
        self.log.info("sampling {host} every {interval} s, publishing to {routingKey}",
                      host=self.host, interval=self.interval, routingKey=self.routingKey)
        # psutil's CPU percentages cover the time since the previous call: the
        # first sample waits a moment (at most a second) to mean something.
        self._first = self.clock.callLater(min(self.interval, FIRST_SAMPLE_DELAY), self._startLoop)
        self._stats.start()

    def _startLoop(self):
        self._first = None
        self._loop.start()

    def stopService(self):
        service.Service.stopService(self)
        if self._first is not None and self._first.active():
            self._first.cancel()
        self._first = None
        self._loop.stop()
        self._stats.stop()
        self.logStats()

    def sampleAndPublish(self):
        try:
            metrics = self.sampler.sample()
        except Exception:
            self.counters["failed"] += 1
            self.log.failure("sampling failed")
            return
        body = wire.encodeMeasure(self.host, self.seq, self.wallClock(), self.interval, metrics)
        self.seq += 1
        self.counters["sampled"] += 1
        d = self.bus.publish(self.routingKey, body)
        d.addCallbacks(self._confirmed, self._dropped)

    def _confirmed(self, _):
        self.counters["confirmed"] += 1

    def _dropped(self, failure):
        self.counters["dropped"] += 1
        if failure.check(Refused):
            # The broker's permissions refused it (said once by the bus).
            self.counters["refused"] += 1

    def logStats(self):
        self.log.info(
            "{sampled} measures sampled, {confirmed} confirmed by the bus, {dropped} dropped "
            "({refused} refused by the broker's permissions)",
            **self.counters)
