"""
The guard in front of the web role's resources when it runs with
C{--users}: resolves who each request speaks for (a session cookie or an
C{Authorization: Bearer} token) and sets its L{Principal}, sends browsers
without one to the login page and answers programs 401, refuses
cross-site state changes made with a cookie, keeps viewers from acting,
and ends the WebSocket connections and event streams of sessions and
tokens that end.
"""

import weakref

from twisted.logger import Logger
from twisted.web import resource

from resmon import wire
from resmon.ratelimit import LimitedLog
from resmon.auth.forwarded import TrustedProxies
from resmon.auth.principal import REQUEST_ATTRIBUTE
from resmon.auth.sessions import COOKIE

# Methods that change nothing (no cross-site check, allowed to viewers).
SAFE_METHODS = frozenset([b"GET", b"HEAD", b"OPTIONS"])
# Where a state-changing request needs a role that may act (first path segments).
ACTING = frozenset([(b"api", b"events"), (b"api", b"notify")])
# Served to anyone: what the login page needs, and the probes.
PUBLIC_PATHS = frozenset([b"/login.html", b"/login.css", b"/login.js", b"/favicon.svg",
                          b"/healthz", b"/readyz"])
# Long-lived answers ended when their session or token ends.
STREAM_PATHS = frozenset([b"/api/stream", b"/api/stream/"])
# WebSocket close code for a session or token that ended (policy violation).
POLICY_VIOLATION = 1008


class Credential:
    """
    How a request proved who it is: a session (C{kind} C{"session"}) or an
    API token (C{"token"}), and its L{Principal}.
    """

    def __init__(self, kind, principal, key):
        self.kind = kind
        self.principal = principal
        # The session, or the token's digest.
        self.key = key


class JSONAnswer(resource.Resource):
    """
    An error answer in L{wire.errorBody}'s format.
    """

    isLeaf = True

    def __init__(self, code, text, headers=(), **details):
        resource.Resource.__init__(self)
        self.code = code
        self.text = text
        self.headers = headers
        self.details = details

    def render(self, request):
        request.setResponseCode(self.code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        for name, value in self.headers:
            request.setHeader(name, value)
        return wire.errorBody(self.text, **self.details)


class RedirectToLogin(resource.Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(303)
        request.setHeader(b"location", b"/login")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Log in at /login\n"


def unauthorized():
    return JSONAnswer(401, "authentication required: log in, or send Authorization: Bearer <token>",
                      headers=[(b"www-authenticate", b'Bearer realm="resmon"')])


class AuthGuard:
    """
    Called by the Site (its C{guard}) for every request whose C{Host} it
    accepts: returns the resource that answers instead (login, refusals),
    or L{None} to serve the request, its L{Principal} set.

    @param users: a L{resmon.auth.service.UsersFileWatcher} (its C{current}
        is the L{resmon.auth.usersfile.Users} of now).
    @param sessions: the L{resmon.auth.sessions.SessionStore}.
    @param origins: the Site's L{resmon.webserver.origins.OriginPolicy}.
    @param routes: resources by path answered by the guard itself once a
        request is authenticated (or not: those in C{publicRoutes}).
    @param proxies: the L{resmon.auth.forwarded.TrustedProxies} that say
        where a request comes from, for the log (its connection otherwise).
    """

    log = Logger()

    def __init__(self, users, sessions, origins, publicRoutes=None, routes=None, clock=None,
                 proxies=None):
        self.users = users
        self.proxies = proxies if proxies is not None else TrustedProxies()
        self.sessions = sessions
        self.origins = origins
        self.publicRoutes = dict(publicRoutes or {})
        self.routes = dict(routes or {})
        self._watched = weakref.WeakKeyDictionary()
        self.counters = {"unauthenticated": 0, "cross-site": 0, "forbidden": 0, "closed": 0}
        self.warnings = LimitedLog(clock) if clock is not None else None

    def __call__(self, request):
        # The path as traversal will see it (segments percent-decoded), not
        # as sent: /api/%65vents is /api/events.
        segments = request.postpath
        path = b"/" + b"/".join(segments)
        public = self.publicRoutes.get(path)
        if public is not None:
            return public
        if path in PUBLIC_PATHS:
            return None
        credential = self.credentialOf(request)
        if credential is None:
            self.counters["unauthenticated"] += 1
            if self._wantsPage(request, path):
                return RedirectToLogin()
            return unauthorized()
        method = request.method
        if method not in SAFE_METHODS:
            if credential.kind == "session" and not self.sameOrigin(request):
                self.counters["cross-site"] += 1
                self._warn("refused a cross-site {method} of {path} by {user} from {peer} "
                           "(Origin {origin})", request, path, credential,
                           origin=(request.getHeader(b"origin") or b"none")[:200].decode("latin-1"))
                return JSONAnswer(403, "cross-site request refused: state changes made with the "
                                       "session cookie must come from the dashboard's own pages")
            if tuple(segments[:2]) in ACTING and not credential.principal.mayAct:
                self.counters["forbidden"] += 1
                self._warn("refused a {method} of {path} by {user} from {peer}: role "
                           f"{credential.principal.role} may only read", request, path, credential)
                return JSONAnswer(403, f"role {credential.principal.role} may only read",
                                  role=credential.principal.role)
        setattr(request, REQUEST_ATTRIBUTE, credential.principal)
        # Asked again each time, so that after a logout no page comes from a cache.
        request.setHeader(b"cache-control", b"private, no-cache")
        request.resmonCredential = credential
        if path in STREAM_PATHS:
            self.watch(request, credential, _abort)
            request.notifyFinish().addBoth(lambda _: self._watched.pop(request, None))
        return self.routes.get(path)

    def _warn(self, text, request, path, credential, **fields):
        if self.warnings is None:
            return
        self.warnings.warn(self.log, text, method=request.method.decode("latin-1"),
                           path=path[:200].decode("latin-1"), user=credential.principal.name,
                           peer=self.proxies.clientHost(request), **fields)

    def credentialOf(self, request):
        """
        The L{Credential} of C{request}, or L{None}. An C{Authorization}
        header wins over the cookie (and a bad one is not made up for by it).
        """
        users = self.users.current
        authorization = request.getHeader(b"authorization")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(b" ")
            if scheme.lower() != b"bearer":
                return None
            found = users.tokenUser(token.strip().decode("latin-1"))
            if found is None:
                return None
            user, token = found
            return Credential("token", user.principal(), token.digest)
        cookie = request.getCookie(COOKIE.encode("ascii"))
        if cookie is None:
            return None
        session = self.sessions.get(cookie.decode("latin-1"))
        if session is None:
            return None
        user = users.get(session.user)
        if user is None or user.password != session.fingerprint:
            self.sessions.revoke(session.id)
            return None
        return Credential("session", user.principal(), session)

    def isValid(self, credential):
        """
        Whether C{credential} still holds, for the same rights.
        """
        principal = credential.principal
        if credential.kind == "session":
            if not self.sessions.isOpen(credential.key):
                return False
            user = self.users.current.get(principal.name)
            if user is None or user.password != credential.key.fingerprint:
                return False
        else:
            found = self.users.current.byTokenDigest.get(credential.key)
            if found is None:
                return False
            user = found[0]
        now = user.principal()
        return (now.name, now.role, now.hosts, now.groups) == (
            principal.name, principal.role, principal.hosts, principal.groups)

    def sameOrigin(self, request):
        """
        Whether a state-changing request comes from the dashboard's own
        pages (or an allowed origin), by its C{Origin}, else its
        C{Sec-Fetch-Site}; a request with neither is refused.
        """
        origin = request.getHeader(b"origin")
        host = request.getHeader(b"host")
        if origin is not None:
            origin = origin.decode("latin-1")
            return origin != "null" and self.origins.accepts(
                origin, host.decode("latin-1") if host is not None else None, request.isSecure())
        return request.getHeader(b"sec-fetch-site") == b"same-origin"

    @staticmethod
    def _wantsPage(request, path):
        if request.method not in (b"GET", b"HEAD") or path.startswith((b"/api/", b"/ws")):
            return False
        accept = request.getHeader(b"accept") or b""
        return path == b"/" or path.endswith(b".html") or b"text/html" in accept

    def watch(self, connection, credential, close):
        """
        Call C{close(connection)} once C{credential} no longer holds (see
        L{sweep}). Only a weak reference to C{connection} is kept.
        """
        self._watched[connection] = (credential, close)

    def sweep(self):
        """
        Close the connections whose session or token ended (logout, expiry,
        user removed or changed in the users file, token revoked).
        """
        ended = []
        for connection, (credential, close) in list(self._watched.items()):
            if getattr(connection, "state", None) == getattr(connection, "STATE_CLOSED", ()):
                del self._watched[connection]  # a WebSocket gone, not yet collected
            elif not self.isValid(credential):
                ended.append((connection, close))
        for connection, close in ended:
            self._watched.pop(connection, None)
            self.counters["closed"] += 1
            close(connection)
        return len(ended)


def _abort(request):
    transport = getattr(request.channel, "transport", None)
    if transport is not None:
        transport.loseConnection()


def closeWebSocket(protocol):
    """
    Close C{protocol} (an Autobahn server protocol) with 1008.
    """
    if protocol.state in (protocol.STATE_CLOSED, protocol.STATE_CLOSING):
        return
    # sendClose() takes application codes only; 1008 is a protocol code.
    protocol._fail_connection(POLICY_VIOLATION, "session ended: log in again")
