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
