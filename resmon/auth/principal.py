"""
Who a request or a connection speaks for, and what it may see and do.

Every part of the web role asks L{principalOf} (HTTP requests, event
streams) or reads a WebSocket protocol's C{principal}; nothing else decides
visibility. Without C{--users} every request is L{UNRESTRICTED}.
"""

from resmon.auth.agents import hostPatternMatches
from resmon.topics import SUBJECTS_SEPARATOR

VIEWER = "viewer"
OPERATOR = "operator"
ADMIN = "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)

# The attribute of a twisted.web request that holds its Principal, set by the
# authentication guard before any resource renders.
REQUEST_ATTRIBUTE = "resmonPrincipal"


class Principal:
    """
    A user (or a token of a user) as the web role sees it.

    @param name: the user's name (L{None} for L{UNRESTRICTED}).
    @param role: one of L{ROLES}.
    @param hosts: host patterns the user may see (a host's name, a glob
        such as C{web-*}, or an AMQP topic pattern over its routing word, as
        in C{--agent-users}), or L{None} for every host. Admins see every host.
    @param groups: the user's groups (for C{group.<group>.notify}).
    @param userId: the user's id in the users file (L{None} without one):
        a webhook is bound to its owner's name and id.
    @param predatesIds: whether the user was in the users file before users
        had ids (see L{resmon.auth.usersfile.User}).
    """

    def __init__(self, name, role=VIEWER, hosts=(), groups=(), userId=None, predatesIds=False):
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        self.name = name
        self.role = role
        self.hosts = None if hosts is None or role == ADMIN else tuple(hosts)
        self.groups = frozenset(groups)
        self.userId = userId
        self.predatesIds = predatesIds
        self._seen = {}

    @property
    def seesEverything(self):
        return self.hosts is None

    @property
    def mayAct(self):
        """
        May post events and notifications and manage webhooks.
        """
        return self.role in (OPERATOR, ADMIN)

    @property
    def isAdmin(self):
        return self.role == ADMIN

    def maySee(self, host):
        """
        Whether anything about C{host} may be sent to this principal.
        """
        if self.hosts is None:
            return True
        seen = self._seen.get(host)
        if seen is None:
            if SUBJECTS_SEPARATOR in host:
                # About several hosts (an alert under one host's key naming
                # another, resmon.topics.alertSubject): a
                # pattern such as "db-*" would match the joined name whole.
                seen = all(self.maySee(part) for part in host.split(SUBJECTS_SEPARATOR))
            else:
                seen = any(hostPatternMatches(p, host) for p in self.hosts)
            if len(self._seen) >= 100_000:
                self._seen.clear()
            self._seen[host] = seen
        return seen

    def __repr__(self):
        return f"<Principal {self.name!r} {self.role} hosts={self.hosts!r}>"


# Every request when the web role runs without --users.
UNRESTRICTED = Principal(None, ADMIN, None)


def principalOf(request):
    """
    The L{Principal} a twisted.web request speaks for.
    """
    return getattr(request, REQUEST_ATTRIBUTE, UNRESTRICTED)
