"""
The token bucket's limits on its own parameters, pinned down where mutation
testing (.ci/mutation.sh) found them unchecked.
"""

import pytest
from twisted.internet.task import Clock

from resmon.ratelimit import TokenBucket


@pytest.mark.parametrize("rate, burst", [(0, 5), (-1, 5), (1, 0), (1, 0.5)])
def test_a_bucket_needs_a_positive_rate_and_room_for_one(rate, burst):
    with pytest.raises(ValueError) as raised:
        TokenBucket(Clock(), rate, burst)
    assert str(raised.value) == "a token bucket needs rate > 0 and burst >= 1"


def test_the_smallest_bucket_allows_one_action_at_a_slow_rate():
    clock = Clock()
    bucket = TokenBucket(clock, 0.5, 1)
    assert bucket.take() and not bucket.take()
    clock.advance(1.9)
    assert not bucket.take()
    clock.advance(0.1)
    assert bucket.take() and not bucket.take()
