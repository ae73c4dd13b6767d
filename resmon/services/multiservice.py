"""
A MultiService whose children stop one after the other.
"""

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger


class OrderedMultiService(service.MultiService):
    """
    Stops children in reverse order of addition, each after the previous
    one's L{Deferred} fired, and logs (rather than swallows) a child's stop
    error: consumers must let go of the bus before the bus closes its
    connection.
    """

    log = Logger()

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        for child in reversed(list(self)):
            try:
                yield child.stopService()
            except Exception:
                self.log.failure("stopping {service} failed", service=child.name)
