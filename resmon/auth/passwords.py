"""
Password and API token hashing.

Passwords are kept as scrypt hashes with a random salt, encoded with their
parameters (C{scrypt$n=32768,r=8,p=3$<salt>$<hash>}, base64), so stronger
parameters can come later without breaking older hashes. API tokens are
high-entropy random strings: a SHA-256 of one is as good as a slow hash and
lets the web role find a token's user in one dictionary lookup.
"""

import base64
import hashlib
import hmac
import os
import secrets

SCHEME = "scrypt"
# OWASP's scrypt setting of the same strength as N=2**17, r=8, p=1, in a
# quarter of the memory (32 MiB).
DEFAULT_PARAMETERS = {"n": 2 ** 15, "r": 8, "p": 3}
SALT_BYTES = 16
HASH_BYTES = 32
# Limits of the parameters accepted from a users file (memory is 128 * n * r bytes).
MAX_MEMORY = 512 * 1024 * 1024
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
TOKEN_PREFIX = "rmt_"


class InvalidHash(ValueError):
    """
    A password hash that is not one this module writes.
    """


def _b64(data):
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text):
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password, salt, n, r, p):
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=MAX_MEMORY + 1024 * 1024, dklen=HASH_BYTES)


def hashPassword(password, parameters=None):
    """
    The encoded scrypt hash of C{password} with a new random salt.
    """
    parameters = dict(DEFAULT_PARAMETERS, **(parameters or {}))
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, parameters["n"], parameters["r"], parameters["p"])
    return (f"{SCHEME}$n={parameters['n']},r={parameters['r']},p={parameters['p']}"
            f"${_b64(salt)}${_b64(digest)}")


def parseHash(encoded):
    """
    The parameters, salt and hash of an encoded hash.

    @raise InvalidHash: if it is not an encoded scrypt hash with sane parameters.
    """
    try:
        scheme, parameters, salt, digest = encoded.split("$")
        values = dict(item.split("=", 1) for item in parameters.split(","))
        n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
        salt, digest = _unb64(salt), _unb64(digest)
    except (ValueError, KeyError, AttributeError):
        raise InvalidHash("not a hash written by resmon-users (scrypt$n=...,r=...,p=...$salt$hash)")
    if scheme != SCHEME or set(values) != {"n", "r", "p"}:
        raise InvalidHash(f"unknown hash scheme {scheme!r}: expected {SCHEME}")
    if n < 2 ** 14 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 \
            or 128 * n * r > MAX_MEMORY:
        raise InvalidHash(f"scrypt parameters n={n}, r={r}, p={p} are too weak or too costly "
                          "(n a power of two, at least 16384)")
    if len(salt) < SALT_BYTES or len(digest) != HASH_BYTES:
        raise InvalidHash("salt or hash of the wrong length")
    return {"n": n, "r": r, "p": p}, salt, digest


def verifyPassword(password, encoded):
    """
    Whether C{password} matches C{encoded} (compared in constant time).
    """
    try:
        parameters, salt, digest = parseHash(encoded)
    except InvalidHash:
        return False
    if len(password) > MAX_PASSWORD:
        return False
    return hmac.compare_digest(_scrypt(password, salt, **parameters), digest)


# Checked against for unknown users, so that an answer takes as long whether
# the user exists or not.
DUMMY_HASH = None


def dummyHash():
    global DUMMY_HASH
    if DUMMY_HASH is None:
        DUMMY_HASH = hashPassword(secrets.token_urlsafe(16))
    return DUMMY_HASH


def checkPasswordChoice(password):
    """
    @raise ValueError: if C{password} is too short or too long to be set.
    """
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"a password must have at most {MAX_PASSWORD} characters")


def newToken():
    """
    A new API token: C{rmt_} and 43 characters of 256 random bits.
    """
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def tokenDigest(token):
    """
    What the users file keeps of a token: the hex SHA-256 of it.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
