"""
The registry's operations, as the web role's API uses them: validation,
limits, secrets, storage, ownership.

Each hook records its owner, the user who registered it (L{None} without
authentication), by name and id. The operations that read or change one
hook or a key's hooks take C{ownedBy}: the principal (the user, a
L{resmon.auth.principal.Principal}) whose hooks they are limited to (see
L{store.ownsHook}), or L{None} for every hook (an admin, or no
authentication).
A hook of another owner is answered as if it did not exist, a hook of a
removed user included when a new user takes the name.
"""

import uuid

from twisted.internet import defer

from resmon import wire
from resmon.webhooks import store, validation
from resmon.webhooks.options import DEFAULT_MAX_BACKLOG
from resmon.webhooks.resolver import NameResolver
from resmon.webhooks.signing import newSecret


def _owner(principal):
    """
    The L{store.Owner} of C{principal}'s hooks, or L{None} for every hook.
    """
    return None if principal is None else store.ownedBy(principal)


class WebhookRegistry:
    """
    @param store: the L{resmon.webhooks.store.WebhookStore}.
    @param clock: an L{IReactorTime} (and L{IReactorThreads} when
        C{resolve} is not given).
    @param allowPrivate: accept targets on loopback, link-local and
        private addresses.
    @param maxBacklog: a hook's pending deliveries at most, pings included
        (the oldest go first, as for events).
    @param resolve: C{(host, port)} to a L{Deferred} list of addresses
        (default: a L{NameResolver}'s: C{getaddrinfo} in a thread of its
        own, given up after 10 s).
    """

    def __init__(self, store, clock, allowPrivate=False, maxHooks=1000, maxPerKey=100,
                 resolve=None, maxBacklog=DEFAULT_MAX_BACKLOG):
        self.store = store
        self.clock = clock
        self.allowPrivate = allowPrivate
        self.maxHooks = maxHooks
        self.maxPerKey = maxPerKey
        self.maxBacklog = maxBacklog
        self.resolve = resolve or NameResolver(clock).resolveToCheck

    @defer.inlineCallbacks
    def register(self, document, principal=None):
        """
        Register the hook the JSON C{document} describes, owned by
        C{principal} (its name and id, see L{store.ownsHook}; L{None}, or a
        principal without a name: no owner).

        @return: a L{Deferred} of its description, with its secret.
        @raise validation.InvalidWebhook: naming the field that is wrong.
        """
        key, url, host, port, secret = validation.checkRegistration(document)
        yield validation.checkTarget(host, port, self.resolve, self.allowPrivate)
        hook = store.Hook(uuid.uuid4().hex, key, url, secret or newSecret(),
                          self.clock.seconds(), store.ACTIVE,
                          owner=getattr(principal, "name", None),
                          ownerId=getattr(principal, "userId", None))
        limit = yield self.store.add(hook, self.maxHooks, self.maxPerKey)
        if limit == "hooks":
            raise validation.InvalidWebhook("key", f"at most {self.maxHooks} hooks in all")
        if limit == "per-key":
            raise validation.InvalidWebhook("key", f"at most {self.maxPerKey} hooks for one key")
        return dict(hook.describe(), secret=hook.secret)

    @defer.inlineCallbacks
    def list(self, key=None, ownedBy=None):
        if key is not None:
            validation.checkKey(key)
        hooks = yield self.store.hooks(key, _owner(ownedBy))
        return [hook.describe() for hook in hooks]

    @defer.inlineCallbacks
    def get(self, hookId, ownedBy=None):
        hook = yield self.store.hook(hookId, _owner(ownedBy))
        return None if hook is None else hook.describe()

    def remove(self, hookId, ownedBy=None):
        """
        @return: a L{Deferred} of whether the hook was there.
        """
        return self.store.remove(hookId=hookId, ownedBy=_owner(ownedBy)).addCallback(bool)

    def removeKey(self, key, ownedBy=None):
        """
        @return: a L{Deferred} of the ids of the hooks of C{key} removed.
        """
        validation.checkKey(key)
        return self.store.remove(key=key, ownedBy=_owner(ownedBy))

    def deliveries(self, hookId):
        return self.store.attempts(hookId)

    @defer.inlineCallbacks
    def ping(self, hookId, ownedBy=None):
        """
        Queue a test delivery (key C{resmon.ping}) to hook C{hookId}, within
        its backlog's bound like any delivery.

        @return: a L{Deferred} of the delivery's id, or L{None} if there is
            no such hook.
        @raise validation.InvalidWebhook: the hook is disabled (it would
            never be delivered), or its backlog is full (its oldest delivery
            would be dropped for it).
        """
        hook = yield self.store.hook(hookId, _owner(ownedBy))
        if hook is None:
            return None
        if hook.state == store.DISABLED:
            raise validation.InvalidWebhook(
                None, "the hook is disabled: it receives nothing, not even a ping; "
                      "delete it and register it anew")
        waiting = yield self.store.pendingCount(hook.id)
        if waiting >= self.maxBacklog:
            # A ping must not push the oldest event out of a full backlog.
            raise validation.InvalidWebhook(
                None, f"the hook's backlog is full ({waiting} deliveries pending): "
                      "a ping would drop the oldest of them")
        now = self.clock.seconds()
        delivery = uuid.uuid4().hex
        body = wire.webhookPayload(delivery, hook.id, wire.WEBHOOK_PING_KEY, now,
                                   wire.webhookPingEvent(now))
        yield self.store.enqueue(
            [store.Pending(None, delivery, hook.id, wire.WEBHOOK_PING_KEY, body, now, 0, now)],
            self.maxBacklog)
        yield self.store.touch()
        return delivery
