"""
Which options mean something for which role.

Each role runs some of five parts (L{resmon.tap.ROLES}): the tracker
(agent), the analyzer (with host liveness), the rules, the web server and
the webhooks' delivery. An option
that only one part reads is refused on the command line of a role without
that part: C{--plugin-dir} on C{--role=agent} would otherwise be silently
ignored. Options not listed here (the broker, exchange, TLS, heartbeat,
outbox, stats, metrics and interface options) mean something for every
role.

Only the command line is checked: a config file may be shared by several
roles (an agent and a server on one machine), so what it sets for the
other roles is left alone.
"""

TRACKER, ANALYZER, RULES, WEB, WEBHOOKS = "tracker", "analyzer", "rules", "web", "webhooks"

_ONLY = {
    TRACKER: ("name", "interval"),
    ANALYZER: ("queue", "dead-letter-queue", "partitions", "own-partitions", "prefetch",
               "max-body", "cpu-thresholds", "memory-thresholds", "time-budget", "stale-after",
               "offline-after", "liveness-grace", "plugin-dir", "analyzers", "analyzer-option",
               "agent-users"),
    RULES: ("rules-dir", "rules", "rule-option", "max-chain", "rule-rate"),
    WEB: ("port", "stall-timeout", "history", "history-points", "ping-interval", "idle-timeout",
          "max-clients", "max-clients-per-address", "max-queued-mib", "header-timeout",
          "max-hosts", "allowed-origin", "allowed-host", "trusted-proxy", "users", "session-lifetime", "listen",
          "insecure-no-auth"),
}

# Option name -> the parts that read it (every part when not listed).
OPTION_PARTS = {name: frozenset([part]) for part, names in _ONLY.items() for name in names}
OPTION_PARTS["forget-after"] = frozenset([ANALYZER, WEB])
# Users log in at the web role; the webhooks' delivery gives each hook only
# the events of hosts its owner may see.
OPTION_PARTS["users"] = frozenset([WEB, WEBHOOKS])
# The rules consume their own queue, named after --queue, as the analyzer does.
for _name in ("queue", "prefetch", "time-budget", "partitions", "own-partitions"):
    OPTION_PARTS[_name] = frozenset([ANALYZER, RULES])
OPTION_PARTS["max-clock-skew"] = frozenset([ANALYZER, RULES, WEB])
# The webhooks' delivery reads the events it stores within --max-body too.
OPTION_PARTS["max-body"] = frozenset([ANALYZER, RULES, WEB, WEBHOOKS])
# --list-analyzers lists what --plugin-dir finds, --list-rules what --rules-dir
# finds, whatever the role.
_LISTING = ("plugin-dir",)
_RULES_LISTING = ("rules-dir",)


def misplacedOption(role, parts, given, listing=False, listingRules=False):
    """
    The error line for the first option of C{given} that role C{role}
    does not read, or L{None}.

    @param parts: the parts C{role} runs (a value of L{resmon.tap.ROLES}).
    @param given: the option names given on the command line, in order.
    @param listing: whether C{--list-analyzers} was given.
    @param listingRules: whether C{--list-rules} was given.
    """
    for name in given:
        wanted = OPTION_PARTS.get(name)
        if wanted is None or wanted & set(parts) or (listing and name in _LISTING) or (
                listingRules and name in _RULES_LISTING):
            continue
        return (f"--{name}: means nothing for --role={role}; it is for roles with "
                f"{' or '.join(_DESCRIBED[part] for part in sorted(wanted))}")
    return None


_DESCRIBED = {TRACKER: "an agent (agent, standalone)",
              ANALYZER: "an analyzer (analyzer, server, standalone)",
              RULES: "rules (rules, server, standalone)",
              WEB: "a web server (web, server, standalone)",
              WEBHOOKS: "webhooks' delivery (webhooks, server, standalone)"}
