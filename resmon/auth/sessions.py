"""
Server-side login sessions: a random id in a cookie, the user and the
expiry here. A session ends at its expiry, at logout, or when its user is
removed from the users file or their password changes.
"""

import secrets
from collections import OrderedDict

DEFAULT_LIFETIME = 12 * 3600.0
# Sessions kept per user: logging in again beyond this ends the oldest.
MAX_PER_USER = 100
COOKIE = "resmon_session"
# Not HttpOnly: the name of the user logged in, for the dashboard to show.
USER_COOKIE = "resmon_user"


class Session:
    def __init__(self, id, user, fingerprint, expires):
        self.id = id
        self.user = user
        self.fingerprint = fingerprint
        self.expires = expires


class SessionStore:
    """
    The open sessions of one web process.

    @param clock: an L{IReactorTime}.
    @param lifetime: seconds a session lasts from its login.
    """

    def __init__(self, clock, lifetime=DEFAULT_LIFETIME, maxPerUser=MAX_PER_USER):
        self.clock = clock
        self.lifetime = lifetime
        self.maxPerUser = maxPerUser
        self._sessions = {}
        self._byUser = {}

    def __len__(self):
        return len(self._sessions)

    def create(self, user, fingerprint):
        """
        A new L{Session} of C{user} (a name); C{fingerprint} is what must not
        change for it to stay valid (the user's password hash).
        """
        session = Session(secrets.token_urlsafe(32), user, fingerprint,
                          self.clock.seconds() + self.lifetime)
        self._sessions[session.id] = session
        mine = self._byUser.setdefault(user, OrderedDict())
        mine[session.id] = None
        while len(mine) > self.maxPerUser:
            self.revoke(next(iter(mine)))
        return session

    def get(self, sessionId):
        """
        The unexpired L{Session} of C{sessionId}, or L{None}.
        """
        session = self._sessions.get(sessionId)
        if session is None:
            return None
        if session.expires <= self.clock.seconds():
            self.revoke(sessionId)
            return None
        return session

    def isOpen(self, session):
        """
        Whether C{session} is still open (not expired, not revoked).
        """
        return self.get(session.id) is session

    def revoke(self, sessionId):
        session = self._sessions.pop(sessionId, None)
        if session is None:
            return
        mine = self._byUser.get(session.user)
        if mine is not None:
            mine.pop(sessionId, None)
            if not mine:
                del self._byUser[session.user]

    def revokeStale(self, users):
        """
        End expired sessions, and those whose user is gone from C{users}
        (L{resmon.auth.usersfile.Users}) or changed password.

        @return: how many ended.
        """
        now = self.clock.seconds()
        stale = []
        for session in self._sessions.values():
            user = users.get(session.user)
            if session.expires <= now or user is None or user.password != session.fingerprint:
                stale.append(session.id)
        for sessionId in stale:
            self.revoke(sessionId)
        return len(stale)
