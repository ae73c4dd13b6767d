"""
Which events a hook's owner may receive, judged as the dashboard judges
what that user is sent (L{resmon.webserver.visibility},
L{resmon.webserver.notifications}), by the users file as last read.

A hook registered without users (C{owner} L{None}) receives every event
its key matches. A hook with an owner receives an event only while:

  - the process knows the users (C{--users}): without the file it cannot
    tell (C{no-users}), and stores such hooks' events for a process with
    the file to judge and deliver;
  - the owner is a user of the file, an operator or an admin, and the user
    who registered the hook (L{resmon.webhooks.store.ownsHook}; C{owner-gone}
    otherwise: deleted, made a viewer, who may not manage webhooks, or
    deleted and another user added under the name);
  - the owner may see what the event is about (C{not-visible} otherwise).

What an event is about (L{audienceOf}):

  - a notification (C{user.<name>.notify}, C{group.<group>.notify}) is for
    the user it names or the members of the group it names, and about the
    host its body names, if any: nobody else gets it, admins included;
  - a C{resmon.webhook} event (a hook disabled) is for the owner of the
    hook it names, and for those who see every host;
  - any other event is about the host its body names (C{host}; for an
    alert, the host its payload names, L{resmon.topics.alertSubject}) and
    about its routing key's first word, the word of a host or a source.
    The word is left out when it is the named host's own word (an FQDN's
    C{web_01_example_com}); otherwise the owner must see both, so a body
    that names another host than its key reaches neither the owner of one
    nor of the other alone.
"""

from collections import namedtuple

from resmon import topics, wire
from resmon.topics import alertSubject
from resmon.webhooks.store import ownsHook

# Why a hook does not get an event (counted under these names).
NOT_VISIBLE, OWNER_GONE, NO_USERS = "not-visible", "owner-gone", "no-users"
# A subject (or a part of a joined one) longer than this is nobody's to see
# (no host name is), and is not asked of the users: what they remember
# stays small.
MAX_SUBJECT = 255
# What the owner of a hook named by a resmon.webhook event is when the hook
# is not known: nobody's name.
NOBODY = object()


class HookOwner(namedtuple("HookOwner", "name id")):
    """
    Who registered a hook: the user's name, and the id it is bound to.
    """


class EventAudience:
    """
    Who may receive one event; see the module's docstring.

    @ivar subjects: the host names and routing words it is about.
    @ivar addressee: for a notification, C{(audience, name)}; else L{None}.
    @ivar aboutHook: whether it is a C{resmon.webhook} event.
    @ivar hookOwner: for a C{resmon.webhook} event, the L{HookOwner} of the
        hook it names (L{None} for a hook without one, L{NOBODY} for none
        known).
    """

    __slots__ = ("subjects", "addressee", "aboutHook", "hookOwner")

    def __init__(self, subjects, addressee=None, aboutHook=False, hookOwner=NOBODY):
        self.subjects = subjects
        self.addressee = addressee
        self.aboutHook = aboutHook
        self.hookOwner = hookOwner

    def admits(self, principal):
        """
        Whether C{principal} (an owner's L{resmon.auth.principal.Principal})
        may receive the event.
        """
        if self.addressee is not None:
            audience, name = self.addressee
            if audience == wire.NOTIFY_USER:
                if principal.name != name:
                    return False
            elif name not in principal.groups:
                return False
        elif principal.seesEverything:
            return True
        elif self.aboutHook:
            return isOwner(self.hookOwner, principal)
        for subject in self.subjects:
            if _tooLong(subject) or not principal.maySee(subject):
                return False
        return True


def isOwner(owner, principal):
    """
    Whether C{principal} is C{owner}, a L{HookOwner} (see
    L{resmon.webhooks.store.ownsHook}).
    """
    return isinstance(owner, HookOwner) and ownsHook(principal, owner.name, owner.id)


def _tooLong(subject):
    if len(subject) <= MAX_SUBJECT:
        return False
    return any(len(part) > MAX_SUBJECT for part in subject.split(topics.SUBJECTS_SEPARATOR))


def _notifyKey(words):
    return len(words) == 3 and words[0] in (wire.NOTIFY_USER, wire.NOTIFY_GROUP) and (
        words[2] == wire.NOTIFY)


def isPing(event):
    """
    Whether C{event} is a test delivery's event (L{wire.webhookPingEvent}):
    holding nothing else, it is about nothing, whoever gets it. An event of
    the bus under the same key holds more, and is judged as any other.
    """
    return (isinstance(event, dict) and event.get("kind") == "ping"
            and event.keys() <= {"v", "kind", "ts"})


def addressed(routingKey):
    """
    Whether events under C{routingKey} are for someone in particular (a
    notification, a C{resmon.webhook} event), not for whoever sees their
    hosts: admins included, only those they are for get them.
    """
    return routingKey == wire.WEBHOOK_EVENT_KEY or _notifyKey(routingKey.split("."))


def _namedHost(value):
    return value if isinstance(value, str) and value else None


def subjectsOf(routingKey, event):
    """
    What an event under C{routingKey}, decoded as C{event} (any JSON value:
    bodies are not checked here), is about: host names and routing words.
    """
    word = routingKey.split(".", 1)[0]
    named = []
    if isinstance(event, dict):
        host = _namedHost(event.get("host"))
        if host is not None:
            named.append(host)
        payload = event.get("payload")
        if routingKey.endswith("." + topics.ALERT) and isinstance(payload, dict):
            subject = alertSubject(word, payload.get("host"))
            if subject != word and subject not in named:
                named.append(subject)
    if any(topics.hostWord(name) == word for name in named):
        return named
    return [word] + named


def audienceOf(routingKey, event, ownerOfHook):
    """
    The L{EventAudience} of an event under C{routingKey}, decoded as
    C{event}.

    @param ownerOfHook: C{(hookId) -> owner}: the L{HookOwner} of a
        registered hook (L{None} for none), or L{NOBODY} for a hook that is
        not registered.
    """
    words = routingKey.split(".")
    if _notifyKey(words):
        host = _namedHost(event.get("host")) if isinstance(event, dict) else None
        return EventAudience([host] if host is not None else [], addressee=(words[0], words[1]))
    if routingKey == wire.WEBHOOK_EVENT_KEY:
        hookId = event.get("hook") if isinstance(event, dict) else None
        owner = ownerOfHook(hookId) if isinstance(hookId, str) else NOBODY
        return EventAudience([], aboutHook=True, hookOwner=owner)
    return EventAudience(subjectsOf(routingKey, event))


class OwnerFilter:
    """
    Whether a hook's owner may receive an event, by the users file as last
    read.

    @param watcher: a L{resmon.auth.service.UsersFileWatcher} (its
        C{current} is the L{resmon.auth.usersfile.Users} last read; whoever
        made it keeps it read again), or L{None} in a process without
        C{--users}: then hooks with an owner get nothing.
    """

    def __init__(self, watcher):
        self.watcher = watcher

    def principalOf(self, owner, ownerId=None):
        """
        The L{resmon.auth.principal.Principal} of C{owner} as the users file
        says now, or why there is none (L{NO_USERS}, L{OWNER_GONE}).

        @param ownerId: the id of the user the hook is bound to, or L{None}
            for a hook bound to none: a user of the same name who does not
            own it (L{resmon.webhooks.store.ownsHook}) is another user, and
            the owner is gone.
        """
        if self.watcher is None:
            return NO_USERS
        user = self.watcher.current.get(owner)
        if user is None:
            return OWNER_GONE
        principal = user.principal()
        if not ownsHook(principal, owner, ownerId):
            return OWNER_GONE
        if not principal.mayAct:
            return OWNER_GONE
        return principal

    def mayReceive(self, owner, audience, ownerId=None):
        """
        Whether the hook of C{owner} (a user's name, or L{None}; bound to
        the user's id C{ownerId}, see L{principalOf}) may receive an event
        of L{EventAudience} C{audience}.

        @return: L{None} if it may, else why not (L{NOT_VISIBLE},
            L{OWNER_GONE} or L{NO_USERS}).
        """
        if owner is None:
            return None
        principal = self.principalOf(owner, ownerId)
        if isinstance(principal, str):
            return principal
        return None if audience.admits(principal) else NOT_VISIBLE
