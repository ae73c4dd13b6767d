"""
How a delivery is signed, and when a failed one is tried again.
"""

import hashlib
import hmac
import random
import secrets

SIGNATURE_PREFIX = "sha256="
MIN_BACKOFF = 1.0
MAX_BACKOFF = 600.0


def newSecret():
    """
    A secret for a hook registered without one: 32 random bytes, in hex.
    """
    return secrets.token_hex(32)


def signature(secret, timestamp, body):
    """
    The C{X-Resmon-Signature-256} header of C{body} sent at C{timestamp}:
    C{sha256=} and the hex HMAC-SHA256, keyed with C{secret}, of the
    timestamp, a dot and the body.

    @param secret: L{str}.
    @param timestamp: the C{X-Resmon-Timestamp} header, L{str}.
    @param body: L{bytes}.
    """
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body,
                   hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def backoff(attempt, rng=random):
    """
    Seconds to wait after failed attempt number C{attempt} (1 for the
    first): doubling from L{MIN_BACKOFF} up to L{MAX_BACKOFF}, each drawn
    between half of that and all of it, so that the retries of many
    deliveries that failed together spread out.
    """
    ceiling = min(MAX_BACKOFF, MIN_BACKOFF * 2 ** min(attempt - 1, 32))
    return max(MIN_BACKOFF, rng.uniform(ceiling / 2, ceiling))
