"""
Users at the web role (C{--users}): the users file, re-read when it
changes, the sessions, and the guard put in front of the Site.
"""

import os

from twisted.application import internet, service
from twisted.internet import threads
from twisted.logger import Logger

from resmon.auth import passwords
from resmon.auth.guard import AuthGuard
from resmon.auth.login import LoginResource, LogoutResource, MeResource
from resmon.auth.sessions import DEFAULT_LIFETIME, SessionStore
from resmon.auth.throttle import LoginThrottle
from resmon.auth.usersfile import UsersFileError, loadUsers

# Seconds between two looks at the users file, and at open connections
# whose session or token may have ended.
CHECK_INTERVAL = 1.0


class UsersFileWatcher:
    """
    The users file at C{path}: C{current} is its L{Users}; L{poll} reads it
    again when it changed (a file that became bad is logged, and the last
    good one kept).
    """

    log = Logger()

    def __init__(self, path):
        self.path = path
        self._signature = self._stat()
        self.current = loadUsers(path)
        self.reloads = 0
        self.errors = 0
        self._warnWithoutIds()

    def _stat(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def poll(self):
        """
        @return: whether the file was read again.
        """
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            self.current = loadUsers(self.path)
        except UsersFileError as e:
            self.errors += 1
            self.log.error("kept the previous users: {error}", error=str(e))
            return False
        self.reloads += 1
        self.log.info("read the users file {path} again: {count} users",
                      path=self.path, count=len(self.current.users))
        self._warnWithoutIds()
        return True

    def _warnWithoutIds(self):
        """
        Say so when users have no id: their webhooks follow their names
        alone (docs/webhooks.md, "Who may see and manage hooks").
        """
        missing = sum(1 for user in self.current.users.values() if user.id is None)
        if missing:
            self.log.warn(
                "{missing} users of {path} have no id (written before users had ids, or by "
                "hand): their webhooks follow their names alone, so a user added under a "
                "removed one's name would get them; run 'resmon-users {path} ids' once every "
                "process reading the file runs this version", missing=missing, path=self.path)


class UsersService(service.MultiService):
    """
    Checks the users file for changes and open connections for ended
    sessions and tokens every C{interval} seconds.
    """

    name = "users"
    log = Logger()

    def __init__(self, watcher, sessions, guard, clock, interval=CHECK_INTERVAL, login=None,
                 statsInterval=60.0):
        service.MultiService.__init__(self)
        self.watcher = watcher
        self.sessions = sessions
        self.guard = guard
        self.login = login
        for every, call in ((interval, self.check), (statsInterval, self.logStats)):
            timer = internet.TimerService(every, call)
            timer.clock = clock
            timer.setServiceParent(self)

    def startService(self):
        service.MultiService.startService(self)
        self.log.info("the dashboard and API need a login or a token: {count} users in {path}",
                      count=len(self.watcher.current.users), path=self.watcher.path)
        # The dummy hash unknown names are checked against, made before the
        # first login so that it takes no longer than the others.
        threads.deferToThread(passwords.dummyHash).addErrback(
            lambda failure: self.log.failure("could not make the dummy hash", failure))

    def logStats(self):
        logins = self.login.counters if self.login is not None else {}
        self.log.info(
            "{sessions} sessions; logins: {succeeded} succeeded, {failed} failed, {throttled} "
            "throttled; requests refused: {unauthenticated} unauthenticated, {crossSite} "
            "cross-site, {forbidden} by role; {closed} connections closed as their session or "
            "token ended; users file read {reloads} times again ({errors} bad)",
            sessions=len(self.sessions), succeeded=logins.get("succeeded", 0),
            failed=logins.get("failed", 0), throttled=logins.get("throttled", 0),
            crossSite=self.guard.counters["cross-site"], reloads=self.watcher.reloads,
            errors=self.watcher.errors, unauthenticated=self.guard.counters["unauthenticated"],
            forbidden=self.guard.counters["forbidden"], closed=self.guard.counters["closed"])

    def check(self):
        self.watcher.poll()
        self.sessions.revokeStale(self.watcher.current)
        self.guard.sweep()


def attachUsers(web, path, clock, sessionLifetime=DEFAULT_LIFETIME, verify=None,
                interval=CHECK_INTERVAL, statsInterval=60.0, proxies=None):
    """
    Put the users of the file at C{path} in front of C{web} (a
    L{resmon.services.web.WebService}): its Site's guard, and a
    L{UsersService} child of C{web}.

    @param proxies: the L{resmon.auth.forwarded.TrustedProxies} whose
        C{X-Forwarded-For} says where a login comes from (none by default).

    @raise UsersFileError: if the file cannot be used.
    """
    watcher = UsersFileWatcher(path)
    sessions = SessionStore(clock, sessionLifetime)
    site = web.site
    guard = AuthGuard(watcher, sessions, site.origins, clock=clock, proxies=proxies)
    page = site.resource.createSimilarFile(os.path.join(site.resource.path, "login.html"))
    login = LoginResource(page, guard, LoginThrottle(clock), clock, verify, proxies=proxies)
    guard.publicRoutes[b"/login"] = login
    guard.publicRoutes[b"/logout"] = LogoutResource(guard)
    guard.routes[b"/api/me"] = MeResource()
    site.guard = guard
    users = UsersService(watcher, sessions, guard, clock, interval, login, statsInterval)
    users.setServiceParent(web)
    return users
