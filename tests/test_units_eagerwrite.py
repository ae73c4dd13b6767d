"""
resmon.webserver.eagerwrite over real loopback connections: a batch goes
out before the reactor's next turn where nothing waits before it; otherwise
the bytes keep their order, and whatever the socket does not take, Twisted
writes later.
"""

import json
import socket
import ssl

import pytest_twisted
from twisted.internet import defer, endpoints, protocol, reactor, task, threads
from twisted.internet.error import ConnectionLost
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock

from resmon.services.web import buildSite
from resmon.webserver.eagerwrite import EagerWriter, socketConnection
from resmon.webserver.fanout import EventFanout
from resmon.webserver.httplimits import ConnectionLimits, _CountedConnection
from resmon.webserver.websocket import DashboardFactory
from certificates import authority, issue
from support import splitFrames
from test_units_fanout_sharing import HANDSHAKE
from test_web_units import analysis, body, key


class Accepted(protocol.Protocol):
    def connectionMade(self):
        self.factory.accepted.append(self)


class AcceptingFactory(protocol.Factory):
    protocol = Accepted

    def __init__(self):
        self.accepted = []


class CountingWrapper(ProtocolWrapper):
    # A wrapper that does more than pass a write on.
    def write(self, data):
        self.factory.written += len(data)
        ProtocolWrapper.write(self, data)


@defer.inlineCallbacks
def _connected(factory=None):
    """
    A loopback connection: the server side's protocol (of C{factory}'s
    protocols, or L{Accepted}'s) and the client's blocking socket.
    """
    accepting = AcceptingFactory()
    listening = reactor.listenTCP(0, factory(accepting) if factory else accepting,
                                  interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", listening.getHost().port))
    client.settimeout(10)
    for _ in range(1000):
        if accepting.accepted:
            break
        yield task.deferLater(reactor, 0.01, lambda: None)
    assert accepting.accepted, "the server never accepted the connection"
    return listening, accepting.accepted[0], client


def _nothingYet(client):
    client.setblocking(False)
    try:
        data = client.recv(1 << 16)
    except BlockingIOError:
        data = None
    client.setblocking(True)
    client.settimeout(10)
    return data is None


def _readExactly(client, size):
    received = bytearray()
    while len(received) < size:
        chunk = client.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    return bytes(received)


def _readUntilClosed(client):
    received = bytearray()
    try:
        while True:
            chunk = client.recv(1 << 16)
            if not chunk:
                break
            received += chunk
    except ConnectionResetError:
        pass
    return bytes(received)


@defer.inlineCallbacks
def _close(listening, server, client):
    client.close()
    server.transport.abortConnection()
    yield listening.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_write_is_sent_before_the_reactor_turns():
    listening, server, client = yield _connected()
    try:
        write = EagerWriter(server.transport)
        assert write.connection is server.transport
        # Twisted's write waits for the reactor's next turn...
        server.transport.write(b"later")
        assert _nothingYet(client)
        assert server.transport in reactor.getWriters()
        received = yield threads.deferToThread(_readExactly, client, 5)
        assert received == b"later"
        for _ in range(1000):
            if server.transport not in reactor.getWriters():
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        assert server.transport not in reactor.getWriters()
        # ...the eager writer's is on the wire at once, without the reactor
        # watching the socket for writing.
        write(b"at once")
        assert server.transport not in reactor.getWriters()
        assert _readExactly(client, 7) == b"at once"
    finally:
        yield _close(listening, server, client)


@pytest_twisted.inlineCallbacks
def test_bytes_written_earlier_in_the_turn_go_first():
    listening, server, client = yield _connected()
    try:
        write = EagerWriter(server.transport)
        server.transport.write(b"first,")
        write(b"second")
        assert _nothingYet(client)
        received = yield threads.deferToThread(_readExactly, client, 12)
        assert received == b"first,second"
    finally:
        yield _close(listening, server, client)


@pytest_twisted.inlineCallbacks
def test_what_the_socket_does_not_take_is_written_later_in_order():
    listening, server, client = yield _connected()
    try:
        server.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        write = EagerWriter(server.transport)
        big = bytes(range(256)) * (8 * 1024)  # 2 MiB: more than the sockets hold
        write(big)
        # Part of it went out; the rest waits in Twisted's buffer, watched.
        assert server.transport in reactor.getWriters()
        # The next write must not jump ahead of it.
        write(b"tail")
        received = yield threads.deferToThread(_readExactly, client, len(big) + 4)
        assert received == big + b"tail"
    finally:
        yield _close(listening, server, client)


@pytest_twisted.inlineCallbacks
def test_bytes_a_partial_send_of_twisted_left_go_first():
    # Twisted's turn moved its list of writes into dataBuffer and sent part
    # of it: only dataBuffer says something waits.
    listening, server, client = yield _connected()
    try:
        connection = server.transport
        connection.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = bytes(range(256)) * (8 * 1024)
        connection.write(big)
        for _ in range(100):
            yield task.deferLater(reactor, 0, lambda: None)
            if connection.dataBuffer:
                break
        assert connection.dataBuffer and not connection._tempDataLen
        EagerWriter(connection)(b"tail")
        received = yield threads.deferToThread(_readExactly, client, len(big) + 4)
        assert received == big + b"tail"
    finally:
        yield _close(listening, server, client)


@pytest_twisted.inlineCallbacks
def test_nothing_is_sent_once_the_connection_is_aborted():
    listening, server, client = yield _connected()
    try:
        server.transport.abortConnection()
        EagerWriter(server.transport)(b"after abort")
        received = yield threads.deferToThread(_readUntilClosed, client)
        assert received == b""
    finally:
        client.close()
        yield listening.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_closing_connections_writes_are_left_to_twisted():
    listening, server, client = yield _connected()
    try:
        server.transport.loseConnection()
        EagerWriter(server.transport)(b"after close")
        assert server.transport.disconnecting
        assert _nothingYet(client)  # not sent at once: Twisted decides
        yield threads.deferToThread(_readUntilClosed, client)
    finally:
        client.close()
        yield listening.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_connection_after_starttls_is_never_written_under():
    listening, server, client = yield _connected()
    try:
        server.transport.startTLS(CertificateOptions())
        assert socketConnection(server.transport) is None
    finally:
        yield _close(listening, server, client)


@pytest_twisted.inlineCallbacks
def test_it_looks_under_wrappers_that_only_pass_writes_on():
    listening, server, client = yield _connected(lambda f: WrappingFactory(f))
    try:
        wrapper = server.transport
        assert isinstance(wrapper, ProtocolWrapper)
        write = EagerWriter(wrapper)
        assert write.connection is wrapper.transport
        write(b"through")
        assert wrapper.transport not in reactor.getWriters()
        assert _readExactly(client, 7) == b"through"
    finally:
        yield _close(listening, server, client)


@pytest_twisted.inlineCallbacks
def test_a_wrapper_that_does_more_with_a_write_gets_every_write():
    def counting(accepting):
        wrapping = WrappingFactory(accepting)
        wrapping.protocol = CountingWrapper
        wrapping.written = 0
        counting.factory = wrapping
        return wrapping

    listening, server, client = yield _connected(counting)
    try:
        write = EagerWriter(server.transport)
        assert write.connection is None
        write(b"counted")
        assert counting.factory.written == 7
        received = yield threads.deferToThread(_readExactly, client, 7)
        assert received == b"counted"
    finally:
        yield _close(listening, server, client)


def test_tls_is_never_written_under():
    tls = TLSMemoryBIOFactory(CertificateOptions(), False, AcceptingFactory()).buildProtocol(None)
    assert socketConnection(tls) is None
    assert socketConnection(object()) is None


class _LostConnection:
    connected = True
    disconnecting = False
    _writeDisconnected = False
    dataBuffer = b""
    _tempDataLen = 0

    def writeSomeData(self, data):
        return ConnectionLost()


class _Transport:
    def __init__(self):
        self.written = []

    def write(self, data):
        self.written.append(data)


def test_a_lost_connection_is_left_to_twisted():
    transport = _Transport()
    write = EagerWriter(transport)
    write.connection = _LostConnection()
    write(b"whole")
    assert transport.written == [b"whole"]


def _messagesIn(data):
    """
    The whole messages, each one text frame, at the start of C{data}.
    """
    frames, _ = splitFrames(data)
    return [json.loads(payload) for opcode, payload in frames if opcode == 1]


def _readMessages(client, count):
    received = bytearray()
    while True:
        body = bytes(received)
        if body.startswith(b"HTTP/"):  # the handshake's answer first
            end = body.find(b"\r\n\r\n")
            body = body[end + 4:] if end >= 0 else b""
        if len(_messagesIn(body)) >= count:
            return _messagesIn(body)
        chunk = client.recv(1 << 16)
        if not chunk:
            raise AssertionError(f"closed after {bytes(received[:300])!r}")
        received += chunk


@defer.inlineCallbacks
def _dashboard(batch):
    """
    A dashboard connected over loopback to a fan-out turned by a Clock,
    past its handshake and its snapshot.
    """
    clock = Clock()
    fanout = EventFanout(clock=clock)
    factory = DashboardFactory(fanout, clock, stallTimeout=30)
    listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", listening.getHost().port))
    client.settimeout(10)
    client.sendall(HANDSHAKE.format(path=f"/ws?history=0&batch={batch}").encode())
    [snapshot] = yield threads.deferToThread(_readMessages, client, 1)
    assert snapshot["kind"] == "snapshot"
    return clock, fanout, listening, client


@pytest_twisted.inlineCallbacks
def test_a_dashboards_batch_is_sent_before_the_reactor_turns():
    clock, fanout, listening, client = yield _dashboard(batch=1)
    try:
        for seq, host in enumerate(["web-01", "web-02"]):
            fanout.eventReceived(key(host, "analysis"), body(analysis(host, seq, 100.0)))
        clock.advance(0)  # the turn ends: its batch is written
        # The reactor cannot turn while this waits: what arrives was sent at once.
        client.settimeout(5)
        try:
            data = client.recv(1 << 16)
        except TimeoutError:
            raise AssertionError("the batch waits for the reactor's next turn") from None
        [batch] = _messagesIn(data)
        assert [event["host"] for event in batch["events"]] == ["web-01", "web-02"]
    finally:
        client.close()
        yield listening.stopListening()


@pytest_twisted.inlineCallbacks
def test_events_sent_alone_are_left_to_twisteds_buffer():
    # A client sent each event alone may be written several times in a
    # turn: Twisted joins them in one send on its next turn.
    clock, fanout, listening, client = yield _dashboard(batch=0)
    try:
        for seq, host in enumerate(["web-01", "web-02"]):
            fanout.eventReceived(key(host, "analysis"), body(analysis(host, seq, 100.0)))
        clock.advance(0)
        assert _nothingYet(client)
        events = yield threads.deferToThread(_readMessages, client, 2)
        assert [event["host"] for event in events] == ["web-01", "web-02"]
    finally:
        client.close()
        yield listening.stopListening()


class _CountingConnection(_CountedConnection):
    # The web role's connection wrapper, made to do more with a write.
    written = 0

    def write(self, data):
        _CountingConnection.written += len(data)
        _CountedConnection.write(self, data)


def _tlsDashboard(port):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                 server_hostname="localhost")
    client.sendall(HANDSHAKE.format(path="/ws?history=0&batch=1").encode())
    [snapshot] = _readMessages(client, 1)
    assert snapshot["kind"] == "snapshot"
    return client


@pytest_twisted.inlineCallbacks
def test_a_dashboards_batch_over_tls_goes_through_the_connections_wrappers(tmp_path):
    ca = authority("resmon test CA")
    server = issue(ca, "localhost", dnsNames=["localhost"], ipAddresses=["127.0.0.1"])
    (tmp_path / "key.pem").write_bytes(server.keyPEM)
    (tmp_path / "cert.pem").write_bytes(server.certificatePEM)
    fanout = EventFanout(clock=reactor)
    limits = ConnectionLimits(buildSite(fanout, reactor, root=str(tmp_path)), reactor)
    limits.protocol = _CountingConnection
    listening = yield endpoints.serverFromString(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={tmp_path / 'key.pem'}"
                 f":certKey={tmp_path / 'cert.pem'}").listen(limits)
    client = yield threads.deferToThread(_tlsDashboard, listening.getHost().port)
    try:
        [dashboard] = [c for c in fanout.clients if getattr(c, "batching", False)]
        assert dashboard._eagerWriter.connection is None  # TLS: never written under
        before = _CountingConnection.written
        for seq, host in enumerate(["web-01", "web-02"]):
            fanout.eventReceived(key(host, "analysis"), body(analysis(host, seq, 100.0)))
        [batch] = yield threads.deferToThread(_readMessages, client, 1)
        assert [event["host"] for event in batch["events"]] == ["web-01", "web-02"]
        assert _CountingConnection.written > before  # the batch went through the wrapper
    finally:
        client.close()
        yield listening.stopListening()
