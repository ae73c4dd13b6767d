"""
C{/login} (the login page, and C{POST} of a name and password), C{POST
/logout}, and C{GET /api/me} (who the dashboard is logged in as).
"""

import json
from collections import Counter
from urllib.parse import parse_qs

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.web import resource, server

from resmon import wire
from resmon.auth import passwords
from resmon.auth.forwarded import TrustedProxies, limitKey
from resmon.auth.principal import principalOf
from resmon.auth.sessions import COOKIE, USER_COOKIE
from resmon.ratelimit import LimitedLog

WRONG = "wrong user name or password"
# Password checks run at once (each takes 32 MiB and a fraction of a second).
CONCURRENT_CHECKS = 2
# Attempts being checked at once: for one name, from one address, in all.
# Beyond, 429 at once: many attempts sent together must not all be checked
# before the first failure slows the next ones down.
PENDING_PER_NAME = 1
PENDING_PER_ADDRESS = 4
PENDING = 32


def threadedVerifier(limit=CONCURRENT_CHECKS):
    """
    A C{verify(password, encoded)} returning a Deferred, which checks in
    the reactor's thread pool, at most C{limit} at once.
    """
    semaphore = defer.DeferredSemaphore(limit)

    def verify(password, encoded):
        return semaphore.run(threads.deferToThread, passwords.verifyPassword, password, encoded)
    return verify


def _json(request, code, document, headers=()):
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    for name, value in headers:
        request.setHeader(name, value)
    return wire.encodeJSON(document)


def _error(request, code, text, headers=(), **details):
    return _json(request, code, dict({"error": text}, **details), headers)


def _credentials(request):
    """
    The name and password of a login request (JSON or a form), or L{None}.
    """
    body = request.content.read()
    contentType = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    try:
        if contentType == b"application/json":
            document = json.loads(body)
        elif contentType == b"application/x-www-form-urlencoded":
            document = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), strict_parsing=False).items()}
        else:
            return None
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting too deep for the decoder ("[" * 60000).
        return None
    if not isinstance(document, dict):
        return None
    name, password = document.get("name"), document.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name or len(name) > 200:
        return None
    return name, password


class LoginResource(resource.Resource):
    """
    C{GET /login}: the login page. C{POST /login} with C{name} and
    C{password} (JSON or a form): 200 and a session cookie, or 401 with the
    same message whether the user exists or not, or 429 while the address
    or the name must wait (L{resmon.auth.throttle.LoginThrottle}).
    """

    isLeaf = True
    log = Logger()

    def __init__(self, page, guard, throttle, clock, verify=None, proxies=None):
        resource.Resource.__init__(self)
        self.proxies = proxies if proxies is not None else TrustedProxies()
        self.page = page
        self.guard = guard
        self.throttle = throttle
        self.verify = verify or threadedVerifier()
        self.warnings = LimitedLog(clock)
        self.counters = {"succeeded": 0, "failed": 0, "throttled": 0}
        self._pending = Counter()

    def render_GET(self, request):
        return self.page.render(request)

    render_HEAD = render_GET

    def render_POST(self, request):
        if not self.guard.sameOrigin(request):
            return _error(request, 403, "cross-site login refused")
        credentials = _credentials(request)
        if credentials is None:
            return _error(request, 400, "expected a JSON object or a form with name and password")
        name, password = credentials
        # The address logged; what the limits count (an IPv6 client's /64).
        address = self.proxies.clientHost(request)
        limited = limitKey(address)
        wait = self.throttle.wait(limited, name)
        keys = (("name", name), ("address", limited), ("all", None))
        pending = self._pending
        if wait <= 0 and (pending[keys[0]] >= PENDING_PER_NAME or pending[keys[2]] >= PENDING
                          or pending[keys[1]] >= PENDING_PER_ADDRESS):
            wait = 1
        if wait > 0:
            self.counters["throttled"] += 1
            seconds = max(1, int(wait + 0.999))
            return _error(request, 429, f"too many failed logins: retry in {seconds} s",
                          headers=[(b"retry-after", str(seconds).encode())], retryAfter=seconds)
        pending.update(keys)
        user = self.guard.users.current.get(name)
        encoded = user.password if user is not None and user.password else passwords.dummyHash()
        finished = []
        request.notifyFinish().addBoth(finished.append)
        d = self.verify(password, encoded)
        d.addBoth(self._done, keys)
        d.addCallback(self._checked, request, name, user, address, limited, finished)
        d.addErrback(self._failed, request, finished)
        return server.NOT_DONE_YET

    def _done(self, result, keys):
        self._pending.subtract(keys)
        self._pending += Counter()  # drops the keys back at zero
        return result

    def _checked(self, matches, request, name, user, address, limited, finished):
        # The user may have been removed or changed while the hash was checked.
        current = self.guard.users.current.get(name)
        if matches and user is not None and user.password and current is not None \
                and current.password == user.password:
            self.throttle.succeeded(limited, name)
            self.counters["succeeded"] += 1
            sessions = self.guard.sessions
            session = sessions.create(name, user.password)
            self.log.info("user {name} logged in from {address}", name=name, address=address)
            body = None
            if not finished:
                request.addCookie(COOKIE, session.id, path="/", httpOnly=True, sameSite="strict",
                                  secure=request.isSecure() or None,
                                  max_age=str(int(sessions.lifetime)))
                # Tells the dashboard's script who is logged in (it cannot read the session).
                request.addCookie(USER_COOKIE, name, path="/", sameSite="strict",
                                  secure=request.isSecure() or None,
                                  max_age=str(int(sessions.lifetime)))
                body = _json(request, 200, {"name": name, "role": user.role})
        else:
            self.throttle.failed(limited, name)
            self.counters["failed"] += 1
            self.warnings.warn(self.log, "failed login as {name!r} from {address}",
                               name=name[:64], address=address)
            body = None if finished else _error(request, 401, WRONG)
        if body is not None:
            request.write(body)
            request.finish()

    def _failed(self, failure, request, finished):
        self.log.failure("checking a password failed", failure)
        if not finished:
            request.write(_error(request, 500, "could not check the password"))
            request.finish()


class LogoutResource(resource.Resource):
    """
    C{POST /logout}: ends the request's session and clears its cookie.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, guard):
        resource.Resource.__init__(self)
        self.guard = guard

    def render_POST(self, request):
        if not self.guard.sameOrigin(request):
            return _error(request, 403, "cross-site logout refused")
        cookie = request.getCookie(COOKIE.encode("ascii"))
        if cookie is not None:
            session = self.guard.sessions.get(cookie.decode("latin-1"))
            if session is not None:
                self.guard.sessions.revoke(session.id)
                self.log.info("user {name} logged out", name=session.user)
        request.addCookie(COOKIE, "", path="/", httpOnly=True, sameSite="strict",
                          secure=request.isSecure() or None, max_age="0")
        request.addCookie(USER_COOKIE, "", path="/", sameSite="strict",
                          secure=request.isSecure() or None, max_age="0")
        return _json(request, 200, {"loggedOut": True})


class MeResource(resource.Resource):
    """
    C{GET /api/me}: the user a request speaks for, their role, hosts and groups.
    """

    isLeaf = True

    def render_GET(self, request):
        principal = principalOf(request)
        return _json(request, 200, {
            "name": principal.name, "role": principal.role,
            "hosts": None if principal.hosts is None else list(principal.hosts),
            "groups": sorted(principal.groups)})
