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

# An AMQP routing key is at most 255 bytes: the longest host word whose
# every key (<word>.analysis the longest) fits.
MAX_ROUTING_KEY = 255
MAX_HOST_WORD = MAX_ROUTING_KEY - len("." + ANALYSIS)


# Joins the hosts of a subject about several (alertSubject). A host name
# that holds it is split as well: each of its parts must be visible.
SUBJECTS_SEPARATOR = "\x00"

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
    """
    A pattern's words, with each run of C{#} made one (C{#.#} matches what
    C{#} does), and whether it has a C{#}.
    """
    words = []
    for word in pattern.split("."):
        if word != "#" or not words or words[-1] != "#":
            words.append(word)
    return tuple(words), "#" in words


def topicMatches(pattern, routingKey):
    """
    Whether C{routingKey} matches the topic binding C{pattern}.

    The time taken grows with the product of the pattern's and the key's
    number of words, whatever the pattern (a hostile one such as
    C{#.*.#.*.#.x} included): no backtracking.
    """
    tokens, wild = _compile(pattern)
    words = routingKey.split(".")
    if not wild:
        if len(tokens) != len(words):
            return False
        for token, word in zip(tokens, words):
            if token != word and token != "*":
                return False
        return True
    return _matchWild(tokens, words)


def _matchWild(tokens, words):
    # The positions in the pattern reachable after the words read so far,
    # each once: a '#' may swallow no word (its position lets the next one
    # be reached too) or the word read (it stays).
    end = len(tokens)
    positions = _withSkippedHashes(tokens, {0})
    for word in words:
        following = set()
        for p in positions:
            if p < end:
                token = tokens[p]
                if token == "#":
                    following.add(p)
                elif token == "*" or token == word:
                    following.add(p + 1)
        if not following:
            return False
        positions = _withSkippedHashes(tokens, following)
    return end in positions


def _withSkippedHashes(tokens, positions):
    for p in list(positions):
        # Runs of '#' are one: at most one to skip after each position.
        if p < len(tokens) and tokens[p] == "#":
            positions.add(p + 1)
    return positions


def alertSubject(source, host):
    """
    What an alert under C{<source>.alert} naming C{host} (its payload's, or
    L{None}) is about: C{host} when C{source} is its word, C{source} when
    it names none; an alert under one host's key naming another host is
    about both, and shown only to those who may see both (its subject
    joins them with L{SUBJECTS_SEPARATOR}, which
    L{resmon.auth.principal.Principal.maySee} splits).
    """
    if not isinstance(host, str) or not host:
        return source
    if hostWord(host) == source:
        return host
    return f"{source}{SUBJECTS_SEPARATOR}{host}"
