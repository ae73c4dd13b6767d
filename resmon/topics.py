"""
Routing keys and AMQP topic patterns.

A routing key is a list of words separated by dots. In a binding pattern
C{*} matches exactly one word and C{#} matches zero or more words, as in
RabbitMQ's topic exchange. The in-process bus and the web fan-out filter with
L{topicMatches}; RabbitMQ does its own matching, and the shared contract
tests check that both agree.
"""

import re
from functools import lru_cache

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

MEASURE = "measure"
ANALYSIS = "analysis"
STATUS = "status"
# Events from outside (POST /api/events/<source>) and the alert rule's alerts.
EVENT = "event"
ALERT = "alert"


# Host names mapped to their words, remembered for a fleet this size (every
# measure and analysis needs its host's word).
HOST_WORDS_REMEMBERED = 8192


@lru_cache(maxsize=HOST_WORDS_REMEMBERED)
def hostWord(name):
    """
    Map a host name to one safe routing-key word.

    Dots, C{*}, C{#}, white space and every character outside
    C{[A-Za-z0-9_-]} become C{_}, so C{"<word>.measure"} always has exactly
    two words. The original name travels in the message body.
    """
    word = _UNSAFE.sub("_", name)
    return word or "_"


def routingKey(host, kind):
    """
    The routing key under which C{kind} events about C{host} are published.
    """
    return f"{hostWord(host)}.{kind}"


def splitKey(routingKey):
    """
    Split a C{<host>.<kind>} key into its two words, or return L{None} when
    the key does not have that shape.
    """
    words = routingKey.split(".")
    if len(words) != 2 or not words[0] or not words[1]:
        return None
    return words[0], words[1]


@lru_cache(maxsize=1024)
def _compile(pattern):
    return tuple(pattern.split("."))


def topicMatches(pattern, routingKey):
    """
    Whether C{routingKey} matches the topic binding C{pattern}.
    """
    return _match(_compile(pattern), 0, routingKey.split("."), 0)


def _match(pattern, p, words, w):
    while p < len(pattern):
        token = pattern[p]
        if token == "#":
            # '#' swallows zero or more words: try every split point.
            if p == len(pattern) - 1:
                return True
            return any(_match(pattern, p + 1, words, i) for i in range(w, len(words) + 1))
        if w >= len(words):
            return False
        if token != "*" and token != words[w]:
            return False
        p += 1
        w += 1
    return w == len(words)
