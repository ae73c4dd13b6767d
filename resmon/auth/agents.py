"""
Which broker users may speak for which hosts (C{--agent-users}).

Every resmon process stamps the AMQP C{user_id} property of what it
publishes with the broker user it logs in as, and RabbitMQ refuses a
message whose C{user_id} is not the connection's user: on the consuming
side, the C{user_id} of a delivery names who published it. With an
L{AgentUsers} map, the analyzer accepts a measure only from a user whose
host patterns cover the measure's host (see C{docs/security.md}).

The file is TOML, one key per broker user, its value a host pattern or a
list of them::

    # broker user = the hosts it may publish measures for
    agent-web01 = "web01"
    agent-web = ["web-*", "www"]
    fleet-importer = "*"

A pattern is a host name, a shell-style glob over the host name (C{web-*},
C{db-?}), or an AMQP topic pattern over the host's routing word (C{*} or
C{#}: every host), as the web role's host patterns are.
"""

import sys
from fnmatch import fnmatchcase

from resmon import topics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The rejection reason of a measure whose publisher may not speak for its host.
FORBIDDEN = "forbidden"


class AgentUsersError(ValueError):
    """
    An C{--agent-users} file that cannot be read or is not a valid map; the
    message says where.
    """


def hostPatternMatches(pattern, host):
    """
    Whether host pattern C{pattern} covers host C{host} (see the module
    docstring).
    """
    if pattern == host or fnmatchcase(host, pattern):
        return True
    return topics.topicMatches(pattern, topics.hostWord(host))


class AgentUsers:
    """
    A map of broker users to the host patterns they may speak for.

    @param patterns: a L{dict} of user name to a sequence of host patterns.
    @param source: where the map came from, for the log.
    """

    def __init__(self, patterns, source="(given)"):
        self.patterns = {user: tuple(hosts) for user, hosts in patterns.items()}
        self.source = source
        self._decided = {}

    def __len__(self):
        return len(self.patterns)

    def maySpeakFor(self, user, host):
        """
        Whether broker user C{user} (a delivery's verified C{user_id}, or
        L{None} when it carried none) may publish measures of C{host}.
        """
        if user is None:
            return False
        key = (user, host)
        decided = self._decided.get(key)
        if decided is None:
            decided = any(hostPatternMatches(p, host) for p in self.patterns.get(user, ()))
            if len(self._decided) >= 100_000:
                self._decided.clear()
            self._decided[key] = decided
        return decided

    def whyNot(self, user, host):
        """
        One line saying why C{user} may not speak for C{host}.
        """
        if user is None:
            return f"a measure of {host!r} carries no user_id (an unknown publisher)"
        if user not in self.patterns:
            return f"broker user {user!r} is not in --agent-users; it may not speak for {host!r}"
        return (f"broker user {user!r} may speak for {', '.join(self.patterns[user])}, "
                f"not for {host!r}")


def parseAgentUsers(text, source="(given)"):
    """
    Parse the TOML text of an C{--agent-users} file.

    @raise AgentUsersError: naming what is wrong.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise AgentUsersError(f"{source}: not valid TOML: {e}") from None
    patterns = {}
    for user, value in document.items():
        if isinstance(value, str):
            value = [value]
        if (not isinstance(value, list) or not value
                or not all(isinstance(p, str) and p.strip() for p in value)):
            raise AgentUsersError(
                f"{source}: {user!r} must be a host pattern or a non-empty list of them "
                "(e.g. agent-web01 = \"web01\" or agent-web = [\"web-*\"])")
        if not user:
            raise AgentUsersError(f"{source}: an empty broker user name")
        patterns[user] = [p.strip() for p in value]
    if not patterns:
        raise AgentUsersError(f"{source}: no broker user in it (lines such as agent-web01 = \"web01\")")
    return AgentUsers(patterns, source)


def loadAgentUsers(path):
    """
    Read and parse the C{--agent-users} file at C{path}.

    @raise AgentUsersError: it cannot be read or parsed.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise AgentUsersError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise AgentUsersError(f"{path} is not UTF-8 text") from None
    return parseAgentUsers(text, path)
