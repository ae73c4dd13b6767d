"""
The webhook registry and its pending deliveries in a database, through
L{twisted.enterprise.adbapi}: SQLite (one file, shared by the processes of
one machine) or PostgreSQL (shared by every machine).

Tables: C{webhook_hooks} (the registry; each hook's C{owner} is the user
who registered it, NULL without authentication), C{webhook_pending} (deliveries not
yet made, in order: they survive any restart), C{webhook_attempts} (the
last attempts of each hook), C{webhook_meta} (C{version}, raised by every
change of the registry: the webhooks role polls it).
"""

import os
import time
from collections import namedtuple
from urllib.parse import unquote, urlsplit

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger

from resmon.database import createSchema

ACTIVE = "active"
FAILING = "failing"
DISABLED = "disabled"
KEPT_ATTEMPTS = 100
# PostgreSQL's deadlock_detected and serialization_failure: the transaction
# is run again, up to RETRIES times.
RETRIED_CODES = frozenset({"40P01", "40001"})
RETRIES = 3
# Seconds between two trims of a hook's attempts as deliveries are made.
TRIM_INTERVAL = 1.0
# Hooks whose last trim is remembered, beyond which the old ones are forgotten.
TRIMMED_KEPT = 1024
SQLITE_FILE = "webhooks.sqlite3"

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS webhook_hooks (
        id TEXT PRIMARY KEY, hkey TEXT NOT NULL, url TEXT NOT NULL, secret TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL, state TEXT NOT NULL,
        failing_since DOUBLE PRECISION, last_attempt DOUBLE PRECISION, last_result TEXT,
        last_success DOUBLE PRECISION, owner TEXT)""",
    "CREATE INDEX IF NOT EXISTS webhook_hooks_key ON webhook_hooks (hkey)",
    """CREATE TABLE IF NOT EXISTS webhook_pending (
        seq {serial}, id TEXT NOT NULL UNIQUE, hook TEXT NOT NULL, rkey TEXT NOT NULL,
        body TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, attempts INTEGER NOT NULL,
        next_attempt DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS webhook_pending_hook ON webhook_pending (hook, seq)",
    """CREATE TABLE IF NOT EXISTS webhook_attempts (
        seq {serial}, hook TEXT NOT NULL, delivery TEXT NOT NULL, rkey TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL, attempt INTEGER NOT NULL, status INTEGER, error TEXT,
        duration DOUBLE PRECISION NOT NULL, outcome TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS webhook_attempts_hook ON webhook_attempts (hook, seq)",
    "CREATE TABLE IF NOT EXISTS webhook_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS webhook_lease (
        name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL)""",
    # The keys a webhooks queue was bound to, so that a process started after
    # hooks were deleted knows which bindings are stale.
    """CREATE TABLE IF NOT EXISTS webhook_bindings (
        queue TEXT NOT NULL, hkey TEXT NOT NULL, PRIMARY KEY (queue, hkey))""",
]

# Columns added since a table was first made: (table, column, type). A
# database made by an older resmon gets them at its next start.
_ADDED_COLUMNS = [
    ("webhook_hooks", "owner", "TEXT"),
    # The owner's id in the users file (NULL: registered before users had
    # ids, or by a user of a file without them).
    ("webhook_hooks", "owner_id", "TEXT"),
    # The bytes of a pending delivery's body, for the budget of them all
    # (NULL for those stored by an older resmon: their length is read).
    ("webhook_pending", "size", "BIGINT"),
]
# Statements that need the added columns.
_AFTER_COLUMNS = [
    "CREATE INDEX IF NOT EXISTS webhook_hooks_owner ON webhook_hooks (owner)",
    # Counting the bodies' sizes, and finding the oldest, without reading them.
    "CREATE INDEX IF NOT EXISTS webhook_pending_size ON webhook_pending (seq, size, hook)",
]


class Owner(namedtuple("Owner", "name id unbound")):
    """
    Whose hooks an operation is limited to (see L{ownsHook}): a user's
    C{name} and C{id} (L{None} for a user without one), and whether the
    hooks of that name bound to no id are theirs too (C{unbound}).
    """


def ownedBy(principal):
    """
    The L{Owner} of C{principal}'s hooks.
    """
    return Owner(principal.name, principal.userId, _ownsUnbound(principal))


def _ownsUnbound(principal):
    """
    Whether C{principal} owns the hooks of its name bound to no id: see
    L{ownsHook}.
    """
    return principal.userId is None or principal.predatesIds


def ownsHook(principal, owner, ownerId):
    """
    Whether C{principal} owns a hook registered by C{owner} (a user's name)
    bound to C{ownerId}: the same name, and the same id. A hook bound to no
    id was registered before users had ids: it is the user's of that name
    who has no id either, or whose id was given when ids came
    (C{predatesIds}); never a user added since, who may have taken the
    name of a removed one.
    """
    if owner != principal.name:
        return False
    if ownerId is None:
        return _ownsUnbound(principal)
    return ownerId == principal.userId


class Hook:
    """
    One registered webhook, as stored.
    """

    __slots__ = ("id", "key", "url", "secret", "created", "state", "failingSince",
                 "lastAttempt", "lastResult", "lastSuccess", "owner", "ownerId")

    def __init__(self, id, key, url, secret, created, state, failingSince=None,
                 lastAttempt=None, lastResult=None, lastSuccess=None, owner=None,
                 ownerId=None):
        self.id = id
        self.key = key
        self.url = url
        self.secret = secret
        self.created = created
        self.state = state
        self.failingSince = failingSince
        self.lastAttempt = lastAttempt
        self.lastResult = lastResult
        self.lastSuccess = lastSuccess
        # The user who registered it (None: registered without authentication),
        # and their id (None: registered before users had ids, see ownsHook).
        self.owner = owner
        self.ownerId = ownerId

    @property
    def shownState(self):
        """
        C{active}, C{failing} (failed since its last success) or C{disabled}.
        """
        if self.state == DISABLED:
            return DISABLED
        return FAILING if self.failingSince is not None else ACTIVE

    def describe(self):
        """
        What the API shows of the hook (never its secret).
        """
        return {"id": self.id, "key": self.key, "url": self.url, "created": self.created,
                "state": self.shownState, "failing_since": self.failingSince,
                "last_attempt": self.lastAttempt, "last_result": self.lastResult,
                "last_success": self.lastSuccess, "owner": self.owner,
                "owner_id": self.ownerId}


_HOOK_COLUMNS = ("id, hkey, url, secret, created, state, failing_since, last_attempt, "
                 "last_result, last_success, owner, owner_id")


class Pending:
    """
    One delivery not yet made.
    """

    __slots__ = ("seq", "id", "hook", "key", "body", "created", "attempts", "nextAttempt")

    def __init__(self, seq, id, hook, key, body, created, attempts, nextAttempt):
        self.seq = seq
        self.id = id
        self.hook = hook
        self.key = key
        self.body = body.encode("ascii") if isinstance(body, str) else body
        self.created = created
        self.attempts = attempts
        self.nextAttempt = nextAttempt


class PendingRows(list):
    """
    Pending deliveries read, in order; C{complete}: whether they are every
    one there was after those asked for.
    """

    complete = False


def _sqliteConnect(path):
    import sqlite3
    connection = sqlite3.connect(path, timeout=30, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def openPool(database, stateDirectory):
    """
    The L{adbapi.ConnectionPool} of C{database} (a C{postgresql://} URL), or
    of C{webhooks.sqlite3} under C{stateDirectory} when it is L{None}; and
    its placeholder style (C{?} or C{%s}).

    @return: C{(pool, dialect, where)}, C{where} said in logs (no password).
    """
    if database is None:
        os.makedirs(stateDirectory, exist_ok=True)
        path = os.path.join(stateDirectory, SQLITE_FILE)
        # One connection: SQLite takes one writer at a time anyway, and a
        # connection used by one thread at a time needs no more locking.
        pool = adbapi.ConnectionPool(
            "sqlite3", path, timeout=30, check_same_thread=False, cp_min=1, cp_max=1,
            cp_openfun=_sqliteOpened)
        return pool, "sqlite", path
    parts = urlsplit(database)
    kwargs = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 5432,
              "dbname": unquote(parts.path.lstrip("/")) or "postgres"}
    if parts.username:
        kwargs["user"] = unquote(parts.username)
    if parts.password:
        kwargs["password"] = unquote(parts.password)
    pool = adbapi.ConnectionPool("psycopg2", cp_min=1, cp_max=4, cp_reconnect=True,
                                 connect_timeout=10, **kwargs)
    return pool, "postgresql", f"postgresql://{kwargs['host']}:{kwargs['port']}/{kwargs['dbname']}"


def _sqliteOpened(connection):
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


class WebhookStore:
    """
    The registry and the pending deliveries, every method a L{Deferred}
    run in the pool's threads.

    @param pool: an L{adbapi.ConnectionPool}.
    @param dialect: C{sqlite} or C{postgresql}.
    """

    log = Logger()

    def __init__(self, pool, dialect, where=""):
        self.pool = pool
        self.dialect = dialect
        self.where = where
        self._ready = False
        # Hook id to when its attempts were last trimmed (time.monotonic).
        self._trimmed = {}

    def _sql(self, text):
        return text.replace("?", "%s") if self.dialect == "postgresql" else text

    def _run(self, function, *args):
        d = self.ready()
        d.addCallback(lambda _: self._interact(function, args, RETRIES))
        return d

    def _interact(self, function, args, retries):
        """
        Run C{function} in a transaction; again (at most C{retries} times)
        if PostgreSQL broke a deadlock by rolling it back: every
        transaction here can be run again after a rollback.
        """
        d = self.pool.runInteraction(function, *args)
        if retries:
            def again(failure):
                if getattr(failure.value, "pgcode", None) not in RETRIED_CODES:
                    return failure
                return self._interact(function, args, retries - 1)
            d.addErrback(again)
        return d

    def ready(self):
        """
        Fires once the tables exist (made on first use; made again by the
        next use after a failure: every statement is idempotent).
        """
        if self._ready:
            return defer.succeed(None)

        def made(_):
            self._ready = True
        return self._createSchema().addCallback(made)

    def _createSchema(self):
        return createSchema(self.pool, self.dialect, self._schema)

    def _schema(self, cursor, serial):
        for statement in _SCHEMA:
            cursor.execute(statement.format(serial=serial))
        for table, column, kind in _ADDED_COLUMNS:
            if column not in self._columns(cursor, table):
                self.log.info("adding column {column} to {table} in {where}",
                              column=column, table=table, where=self.where)
                cursor.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        for statement in _AFTER_COLUMNS:
            cursor.execute(statement)
        cursor.execute(self._sql("SELECT value FROM webhook_meta WHERE name = ?"), ("version",))
        if cursor.fetchone() is None:
            cursor.execute(self._sql("INSERT INTO webhook_meta (name, value) VALUES (?, ?)"),
                           ("version", 0))
        cursor.execute(self._sql("SELECT owner FROM webhook_lease WHERE name = ?"), ("delivery",))
        if cursor.fetchone() is None:
            cursor.execute(self._sql(
                "INSERT INTO webhook_lease (name, owner, expires) VALUES (?, ?, ?)"),
                ("delivery", "", 0.0))

    def _columns(self, cursor, table):
        """
        The names of C{table}'s columns.
        """
        if self.dialect == "postgresql":
            cursor.execute("SELECT column_name FROM information_schema.columns "
                           "WHERE table_schema = current_schema() AND table_name = %s", (table,))
            return {row[0] for row in cursor.fetchall()}
        cursor.execute(f"PRAGMA table_info({table})")
        return {row[1] for row in cursor.fetchall()}

    def _bump(self, cursor):
        cursor.execute("UPDATE webhook_meta SET value = value + 1 WHERE name = 'version'")

    # The registry.

    def add(self, hook, maxHooks, maxPerKey):
        """
        Store C{hook} unless it would make more than C{maxHooks} hooks, or
        more than C{maxPerKey} of its key.

        @return: a L{Deferred} of L{None}, or of the limit (C{"hooks"} or
            C{"per-key"}) it would pass.
        """
        return self._run(self._add, hook, maxHooks, maxPerKey)

    def _add(self, cursor, hook, maxHooks, maxPerKey):
        if self.dialect == "postgresql":
            # Serialise registrations, so that two processes cannot both pass
            # the limits with their last free place.
            cursor.execute("LOCK TABLE webhook_hooks IN SHARE ROW EXCLUSIVE MODE")
        cursor.execute("SELECT count(*) FROM webhook_hooks")
        if cursor.fetchone()[0] >= maxHooks:
            return "hooks"
        cursor.execute(self._sql("SELECT count(*) FROM webhook_hooks WHERE hkey = ?"), (hook.key,))
        if cursor.fetchone()[0] >= maxPerKey:
            return "per-key"
        cursor.execute(self._sql(
            f"INSERT INTO webhook_hooks ({_HOOK_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            (hook.id, hook.key, hook.url, hook.secret, hook.created, hook.state, None, None,
             None, None, hook.owner, hook.ownerId))
        self._bump(cursor)
        return None

    def _where(self, conditions):
        """
        The C{WHERE} clause and parameters of C{conditions}, C{(column, value)}
        pairs; one whose value is L{None} is left out.
        """
        given = [(column, value) for column, value in conditions if value is not None]
        clauses, parameters = [], []
        for column, value in given:
            if column == "owner":
                if not isinstance(value, Owner):
                    raise TypeError(f"ownedBy must be an Owner, not {type(value).__name__}")
                # The user's hooks, as ownsHook says.
                clauses.append("owner = ?")
                parameters.append(value.name)
                if value.id is None:
                    clauses.append("owner_id IS NULL")
                elif value.unbound:
                    clauses.append("(owner_id = ? OR owner_id IS NULL)")
                    parameters.append(value.id)
                else:
                    clauses.append("owner_id = ?")
                    parameters.append(value.id)
            else:
                clauses.append(f"{column} = ?")
                parameters.append(value)
        if not clauses:
            return "", ()
        return self._sql(" WHERE " + " AND ".join(clauses)), tuple(parameters)

    def hooks(self, key=None, ownedBy=None):
        """
        Every hook (of C{key}; of owner C{ownedBy}), oldest first.
        """
        return self._run(self._hooks, key, ownedBy)

    def _hooks(self, cursor, key, ownedBy=None):
        where, parameters = self._where([("hkey", key), ("owner", ownedBy)])
        cursor.execute(f"SELECT {_HOOK_COLUMNS} FROM webhook_hooks{where} ORDER BY created, id",
                       parameters)
        return [Hook(*row) for row in cursor.fetchall()]

    def hook(self, hookId, ownedBy=None):
        """
        The hook C{hookId} (if its owner is C{ownedBy}), or L{None}.
        """
        return self._run(self._hook, hookId, ownedBy)

    def _hook(self, cursor, hookId, ownedBy=None):
        where, parameters = self._where([("id", hookId), ("owner", ownedBy)])
        cursor.execute(f"SELECT {_HOOK_COLUMNS} FROM webhook_hooks{where}", parameters)
        row = cursor.fetchone()
        return Hook(*row) if row else None

    def remove(self, hookId=None, key=None, ownedBy=None):
        """
        Unregister hook C{hookId}, or every hook of C{key}, with their
        pending deliveries and attempts; only those of owner C{ownedBy}
        when it is given.

        @return: a L{Deferred} of the ids removed.
        """
        return self._run(self._remove, hookId, key, ownedBy)

    def _remove(self, cursor, hookId, key, ownedBy=None):
        if hookId is None and key is None:
            raise ValueError("remove what: neither a hook nor a key")
        if hookId is not None:
            where, parameters = self._where([("id", hookId), ("owner", ownedBy)])
        else:
            where, parameters = self._where([("hkey", key), ("owner", ownedBy)])
        # Locked on PostgreSQL: a transaction storing deliveries for them
        # (_dropOrphans) ends first, and its deliveries are deleted here.
        lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
        cursor.execute(f"SELECT id FROM webhook_hooks{where}{lock}", parameters)
        ids = [row[0] for row in cursor.fetchall()]
        # In the order the webhooks role writes them (pending deliveries,
        # attempts, then the hook), so that the two seldom deadlock (the
        # hooks locked first on PostgreSQL can: it breaks the deadlock and
        # the transaction is run again, see _interact).
        for table, column in (("webhook_pending", "hook"), ("webhook_attempts", "hook"),
                              ("webhook_hooks", "id")):
            for removed in ids:
                cursor.execute(self._sql(f"DELETE FROM {table} WHERE {column} = ?"), (removed,))
        if ids:
            self._bump(cursor)
        return ids

    # The webhooks queue's bindings (resmon.services.webhooks).

    def boundKeys(self, queue):
        """
        The keys C{queue} was bound to and not unbound since: a L{Deferred}
        of a L{frozenset}.
        """
        return self._run(self._boundKeys, queue)

    def _boundKeys(self, cursor, queue):
        cursor.execute(self._sql("SELECT hkey FROM webhook_bindings WHERE queue = ?"), (queue,))
        return frozenset(row[0] for row in cursor.fetchall())

    def recordBound(self, queue, keys):
        """
        Remember that C{queue} is (about to be) bound to C{keys}.
        """
        return self._run(self._recordBound, queue, sorted(keys))

    def _recordBound(self, cursor, queue, keys):
        for key in keys:
            cursor.execute(self._sql(
                "INSERT INTO webhook_bindings (queue, hkey) VALUES (?, ?) ON CONFLICT DO NOTHING"),
                (queue, key))

    def forgetBound(self, queue, keys):
        """
        C{queue} is no longer bound to C{keys}.
        """
        return self._run(self._forgetBound, queue, sorted(keys))

    def _forgetBound(self, cursor, queue, keys):
        for key in keys:
            cursor.execute(self._sql("DELETE FROM webhook_bindings WHERE queue = ? AND hkey = ?"),
                           (queue, key))

    def version(self):
        """
        The registry's version: it changes with every change of the registry.
        """
        return self._run(self._version)

    def _version(self, cursor):
        cursor.execute("SELECT value FROM webhook_meta WHERE name = 'version'")
        return cursor.fetchone()[0]

    def claimLease(self, owner, now, duration):
        """
        Take or keep the delivery lease for C{duration} seconds: one
        webhooks process at a time delivers, so that each hook's deliveries
        go out once and in order.

        @return: a L{Deferred} of whether C{owner} holds it.
        """
        return self._run(self._claimLease, owner, now, duration)

    def _claimLease(self, cursor, owner, now, duration):
        cursor.execute(self._sql(
            "UPDATE webhook_lease SET owner = ?, expires = ? "
            "WHERE name = 'delivery' AND (owner = ? OR expires <= ?)"),
            (owner, now + duration, owner, now))
        return cursor.rowcount == 1

    def releaseLease(self, owner):
        return self._run(self._releaseLease, owner)

    def _releaseLease(self, cursor, owner):
        cursor.execute(self._sql(
            "UPDATE webhook_lease SET expires = 0 WHERE name = 'delivery' AND owner = ?"),
            (owner,))

    def touch(self):
        """
        Raise the version without changing the registry: the webhooks role
        then looks again at every hook's pending deliveries (a ping).
        """
        return self._run(self._bump)

    # Deliveries.

    def enqueue(self, deliveries, maxBacklog):
        """
        Store new deliveries (L{Pending}s without C{seq}), dropping the
        oldest of a hook beyond C{maxBacklog}.

        @return: a L{Deferred} of the number of deliveries dropped, by hook.
        """
        return self._run(self._enqueue, deliveries, maxBacklog).addCallback(lambda r: r[0])

    def enqueueChecking(self, deliveries, maxBacklog, check):
        """
        L{enqueue}, counting (and capping) only the backlogs of the hooks in
        C{check}.

        @return: a L{Deferred} of C{(dropped, counts)}: the number of
            deliveries dropped, and then pending, of each hook checked.
        """
        return self._run(self._enqueue, deliveries, maxBacklog, check)

    def _executeMany(self, cursor, statement, rows):
        """
        Run C{statement} (an C{INSERT ... VALUES (?, ...)}) for each of
        C{rows}: in one statement of many rows on PostgreSQL (one round trip
        instead of one per row), with C{executemany} on SQLite.
        """
        if not rows:
            return
        if self.dialect == "postgresql":
            from psycopg2.extras import execute_values
            head = statement[:statement.rindex("VALUES") + len("VALUES")]
            execute_values(cursor, head + " %s", rows, page_size=500)
        else:
            cursor.executemany(statement, rows)

    def _deleteSeqs(self, cursor, table, seqs):
        """
        Delete the rows of C{table} whose C{seq} is one of C{seqs}.
        """
        if self.dialect == "postgresql":
            cursor.execute(f"DELETE FROM {table} WHERE seq = ANY(%s)", (list(seqs),))
            return
        for start in range(0, len(seqs), 500):
            chunk = seqs[start:start + 500]
            cursor.execute(f"DELETE FROM {table} WHERE seq IN ({', '.join('?' * len(chunk))})",
                           chunk)

    def _enqueue(self, cursor, deliveries, maxBacklog, check=None):
        self._executeMany(cursor, (
            "INSERT INTO webhook_pending (id, hook, rkey, body, created, attempts, next_attempt, "
            "size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
            [(p.id, p.hook, p.key, p.body.decode("ascii"), p.created, p.attempts, p.nextAttempt,
              len(p.body)) for p in deliveries])
        dropped = {}
        counts = {}
        hooks = {p.hook for p in deliveries}
        self._dropOrphans(cursor, sorted(hooks))
        for hook in sorted(hooks if check is None else hooks & set(check)):
            cursor.execute(self._sql("SELECT count(*) FROM webhook_pending WHERE hook = ?"),
                           (hook,))
            count = cursor.fetchone()[0]
            excess = count - maxBacklog
            if excess > 0:
                cursor.execute(self._sql(
                    "DELETE FROM webhook_pending WHERE seq IN (SELECT seq FROM webhook_pending "
                    "WHERE hook = ? ORDER BY seq LIMIT ?)"), (hook, excess))
                dropped[hook] = excess
            counts[hook] = min(count, maxBacklog)
        return dropped, counts

    def trimToBytes(self, maxBytes, target):
        """
        Hold the pending deliveries of every hook together to C{maxBytes}
        of bodies: when they are more, drop the oldest, whichever hooks
        they are for, until C{target} bytes are left.

        @return: a L{Deferred} of C{(bytes pending now, {hook id: count
            dropped})}.
        """
        return self._run(self._trimToBytes, maxBytes, target)

    def _pendingBytes(self, cursor):
        cursor.execute("SELECT COALESCE(SUM(size), 0) FROM webhook_pending WHERE size IS NOT NULL")
        total = int(cursor.fetchone()[0])
        # Stored by an older resmon, without their size.
        cursor.execute("SELECT COALESCE(SUM(length(body)), 0) FROM webhook_pending "
                       "WHERE size IS NULL")
        return total + int(cursor.fetchone()[0])

    def _trimToBytes(self, cursor, maxBytes, target):
        total = self._pendingBytes(cursor)
        if total <= maxBytes:
            return total, {}
        # Over: count again and choose what to drop with no other writer
        # (another process delivering or trimming) between the count and
        # the delete, or both would drop the same bytes' worth.
        if self.dialect == "postgresql":
            cursor.execute("LOCK TABLE webhook_pending IN EXCLUSIVE MODE")
        else:
            # SQLite: the first write of a transaction takes the database's
            # write lock until it ends.
            cursor.execute("UPDATE webhook_meta SET value = value WHERE name = 'version'")
        total = self._pendingBytes(cursor)
        dropped = {}
        seqs, after = [], -1
        while total > target:
            cursor.execute(self._sql(
                "SELECT seq, hook, COALESCE(size, length(body)) FROM webhook_pending "
                "WHERE seq > ? ORDER BY seq LIMIT 500"), (after,))
            rows = cursor.fetchall()
            if not rows:
                break
            for seq, hook, length in rows:
                if total <= target:
                    break
                seqs.append(seq)
                dropped[hook] = dropped.get(hook, 0) + 1
                total -= int(length)
                after = seq
        self._deleteSeqs(cursor, "webhook_pending", seqs)
        return total, dropped

    def _dropOrphans(self, cursor, hooks):
        """
        Delete the pending deliveries just stored for hooks deleted since
        their event came (the dispatcher chose the hooks before the delete,
        stored after it): nothing would ever deliver or expire them.
        """
        gone = set(hooks)
        # On PostgreSQL the hooks found stay until this transaction ends: a
        # delete of one of them (which locks it first, see _remove) waits,
        # then finds and deletes these deliveries too.
        lock = " FOR SHARE" if self.dialect == "postgresql" else ""
        for start in range(0, len(hooks), 500):
            chunk = hooks[start:start + 500]
            cursor.execute(self._sql(
                f"SELECT id FROM webhook_hooks WHERE id IN ({', '.join('?' * len(chunk))}){lock}"),
                chunk)
            gone -= {row[0] for row in cursor.fetchall()}
        for hookId in sorted(gone):
            cursor.execute(self._sql("DELETE FROM webhook_pending WHERE hook = ?"), (hookId,))

    def pending(self, hookId, limit=50, after=None, maxBytes=None):
        """
        The oldest C{limit} pending deliveries of hook C{hookId}, in order;
        only those stored after delivery C{seq} C{after} if given; with
        C{maxBytes}, only about that many bytes of bodies (read in growing
        chunks, two at first, until they are there; one delivery at least).

        @return: a L{Deferred} of a L{PendingRows}.
        """
        return self._run(self._pending, hookId, limit, after, maxBytes)

    def _pending(self, cursor, hookId, limit, after=None, maxBytes=None):
        after = -1 if after is None else after
        query = self._sql(
            "SELECT seq, id, hook, rkey, body, created, attempts, next_attempt "
            "FROM webhook_pending "
            "WHERE hook = ? AND seq > ? ORDER BY seq LIMIT ?")
        rows = PendingRows()
        # With maxBytes, in chunks, each read whole: two first, then as many
        # as the bytes left would take at the size of the biggest body so
        # far, at most four times the chunk before, until the bytes or the
        # number asked for are there: small bodies take two queries, big
        # ones a few, and what is read stays near maxBytes.
        chunk = limit if maxBytes is None else 2
        taken = biggest = 0
        while True:
            want = min(chunk, limit - len(rows))
            cursor.execute(query, (hookId, after, want))
            found = cursor.fetchall()
            for row in found:
                rows.append(Pending(*row))
                size = len(row[4])
                taken += size
                biggest = max(biggest, size)
            if len(found) < want:
                rows.complete = True
                return rows
            if len(rows) >= limit or (maxBytes is not None and taken >= maxBytes):
                return rows
            after = found[-1][0]
            chunk = max(1, min(4 * chunk, (maxBytes - taken) // max(1, biggest)))

    def pendingCount(self, hookId):
        return self._run(self._pendingCount, hookId)

    def _pendingCount(self, cursor, hookId):
        cursor.execute(self._sql("SELECT count(*) FROM webhook_pending WHERE hook = ?"), (hookId,))
        return cursor.fetchone()[0]

    def recordAttempt(self, delivery, attempt, at, status, error, duration, outcome,
                      nextAttempt=None, disableAfter=None):
        """
        Record one attempt of C{delivery}: C{outcome} is C{delivered}
        (the delivery leaves the pending ones), C{retry} (it stays, tried
        again at C{nextAttempt}), or C{expired} (it leaves, undelivered).
        Keeps the hook's last L{KEPT_ATTEMPTS} attempts and its state: a
        hook failing since more than C{disableAfter} seconds is disabled.

        @return: a L{Deferred} of the hook's new L{Hook}, or L{None} if it
            is gone.
        """
        return self._run(self._recordAttempt, delivery, attempt, at, status, error, duration,
                         outcome, nextAttempt, disableAfter)

    def _recordAttempt(self, cursor, delivery, attempt, at, status, error, duration, outcome,
                       nextAttempt, disableAfter):
        if outcome == "retry":
            cursor.execute(self._sql(
                "UPDATE webhook_pending SET attempts = ?, next_attempt = ? WHERE seq = ?"),
                (attempt, nextAttempt, delivery.seq))
        else:
            cursor.execute(self._sql("DELETE FROM webhook_pending WHERE seq = ?"), (delivery.seq,))
        if attempt:
            cursor.execute(self._sql(
                "INSERT INTO webhook_attempts (hook, delivery, rkey, at, attempt, status, error, "
                "duration, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                (delivery.hook, delivery.id, delivery.key, at, attempt, status, error, duration,
                 outcome))
            self._trimAttempts(cursor, delivery.hook)
        hook = self._hook(cursor, delivery.hook)
        if hook is None or not attempt:
            return hook
        result = str(status) if status is not None else error
        if outcome == "delivered":
            cursor.execute(self._sql(
                "UPDATE webhook_hooks SET failing_since = NULL, last_attempt = ?, last_result = ?, "
                "last_success = ? WHERE id = ?"), (at, result, at, hook.id))
        else:
            failingSince = hook.failingSince if hook.failingSince is not None else at
            state = hook.state
            if disableAfter is not None and at - failingSince >= disableAfter:
                state = DISABLED
            cursor.execute(self._sql(
                "UPDATE webhook_hooks SET failing_since = ?, last_attempt = ?, last_result = ?, "
                "state = ? WHERE id = ?"), (failingSince, at, result, state, hook.id))
            if state != hook.state:
                self._bump(cursor)
        return self._hook(cursor, hook.id)

    def recordDelivered(self, delivered):
        """
        Record many successful attempts in one transaction: each of
        C{delivered} is C{(delivery, attempt, at, status, duration)}.

        @return: a L{Deferred} of the new L{Hook} of each hook concerned
            (by id; the ones gone are left out).
        """
        return self._run(self._recordDelivered, delivered)

    def _recordDelivered(self, cursor, delivered):
        if self.dialect == "postgresql":
            # Not waiting for the disk: a delivery whose record a crash of
            # the database lost is sent again, as after a crash of resmon.
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        self._deleteSeqs(cursor, "webhook_pending", [d.seq for d, _, _, _, _ in delivered])
        self._executeMany(cursor, (
            "INSERT INTO webhook_attempts (hook, delivery, rkey, at, attempt, status, error, "
            "duration, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            [(delivery.hook, delivery.id, delivery.key, at, attempt, status, None, duration,
              "delivered") for delivery, attempt, at, status, duration in delivered])
        latest = {delivery.hook: (at, status) for delivery, _, at, status, _ in delivered}
        hooks = {}
        now = time.monotonic()
        if len(self._trimmed) > TRIMMED_KEPT:
            # Hooks deleted since (through another process) leave their
            # times here: only the recent ones still matter.
            self._trimmed = {hookId: at for hookId, at in self._trimmed.items()
                             if now - at < TRIM_INTERVAL}
        for hookId, (at, status) in sorted(latest.items()):
            # The attempts beyond the last KEPT_ATTEMPTS are deleted at most
            # once a second (attempts() shows no more than those anyway).
            if now - self._trimmed.get(hookId, -TRIM_INTERVAL) >= TRIM_INTERVAL:
                self._trimmed[hookId] = now
                self._trimAttempts(cursor, hookId)
            update = self._sql(
                "UPDATE webhook_hooks SET failing_since = NULL, last_attempt = ?, last_result = ?, "
                "last_success = ? WHERE id = ?")
            if self.dialect == "postgresql":
                cursor.execute(update + f" RETURNING {_HOOK_COLUMNS}",
                               (at, str(status), at, hookId))
                row = cursor.fetchone()
                hook = Hook(*row) if row else None
            else:
                cursor.execute(update, (at, str(status), at, hookId))
                hook = self._hook(cursor, hookId)
            if hook is not None:
                hooks[hookId] = hook
        return hooks

    def _trimAttempts(self, cursor, hookId):
        """
        Keep the last L{KEPT_ATTEMPTS} attempts of hook C{hookId}.
        """
        cursor.execute(self._sql(
            "DELETE FROM webhook_attempts WHERE hook = ? AND seq < (SELECT seq FROM "
            "webhook_attempts WHERE hook = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)"),
            (hookId, hookId, KEPT_ATTEMPTS - 1))

    def attempts(self, hookId, limit=KEPT_ATTEMPTS):
        """
        The last C{limit} attempts of hook C{hookId}, newest first, as dicts.
        """
        return self._run(self._attempts, hookId, limit)

    def _attempts(self, cursor, hookId, limit):
        cursor.execute(self._sql(
            "SELECT delivery, rkey, at, attempt, status, error, duration, outcome "
            "FROM webhook_attempts WHERE hook = ? ORDER BY seq DESC LIMIT ?"), (hookId, limit))
        names = ("delivery", "key", "at", "attempt", "status", "error", "duration", "outcome")
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def close(self):
        self.pool.close()
