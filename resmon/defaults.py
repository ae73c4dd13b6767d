"""
Default values of options whose owners import heavy libraries (txAMQP, the
services), kept here so that C{resmon.tap}, and with it C{twistd --help},
loads none of them.
"""

# The bus (resmon.bus.amqp).
DEFAULT_HEARTBEAT = 10
DEFAULT_OUTBOX_LIMIT = 10000

# The analyzer service (resmon.services.analyzer).
DEFAULT_QUEUE = "resmon.analyzer"
DEFAULT_PREFETCH = 200
DEFAULT_DEAD_LETTER_QUEUE = "resmon.rejected"

# Host liveness (resmon.services.liveness). Its queue is named after the
# analyzers' queue, with this suffix: analyzers that share one queue share
# one judge.
LIVENESS_QUEUE_SUFFIX = ".liveness"
DEFAULT_OFFLINE_AFTER = 30.0
DEFAULT_GRACE = 5.0
STALE_INTERVALS = 3

# The rules service (resmon.services.rules, resmon.rules.engine).
# Its queue is named after the analyzers' queue, with this suffix.
RULES_QUEUE_SUFFIX = ".rules"
DEFAULT_RULE_EMIT_RATE = 100.0

# The web role: how long a client may stall its socket before it is
# dropped (resmon.webserver.fanout), and each host's history
# (resmon.webserver.history).
DEFAULT_STALL_TIMEOUT = 30.0
DEFAULT_HISTORY_WINDOW = 900.0
DEFAULT_HISTORY_POINTS = 1800

# The analysis pipeline (resmon.analysis.pipeline): seconds an analyzer
# may take on one measure before it is counted as slow.
DEFAULT_TIME_BUDGET = 0.05
