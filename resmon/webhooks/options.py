"""
The options of the webhook registry and of its delivery, for
C{resmon.tap}: light (no Twisted Web, no database driver), so C{twistd
resmon --help} loads nothing more.
"""

import os

from twisted.python import usage

DEFAULT_QUEUE = "resmon.webhooks"
DEFAULT_RETRY_FOR = 86400.0
DEFAULT_DISABLE_AFTER = 86400.0
DEFAULT_MAX_BACKLOG = 10_000
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_HOOKS = 1000
DEFAULT_MAX_HOOKS_PER_KEY = 100
DEFAULT_POLL_INTERVAL = 0.5


def defaultStateDirectory():
    """
    C{$XDG_STATE_HOME/resmon}, or C{~/.local/state/resmon}.
    """
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "resmon")


FLAGS = [
    ["webhook-allow-private", None,
     "Accept webhook targets on loopback, link-local and private addresses (refused by "
     "default: a registry reachable from the network must not be a way into it)."],
]

PARAMETERS = [
    ["state-dir", None, defaultStateDirectory(),
     "Directory of the state a role keeps on disk: the webhook registry's SQLite database "
     "(webhooks.sqlite3) unless --database is given."],
    ["database", None, None,
     "postgresql://user:pass@host:port/db: keep the webhook registry and its pending "
     "deliveries there, shared by every web and webhooks process (default: SQLite under "
     "--state-dir, shared by the processes of this machine)."],
    ["webhook-queue", None, DEFAULT_QUEUE,
     "Durable queue the webhooks role consumes the events of registered keys from."],
    ["webhook-retry-for", None, str(int(DEFAULT_RETRY_FOR)),
     "Seconds a webhook delivery is retried (backoff 1 s to 10 min) before it is dropped."],
    ["webhook-disable-after", None, str(int(DEFAULT_DISABLE_AFTER)),
     "Seconds a webhook may fail without one success before it is disabled."],
    ["webhook-max-backlog", None, str(DEFAULT_MAX_BACKLOG),
     "Pending deliveries kept per webhook; the oldest are dropped beyond this."],
    ["webhook-max-stored-mib", None, "1024",
     "MiB of pending webhook deliveries kept for every webhook together (their bodies); "
     "beyond, the oldest of any webhook are dropped down to nine tenths of it."],
    ["webhook-timeout", None, str(int(DEFAULT_TIMEOUT)),
     "Seconds a webhook target has to answer a delivery."],
    ["webhook-max-hooks", None, str(DEFAULT_MAX_HOOKS), "Most webhooks registered in all."],
    ["webhook-max-hooks-per-key", None, str(DEFAULT_MAX_HOOKS_PER_KEY),
     "Most webhooks registered for one key."],
]


def checkOptions(options, number):
    """
    Check and convert the webhook options in place.

    @param number: C{resmon.tap._number}, the checker of every numeric option.
    """
    database = options["database"]
    if database is not None and not database.startswith(("postgresql://", "postgres://")):
        raise usage.UsageError(
            f"--database: expected a postgresql://user:pass@host:port/db URL, not {database!r}")
    if not options["state-dir"]:
        raise usage.UsageError("--state-dir: must not be empty")
    if not options["webhook-queue"] or len(options["webhook-queue"]) > 255:
        raise usage.UsageError("--webhook-queue: must be 1 to 255 characters")
    options["webhook-retry-for"] = number(options, "webhook-retry-for", float, 1, 30 * 86400)
    options["webhook-disable-after"] = number(
        options, "webhook-disable-after", float, 1, 365 * 86400)
    options["webhook-max-backlog"] = number(options, "webhook-max-backlog", int, 1, 10_000_000)
    options["webhook-max-stored-mib"] = number(options, "webhook-max-stored-mib", float, 1,
                                               1024 * 1024)
    options["webhook-timeout"] = number(options, "webhook-timeout", float, 0.1, 600)
    options["webhook-max-hooks"] = number(options, "webhook-max-hooks", int, 1, 1_000_000)
    options["webhook-max-hooks-per-key"] = number(
        options, "webhook-max-hooks-per-key", int, 1, 1_000_000)
