"""
The counters every L{resmon.interfaces.IBus} exposes (see
L{IBus.counters<resmon.interfaces.IBus>}), made in one place for every bus.
"""

from collections import Counter

COUNTER_NAMES = ("published", "confirmed", "nacked", "dropped", "connections", "delivered",
                 "rejected", "consumer-cancels", "refused")


def busCounters(connections=0):
    """
    A bus's C{counters} and C{rejected}, all at zero but C{connections}.

    @return: C{(counters, rejected)}: a L{dict} with every name of
        L{COUNTER_NAMES}, and an empty L{Counter} of rejections by reason.
    """
    counters = dict.fromkeys(COUNTER_NAMES, 0)
    counters["connections"] = connections
    return counters, Counter()
