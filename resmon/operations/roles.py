"""
Which options mean something for which role.

Each role runs some of three parts (L{resmon.tap.ROLES}): the tracker
(agent), the analyzer (with host liveness) and the web server. An option
that only one part reads is refused on the command line of a role without
that part: C{--plugin-dir} on C{--role=agent} would otherwise be silently
ignored. Options not listed here (the broker, exchange, TLS, heartbeat,
outbox, stats, metrics and interface options) mean something for every
role.

Only the command line is checked: a config file may be shared by several
roles (an agent and a server on one machine), so what it sets for the
other roles is left alone.
"""

TRACKER, ANALYZER, WEB = "tracker", "analyzer", "web"

_ONLY = {
    TRACKER: ("name", "interval"),
    ANALYZER: ("queue", "dead-letter-queue", "partitions", "own-partitions", "prefetch",
               "max-body", "cpu-thresholds", "memory-thresholds", "time-budget", "stale-after",
               "offline-after", "liveness-grace", "plugin-dir", "analyzers", "analyzer-option"),
    WEB: ("port", "stall-timeout", "history", "history-points", "ping-interval", "idle-timeout",
          "max-clients", "max-clients-per-address", "max-queued-mib", "header-timeout",
          "max-hosts", "allowed-origin", "allowed-host"),
}

# Option name -> the parts that read it (every part when not listed).
OPTION_PARTS = {name: frozenset([part]) for part, names in _ONLY.items() for name in names}
OPTION_PARTS["forget-after"] = OPTION_PARTS["max-clock-skew"] = frozenset([ANALYZER, WEB])
# --list-analyzers lists what --plugin-dir finds, whatever the role.
_LISTING = ("plugin-dir",)


def misplacedOption(role, parts, given, listing=False):
    """
    The error line for the first option of C{given} that role C{role}
    does not read, or L{None}.

    @param parts: the parts C{role} runs (a value of L{resmon.tap.ROLES}).
    @param given: the option names given on the command line, in order.
    @param listing: whether C{--list-analyzers} was given.
    """
    for name in given:
        wanted = OPTION_PARTS.get(name)
        if wanted is None or wanted & set(parts) or (listing and name in _LISTING):
            continue
        return (f"--{name}: means nothing for --role={role}; it is for roles with "
                f"{' or '.join(_DESCRIBED[part] for part in sorted(wanted))}")
    return None


_DESCRIBED = {TRACKER: "an agent (agent, standalone)",
              ANALYZER: "an analyzer (analyzer, server, standalone)",
              WEB: "a web server (web, server, standalone)"}
