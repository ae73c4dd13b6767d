"""
The address a request comes from, behind reverse proxies the operator
trusts (C{--trusted-proxy}): the login limits and the logs count each
user behind a proxy apart, instead of everyone as the proxy's one address.

Only a request whose connection comes from a trusted proxy has its
C{X-Forwarded-For} read, from the right (the entry the nearest proxy
appended) to the left, skipping the trusted proxies' own addresses: the
first address that is not one of theirs is the client's. Entries further
left were written by whoever sent the request and are never believed. A
request from anywhere else is its connection's address, whatever headers
it carries, so a client that reaches resmon around the proxy cannot choose
its own address.
"""

import ipaddress

# Entries of X-Forwarded-For looked at, from the right: more proxies than
# this in a row is not a deployment, and a long header costs nothing more.
MAX_HOPS = 16
# Bytes of X-Forwarded-For read, from the right.
MAX_HEADER_BYTES = 2048


def parseNetwork(text):
    """
    An address or a network (C{10.0.0.5}, C{10.0.0.0/8}, C{::1}).

    @raise ValueError: naming what is wrong with C{text}.
    """
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or network (such as 10.0.0.5 or "
                         f"10.0.0.0/8)") from None
    if network.prefixlen == 0:
        raise ValueError(f"{text!r} would trust every address: any client could then say "
                         f"where it comes from; name the proxies' own addresses")
    mapped = network.network_address.ipv4_mapped if network.version == 6 else None
    if mapped is not None and network.prefixlen >= 96:
        # ::ffff:10.0.0.5 is how an IPv6 socket shows 10.0.0.5.
        network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


# The part of an IPv6 address one client is taken to hold (a /64 is what a
# single site or host is given): the login limits count it as one address.
IPV6_CLIENT_PREFIX = 64


def limitKey(host):
    """
    What the login limits count C{host} (an address as text, or L{None})
    as: an IPv4 address itself, an IPv6 address's /64 (one client holds
    a whole /64 and could take a new address for every attempt).
    """
    try:
        address = ipaddress.ip_address(host)
    except (TypeError, ValueError):
        return host
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_CLIENT_PREFIX}", strict=False))
    return host


def _address(entry):
    """
    The address of one X-Forwarded-For entry (C{1.2.3.4}, C{1.2.3.4:5678},
    C{2001:db8::1}, C{[2001:db8::1]:5678}), or L{None}.
    """
    entry = entry.strip()
    if entry.startswith("["):
        entry = entry[1:entry.find("]")] if "]" in entry else ""
    elif entry.count(":") == 1:
        entry = entry.split(":")[0]
    try:
        return ipaddress.ip_address(entry)
    except ValueError:
        return None


class TrustedProxies:
    """
    @param networks: the addresses and networks of the trusted proxies
        (L{ipaddress} networks, see L{parseNetwork}).
    """

    def __init__(self, networks=()):
        self.networks = tuple(networks)

    def __bool__(self):
        return bool(self.networks)

    def trusts(self, address):
        if address is None:
            return False
        if getattr(address, "ipv4_mapped", None) is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def clientHost(self, request):
        """
        The address C{request} (a L{twisted.web.server.Request}) comes
        from, as text: its connection's, or behind trusted proxies the one
        they forwarded for.
        """
        peer = getattr(request.getClientAddress(), "host", None)
        if not self.networks or peer is None:
            return peer
        try:
            peerAddress = ipaddress.ip_address(peer)
        except ValueError:
            return peer  # a UNIX socket's path, say
        if not self.trusts(peerAddress):
            return peer
        headers = request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []
        forwarded = b",".join(headers)
        if len(forwarded) > MAX_HEADER_BYTES:
            # Cut from the right; the first entry left may be a piece of one.
            forwarded = forwarded[-MAX_HEADER_BYTES:].partition(b",")[2]
        forwarded = forwarded.decode("latin-1")
        client = peer
        for entry in reversed(forwarded.split(",")[-MAX_HOPS:]):
            address = _address(entry)
            if address is None:
                # Not written by a trusted proxy: believe no further.
                break
            client = str(address)
            if not self.trusts(address):
                break
        return client
