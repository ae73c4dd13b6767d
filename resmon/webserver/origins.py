"""
Which web pages may open the dashboard's WebSocket, and under which names
the web role answers at all.

A browser lets any page open a WebSocket to any address and sends that
page's origin with the handshake; unlike C{fetch} or C{EventSource}, nothing
stops the page from reading what comes back. Without a check, a page on any
site that someone on the closed network happens to open could read the
whole fleet through their browser.

The origin check alone does not stop DNS rebinding: a page of
C{attacker.example} whose name is then made to resolve to the dashboard's
address is "same origin" with it, and its C{Host} header and C{Origin} both
say C{attacker.example}. So every request must also name the dashboard by a
name it is served under (C{--allowed-host}); an address literal can only
come from a page served from that address, so addresses are always fine.
"""

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from twisted.logger import Logger
from twisted.web import resource, server

from resmon.ratelimit import LimitedLog

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Names every machine is served under on its own.
LOCAL_NAMES = ("localhost",)
ANY_HOST = "*"
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")


def normalizeOrigin(origin):
    """
    C{origin} (C{scheme://host[:port]}) as C{scheme://host:port}, lower case.

    @raise ValueError: if it is not such an origin.
    """
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{origin!r} is not an origin ({e})")
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{origin!r} is not an origin such as https://dash.example.com:8443")
    port = port or _DEFAULT_PORTS[parts.scheme]
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


def normalizeHostName(name):
    """
    A host name or address as given to C{--allowed-host}: lower case, without
    a final dot, an IPv6 address without brackets.

    @raise ValueError: if it is neither a host name nor an address.
    """
    text = name.strip().lower()
    if text == ANY_HOST:
        return ANY_HOST
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    text = text[:-1] if text.endswith(".") else text
    if len(text) > 253 or not _HOST_NAME.match(text):
        raise ValueError(f"{name!r} is not a host name or address such as dash.example.com "
                         "(no scheme, port or path)")
    return text


def hostOfHeader(header):
    """
    The host of a C{Host} header (C{name[:port]} or C{[v6]:port}), as
    L{normalizeHostName} gives it, or L{None} if it is malformed.
    """
    text = header.strip()
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1:]
        if end < 0 or (rest and not re.fullmatch(r":\d{1,5}", rest)):
            return None
        text = text[:end + 1]
    else:
        name, colon, port = text.rpartition(":")
        if colon and re.fullmatch(r"\d{1,5}", port):
            text = name
    if text == ANY_HOST:
        return None
    try:
        host = normalizeHostName(text)
    except ValueError:
        return None
    if text.startswith("[") and not _isAddress(host):
        return None
    return host


def _isAddress(host):
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def machineHostNames():
    """
    The names this machine goes by: its host name and fully qualified name
    (the FQDN may take a DNS lookup: call once, at startup).
    """
    names = set()
    for name in (socket.gethostname(), socket.getfqdn()):
        try:
            names.add(normalizeHostName(name))
        except ValueError:
            pass
    return sorted(names)


class OriginPolicy:
    """
    Which requests the web role answers, and which pages may open its
    WebSocket.

    A request is answered if its C{Host} header names the dashboard: an
    address, C{localhost}, one of C{hosts} (the C{--allowed-host} names and
    the machine's own), or the host of an C{allowed} origin; or it has no
    C{Host} header (an HTTP/1.0 program); C{"*"} among C{hosts} accepts any.

    A WebSocket handshake is accepted from a client that sends no origin (a
    program, not a browser), from a page of the same origin as the address
    it connects to (scheme, host and port: the dashboard itself), and from
    the C{allowed} origins (a dashboard served under another name or scheme,
    e.g. by a reverse proxy that terminates TLS).

    @param allowed: origins such as C{https://dash.example.com}.
    @param hosts: host names or addresses the dashboard is served under.
    """

    def __init__(self, allowed=(), hosts=()):
        self.allowed = frozenset(normalizeOrigin(origin) for origin in allowed)
        names = {normalizeHostName(name) for name in hosts} | set(LOCAL_NAMES)
        names.update(urlsplit(origin).hostname for origin in self.allowed)
        self.anyHost = ANY_HOST in names
        self.hosts = frozenset(names - {ANY_HOST})

    def acceptsHost(self, header):
        """
        @param header: a request's C{Host} header (text), or L{None}.
        """
        if header is None or self.anyHost:
            return True
        host = hostOfHeader(header)
        if host is None:
            return False
        return host in self.hosts or _isAddress(host)

    def accepts(self, origin, host, secure=False):
        """
        @param origin: the handshake's C{Origin} header, or L{None}.
        @param host: its C{Host} header, or L{None}.
        @param secure: whether the connection is TLS (its own origin is then
            C{https://...}, else C{http://...}).
        """
        if not self.acceptsHost(host):
            return False
        if not origin:
            return True
        try:
            normalized = normalizeOrigin(origin)
        except ValueError:
            return False  # "null" (a sandboxed or file: page) and anything malformed
        if normalized in self.allowed:
            return True
        if not host:
            return False
        try:
            return normalizeOrigin(f"{'https' if secure else 'http'}://{host}") == normalized
        except ValueError:
            return False


class MisdirectedRequest(resource.Resource):
    """
    The answer to a request for a name the dashboard is not served under:
    421, and a body that says what to do if the name is right.
    """

    isLeaf = True

    def __init__(self, host):
        resource.Resource.__init__(self)
        self.host = host

    def render(self, request):
        request.setResponseCode(421, b"Misdirected Request")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (f"resmon is not served under the name {self.host[:100]!r}. If this is the "
                "dashboard's name, start the web role with --allowed-host=<name> (a page "
                "of another site that made its name resolve to this address is refused "
                "this way).\n").encode("utf-8", "replace")


class HostCheckedSite(server.Site):
    """
    A L{server.Site} that answers only requests whose C{Host} header the
    L{OriginPolicy} accepts; every other request, the WebSocket handshake
    included, gets L{MisdirectedRequest} and is counted (C{hostsRefused})
    and logged, rate limited.
    """

    # Site.log is the access log: events go here.
    eventLog = Logger()
    # A resmon.auth.guard.AuthGuard, with --users.
    guard = None

    def __init__(self, resource, origins, clock, **kwargs):
        server.Site.__init__(self, resource, reactor=clock, **kwargs)
        self.origins = origins
        self.hostsRefused = 0
        self.warnings = LimitedLog(clock)

    def getResourceFor(self, request):
        header = request.getHeader(b"host")
        host = header.decode("latin-1") if header is not None else None
        if self.origins.acceptsHost(host):
            # With --users, the guard answers requests it does not let through.
            answer = self.guard(request) if self.guard is not None else None
            return answer if answer is not None else server.Site.getResourceFor(self, request)
        self.hostsRefused += 1
        peer = request.getClientAddress()
        self.warnings.warn(
            self.eventLog, "refused a request for {path} from {peer}: {host} is not a name the dashboard "
            "is served under (see --allowed-host)", path=request.uri[:200].decode("latin-1"),
            peer=getattr(peer, "host", peer), host=repr(host[:200]))
        return MisdirectedRequest(host)
