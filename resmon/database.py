"""
What the parts that keep state in a database (the webhook registry, the
users' notifications) share: SQLite under --state-dir, or PostgreSQL with
--database, through L{twisted.enterprise.adbapi}.
"""

from twisted.internet import defer


@defer.inlineCallbacks
def createSchema(pool, dialect, schema, attempts=5):
    """
    Run C{schema(cursor, serial)} in one transaction of C{pool}, C{serial}
    being the auto-numbered key column of C{dialect}; tried again when it
    fails, as it may when several processes create the same tables at once
    (PostgreSQL may refuse one C{CREATE ... IF NOT EXISTS}; the next try
    sees the tables).
    """
    serial = ("BIGSERIAL PRIMARY KEY" if dialect == "postgresql"
              else "INTEGER PRIMARY KEY AUTOINCREMENT")
    for attempt in range(attempts):
        try:
            yield pool.runInteraction(schema, serial)
            return
        except Exception:
            if attempt == attempts - 1:
                raise
