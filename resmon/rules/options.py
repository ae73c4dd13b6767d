"""
The rules' command-line options, checked while C{twistd} parses them (kept
here so that C{resmon.tap} grows by a call): C{--list-rules}, C{--rules-dir},
C{--rules}, C{--rule-option}, C{--max-chain}, C{--rule-rate}.
"""

import os
import sys

from twisted.python import usage

MAX_CHAIN_LIMIT = 1000


def checkRuleOptions(options, runsRules):
    """
    Check and convert the rules' options of C{options} (a
    L{resmon.tap.Options}); C{--list-rules} prints the rules and exits.
    When C{runsRules}, discover, select and configure the rules: a bad
    selection or option stops twistd with one line. Sets C{rule-plugins}
    (the configured rules, or L{None}) and C{rules-left-out}.
    """
    options["max-chain"] = _integer(options, "max-chain", 0, MAX_CHAIN_LIMIT)
    try:
        rate = float(options["rule-rate"])
    except (TypeError, ValueError):
        raise usage.UsageError(f"--rule-rate: expected a number, not {options['rule-rate']!r}")
    if not 0.001 <= rate <= 1_000_000:
        raise usage.UsageError(f"--rule-rate: must be between 0.001 and 1000000, not {rate!r}")
    options["rule-rate"] = rate
    for directory in options["rules-dirs"]:
        try:
            os.listdir(directory)
        except OSError as e:
            raise usage.UsageError(f"--rules-dir: cannot list {directory}: {e.strerror or e}")
    options["rule-plugins"] = options["rules-left-out"] = None
    if not (runsRules or options["list-rules"]):
        # Discovery (importlib.metadata and the rest, about 1 MiB) is not
        # loaded where no rule runs: the agent on every machine.
        return
    from resmon.rules.discovery import (
        RuleConfigurationError, configureRules, discoverRules, formatRuleList)
    if options["list-rules"]:
        print(formatRuleList(discoverRules(options["rules-dirs"])))
        sys.exit(0)
    discovery = discoverRules(options["rules-dirs"])
    try:
        rules = configureRules(discovery, options.get("rules"), options["rule-options"])
    except RuleConfigurationError as e:
        raise usage.UsageError(f"--{e.option}: {e}")
    running = {rule.name for rule in rules}
    options["rule-plugins"] = rules
    options["rules-left-out"] = [name for name in discovery.names() if name not in running]


def _integer(options, name, minimum, maximum):
    text = options[name]
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{name}: expected an integer, not {text!r}")
    if not minimum <= value <= maximum:
        raise usage.UsageError(f"--{name}: must be between {minimum} and {maximum}, not {text!r}")
    return value
