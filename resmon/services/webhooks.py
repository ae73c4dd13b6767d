"""
The webhooks role: follows the registry in the database, keeps its durable
queue bound to the keys registered (bindings added and removed as hooks
come and go), stores each matching event as one
delivery per hook, and (in the one process holding the delivery lease)
delivers them.
"""

import uuid

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from resmon.bus.delivery import Retry
from resmon.webhooks.options import DEFAULT_POLL_INTERVAL

# Seconds a webhooks process holds the delivery lease without renewing it;
# another one takes over after that (after a crash of the holder).
LEASE_DURATION = 10.0


class WebhooksService(service.Service):
    """
    @param bus: the L{resmon.interfaces.IBus}.
    @param store: the L{resmon.webhooks.store.WebhookStore}.
    @param dispatcher: the L{resmon.webhooks.delivery.WebhookDispatcher}.
    @param queue: the durable queue of the events of registered keys.
    @param pollInterval: seconds between two looks at the registry's
        version (a change made anywhere is in force here within this).
    @param usersWatcher: the L{resmon.auth.service.UsersFileWatcher} of
        C{--users} this service reads again at each look (in a process
        without a web role; the web role's own reads it there), or L{None}.
    """

    name = "webhooks"
    log = Logger()

    def __init__(self, bus, store, dispatcher, clock, queue, pollInterval=DEFAULT_POLL_INTERVAL,
                 prefetch=200, statsInterval=60.0, usersWatcher=None):
        self.bus = bus
        self.usersWatcher = usersWatcher
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.queue = queue
        self.pollInterval = pollInterval
        self.prefetch = prefetch
        self.owner = uuid.uuid4().hex
        self.subscription = None
        self.boundKeys = frozenset()
        # Keys dropped from the registry whose bindings are still to remove.
        self.unbindPending = frozenset()
        self._unbinding = None
        # Whether the bindings recorded by earlier processes were read.
        self._recordedRead = False
        self._version = None
        self._loop = None
        self._polling = None
        self._failing = False
        self._leaseUntil = 0.0
        self.statsInterval = statsInterval
        self._stats = None

    def startService(self):
        service.Service.startService(self)
        self.log.info("webhooks: registry in {where}", where=self.store.where)
        self._loop = LoopingCall(self.poll)
        self._loop.clock = self.clock
        self._loop.start(self.pollInterval, now=True)
        self._stats = LoopingCall(self.logStats)
        self._stats.clock = self.clock
        self._stats.start(self.statsInterval, now=False)

    def logStats(self):
        dispatcher = self.dispatcher
        counters = dispatcher.counters
        self.log.info(
            "webhooks: {hooks} hooks, delivering: {delivering}; {stored} deliveries stored, "
            "{delivered} delivered, {failed} failed attempts, {expired} dropped after their "
            "retries, {backlog} dropped at the backlog cap, {budget} dropped at the "
            "stored-bytes cap, {disabled} hooks disabled, "
            "{unmatched} events no hook matched, {hidden} left out for their hooks' owners, "
            "{rejected} rejected; {lookups}",
            lookups=self._lookups(),
            hooks=len(dispatcher.hooks), delivering="yes" if dispatcher.delivering else "no",
            stored=counters["stored"], delivered=counters["delivered"],
            failed=counters["failed-attempts"], expired=counters["expired"],
            backlog=counters["dropped-backlog"], budget=counters["dropped-budget"],
            disabled=counters["disabled"],
            unmatched=counters["unmatched"],
            hidden=counters["not-visible"] + counters["owner-gone"],
            rejected=sum(dispatcher.rejected.values()))

    def _lookups(self):
        resolver = getattr(self.dispatcher.poster, "resolver", None)
        if resolver is None:
            return "no lookups of their own"
        counters = resolver.counters
        return (f"targets' names: {counters['resolved']} resolved, {counters['failed']} failed, "
                f"{counters['timed-out']} given up after {resolver.timeout:g} s, "
                f"{counters['cached']} answered from the answers kept, "
                f"{resolver.running} lookups running")

    def poll(self):
        """
        Look at the registry's version and renew the delivery lease; read
        the registry again when it changed.
        """
        if self.usersWatcher is not None:
            self.usersWatcher.poll()
        if self._polling is None:
            self._polling = self._poll()
            self._polling.addErrback(self._pollFailed)
            self._polling.addBoth(self._polled)

    def _polled(self, _):
        self._polling = None

    def _pollFailed(self, failure):
        # The lease cannot be renewed: once it ran out, another process may
        # hold it, and two must never deliver at once.
        if self.dispatcher.delivering and self.clock.seconds() >= self._leaseUntil:
            self.dispatcher.setDelivering(False)
        if not self._failing:
            self.log.failure("webhooks: reading the registry failed (trying again)", failure)
        self._failing = True

    @defer.inlineCallbacks
    def _poll(self):
        self._unbindDropped()  # what an earlier poll failed to unbind
        recorded = None
        if not self._recordedRead:
            # Read before the registry: a key recorded is registered first.
            recorded = yield self.store.boundKeys(self.queue)
        version = yield self.store.version()
        if version != self._version:
            hooks = yield self.store.hooks()
            self._version = version
            self.dispatcher.setHooks(hooks)
            keys = self.dispatcher.keys()
            if keys - self.boundKeys:
                # Recorded before bound: a binding is never left unrecorded.
                yield self.store.recordBound(self.queue, keys - self.boundKeys)
            self._bind(keys)
        if recorded is not None:
            # Bound by an earlier process, their hooks deleted since.
            self._recordedRead = True
            self.unbindPending = self.unbindPending | (recorded - self.dispatcher.keys())
            self._unbindDropped()
        claimed = self.clock.seconds()
        leader = yield self.store.claimLease(self.owner, claimed, LEASE_DURATION)
        if leader:
            self._leaseUntil = claimed + LEASE_DURATION
        if self.running:
            self.dispatcher.setDelivering(leader)
        if self._failing:
            self.log.info("webhooks: reading the registry again")
            self._failing = False

    def eventReceived(self, routingKey, body):
        """
        The bus handler: an event not stored because this process stops
        goes back to the queue.
        """
        d = defer.maybeDeferred(self.dispatcher.eventReceived, routingKey, body)

        def stopping(failure):
            failure.trap(defer.CancelledError)
            raise Retry("stopping before the event was stored")
        return d.addErrback(stopping)

    def _bind(self, keys):
        """
        Bind the queue to exactly the keys registered: subscribe with the
        new set (the bus keeps a live subscription's bindings renewed), and
        once the old subscription is cancelled, unbind the keys no longer
        registered (L{resmon.interfaces.IBus.unbind}; tried again at every
        poll until it succeeds). Events already queued under a dropped key
        still arrive, and are dropped. The keys bound are recorded in the
        store, so that a process started after hooks were deleted unbinds
        their keys too.
        """
        if not self.running or keys == self.boundKeys:
            return
        dropped = self.boundKeys - keys
        self.boundKeys = keys
        old, self.subscription = self.subscription, None
        if keys:
            self.subscription = self.bus.subscribe(
                sorted(keys), self.eventReceived, queue=self.queue, durable=True,
                prefetch=self.prefetch, rejected=self.dispatcher.rejected)
            self.subscription.whenReady().addCallback(lambda _: self.log.info(
                "webhooks queue {queue} bound to {count} keys: {keys}", queue=self.queue,
                count=len(keys), keys=" ".join(sorted(keys)))).addErrback(lambda f: None)
        # A key registered again must stay bound (should an unbinding already
        # under way remove it, the bus's periodic binding renewal restores it).
        self.unbindPending = (self.unbindPending | dropped) - keys
        cancelled = defer.succeed(None) if old is None else defer.maybeDeferred(old.cancel)
        cancelled.addErrback(lambda f: None).addCallback(lambda _: self._unbindDropped())

    def _unbindDropped(self):
        """
        Remove the bindings of the keys in L{unbindPending}, one attempt at
        a time.
        """
        if self._unbinding is not None or not self.unbindPending or not self.running:
            return
        keys = self.unbindPending

        def done(_):
            self.unbindPending = self.unbindPending - keys
            self.log.info("webhooks queue {queue} unbound from {count} keys no longer "
                          "registered: {keys}", queue=self.queue, count=len(keys),
                          keys=" ".join(sorted(keys)))
            return self.store.forgetBound(self.queue, keys).addErrback(
                lambda f: self.log.failure("webhooks: forgetting unbound keys failed", f))

        def failed(failure):
            self.log.warn("webhooks: unbinding {keys} from {queue} failed ({error}); trying "
                          "again at the next poll", keys=" ".join(sorted(keys)),
                          queue=self.queue, error=failure.getErrorMessage())

        def finished(_):
            self._unbinding = None
        self._unbinding = defer.maybeDeferred(self.bus.unbind, self.queue, sorted(keys))
        self._unbinding.addCallbacks(done, failed).addBoth(finished)

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        for loop in (self._loop, self._stats):
            if loop is not None and loop.running:
                loop.stop()
        if self._polling is not None:
            yield self._polling
        if self._unbinding is not None:
            yield self._unbinding
        if self.subscription is not None:
            yield self.subscription.cancel()
            self.subscription = None
        leader = self.dispatcher.delivering
        yield self.dispatcher.stop()
        if leader:
            try:
                yield self.store.releaseLease(self.owner)
            except Exception:
                self.log.failure("webhooks: releasing the delivery lease failed")
        yield self.dispatcher.poster.close()


class RegistryStoreService(service.Service):
    """
    Closes the registry's database connections when the role stops (the
    web role alone, which keeps no delivery running).
    """

    name = "webhook-registry"

    def __init__(self, store):
        self.store = store

    def stopService(self):
        service.Service.stopService(self)
        self.store.close()


def makeWebhooks(options, bus, web, reactor, deliver):
    """
    The registry's store, its API on C{web} (the web role's
    L{resmon.services.web.WebService}, or L{None}), and with C{deliver}
    the webhooks role's L{WebhooksService}.
    """
    from resmon.webhooks.delivery import WebhookDispatcher
    from resmon.webhooks.poster import WebhookPoster
    from resmon.webhooks.registry import WebhookRegistry
    from resmon.webhooks.resolver import NameResolver
    from resmon.webhooks.store import WebhookStore, openPool
    from resmon.webserver.webhooksapi import WebhooksResource

    pool, dialect, where = openPool(options["database"], options["state-dir"])
    store = WebhookStore(pool, dialect, where)
    # The targets' names, resolved apart from the reactor's thread pool and
    # given up after the webhook timeout (resmon.webhooks.resolver).
    resolver = NameResolver(reactor, timeout=options["webhook-timeout"])
    if web is not None:
        registry = WebhookRegistry(
            store, reactor, allowPrivate=options["webhook-allow-private"],
            maxHooks=options["webhook-max-hooks"],
            maxPerKey=options["webhook-max-hooks-per-key"], resolve=resolver.resolveToCheck,
            maxBacklog=options["webhook-max-backlog"])
        web.mountAPI("webhooks", WebhooksResource(registry))
        # Users' notifications are kept in the registry's database too.
        from resmon.webserver.notifications import DatabaseNotifications
        web.notifications.useStore(DatabaseNotifications(pool, dialect))
    if not deliver:
        return RegistryStoreService(store)
    poster = WebhookPoster(reactor, options["webhook-timeout"], options["webhook-allow-private"],
                           resolver=resolver)
    from resmon.webhooks.owners import OwnerFilter
    watcher, ownWatcher = _usersWatcher(options, web)
    # Without the users file, hooks registered by users are not delivered here.
    owners = OwnerFilter(watcher)
    dispatcher = WebhookDispatcher(
        store, poster, reactor, bus.publish, options["webhook-retry-for"],
        options["webhook-disable-after"], options["webhook-max-backlog"],
        maxBody=options["max-body"], owners=owners,
        maxStoredBytes=int(options["webhook-max-stored-mib"] * 1024 * 1024))
    return WebhooksService(bus, store, dispatcher, reactor, options["webhook-queue"],
                           statsInterval=options["stats-interval"],
                           usersWatcher=watcher if ownWatcher else None)


def _usersWatcher(options, web):
    """
    The users file's watcher the delivery filters by, and whether it is
    this role's own (to read again) rather than the web role's: L{None}
    without C{--users}.
    """
    if web is not None and "users" in web.namedServices:
        return web.getServiceNamed("users").watcher, False
    if options.get("users") is None:
        return None, False
    from resmon.auth.service import UsersFileWatcher
    return UsersFileWatcher(options["users"]), True
