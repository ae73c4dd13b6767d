"""
Where a request comes from behind trusted reverse proxies
(L{resmon.auth.forwarded}): C{X-Forwarded-For} believed only from them,
read from the right, hostile and oversized headers included; and the
C{--trusted-proxy} option.
"""

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.web.test.requesthelper import DummyRequest

from resmon.auth.forwarded import MAX_HEADER_BYTES, TrustedProxies, limitKey, parseNetwork


def request(peer, *forwarded):
    made = DummyRequest([b"login"])
    if isinstance(peer, str):
        peer = (IPv6Address if ":" in peer else IPv4Address)("TCP", peer, 40000)
    made.client = peer
    for value in forwarded:
        made.requestHeaders.addRawHeader(b"x-forwarded-for", value)
    return made


PROXIES = TrustedProxies([parseNetwork("10.0.0.5"), parseNetwork("10.1.0.0/16"),
                          parseNetwork("::1")])


@pytest.mark.parametrize("peer, headers, client", [
    # Not from a trusted proxy: the connection's address, whatever it says.
    ("192.0.2.7", [b"203.0.113.9"], "192.0.2.7"),
    ("10.0.0.6", [b"203.0.113.9"], "10.0.0.6"),
    # From a trusted proxy: the entry it appended.
    ("10.0.0.5", [b"203.0.113.9"], "203.0.113.9"),
    ("10.0.0.5", [], "10.0.0.5"),
    # Whatever the client wrote before is not believed.
    ("10.0.0.5", [b"198.51.100.1, 203.0.113.9"], "203.0.113.9"),
    ("10.0.0.5", [b"198.51.100.1", b"203.0.113.9"], "203.0.113.9"),
    # Through two trusted proxies: the first address that is not one of theirs.
    ("10.0.0.5", [b"198.51.100.1, 203.0.113.9, 10.1.2.3"], "203.0.113.9"),
    # Only trusted proxies: the leftmost of them.
    ("10.0.0.5", [b"10.1.2.3"], "10.1.2.3"),
    # Ports and IPv6, bracketed or not; an IPv4 proxy seen as IPv6.
    ("10.0.0.5", [b"203.0.113.9:51234"], "203.0.113.9"),
    ("::1", [b"[2001:db8::7]:443"], "2001:db8::7"),
    ("::1", [b"2001:db8::7"], "2001:db8::7"),
    ("::ffff:10.0.0.5", [b"203.0.113.9"], "203.0.113.9"),
    # Garbage where the proxy's entry should be: the proxy's own address.
    ("10.0.0.5", [b"unknown"], "10.0.0.5"),
    ("10.0.0.5", [b"203.0.113.9, \xff\xfe"], "10.0.0.5"),
    ("10.0.0.5", [b""], "10.0.0.5"),
    ("10.0.0.5", [b"[2001:db8::7"], "10.0.0.5"),
    # A header no proxy would write: only its last entries are read.
    ("10.0.0.5", [b"198.51.100.1, " * 10_000 + b"203.0.113.9"], "203.0.113.9"),
    ("10.0.0.5", [b"10.1.0.1, " * 10_000 + b"203.0.113.9"], "203.0.113.9"),
])
def test_the_client_behind_trusted_proxies(peer, headers, client):
    assert PROXIES.clientHost(request(peer, *headers)) == client


def test_a_long_chain_of_trusted_entries_stops_within_bounds():
    # Every entry trusted: the leftmost of those read, never a piece of one.
    header = b"10.1.200.200," * 1000 + b"10.1.0.1"
    assert len(header) > MAX_HEADER_BYTES
    assert PROXIES.clientHost(request("10.0.0.5", header)) == "10.1.200.200"


def test_without_trusted_proxies_and_for_other_transports_the_connection_counts():
    assert TrustedProxies().clientHost(request("10.0.0.5", b"203.0.113.9")) == "10.0.0.5"
    assert not TrustedProxies() and PROXIES
    assert PROXIES.clientHost(request(UNIXAddress(b"/run/resmon.sock"), b"1.2.3.4")) is None


@pytest.mark.parametrize("text", ["10.0.0.0/33", "proxy.example.com", "", "10.0.0.5/x",
                                  "0.0.0.0/0", "::/0", "1.2.3.4/0"])
def test_a_bad_proxy_address_is_refused_naming_it(text):
    with pytest.raises(ValueError) as refused:
        parseNetwork(text)
    assert repr(text) in str(refused.value)


def test_a_proxy_written_as_an_ipv4_mapped_address_is_its_ipv4_address():
    proxies = TrustedProxies([parseNetwork("::ffff:10.0.0.5"), parseNetwork("::ffff:10.2.0.0/112")])
    assert proxies.clientHost(request("10.0.0.5", b"203.0.113.9")) == "203.0.113.9"
    assert proxies.clientHost(request("::ffff:10.2.3.4", b"203.0.113.9")) == "203.0.113.9"
    assert proxies.clientHost(request("10.0.0.6", b"203.0.113.9")) == "10.0.0.6"


def test_the_login_limits_count_an_ipv6_client_by_its_64():
    assert limitKey("203.0.113.9") == "203.0.113.9"
    assert limitKey("2001:db8:1:2:aaaa::1") == limitKey("2001:db8:1:2:bbbb::7") == (
        "2001:db8:1:2::/64")
    assert limitKey("2001:db8:1:3::1") != limitKey("2001:db8:1:2::1")
    assert limitKey("::ffff:203.0.113.9") == "203.0.113.9"
    assert limitKey(None) is None and limitKey("/run/resmon.sock") == "/run/resmon.sock"


def test_the_option_needs_users_and_names_itself(tmp_path):
    from resmon import tap
    from resmon.auth.usersfile import Users, writeUsers
    path = str(tmp_path / "users.toml")
    writeUsers(path, Users([]))
    options = tap.Options()
    options.parseOptions(["--role=web", f"--users={path}", "--trusted-proxy=10.0.0.5",
                          "--trusted-proxy", "10.1.0.0/16"])
    assert [str(n) for n in options["trusted-proxies"]] == ["10.0.0.5/32", "10.1.0.0/16"]
    for arguments, message in (
            (["--role=web", f"--users={path}", "--trusted-proxy=nginx"],
             "error: --trusted-proxy: 'nginx' is not an IP address or network"),
            (["--role=web", "--trusted-proxy=10.0.0.5"], "error: --trusted-proxy: needs --users"),
            (["--role=agent", "--trusted-proxy=10.0.0.5"],
             "error: --trusted-proxy: means nothing for --role=agent")):
        with pytest.raises(SystemExit) as refused:
            tap.Options().parseOptions(arguments)
        assert message in str(refused.value), arguments
