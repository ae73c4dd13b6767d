"""
resmon.topics.topicMatches: RabbitMQ's topic matching, in time that grows
with the pattern's and the key's lengths whatever the pattern (patterns come
from dashboards, webhook keys and rules: hostile input).
"""

import random

import pytest

from resmon import topics
from resmon.topics import topicMatches


def reference(pattern, key):
    """
    The textbook backtracking matcher, for small inputs.
    """
    def match(p, w):
        if p == len(tokens):
            return w == len(words)
        if tokens[p] == "#":
            return any(match(p + 1, i) for i in range(w, len(words) + 1))
        if w == len(words):
            return False
        return (tokens[p] == "*" or tokens[p] == words[w]) and match(p + 1, w + 1)
    tokens, words = pattern.split("."), key.split(".")
    return match(0, 0)


@pytest.mark.parametrize("pattern, key, matches", [
    ("#", "a", True), ("#", "a.b.c", True), ("#.measure", "web_01.measure", True),
    ("*.measure", "web_01.measure", True), ("*.measure", "a.b.measure", False),
    ("a.#.b", "a.b", True), ("a.#.b", "a.x.y.b", True), ("a.#.b", "a.x.y", False),
    ("#.#", "a", True), ("a.*.#", "a", False), ("a.*.#", "a.b", True),
    ("web_01", "web_01", True), ("web_01", "web_02", False), ("*", "a.b", False),
])
def test_known_answers(pattern, key, matches):
    assert topicMatches(pattern, key) is matches


def test_agrees_with_backtracking_on_random_patterns():
    rng = random.Random(16)
    for _ in range(5000):
        pattern = ".".join(rng.choice(["#", "*", "a", "b"]) for _ in range(rng.randint(1, 7)))
        key = ".".join(rng.choice(["a", "b", "c"]) for _ in range(rng.randint(1, 6)))
        assert topicMatches(pattern, key) == reference(pattern, key), (pattern, key)


@pytest.mark.parametrize("pattern", [
    "#." * 126 + "x",             # a run of '#': 2^126 ways to split before
    "#.*." * 63 + "x",            # '#' and '*' alternating
    "#.a." * 63 + "b",            # '#' and a word alternating
])
def test_hostile_patterns_are_answered_at_once(pattern):
    """
    A dashboard may subscribe with up to 1,000 patterns of 255 characters;
    each is matched against each new host. Counted in steps of the matcher,
    not timed: a pattern costs at most one step per pattern word and key word.
    """
    steps = []
    original = topics._withSkippedHashes
    key = ".".join(["a"] * 60)

    def counted(tokens, positions):
        steps.append(len(positions))
        return original(tokens, positions)
    topics._withSkippedHashes, saved = counted, topics._withSkippedHashes
    try:
        topicMatches(pattern, key)
        topicMatches(pattern, "web_01")
    finally:
        topics._withSkippedHashes = saved
    assert sum(steps) <= (len(pattern.split(".")) + 1) * (60 + 1 + 2)
