"""
Notifications to logged-in users: those published under
C{user.<name>.notify} and C{group.<group>.notify}, and one per user for each
alert that fires about a host the user may see. Each reaches the user's
open dashboards (WebSocket and event stream clients whose principal is that
user, or a member of that group) as a C{notification} frame, and nobody
else's; the last L{KEPT} per user are kept (in the webhook registry's
database when there is one, else in memory) and sent when a dashboard
connects.
"""

import hashlib
from collections import OrderedDict, deque

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from resmon import wire
from resmon.database import createSchema
from resmon.ratelimit import LimitedLog
from resmon.webserver.visibility import principalOfSubscription, subjectOf

# Notifications kept per user.
KEPT = 100
# Users whose notifications the memory store keeps (the least recently notified go first).
MAX_MEMORY_USERS = 10_000
# Writes (one per notification or alert, for all its users) that may wait
# for the store; past that, what comes is sent to dashboards but not kept.
MAX_PENDING_WRITES = 1000

def keptFor(principal):
    """
    Whose notifications a user's are in the store: their name, and their
    id when they have one (C{name#id}; C{#} is in no user's name), so that a
    user added under a removed user's name is not sent the removed one's.
    """
    if principal.userId is None:
        return principal.name
    return f"{principal.name}#{principal.userId}"


class MemoryNotifications:
    """
    The last L{KEPT} notification frames of each user, in memory.
    """

    def __init__(self, kept=KEPT, maxUsers=MAX_MEMORY_USERS):
        self.kept = kept
        self.maxUsers = maxUsers
        self._byUser = OrderedDict()

    def add(self, user, notificationId, ts, body):
        kept = self._byUser.pop(user, None)
        if kept is None:
            kept = deque(maxlen=self.kept)
        self._byUser[user] = kept
        if len(self._byUser) > self.maxUsers:
            self._byUser.popitem(last=False)
        if all(existing != notificationId for existing, _ in kept):
            kept.append((notificationId, body))
        return defer.succeed(None)

    def addMany(self, entries):
        """
        L{add} each C{(user, notificationId, ts, body)} of C{entries}.
        """
        for entry in entries:
            self.add(*entry)
        return defer.succeed(None)

    def recent(self, user):
        """
        A L{Deferred} of the bodies kept for C{user}, oldest first.
        """
        return defer.succeed([body for _, body in self._byUser.get(user, ())])

    def close(self):
        pass


_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS user_notifications (
        seq {serial}, username TEXT NOT NULL, id TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL,
        body TEXT NOT NULL, UNIQUE (username, id))""",
    "CREATE INDEX IF NOT EXISTS user_notifications_user ON user_notifications (username, seq)",
]


class DatabaseNotifications:
    """
    The last L{KEPT} notification frames of each user in the table
    C{user_notifications} of an L{adbapi.ConnectionPool} (SQLite or
    PostgreSQL, the webhook registry's): shared by the web processes that
    use it, each notification stored once per user whichever stores it.

    @param dialect: C{sqlite} or C{postgresql}.
    """

    def __init__(self, pool, dialect, kept=KEPT):
        self.pool = pool
        self.dialect = dialect
        self.kept = kept
        self._ready = False
        self._making = None
        self._waiting = []

    def _sql(self, text):
        return text.replace("?", "%s") if self.dialect == "postgresql" else text

    def ready(self):
        """
        Fires once the table exists (made on first use; made again by the
        next use after a failure: every statement is idempotent).
        """
        if self._ready:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiting.append(d)
        if self._making is None:
            self._making = createSchema(self.pool, self.dialect, self._schema)
            self._making.addBoth(self._made)
        return d

    def _made(self, result):
        self._making = None
        self._ready = not isinstance(result, Failure)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if self._ready:
                d.callback(None)
            else:
                d.errback(result)

    def _schema(self, cursor, serial):
        for statement in _SCHEMA:
            cursor.execute(statement.format(serial=serial))

    def _run(self, function, *args):
        d = self.ready()
        d.addCallback(lambda _: self.pool.runInteraction(function, *args))
        return d

    def add(self, user, notificationId, ts, body):
        return self.addMany([(user, notificationId, ts, body)])

    def addMany(self, entries):
        """
        Keep each C{(user, notificationId, ts, body)} of C{entries}, in one
        transaction (an alert's notifications to all its users: one
        commit, not one per user).
        """
        rows = [(user, notificationId, ts, body.decode("utf-8"))
                for user, notificationId, ts, body in entries]
        return self._run(self._addMany, rows)

    def _addMany(self, cursor, rows):
        cursor.executemany(self._sql(
            "INSERT INTO user_notifications (username, id, ts, body) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (username, id) DO NOTHING"), rows)
        for user in dict.fromkeys(row[0] for row in rows):
            cursor.execute(self._sql(
                "DELETE FROM user_notifications WHERE username = ? AND seq NOT IN ("
                "SELECT seq FROM user_notifications WHERE username = ? ORDER BY seq DESC LIMIT ?)"),
                (user, user, self.kept))

    def recent(self, user):
        return self._run(self._recent, user)

    def _recent(self, cursor, user):
        cursor.execute(self._sql(
            "SELECT body FROM user_notifications WHERE username = ? ORDER BY seq DESC LIMIT ?"),
            (user, self.kept))
        bodies = [row[0] for row in cursor.fetchall()]
        bodies.reverse()
        return [body.encode("utf-8") if isinstance(body, str) else bytes(body) for body in bodies]

    def close(self):
        pass  # the pool is the registry's, closed with it


class NotificationCenter:
    """
    Takes notifications from the bus and alerts from the fan-out, keeps
    them per user in C{store} and sends them to the fan-out's clients of
    their recipients.

    @param fanout: the L{resmon.webserver.fanout.EventFanout} whose clients
        (attached with a L{resmon.webserver.visibility.VisibleSubscription})
        receive them.
    @param directory: an object whose C{principals()} returns every user's
        L{resmon.auth.principal.Principal} (from C{--users}): who is kept
        notifications (users not in it are not) and notified of alerts; or
        L{None} (no users): nothing is kept, alerts notify nobody, and a
        notification goes only to the open dashboards of its recipients.
    @param store: L{MemoryNotifications} (default) or L{DatabaseNotifications}.
    """

    log = Logger()

    def __init__(self, fanout, clock, directory=None, store=None, maxClockSkew=wire.DEFAULT_MAX_CLOCK_SKEW):
        self.fanout = fanout
        self.clock = clock
        self.directory = directory
        self.store = store if store is not None else MemoryNotifications()
        self.maxClockSkew = maxClockSkew
        self.warnings = LimitedLog(clock)
        self.counters = {"received": 0, "delivered": 0, "stored": 0, "store-failed": 0,
                         "store-dropped": 0, "alerts": 0}
        self._pendingWrites = 0

    def useStore(self, store):
        self.store = store

    def received(self, routingKey, body):
        """
        The bus handler of C{user.*.notify} and C{group.*.notify}.
        """
        try:
            notification = wire.decodeNotification(
                routingKey, body, notAfter=self.clock.seconds() + self.maxClockSkew)
        except wire.Rejected as e:
            self.fanout.rejected[e.reason] += 1
            self.warnings.warn(
                self.log, "rejected a notification under {routingKey}: {reason}",
                routingKey=str(routingKey)[:80], reason=str(e)[:200])
            return
        self.counters["received"] += 1
        self.notify(notification)

    def notify(self, notification):
        """
        Keep C{notification} for its recipients and send it to their dashboards.

        @return: a Deferred that fires once it is kept (a failure to keep it
            is counted and logged, never raised).
        """
        body = wire.encodeJSON(notification.document())
        kept = self._keep([(name, notification.id, notification.ts, body)
                           for name in self._recipients(notification)])
        self._deliver(notification, body, self._clientsWithPrincipals())
        return kept

    def _recipients(self, notification):
        if self.directory is None:
            return []  # no users (no --users): nobody to keep it for
        names = []
        for principal in self.directory.principals():
            if self._addressed(principal, notification):
                names.append(keptFor(principal))
        return names

    def _addressed(self, principal, notification):
        if principal.name is None:
            return False
        if notification.audience == wire.NOTIFY_USER:
            addressed = principal.name == notification.name
        else:
            addressed = notification.name in principal.groups
        return addressed and (notification.host is None or principal.maySee(notification.host))

    def _keep(self, entries):
        """
        Keep C{entries} (C{(user, notificationId, ts, body)}) in the store
        at once; with L{MAX_PENDING_WRITES} writes already waiting for it,
        drop them and count them (C{store-dropped}): a flood of alerts or
        notifications from the bus waits in no unbounded queue.

        @return: a L{Deferred} that fires once kept or dropped (a failure
            is counted and logged, never raised).
        """
        if not entries:
            return defer.succeed(None)
        if self._pendingWrites >= MAX_PENDING_WRITES:
            self.counters["store-dropped"] += len(entries)
            self.warnings.warn(
                self.log, "{pending} writes of notifications wait for the store: dropped "
                "{count} ({dropped} so far); they were sent to the open dashboards",
                pending=self._pendingWrites, count=len(entries),
                dropped=self.counters["store-dropped"])
            return defer.succeed(None)
        self._pendingWrites += 1
        d = self.store.addMany(entries)
        d.addCallbacks(self._stored, self._notStored, callbackArgs=(len(entries),),
                       errbackArgs=(len(entries),))
        d.addBoth(self._written)
        return d

    def _written(self, _):
        self._pendingWrites -= 1

    def _stored(self, _, count):
        self.counters["stored"] += count

    def _notStored(self, failure, count):
        self.counters["store-failed"] += count
        self.warnings.warn(self.log, "could not keep a notification: {error}",
                           error=failure.getErrorMessage()[:200])

    def _clientsWithPrincipals(self):
        """
        Every client of the fan-out with the named principal of its
        subscription (L{principalOfSubscription}).
        """
        for client, subscription in list(self.fanout.clients.items()):
            principal = principalOfSubscription(subscription)
            if principal is not None:
                yield client, principal

    def _deliver(self, notification, body, clients):
        """
        Send C{notification} to those of C{clients} (C{(client, principal)}
        pairs) it is addressed to.
        """
        document = {"kind": wire.NOTIFICATION, "host": None, "id": notification.id}
        for client, principal in clients:
            if not self._addressed(principal, notification):
                continue
            try:
                self.fanout.sendAlone(client, document, body)
            except Exception:
                self.log.failure("sending a notification to {client!r} failed", client=client)
                continue
            self.counters["delivered"] += 1

    def alertReceived(self, event, body):
        """
        An alert from the fan-out (a L{resmon.wire.Event}): when it fires,
        one notification to each user who may see its host.
        """
        payload = event.payload
        if self.directory is None or not isinstance(payload, dict) or payload.get("state") != "firing":
            return
        subject = subjectOf(event)
        # What it is shown as: the host (an odd alert's subject is source and host).
        host = str(payload.get("host") or event.source)[:255]
        check = str(payload.get("check", ""))[:100]
        level = str(payload.get("level", ""))[:20]
        # The clients by user, once per alert: each user's notification goes
        # to that user's clients only (not a pass over every client per user).
        clientsByName = {}
        for client, principal in self._clientsWithPrincipals():
            clientsByName.setdefault(principal.name, []).append((client, principal))
        entries = []
        notificationId = alertNotificationId(event.id)
        for principal in self.directory.principals():
            if principal.name is None or not principal.maySee(subject):
                continue
            try:
                notification = wire.Notification(
                    wire.NOTIFY_USER, principal.name, notificationId,
                    event.ts, f"{host}: {check} {level}".strip()[:wire.MAX_NOTIFY_TITLE],
                    f"alert firing on {host} ({check})"[:wire.MAX_NOTIFY_TEXT],
                    "critical" if level == wire.HIGH else "warning",
                    host if subject == host else None)
            except Exception:  # pragma: no cover - a dataclass of checked fields
                continue
            self.counters["alerts"] += 1
            body = wire.encodeJSON(notification.document())
            entries.append((keptFor(principal), notification.id, notification.ts, body))
            self._deliver(notification, body, clientsByName.get(principal.name, ()))
        self._keep(entries)

    def sendKept(self, client, principal):
        """
        Send C{client} (of C{principal}) the notifications kept for its user,
        as one C{notifications} frame (nothing without a named principal).
        """
        if principal is None or principal.name is None:
            return defer.succeed(None)
        d = self.store.recent(keptFor(principal))

        def send(bodies):
            documents = [wire.loadJSON(body, wire.MAX_NOTIFY_BODY * 2) for body in bodies]
            documents = [document for document in documents
                         if document.get("host") is None or principal.maySee(document["host"])]
            try:
                self.fanout.sendAlone(client, {"kind": wire.NOTIFICATIONS, "host": None, "id": None},
                                      wire.notificationsBody(documents))
            except Exception:
                # The client may have gone while the store answered.
                self.log.failure("sending the notifications kept to {client!r} failed",
                                 client=client)

        def failed(failure):
            self.counters["store-failed"] += 1
            self.warnings.warn(self.log, "could not read the notifications kept: {error}",
                               error=failure.getErrorMessage()[:200])
        return d.addCallbacks(send, failed)


def alertNotificationId(eventId):
    """
    The id of the notifications of the alert C{eventId}: C{alert-<id>},
    or for an id too long for that, C{alert~} and a digest of it (cut, two
    long ids sharing their first characters would be one notification; the
    other prefix keeps a short id from standing for a long one's digest).
    """
    notificationId = f"alert-{eventId}"
    if len(notificationId) <= wire.EVENT_ID_LENGTH:
        return notificationId
    digest = hashlib.sha256(eventId.encode("utf-8", "surrogatepass")).hexdigest()
    return ("alert~" + digest)[:wire.EVENT_ID_LENGTH]


class UsersDirectory:
    """
    Every user of the users file as a L{resmon.auth.principal.Principal}
    (the notification center's C{directory}), made again when the file is.

    @param watcher: a L{resmon.auth.service.UsersFileWatcher} (its
        C{current} has C{users}, by name, each with C{principal()}).
    """

    def __init__(self, watcher):
        self.watcher = watcher
        self._users = None
        self._principals = []

    def principals(self):
        current = self.watcher.current
        if current is not self._users:
            self._users = current
            self._principals = [user.principal() for user in current.users.values()]
        return self._principals


def notifyPatterns():
    """
    The bus patterns of notifications.
    """
    return [f"{wire.NOTIFY_USER}.*.{wire.NOTIFY}", f"{wire.NOTIFY_GROUP}.*.{wire.NOTIFY}"]


def isNotifyKey(routingKey):
    return routingKey.endswith("." + wire.NOTIFY) and routingKey.count(".") == 2

