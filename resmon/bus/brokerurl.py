"""
Parsing of C{amqp://user:pass@host:port/vhost} broker URLs (and
C{amqps://} for TLS).
"""

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_BROKER = "amqp://guest:guest@localhost:5672/"
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


@dataclass(frozen=True)
class BrokerURL:
    host: str
    port: int
    username: str
    password: str
    vhost: str
    tls: bool = False

    @property
    def scheme(self):
        return "amqps" if self.tls else "amqp"

    def redacted(self):
        """
        The URL without its password, for logs.
        """
        return f"{self.scheme}://{self.username}@{self.host}:{self.port}/{self.vhost.replace('/', '%2F')}"


def parseBrokerURL(text):
    """
    Parse an AMQP URL as RabbitMQ documents them: C{amqp://user:pass@host:port/vhost},
    or C{amqps://...} for AMQP over TLS. Missing parts default to C{guest},
    C{guest}, port 5672 (5671 for amqps) and vhost C{/}; a vhost containing
    C{/} is written C{%2F}.

    @raise ValueError: with a one-line explanation.
    """
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{text!r} is not a valid URL ({e})")
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"{text!r} must start with amqp:// or amqps:// (TLS)")
    if not parts.hostname:
        raise ValueError(f"{text!r} has no host")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r} has a query or fragment; resmon takes none")
    path = parts.path
    if path in ("", "/"):
        vhost = "/"
    else:
        vhost = unquote(path[1:])
        if not vhost:
            raise ValueError(f"{text!r} has an empty vhost")
    return BrokerURL(
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PORTS[parts.scheme],
        username=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=vhost,
        tls=parts.scheme == "amqps",
    )
