"""
One budget for the bytes the web role has queued to all its clients
(WebSocket and event stream alike), so clients that stop reading cost a
bounded amount of memory however many there are.

Each client's L{resmon.webserver.fanout.ClientFlow} is a push producer on its
connection: Twisted pauses it once more than L{HIGH_WATER} bytes wait in
the connection's buffer and resumes it once they are all sent. While a
client is paused it holds at most C{HIGH_WATER} plus the write that paused
it: that is what it is charged, until it is resumed (all sent) or gone.
Clients that read keep their buffer under C{HIGH_WATER} and are charged
nothing (their buffers are bounded by C{--max-clients} times that).
"""

from twisted.internet.task import Clock
from twisted.logger import Logger

from resmon.ratelimit import LimitedLog

# twisted.internet.abstract.FileDescriptor.bufferSize: a connection pauses
# its producer once more than this is waiting to be sent.
HIGH_WATER = 64 * 1024
# A snapshot is written in pieces of about this size, as the client reads.
CHUNK_SIZE = 16 * 1024
DEFAULT_MAX_QUEUED = 64 * 1024 * 1024


class SendBudget:
    """
    The bytes queued to clients that stopped reading, at most C{limit}.

    A snapshot piece is written only if it fits (the flow waits, and is
    woken when others drain or go); a client that stops reading while the
    total is over the limit is dropped.

    @ivar queued: bytes charged now; C{peak}: the most ever charged.
    @ivar counters: C{waited} (snapshot pieces held back for room),
        C{dropped} (clients dropped at the limit), C{stalled} (clients
        dropped for not reading within the stall timeout).
    @param clock: an L{IReactorTime} pacing the warnings about dropped
        clients (L{LimitedLog}); without one, only the first few are logged.
    """

    log = Logger()

    def __init__(self, limit=DEFAULT_MAX_QUEUED, clock=None):
        self.warnings = LimitedLog(clock if clock is not None else Clock())
        self.limit = limit
        self.queued = 0
        self.peak = 0
        self._waiting = {}
        self.counters = {"waited": 0, "dropped": 0, "stalled": 0}

    def allows(self, size):
        # Nothing queued at all: let one piece through, however large.
        return self.queued == 0 or self.queued + HIGH_WATER + size <= self.limit

    def charge(self, amount):
        self.queued += amount
        if self.queued > self.peak:
            self.peak = self.queued

    @property
    def exceeded(self):
        return self.queued > self.limit

    def release(self, amount):
        if amount:
            self.queued -= amount
            self._wake()

    def wait(self, flow, size):
        """
        Call C{flow.budgetAvailable()} once C{size} more bytes fit.
        """
        if flow not in self._waiting:
            self.counters["waited"] += 1
        self._waiting[flow] = size

    def forget(self, flow):
        self._waiting.pop(flow, None)

    def dropped(self, what):
        self.counters["dropped"] += 1
        self.warnings.warn(
            self.log, "{what} stopped reading while {queued} bytes were queued to clients (more "
            "than --max-queued-mib); disconnecting it ({count} so far)",
            what=what, queued=self.queued, count=self.counters["dropped"])

    def _wake(self):
        while self._waiting:
            flow, size = next(iter(self._waiting.items()))
            if not self.allows(size):
                return
            del self._waiting[flow]
            flow.budgetAvailable()
