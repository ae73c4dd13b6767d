"""
Which events a hook's owner may receive: the hosts an event is about,
judged by the owner's host patterns in the users file, as the dashboard
judges what a user sees (L{resmon.webserver.visibility}).

A hook registered without users (C{owner} L{None}) receives every event
its key matches. A hook whose owner is no longer in the users file
receives nothing until the user is back. An event is about:

  - the first word of its routing key (the host's word of a measure, an
    analysis or a status, the source of an event or an alert);
  - the C{host} its body names, if any (a measure's, an analysis's, a
    status's);
  - for an alert, what L{resmon.topics.alertSubject} says (an alert under
    one host's key naming another host is about both).

The owner must see every one of them: a body that names another host than
its key does reaches neither the owner of the key's host nor the owner of
the named host alone.
"""

from resmon import topics
from resmon.topics import alertSubject


def subjectsOf(routingKey, event):
    """
    What an event under C{routingKey}, decoded as C{event} (any JSON value:
    bodies are not checked here), is about: host names and routing words.
    """
    words = routingKey.split(".")
    subjects = [words[0]]
    if isinstance(event, dict):
        host = event.get("host")
        if isinstance(host, str) and host and host != words[0]:
            subjects.append(host)
        payload = event.get("payload")
        if words[-1] == topics.ALERT and isinstance(payload, dict):
            subject = alertSubject(words[0], payload.get("host"))
            if subject != words[0]:
                subjects.append(subject)
    return subjects


class OwnerFilter:
    """
    Whether a hook's owner may receive an event, by the users file as last
    read.

    @param watcher: a L{resmon.auth.service.UsersFileWatcher} (its
        C{current} is the L{resmon.auth.usersfile.Users} last read; whoever
        made it keeps it read again).
    """

    def __init__(self, watcher):
        self.watcher = watcher

    def mayReceive(self, owner, subjects):
        """
        Whether the hook of C{owner} (a user's name, or L{None}) may
        receive an event about C{subjects} (L{subjectsOf} the event).

        @return: L{None} if it may, else why not (C{"not-visible"} or
            C{"owner-gone"}).
        """
        if owner is None:
            return None
        user = self.watcher.current.get(owner)
        if user is None:
            return "owner-gone"
        principal = user.principal()
        if principal.seesEverything:
            return None
        for subject in subjects:
            if not principal.maySee(subject):
                return "not-visible"
        return None
