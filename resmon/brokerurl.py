"""
Parsing of C{amqp://user:pass@host:port/vhost} broker URLs.
"""

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_BROKER = "amqp://guest:guest@localhost:5672/"


@dataclass(frozen=True)
class BrokerURL:
    host: str
    port: int
    username: str
    password: str
    vhost: str

    def redacted(self):
        """
        The URL without its password, for logs.
        """
        return f"amqp://{self.username}@{self.host}:{self.port}/{self.vhost.replace('/', '%2F')}"


def parseBrokerURL(text):
    """
    Parse an AMQP URL as RabbitMQ documents them: C{amqp://user:pass@host:port/vhost}.
    Missing parts default to C{guest}, C{guest}, port 5672 and vhost C{/};
    a vhost containing C{/} is written C{%2F}.

    @raise ValueError: with a one-line explanation.
    """
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{text!r} is not a valid URL ({e})")
    if parts.scheme == "amqps":
        raise ValueError("amqps:// (TLS) is not supported yet; use amqp://")
    if parts.scheme != "amqp":
        raise ValueError(f"{text!r} must start with amqp://")
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
        port=port if port is not None else 5672,
        username=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=vhost,
    )
