"""
Writing a message to a TCP connection at once, where Twisted would write
it on the reactor's next turn.

Twisted's L{FileDescriptor.write} only buffers: it asks the reactor to
watch the socket for writing (an C{epoll_ctl}), and the reactor's next turn
sends the bytes and stops watching (another). For the dashboards' batches,
one message to each of hundreds of connections per turn, that is three
system calls and a turn per connection where one C{send} does: writing
them at once took the web role from 67-68 % to 57-61 % of a core, and the
sample-to-dashboard p99 from 22-36 ms to 12-27 ms, with 1,000 hosts and 100
dashboards on a 2-core machine (docs/performance.md, "Batches written at
once").

It is for writes that come one to a connection and turn, as a rule: a
batching client's batches (a turn holding more than a batch's bound of
events, or a client changing subscription, gives it more than one, each
sent at once, in order). Where a connection is written many times in a
turn (a client sent each event alone), Twisted's buffer joins them into
one C{send}; writing each at once cost more system calls, and the clients
more wake-ups: the same benchmark without batches went from 56 % to 72 %
of a core and its p99 from 47 ms to 6.5 s.

L{EagerWriter} sends at once only when nothing waits in Twisted's buffer
(so the order of the bytes is kept) and the connection is neither being
closed nor aborted, and hands whatever the socket did not
take, and everything on a connection it cannot write to itself (TLS, a
wrapper that does more than pass writes on), to the transport's C{write}:
the producer's pauses, the buffer's limits and the errors stay Twisted's.
"""

from twisted.internet import tcp
from twisted.protocols.policies import ProtocolWrapper


def socketConnection(transport):
    """
    The plain TCP connection under C{transport}, looking through protocol
    wrappers that only pass writes on (L{ProtocolWrapper} itself, as the
    web role's connection counting is); L{None} under TLS, another kind of
    transport, or a wrapper that does more with a write.
    """
    for _ in range(8):
        if isinstance(transport, tcp.Connection):
            return None if transport.TLS else transport
        if (not isinstance(transport, ProtocolWrapper)
                or type(transport).write is not ProtocolWrapper.write):
            return None
        transport = transport.transport
    return None


class EagerWriter:
    """
    A function writing to C{transport} at once where it can.

    @ivar transport: what is written to otherwise (the protocol's own).
    @ivar connection: the TCP connection under it, or L{None} if it is
        never written to at once.
    """

    __slots__ = ("transport", "connection")

    def __init__(self, transport):
        self.transport = transport
        self.connection = socketConnection(transport)

    def __call__(self, data):
        connection = self.connection
        if (connection is not None and connection.connected
                and not connection.disconnecting and not connection._writeDisconnected
                and not getattr(connection, "_aborting", False)  # abortConnection()
                and not connection.dataBuffer and not connection._tempDataLen):
            sent = connection.writeSomeData(data)
            if isinstance(sent, Exception):
                # Lost: Twisted's own write finds it out on its next turn.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        self.transport.write(data)
