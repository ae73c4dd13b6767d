"""
What any client of the web role may cost: connections (overall and per
address), the time to send a request, the size of a request body, and
which files of the web root it may read. Each limit refuses with a clear
HTTP answer, counted and logged (rate-limited).
"""

import os
from collections import Counter
from io import BytesIO

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.web import http, pages, server, static

from resmon import wire
from resmon.ratelimit import LimitedLog
from resmon.webserver.origins import HostCheckedSite
from resmon.webserver.staticfiles import StaticFiles

DEFAULT_MAX_CLIENTS = 1000
DEFAULT_MAX_CLIENTS_PER_ADDRESS = 50
DEFAULT_HEADER_TIMEOUT = 10.0
# The web role takes no request bodies: enough for any GET, nothing to store.
MAX_REQUEST_BODY = 64 * 1024
# Seconds a refused connection has to finish sending its request before the 503.
REFUSAL_WAIT = 2.0
RETRY_AFTER = 10
# Bytes of a refused connection's request read before answering anyway.
REFUSAL_READ = 16 * 1024


def _logged(warnings, log, counters, key, text, **fields):
    """
    Count C{key} and log it through C{warnings} (a L{LimitedLog}).
    """
    counters[key] += 1
    warnings.warn(log, text + " ({count} so far)", count=counters[key], **fields)


def rawResponse(code, phrase, body, headers=()):
    """
    A complete HTTP/1.1 response with a JSON C{body} (bytes, see
    L{wire.errorBody}) that closes the connection, as bytes (for answers
    given outside twisted.web's request handling).
    """
    lines = [b"HTTP/1.1 %d %s" % (code, phrase), b"Content-Type: application/json",
             b"Content-Length: %d" % (len(body),), b"Connection: close",
             b"Cache-Control: no-store"]
    lines.extend(headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _Refusal(protocol.Protocol):
    """
    A connection over a limit: reads the request (up to a bound, for a short
    while), answers 503 with a JSON body and Retry-After, and closes.
    """

    def __init__(self, clock, reason):
        self._clock = clock
        self._reason = reason
        self._seen = b""
        self._timer = None

    def connectionMade(self):
        self._timer = self._clock.callLater(REFUSAL_WAIT, self._answer)

    def dataReceived(self, data):
        self._seen = (self._seen + data)[-REFUSAL_READ:]
        if b"\r\n\r\n" in self._seen or len(self._seen) >= REFUSAL_READ:
            self._answer()

    def _answer(self):
        if self._timer is None:
            return
        if self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.transport.write(rawResponse(
            503, b"Service Unavailable",
            wire.errorBody(self._reason, retryAfter=RETRY_AFTER),
            [b"Retry-After: %d" % (RETRY_AFTER,)]))
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class _CountedConnection(policies.ProtocolWrapper):
    def __init__(self, factory, wrappedProtocol, address):
        policies.ProtocolWrapper.__init__(self, factory, wrappedProtocol)
        self.address = address


class ConnectionLimits(policies.WrappingFactory):
    """
    Wraps the web role's Site: at most C{maxClients} connections at once
    (HTTP, event streams and WebSockets alike), and at most
    C{maxPerAddress} from one address; a connection beyond either is
    answered 503 (JSON, C{Retry-After}) and closed, counted in C{refused}.
    """

    protocol = _CountedConnection
    log = Logger()

    def __init__(self, wrappedFactory, clock, maxClients=DEFAULT_MAX_CLIENTS,
                 maxPerAddress=DEFAULT_MAX_CLIENTS_PER_ADDRESS):
        policies.WrappingFactory.__init__(self, wrappedFactory)
        self.clock = clock
        self.maxClients = maxClients
        self.maxPerAddress = maxPerAddress
        self.connections = 0
        self.perAddress = Counter()
        self.refused = Counter()
        self.warnings = LimitedLog(clock)

    def buildProtocol(self, addr):
        address = getattr(addr, "host", None)
        if self.connections >= self.maxClients:
            _logged(self.warnings, self.log, self.refused, "max-clients",
                    "refused a connection from {address}: {limit} connections already (--max-clients)",
                    address=address, limit=self.maxClients)
            return _Refusal(self.clock, f"too many connections: at most {self.maxClients}; retry later")
        if self.perAddress[address] >= self.maxPerAddress:
            _logged(self.warnings, self.log, self.refused, "max-clients-per-address",
                    "refused a connection from {address}: {limit} connections from it already "
                    "(--max-clients-per-address)", address=address, limit=self.maxPerAddress)
            return _Refusal(self.clock, f"too many connections from your address: at most "
                                        f"{self.maxPerAddress}; retry later")
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        self.connections += 1
        self.perAddress[address] += 1
        return self.protocol(self, wrapped, address)

    def unregisterProtocol(self, p):
        policies.WrappingFactory.unregisterProtocol(self, p)
        self.connections -= 1
        self.perAddress[p.address] -= 1
        if self.perAddress[p.address] <= 0:
            del self.perAddress[p.address]


class LimitedRequest(server.Request):
    """
    A request whose body is refused (413, JSON) beyond L{MAX_REQUEST_BODY}
    (or what the site's C{bodyLimit(path)} says, when it has one): from its
    Content-Length before any of it is read, or as a chunked body arrives;
    the connection is closed after the answer.
    """

    maxBody = MAX_REQUEST_BODY
    _refused = False
    _bodyLength = 0

    def gotLength(self, length):
        limit = getattr(getattr(self.channel, "site", None), "bodyLimit", None)
        # A larger limit is for what a path takes by POST (events), never
        # for another method on it (answered 404 or 405 anyway).
        if limit is not None and getattr(self.channel, "_command", None) == b"POST":
            self.maxBody = limit(getattr(self.channel, "_path", b"") or b"")
        if length is not None and length > self.maxBody:
            self._refuse(length)
            return
        # Small or chunked (counted as it arrives): in memory, never a temp file.
        self.content = BytesIO()

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._bodyLength += len(data)
        if self._bodyLength > self.maxBody:
            self._refuse(None)
            return
        server.Request.handleContentChunk(self, data)

    def requestReceived(self, command, path, version):
        if self._refused:
            return
        server.Request.requestReceived(self, command, path, version)

    def _refuse(self, length):
        self._refused = True
        self.content = BytesIO()
        channel = self.channel
        site = getattr(channel, "site", None)
        if site is not None and hasattr(site, "refused"):
            _logged(site.warnings, site.limitsLog, site.refused, "body-too-large",
                    "refused a request body of {length} bytes from {peer} (at most {limit})",
                    length="more than %d" % self.maxBody if length is None else length,
                    peer=getattr(channel.transport.getPeer(), "host", None), limit=self.maxBody)
        channel.transport.write(rawResponse(
            413, b"Payload Too Large",
            wire.errorBody(f"request body too large: at most {self.maxBody} bytes")))
        channel.loseConnection()


class LimitedHTTPChannel(http.HTTPChannel):
    """
    An HTTP connection that must send each request (line, headers and
    body) within C{site.headerTimeout} seconds of connecting or of the end
    of the previous response, however it trickles them; else it gets a 408
    and is closed (one that sent nothing, such as an idle keep-alive
    connection, is just closed). The idle timeout stays as it is.
    """

    _headerCall = None
    _requestStarted = False
    # Requests read ahead (pipelined) wait while the client does not read.
    _pipelineHeld = False

    def dataReceived(self, data):
        if data:
            self._requestStarted = True
        http.HTTPChannel.dataReceived(self, data)

    def connectionMade(self):
        http.HTTPChannel.connectionMade(self)
        self._armHeaderTimer()

    def allContentReceived(self):
        self._cancelHeaderTimer()
        http.HTTPChannel.allContentReceived(self)

    def requestDone(self, request):
        # Armed first: a pipelined request already buffered is read within.
        if self.transport is not None and self.persistent:
            self._armHeaderTimer()
        if self._waitingForTransport and self.persistent and self.transport is not None:
            # The client does not read its answers: the requests it sent
            # meanwhile (buffered, still in raw mode) wait until it does
            # (resumeProducing). Twisted would answer them at once, each
            # answer piling up in memory (ten pipelined GET /api/events:
            # 330 MiB from 450 bytes).
            if request != self.requests[0]:
                raise TypeError(request)
            del self.requests[0]
            self._pipelineHeld = True
            return
        http.HTTPChannel.requestDone(self, request)

    def resumeProducing(self):
        http.HTTPChannel.resumeProducing(self)
        if self._pipelineHeld and not self._waitingForTransport and self.transport is not None:
            # What Twisted's requestDone does for a persistent connection.
            self._pipelineHeld = False
            self._handlingRequest = False
            self._networkProducer.resumeProducing()
            if self._savedTimeOut:
                self.setTimeout(self._savedTimeOut)
            data = b"".join(self._dataBuffer)
            self._dataBuffer = []
            self.setLineMode(data)

    def connectionLost(self, reason):
        self._cancelHeaderTimer()
        http.HTTPChannel.connectionLost(self, reason)

    def _send100Continue(self):
        if not (self.requests and getattr(self.requests[-1], "_refused", False)):
            http.HTTPChannel._send100Continue(self)

    def _armHeaderTimer(self):
        self._cancelHeaderTimer()
        self._requestStarted = False
        timeout = getattr(self.site, "headerTimeout", None)
        if timeout:
            self._headerCall = self.callLater(timeout, self._headersTooSlow)

    def _cancelHeaderTimer(self):
        if self._headerCall is not None and self._headerCall.active():
            self._headerCall.cancel()
        self._headerCall = None

    def _headersTooSlow(self):
        self._headerCall = None
        if self.transport is None:
            return
        if not self._requestStarted:
            self.loseConnection()
            return
        site = self.site
        _logged(site.warnings, site.limitsLog, site.refused, "header-timeout",
                "closed a connection from {peer}: its request did not arrive within {timeout} s "
                "(--header-timeout)", peer=getattr(self.transport.getPeer(), "host", None),
                timeout=site.headerTimeout)
        self.transport.write(rawResponse(
            408, b"Request Timeout",
            wire.errorBody(f"the request did not arrive within {site.headerTimeout:g} s")))
        self.loseConnection()


class LimitedSite(HostCheckedSite):
    """
    The web role's Site (which checks each request's C{Host}, see
    L{HostCheckedSite}): L{LimitedHTTPChannel} connections making
    L{LimitedRequest}s; C{refused} counts what they refused, by reason.
    """

    protocol = LimitedHTTPChannel
    requestFactory = LimitedRequest
    limitsLog = Logger()

    def __init__(self, root, origins, clock, headerTimeout=DEFAULT_HEADER_TIMEOUT, **kwargs):
        HostCheckedSite.__init__(self, root, origins, clock, **kwargs)
        self.headerTimeout = headerTimeout
        self.refused = Counter()


class WebRootFile(StaticFiles):
    """
    The dashboard's static files (with L{StaticFiles}' content types):
    nothing outside the web root (a symbolic link leading out is not
    found), no directory listings, and no name a file system cannot hold
    (C{/%00}): all 404.
    """

    def __init__(self, path, *args, webRoot=None, **kwargs):
        StaticFiles.__init__(self, path, *args, **kwargs)
        self.webRoot = webRoot if webRoot is not None else os.path.realpath(path)

    def createSimilarFile(self, path):
        similar = StaticFiles.createSimilarFile(self, path)
        similar.webRoot = self.webRoot
        return similar

    def getChild(self, path, request):
        if b"\x00" in path or b"/" in path or b"\\" in path:
            return _notFound()
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            return _notFound()
        try:
            child = StaticFiles.getChild(self, path, request)
        except (ValueError, OSError, UnicodeError):
            return _notFound()
        if isinstance(child, static.File) and not self._inside(child.path):
            return _notFound()
        return child

    def _inside(self, path):
        real = os.path.realpath(path)
        return real == self.webRoot or real.startswith(self.webRoot.rstrip(os.sep) + os.sep)

    def directoryListing(self):
        return _notFound()


def _notFound():
    return pages.notFound("Not Found", "No such file.")
