"""
Delivering events to webhooks: L{WebhookDispatcher} turns each event into
a stored delivery per matching hook and runs one L{HookWorker} per hook, which delivers that hook's
deliveries in order, retrying each with backoff until it is delivered or
its retry window is over. The POSTs themselves are
L{resmon.webhooks.poster.WebhookPoster}'s.
"""

import random
import uuid
from collections import Counter, deque
from urllib.parse import quote

from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from resmon import __version__, topics, wire
from resmon.deferreds import observe
from resmon.ratelimit import LimitedLog
from resmon.webhooks import store as storage
from resmon.webhooks.owners import (
    NO_USERS, NOBODY, NOT_VISIBLE, HookOwner, OwnerFilter, addressed, audienceOf, isPing)
from resmon.webhooks.poster import describeError
from resmon.webhooks.signing import backoff, signature
from resmon.webhooks.validation import urlOrigin

# Pending deliveries of one hook read at once at most, and about READ_BYTES
# of bodies (WebhookStore.pending's maxBytes); a read ahead starts only
# while the deliveries waiting hold less than READ_BYTES: a worker holds a
# few times that for events of similar sizes (1,000 hooks backlogged with
# 256 KiB events, 200 read for each, would hold 50 GB).
BATCH = 200
READ_BYTES = 256 * 1024
# The next batch is read once this many deliveries of the last are left.
PREFETCH_BELOW = 100
# Seconds between two reads from a hook's first pending delivery while it
# is caught up (else the reads go on from the last delivery read: on
# PostgreSQL a read from the first walks past every delivery made since the
# table was last vacuumed). A delivery another process stored with a lower
# seq than one already read is found then.
FULL_READ_INTERVAL = 1.0
# Successful attempts recorded in one transaction at most, and seconds the
# first of them waits for others.
RECORD_BATCH = 500
RECORD_DELAY = 0.05
# Seconds between two tries to store a received event while the database fails.
STORE_RETRY = 2.0
# Seconds a hook's backlog is counted again at the latest (it is counted
# sooner when what was stored since could take it past the cap).
BACKLOG_RECOUNT = 1.0
# Bytes of deliveries made and not yet stored, all hooks together: an event
# matching many hooks is one copy of its payload per hook (1,000 hooks and
# a 256 KiB event: 256 MB), so the copies are made as they are stored, at
# most this many bytes of them per transaction.
MAX_UNSTORED_BYTES = 16 * 1024 * 1024
# Routing keys whose matching hooks are remembered (a fleet's hosts times
# their kinds of events); beyond, all are forgotten and found again.
MATCHES_KEPT = 32_768
# Bytes of pending bodies the registry holds for every hook together
# (--webhook-max-stored-mib); beyond, the oldest are dropped down to
# BUDGET_TARGET of it. A storing process counts them in the database every
# BUDGET_REFRESH seconds (what other processes stored), and every
# BUDGET_RECOUNT seconds while what it stored since may have passed it.
DEFAULT_MAX_STORED_BYTES = 1024 * 1024 * 1024
BUDGET_TARGET = 0.9
BUDGET_RECOUNT = 1.0
BUDGET_REFRESH = 10.0


class _Received:
    """
    An event received, and the hooks it goes to, not all stored yet:
    C{made} of its deliveries are made (stored or being stored).
    """

    __slots__ = ("routingKey", "eventJSON", "at", "hooks", "made", "stored")

    def __init__(self, routingKey, eventJSON, at, hooks, stored):
        self.routingKey = routingKey
        self.eventJSON = eventJSON
        self.at = at
        self.hooks = hooks
        self.made = 0
        self.stored = stored

    def make(self, room):
        """
        Its next deliveries, at least one, while their payloads take at
        most C{room} bytes.
        """
        made = []
        while self.made < len(self.hooks):
            delivery = uuid.uuid4().hex
            hookId = self.hooks[self.made]
            payload = wire.webhookPayloadOf(delivery, hookId, self.routingKey, self.at,
                                            self.eventJSON)
            if made and len(payload) > room:
                break
            made.append(storage.Pending(None, delivery, hookId, self.routingKey, payload,
                                        self.at, 0, self.at))
            room -= len(payload)
            self.made += 1
        return made, room

    @property
    def done(self):
        return self.made == len(self.hooks)


class WebhookDispatcher:
    """
    Turns bus events into stored deliveries, and delivers them.

    @param store: the L{resmon.webhooks.store.WebhookStore}.
    @param poster: a L{WebhookPoster}.
    @param clock: an L{IReactorTime}.
    @param publish: C{(routingKey, body)}: publishes on the bus (the
        C{resmon.webhook} event of a hook disabled).
    @param retryFor: seconds a delivery is retried.
    @param disableAfter: seconds a hook may fail without a success.
    @param maxBacklog: pending deliveries kept per hook.
    @param maxStoredBytes: bytes of pending bodies the registry holds for
        every hook together; beyond, the oldest deliveries are dropped.
    @param owners: the L{resmon.webhooks.owners.OwnerFilter} of the users
        file; without one (L{None}), the events of hooks registered by users
        are stored unjudged and not delivered by this process.
    @ivar hooks: the registry as last read: hook id to L{storage.Hook}.
    @ivar delivering: whether this process delivers (holds the lease); it
        stores received events either way.
    """

    log = Logger()

    def __init__(self, store, poster, clock, publish, retryFor, disableAfter, maxBacklog,
                 maxBody=wire.DEFAULT_MAX_BODY, rng=random, owners=None,
                 maxStoredBytes=DEFAULT_MAX_STORED_BYTES):
        self.store = store
        self.owners = owners if owners is not None else OwnerFilter(None)
        self.maxStoredBytes = maxStoredBytes
        # The bytes of pending bodies in the registry, as last counted plus
        # what was stored since (None: not counted yet).
        self._storedBytes = None
        self._budgetCounted = float("-inf")
        self.warnings = LimitedLog(clock)
        self._warnedNoUsers = False
        self.poster = poster
        self.clock = clock
        self.publish = publish
        self.retryFor = retryFor
        self.disableAfter = disableAfter
        self.maxBacklog = maxBacklog
        self.maxBody = maxBody
        self.rng = rng
        self.hooks = {}
        self._byKey = {}
        self._matching = {}
        self.workers = {}
        self.delivering = False
        self.counters = Counter()
        self.rejected = Counter()
        self._batch = []
        self._flushing = False
        self._delivered = []
        self._recording = False
        self._recordTimer = None
        self._flushRecords = False
        self._stopped = False
        # Hook id to (backlog as last counted plus what was stored since,
        # when it was counted).
        self._backlogs = {}

    def setHooks(self, hooks):
        """
        Take the registry as read from the store: workers for new hooks,
        none for hooks gone.
        """
        self.hooks = {hook.id: hook for hook in hooks}
        # Hook ids by key, and by routing key those whose keys match it:
        # matching an event costs the hooks it goes to, not the registry.
        self._byKey = {}
        for hook in hooks:
            self._byKey.setdefault(hook.key, []).append(hook.id)
        self._matching = {}
        if self.owners.watcher is None and not self._warnedNoUsers and any(
                hook.owner is not None for hook in hooks):
            self._warnedNoUsers = True
            self.log.warn(
                "webhooks: this process does not deliver the hooks users registered (it stores "
                "their events, for a process with --users to deliver): it cannot tell what "
                "their owners may see; give it --users (the web role's users file)")
        self._backlogs = {h: c for h, c in self._backlogs.items() if h in self.hooks}
        for hookId in list(self.workers):
            if hookId not in self.hooks:
                self.workers.pop(hookId).stop()
        self.wakeAll()

    def setDelivering(self, delivering):
        if delivering == self.delivering:
            return
        self.delivering = delivering
        self.log.info("this process {now} delivers webhooks",
                      now="now" if delivering else "no longer")
        if delivering:
            self.wakeAll()
        else:
            for worker in self.workers.values():
                worker.stop()
            self.workers.clear()

    def wakeAll(self):
        for hook in self.hooks.values():
            self.wake(hook.id, fromStart=True)

    def wake(self, hookId, fromStart=False):
        if not self.delivering or self._stopped:
            return
        hook = self.hooks.get(hookId)
        if hook is None or hook.state == storage.DISABLED:
            return
        if hook.owner is not None and self.owners.watcher is None:
            # Without the users file its deliveries wait for a process with it.
            return
        worker = self.workers.get(hookId)
        if worker is None:
            worker = self.workers[hookId] = HookWorker(self, hookId)
        worker.wake(fromStart)

    def keys(self):
        """
        The keys of the hooks not disabled: what the queue must be bound to.
        """
        return {hook.key for hook in self.hooks.values() if hook.state != storage.DISABLED}

    def eventReceived(self, routingKey, body):
        """
        The bus handler: store one delivery per matching hook whose owner
        may receive the event (L{resmon.webhooks.owners}). The
        L{Deferred} fires once they are stored (the event is acknowledged
        then, never before), however long the database takes to come back.
        """
        hooks = []
        for hookId in self._matchingHooks(routingKey):
            hook = self.hooks.get(hookId)
            if hook is not None and hook.state != storage.DISABLED:
                hooks.append(hook)
        if not hooks:
            self.counters["unmatched"] += 1
            return None
        try:
            event = wire.loadJSON(body, self.maxBody)
        except wire.Rejected as e:
            self.rejected[e.reason] += 1
            return None
        hooks = self._visible(hooks, routingKey, event)
        if not hooks:
            return None
        stored = defer.Deferred()
        # The event's JSON made once; each hook's payload only when stored.
        self._batch.append(_Received(routingKey, wire.encodeJSON(event), self.clock.seconds(),
                                     [hook.id for hook in hooks], stored))
        if not self._flushing:
            self._flush()
        return stored

    def _matchingHooks(self, routingKey):
        """
        The ids of the hooks whose keys match C{routingKey}, remembered for
        up to L{MATCHES_KEPT} routing keys (all forgotten then, and when the
        registry is read again).
        """
        matching = self._matching.get(routingKey)
        if matching is None:
            if len(self._matching) >= MATCHES_KEPT:
                self._matching.clear()
            matching = self._matching[routingKey] = tuple(
                hookId for key, hookIds in self._byKey.items()
                if topics.topicMatches(key, routingKey) for hookId in hookIds)
        return matching

    def _visible(self, hooks, routingKey, event):
        """
        The hooks of C{hooks} whose owners may receive C{event}; the others
        counted by why not. Without the users file, all of them: stored for
        a process with it to judge before it sends (L{withheld}).
        """
        if self.owners.watcher is None:
            return hooks
        visible = []
        audience = None
        answers = {}
        for hook in hooks:
            owner = hook.owner
            if owner is None:
                visible.append(hook)
                continue
            why = answers.get((owner, hook.ownerId), False)
            if why is False:
                if audience is None:
                    audience = audienceOf(routingKey, event, self._ownerOfHook)
                why = answers[owner, hook.ownerId] = self.owners.mayReceive(
                    owner, audience, hook.ownerId)
            if why is None:
                visible.append(hook)
            else:
                self.counters[why] += 1
        return visible

    def _ownerOfHook(self, hookId):
        hook = self.hooks.get(hookId)
        if hook is None:
            return NOBODY
        return None if hook.owner is None else HookOwner(hook.owner, hook.ownerId)

    def withheld(self, hook, delivery):
        """
        Why C{delivery}, stored for C{hook}, must not be sent now, or
        L{None}: its owner may have been removed or restricted since.
        """
        owner = hook.owner
        if owner is None:
            return None
        principal = self.owners.principalOf(owner, hook.ownerId)
        if isinstance(principal, str):
            return principal
        if principal.seesEverything and not addressed(delivery.key):
            return None
        try:
            payload = wire.loadJSON(delivery.body, len(delivery.body) + 1)
            key, event = payload["key"], payload["event"]
        except (wire.Rejected, KeyError, TypeError):
            return NOT_VISIBLE
        if key == wire.WEBHOOK_PING_KEY and isPing(event):
            # A test delivery (POST /api/webhooks/<id>/ping): about nothing.
            return None
        return self.owners.mayReceive(owner, audienceOf(key, event, self._ownerOfHook),
                                      hook.ownerId)

    def _nextDeliveries(self):
        """
        The deliveries of the next transaction, in the order received: the
        events waiting, up to L{MAX_UNSTORED_BYTES} of payloads (an event
        whose payloads are more is stored in several), and the events they
        complete.
        """
        deliveries, completed, room = [], [], MAX_UNSTORED_BYTES
        while self._batch and (room > 0 or not deliveries):
            received = self._batch[0]
            made, room = received.make(room)
            deliveries += made
            if not received.done:
                break
            completed.append(self._batch.pop(0))
        return deliveries, completed

    @defer.inlineCallbacks
    def _flush(self):
        """
        Store the events received while the previous batch was written, in
        one transaction, in the order received (up to L{MAX_UNSTORED_BYTES}
        of payloads a transaction).
        """
        self._flushing = True
        try:
            while self._batch and not self._stopped:
                deliveries, batch = self._nextDeliveries()
                check = self._backlogsToCount(deliveries)
                while True:
                    try:
                        dropped, counts = yield self.store.enqueueChecking(
                            deliveries, self.maxBacklog, check)
                        break
                    except Exception:
                        self.log.failure("storing {count} webhook deliveries failed; "
                                         "trying again in {delay} s",
                                         count=len(deliveries), delay=STORE_RETRY)
                        yield deferLater(self.clock, STORE_RETRY, lambda: None)
                        if self._stopped:
                            return
                self.counters["stored"] += len(deliveries)
                self._countedBacklogs(deliveries, counts)
                for hookId, count in dropped.items():
                    self.counters["dropped-backlog"] += count
                    # Rate-limited: a hook whose receiver is away drops at every event.
                    self.warnings.warn(
                        self.log, "webhook {hook}: backlog over {limit}, dropped its {count} "
                        "oldest deliveries", hook=hookId, limit=self.maxBacklog, count=count)
                for received in batch:
                    received.stored.callback(None)
                for hookId in {d.hook for d in deliveries}:
                    self.wake(hookId)
                yield self._holdToBudget(sum(len(d.body) for d in deliveries))
        finally:
            self._flushing = False

    @defer.inlineCallbacks
    def _holdToBudget(self, stored):
        """
        Count C{stored} bytes more in the registry. Count what it holds
        there (every webhooks process stores in it) every
        L{BUDGET_REFRESH} seconds, or every L{BUDGET_RECOUNT} while that
        may be over L{maxStoredBytes}; when it is, drop the oldest
        deliveries of any hook down to nine tenths of it.
        """
        if self._storedBytes is not None:
            self._storedBytes += stored
        now = self.clock.seconds()
        over = self._storedBytes is None or self._storedBytes > self.maxStoredBytes
        if now - self._budgetCounted < (BUDGET_RECOUNT if over else BUDGET_REFRESH):
            return
        self._budgetCounted = now
        try:
            self._storedBytes, dropped = yield self.store.trimToBytes(
                self.maxStoredBytes, int(self.maxStoredBytes * BUDGET_TARGET))
        except Exception:
            # Counted again at a transaction a second from now at the earliest.
            self.log.failure("holding the webhook deliveries to --webhook-max-stored-mib failed")
            return
        if dropped:
            count = sum(dropped.values())
            self.counters["dropped-budget"] += count
            self.warnings.warn(
                self.log, "webhooks: deliveries pending over {mib:g} MiB in all: dropped the "
                "{count} oldest, of {hooks} hooks (--webhook-max-stored-mib)",
                mib=self.maxStoredBytes / 1048576, count=count, hooks=len(dropped))

    def _backlogsToCount(self, deliveries):
        """
        The hooks of C{deliveries} whose backlog must be counted when they
        are stored: those that could then pass the cap, and those not
        counted for L{BACKLOG_RECOUNT} seconds (other processes store
        deliveries too).
        """
        now = self.clock.seconds()
        added = Counter(d.hook for d in deliveries)
        check = set()
        for hookId, count in added.items():
            known = self._backlogs.get(hookId)
            if (known is None or known[0] + count > self.maxBacklog
                    or now - known[1] >= BACKLOG_RECOUNT):
                check.add(hookId)
        return check

    def _countedBacklogs(self, deliveries, counts):
        now = self.clock.seconds()
        for hookId, count in Counter(d.hook for d in deliveries).items():
            if hookId in counts:
                self._backlogs[hookId] = (counts[hookId], now)
            elif hookId in self._backlogs:
                known, at = self._backlogs[hookId]
                self._backlogs[hookId] = (known + count, at)

    def recordDelivered(self, delivery, attempt, at, status, duration):
        """
        Record a successful attempt, together with others (one transaction
        for many): those made while the previous ones were written, or
        within L{RECORD_DELAY} seconds, up to L{RECORD_BATCH}; sooner if
        L{flushRecords} is called.

        @return: a L{Deferred} that fires once it is recorded.
        """
        recorded = defer.Deferred()
        self._delivered.append(((delivery, attempt, at, status, duration), recorded))
        if not self._recording:
            if len(self._delivered) >= RECORD_BATCH:
                self.flushRecords()
            elif self._recordTimer is None:
                self._recordTimer = self.clock.callLater(RECORD_DELAY, self.flushRecords)
        return recorded

    def flushRecords(self):
        """
        Record the successful attempts waiting, now (or as soon as those
        being written are).
        """
        if self._recordTimer is not None:
            if self._recordTimer.active():
                self._recordTimer.cancel()
            self._recordTimer = None
        if self._recording:
            self._flushRecords = True
        elif self._delivered:
            self._flushRecords = True
            self._recordDelivered()

    @defer.inlineCallbacks
    def _recordDelivered(self):
        self._recording = True
        try:
            while self._delivered:
                if not self._flushRecords and len(self._delivered) < RECORD_BATCH:
                    # Wait for more, a little.
                    if self._recordTimer is None:
                        self._recordTimer = self.clock.callLater(RECORD_DELAY,
                                                                 self.flushRecords)
                    break
                self._flushRecords = False
                batch, self._delivered = self._delivered, []
                try:
                    hooks = yield self.store.recordDelivered([record for record, _ in batch])
                except Exception:
                    failure = Failure()
                    for _, recorded in batch:
                        recorded.errback(failure)
                    continue
                for hook in hooks.values():
                    if hook.id in self.hooks:
                        self.hooks[hook.id] = hook
                for _, recorded in batch:
                    recorded.callback(None)
        finally:
            self._recording = False

    def hookChanged(self, before, after):
        """
        Keep C{after} (the hook as the store has it after an attempt); say
        so on the bus when it got disabled.
        """
        if after.id in self.hooks:
            self.hooks[after.id] = after
        if after.state == storage.DISABLED and before.state != storage.DISABLED:
            self.counters["disabled"] += 1
            reason = (f"failing without a success since {after.failingSince:.0f} "
                      f"(more than {self.disableAfter:g} s); last: {after.lastResult}")
            # Only the URL's origin: its path may hold the receiver's token,
            # and this event reaches every hook on its key, whoever owns it.
            self.log.warn("webhook {hook} ({url}) disabled: {reason}", hook=after.id,
                          url=urlOrigin(after.url), reason=reason)
            d = defer.maybeDeferred(self.publish, wire.WEBHOOK_EVENT_KEY, wire.webhookStateEvent(
                after.id, after.key, urlOrigin(after.url), storage.DISABLED, self.clock.seconds(),
                reason))
            d.addErrback(lambda f: self.log.failure("publishing that webhook {hook} was "
                                                    "disabled failed", f, hook=after.id))

    def stop(self):
        """
        Stop delivering: attempts in flight are abandoned (their deliveries
        stay pending, tried again by the next process), events not yet
        stored fail with L{defer.CancelledError}.

        @return: a L{Deferred} that fires once no worker writes any more.
        """
        self._stopped = True
        stopping = [worker.stop() for worker in self.workers.values()]
        self.flushRecords()
        self.workers.clear()
        for received in self._batch:
            received.stored.errback(defer.CancelledError("stopping"))
        self._batch = []
        return defer.gatherResults(stopping, consumeErrors=True)


class HookWorker:
    """
    Delivers one hook's pending deliveries, oldest first: the next waits
    until the one before is delivered or has run out of retries.

    The deliveries are read from the store in batches of up to L{BATCH},
    and about L{READ_BYTES} of bodies; the next batch
    is read while the last L{PREFETCH_BELOW} of the one before go out (and
    they hold less than L{READ_BYTES}),
    so that the POSTs do not wait for the database. Successful attempts are
    recorded in the background (L{WebhookDispatcher.recordDelivered}); a
    read leaves out the deliveries made that it may still see (not yet
    recorded, or recorded after it was issued), so none is sent twice.
    """

    log = Logger()

    def __init__(self, dispatcher, hookId):
        self.dispatcher = dispatcher
        self.hookId = hookId
        self._busy = False
        self._again = False
        self._timer = None
        self._stopped = False
        self._draining = None
        self._inFlight = None
        # Deliveries read and not yet attempted, in order, and the bytes of
        # their bodies.
        self._queue = deque()
        self._queuedBytes = 0
        # The seq of the last delivery read, and whether that read found
        # every pending delivery after it.
        self._lastSeq = None
        self._exhausted = False
        # Whether the last drain made every delivery it read, and when the
        # last read from the first pending delivery was issued.
        self._caughtUp = False
        self._fromStartWanted = False
        self._readFromStart = 0.0
        # A read ahead in flight; reads of an earlier drain are ignored.
        self._prefetch = None
        self._generation = 0
        # The seqs delivered that a read may still return: to the number of
        # the last read issued before their recording was done (None: not
        # yet done); and the recordings in flight.
        self._delivered = {}
        self._reads = 0
        self._recordings = set()
        self._problem = None

    def _recorded(self):
        """
        Wait until the successful attempts made so far are recorded.
        """
        if self._recordings:
            self.dispatcher.flushRecords()
        return defer.gatherResults(list(self._recordings), consumeErrors=True)

    def _raiseProblem(self):
        """
        Raise the failure of a read ahead or of a recording, if one failed:
        the drain stops, and starts again from what the store holds.
        """
        if self._problem is not None:
            problem, self._problem = self._problem, None
            problem.raiseException()

    def wake(self, fromStart=False):
        """
        Deliver what is pending; C{fromStart}: read from the first pending
        delivery (something other than this process's own events changed).
        """
        if self._stopped:
            return
        if fromStart:
            self._fromStartWanted = True
        if self._busy:
            self._again = True
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._busy = True
        d = self._draining = self._drain()
        d.addErrback(self._failed)
        d.addBoth(self._idle)

    def _idle(self, _):
        self._busy = False
        self._draining = None
        if self._again and not self._stopped:
            self._again = False
            self.wake()

    def _failed(self, failure):
        if self._stopped:
            self.log.info("webhook {hook}: stopped while delivering ({why})", hook=self.hookId,
                          why=failure.getErrorMessage())
            return
        self.log.failure("delivering to webhook {hook} failed; trying again in {delay} s",
                         failure, hook=self.hookId, delay=STORE_RETRY)
        self._later(STORE_RETRY)

    def _later(self, delay):
        if self._stopped:
            return
        self._timer = self.dispatcher.clock.callLater(max(0.0, delay), self.wake)

    def stop(self):
        """
        @return: a L{Deferred} that fires once this worker writes no more.
        """
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._inFlight is not None:
            self._inFlight.cancel()
        waiting = [self._recorded()]
        if self._draining is not None:
            waiting.append(observe(self._draining))
        return defer.gatherResults(waiting, consumeErrors=True)

    def _read(self, after):
        """
        Read the next batch of pending deliveries into the queue: those
        after C{after} (a seq), or from the first when it is L{None}.
        """
        generation = self._generation
        self._again = False
        self._reads += 1
        number = self._reads
        d = self.dispatcher.store.pending(self.hookId, BATCH, after, maxBytes=READ_BYTES)

        def read(rows):
            delivered = self._delivered
            # Recorded before this read was issued: no read returns it now.
            for seq in [seq for seq, recordedBefore in delivered.items()
                        if recordedBefore is not None and recordedBefore < number]:
                del delivered[seq]
            if generation != self._generation:
                return
            self._exhausted = rows.complete
            if rows:
                self._lastSeq = rows[-1].seq
            fresh = [row for row in rows if row.seq not in delivered]
            self._queue.extend(fresh)
            self._queuedBytes += sum(len(row.body) for row in fresh)
        return d.addCallback(read)

    def _readAhead(self):
        generation = self._generation

        def done(result):
            if generation == self._generation:
                self._prefetch = None
                if isinstance(result, Failure):
                    self._problem = result
        self._prefetch = self._read(self._lastSeq)
        self._prefetch.addBoth(done)

    @defer.inlineCallbacks
    def _drain(self):
        dispatcher = self.dispatcher
        clock = dispatcher.clock
        queue = self._queue
        self._generation += 1
        if (not self._caughtUp or self._fromStartWanted
                or clock.seconds() - self._readFromStart >= FULL_READ_INTERVAL):
            # Read from the first pending delivery.
            self._lastSeq = None
        self._caughtUp = self._fromStartWanted = False
        self._exhausted = False
        readFromStart = False
        try:
            while not self._stopped:
                self._raiseProblem()
                if not queue:
                    if self._prefetch is not None:
                        yield self._prefetch
                    elif self._exhausted and not self._again:
                        # Every delivery read was made: the next drain may
                        # read on from the last, and one reads from the
                        # first within FULL_READ_INTERVAL.
                        self._caughtUp = True
                        if not readFromStart:
                            self._later(self._readFromStart + FULL_READ_INTERVAL
                                        - clock.seconds())
                        return
                    elif self._lastSeq is None or (
                            self._exhausted
                            and clock.seconds() - self._readFromStart >= FULL_READ_INTERVAL):
                        # From the first pending delivery (one stored late
                        # by another process included).
                        self._readFromStart = clock.seconds()
                        readFromStart = True
                        yield self._read(None)
                    else:
                        # What the last read left out (all delivered, not
                        # yet recorded).
                        yield self._read(self._lastSeq)
                    continue
                delivery = queue.popleft()
                self._queuedBytes -= len(delivery.body)
                if (len(queue) <= PREFETCH_BELOW and self._queuedBytes < READ_BYTES
                        and not self._exhausted and self._prefetch is None):
                    self._readAhead()
                hook = dispatcher.hooks.get(self.hookId)
                if self._stopped or hook is None or hook.state == storage.DISABLED:
                    return
                withheld = dispatcher.withheld(hook, delivery)
                if withheld == NO_USERS:
                    # This process cannot tell: kept for one that can.
                    return
                if withheld is not None:
                    yield self._withhold(delivery, withheld)
                    continue
                now = clock.seconds()
                if now - delivery.created > dispatcher.retryFor:
                    yield self._recorded()
                    self._raiseProblem()
                    yield self._expire(delivery)
                    continue
                if delivery.nextAttempt > now:
                    self._later(delivery.nextAttempt - now)
                    return
                delivered = yield self._attempt(hook, delivery)
                if not delivered:
                    # Tried again when its backoff is over: see _attempt.
                    return
        finally:
            self._generation += 1
            self._prefetch = None
            queue.clear()
            self._queuedBytes = 0
            if self._recordings:
                # Nothing more to record with them for now.
                dispatcher.flushRecords()

    def _recordDelivered(self, delivery, attempt, at, status, duration):
        """
        Record a successful attempt in the background, with others
        (L{WebhookDispatcher.recordDelivered}).
        """
        seq = delivery.seq
        self._delivered[seq] = None
        d = self.dispatcher.recordDelivered(delivery, attempt, at, status, duration)
        self._recordings.add(d)

        def done(result):
            self._recordings.discard(d)
            if isinstance(result, Failure):
                # Still pending (or not): sent again once read again.
                self._delivered.pop(seq, None)
                if self._problem is None:
                    self._problem = result
            else:
                self._delivered[seq] = self._reads
        d.addBoth(done)

    @defer.inlineCallbacks
    def _expire(self, delivery):
        dispatcher = self.dispatcher
        dispatcher.counters["expired"] += 1
        self.log.warn("webhook {hook}: delivery {delivery} ({key}) dropped after {attempts} "
                      "attempts in {window} s", hook=self.hookId, delivery=delivery.id,
                      key=delivery.key, attempts=delivery.attempts, window=dispatcher.retryFor)
        yield dispatcher.store.recordAttempt(delivery, 0, dispatcher.clock.seconds(), None,
                                             None, 0.0, "expired")

    @defer.inlineCallbacks
    def _withhold(self, delivery, why):
        """
        Drop C{delivery}: its hook's owner may no longer receive it (why:
        see L{resmon.webhooks.owners}).
        """
        dispatcher = self.dispatcher
        dispatcher.counters[why] += 1
        dispatcher.warnings.warn(
            self.log, "webhook {hook}: delivery {delivery} ({key}) dropped: {why} (the hook's "
            "owner may no longer receive it)", hook=self.hookId, delivery=delivery.id,
            key=delivery.key, why=why)
        yield dispatcher.store.recordAttempt(delivery, 0, dispatcher.clock.seconds(), None,
                                             None, 0.0, "withheld")

    @defer.inlineCallbacks
    def _attempt(self, hook, delivery):
        """
        One attempt: whether it was delivered (else it is retried later, or
        dropped if that would be past its window).
        """
        dispatcher = self.dispatcher
        clock = dispatcher.clock
        attempt = delivery.attempts + 1
        timestamp = str(int(clock.seconds()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"resmon-webhooks/{__version__}",
            # A routing key may be any UTF-8; a header value is ASCII.
            "X-Resmon-Event": quote(delivery.key, safe=""),
            "X-Resmon-Delivery": delivery.id,
            "X-Resmon-Timestamp": timestamp,
            "X-Resmon-Signature-256": signature(hook.secret, timestamp, delivery.body),
        }
        started = clock.seconds()
        status = problem = None
        try:
            # A poster that raises at once fails this attempt, as one that fails later does.
            self._inFlight = defer.maybeDeferred(
                dispatcher.poster.post, hook.url, headers, delivery.body)
            status = yield self._inFlight
        except Exception:
            problem = describeError(Failure())
        finally:
            self._inFlight = None
        if self._stopped and status is None:
            # Abandoned: still pending, as if never tried.
            return False
        now = clock.seconds()
        duration = now - started
        nextAttempt = None
        if status is not None and 200 <= status < 300:
            dispatcher.counters["delivered"] += 1
            # Recorded with others, while the next delivery goes out.
            self._recordDelivered(delivery, attempt, now, status, duration)
            return True
        nextAttempt = now + backoff(attempt, dispatcher.rng)
        if nextAttempt - delivery.created > dispatcher.retryFor:
            outcome = "expired"
            dispatcher.counters["expired"] += 1
            self.log.warn("webhook {hook}: delivery {delivery} ({key}) dropped after "
                          "{attempts} attempts in {window} s (last: {last})",
                          hook=hook.id, delivery=delivery.id, key=delivery.key,
                          attempts=attempt, window=dispatcher.retryFor,
                          last=status if status is not None else problem)
        else:
            outcome = "retry"
            dispatcher.counters["failed-attempts"] += 1
        # After the successes before it, so that the hook's state ends as the last attempt says.
        yield self._recorded()
        self._raiseProblem()
        after = yield dispatcher.store.recordAttempt(
            delivery, attempt, now, status, problem, duration, outcome, nextAttempt,
            dispatcher.disableAfter)
        if after is not None:
            dispatcher.hookChanged(hook, after)
        if outcome == "retry":
            self._later(nextAttempt - clock.seconds())
            return False
        return True
