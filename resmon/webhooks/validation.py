"""
What a webhook registration may be: a routing-key pattern, an http(s) URL
whose host resolves to public addresses only (unless private ones are
allowed), an optional secret. Each refusal names the field.
"""

import re
from urllib.parse import urlsplit

from twisted.internet import defer

from resmon.webhooks.addresses import isPublic
from resmon.webhooks.resolver import ResolutionTimedOut

MAX_KEY_LENGTH = 255
MAX_URL_LENGTH = 2048
MAX_SECRET_LENGTH = 256
FIELDS = ("key", "url", "secret")
_WORD = re.compile(r"\*|#|[A-Za-z0-9_-]+")


class InvalidWebhook(ValueError):
    """
    A registration refused: C{field} names what is wrong.
    """

    def __init__(self, field, message):
        ValueError.__init__(self, f"{field}: {message}" if field else message)
        self.field = field


def checkKey(key, field="key"):
    """
    A routing-key pattern: words of C{[A-Za-z0-9_-]}, C{*} or C{#},
    separated by dots.
    """
    if not isinstance(key, str) or not key:
        raise InvalidWebhook(field, "expected a routing-key pattern such as *.alert")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidWebhook(field, f"at most {MAX_KEY_LENGTH} characters")
    for word in key.split("."):
        if not _WORD.fullmatch(word):
            raise InvalidWebhook(
                field, f"{key[:80]!r} is not a routing-key pattern (words of letters, digits, "
                       "'-' and '_', or * or #, separated by dots)")
    return key


def checkURL(url):
    """
    An absolute http or https URL with a host; returns C{(url, host, port)}.
    """
    if not isinstance(url, str) or not url:
        raise InvalidWebhook("url", "expected an http or https URL")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook("url", f"at most {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 32 or ord(c) >= 127 for c in url):
        raise InvalidWebhook("url", "must be ASCII without spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidWebhook("url", str(e))
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhook("url", f"the scheme must be http or https, not {parts.scheme!r}")
    if not parts.hostname:
        raise InvalidWebhook("url", "has no host")
    if "@" in parts.netloc:
        # Never delivered (the user and password would be taken for the
        # host), and shown in logs and events: sign with the secret instead.
        raise InvalidWebhook("url", "must not carry a user or password (user:password@); "
                                    "receivers check the X-Resmon-Signature-256 header")
    if parts.fragment:
        raise InvalidWebhook("url", "must not have a fragment")
    return url, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def urlOrigin(url):
    """
    What of a hook's URL may be shown to others (logs, the C{resmon.webhook}
    event): C{scheme://host[:port]}, never its path or query, where a
    receiver's token often is.
    """
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    except ValueError:
        return "(not a URL)"


def checkSecret(secret):
    if secret is None:
        return None
    if not isinstance(secret, str) or not secret or len(secret) > MAX_SECRET_LENGTH:
        raise InvalidWebhook("secret", f"expected a string of 1 to {MAX_SECRET_LENGTH} characters")
    return secret


def checkRegistration(document):
    """
    The fields of a registration's JSON body: C{(key, url, host, port,
    secret)}.
    """
    if not isinstance(document, dict):
        raise InvalidWebhook(None, "expected a JSON object with key, url and optionally secret")
    for name in document:
        if name not in FIELDS:
            raise InvalidWebhook(str(name)[:40], "unknown field")
    key = checkKey(document.get("key"))
    url, host, port = checkURL(document.get("url"))
    return key, url, host, port, checkSecret(document.get("secret"))


@defer.inlineCallbacks
def checkTarget(host, port, resolve, allowPrivate):
    """
    Refuse a host that does not resolve, or (unless C{allowPrivate})
    resolves to any address that is not public.

    @param resolve: C{(host, port)} to a L{Deferred} list of addresses.
    """
    try:
        addresses = yield resolve(host, port)
    except ResolutionTimedOut as e:
        raise InvalidWebhook("url", f"{e}; its nameservers may be slow, try again later")
    except Exception as e:
        raise InvalidWebhook("url", f"{host} does not resolve ({e})")
    if not addresses:
        raise InvalidWebhook("url", f"{host} does not resolve")
    if not allowPrivate:
        for address in addresses:
            if not isPublic(address):
                raise InvalidWebhook(
                    "url", f"{host} resolves to {address}, a loopback, link-local or private "
                           "address (see --webhook-allow-private)")
