"""
Periodic work, done one way in every role: a L{LoopingCall} on the clock the
service was given, started and stopped with its service, whose failure is
logged instead of dropped with the Deferred that C{start()} returns.

Why C{LoopingCall} and not C{TimerService}: the agent, analyzer and liveness
services are plain C{Service}s, and several of their loops must first run
one interval after the start (a stats line at start says nothing, the
liveness judge waits for a first delivery), which C{TimerService} (always
C{now=True}, and a child of a C{MultiService}) cannot say. A C{MultiService}
whose loops may run at once (the web role) may use C{TimerService} children:
it is the same mechanism, a C{LoopingCall} with a clock and an errback that
logs.
"""

from twisted.internet.task import LoopingCall


class Periodic:
    """
    Calls C{work()} every C{interval} seconds of C{clock} while started.

    If C{work} raises (or returns a Deferred that fails), the loop stops and
    C{failed} is logged with the failure.

    @param work: a callable without arguments.
    @param interval: seconds between two calls.
    @param clock: an L{IReactorTime}.
    @param log: the L{twisted.logger.Logger} of the owner.
    @param failed: the log line when the loop stops on a failure.
    @param now: whether the first call comes at once, or after one
        C{interval}.
    """

    def __init__(self, work, interval, clock, log, failed, now=False):
        self.interval = interval
        self.now = now
        self._log = log
        self._failedMessage = failed
        self._loop = LoopingCall(work)
        self._loop.clock = clock

    @property
    def running(self):
        return self._loop.running

    def start(self):
        self._loop.start(self.interval, now=self.now).addErrback(self._failed)

    def stop(self):
        """
        Stop calling (nothing happens if not running).
        """
        if self._loop.running:
            self._loop.stop()

    def _failed(self, failure):
        self._log.failure(self._failedMessage, failure)
