"""
Which web pages may open the dashboard's WebSocket.

A browser lets any page open a WebSocket to any address and sends that
page's origin with the handshake; unlike C{fetch} or C{EventSource}, nothing
stops the page from reading what comes back. Without a check, a page on any
site that someone on the closed network happens to open could read the
whole fleet through their browser.
"""

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalizeOrigin(origin):
    """
    C{origin} (C{scheme://host[:port]}) as C{scheme://host:port}, lower case.

    @raise ValueError: if it is not such an origin.
    """
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{origin!r} is not an origin ({e})")
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{origin!r} is not an origin such as https://dash.example.com:8443")
    port = port or _DEFAULT_PORTS[parts.scheme]
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


class OriginPolicy:
    """
    A WebSocket handshake is accepted from a client that sends no origin (a
    program, not a browser), from a page of the same origin as the address
    it connects to (the dashboard itself), and from the C{allowed} origins
    (a dashboard served under another name, e.g. by a reverse proxy that
    rewrites the C{Host} header).
    """

    def __init__(self, allowed=()):
        self.allowed = frozenset(normalizeOrigin(origin) for origin in allowed)

    def accepts(self, origin, host):
        """
        @param origin: the handshake's C{Origin} header, or L{None}.
        @param host: its C{Host} header, or L{None}.
        """
        if not origin:
            return True
        try:
            normalized = normalizeOrigin(origin)
        except ValueError:
            return False  # "null" (a sandboxed or file: page) and anything malformed
        if normalized in self.allowed:
            return True
        if not host:
            return False
        scheme = normalized.split(":", 1)[0]
        try:
            return normalizeOrigin(f"{scheme}://{host}") == normalized
        except ValueError:
            return False
