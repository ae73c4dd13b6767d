"""
Origin checks pinned down where mutation testing (.ci/mutation.sh) found
them unchecked: what normalizeOrigin returns and refuses, and a Host header
that is no address.
"""

import pytest

from resmon.webserver.origins import OriginPolicy, normalizeOrigin


@pytest.mark.parametrize("origin, normalized", [
    ("HTTPS://Dash.Example.COM", "https://dash.example.com:443"),
    ("http://dash.example.com/", "http://dash.example.com:80"),
    (" http://dash.example.com:8080 ", "http://dash.example.com:8080"),
    ("http://[::1]:8080", "http://[::1]:8080"),
    ("https://[FE80::1]", "https://[fe80::1]:443"),
])
def test_an_origin_is_normalized(origin, normalized):
    assert normalizeOrigin(origin) == normalized


@pytest.mark.parametrize("origin", [
    "https://dash.example.com?x=1", "https://dash.example.com#top", "https://user@dash.example.com",
    "https://:secret@dash.example.com", "https://user:secret@dash.example.com",
    "https://dash.example.com/page", "ftp://dash.example.com", "https://", "null",
])
def test_what_is_not_an_origin_is_refused_saying_what_one_is(origin):
    with pytest.raises(ValueError) as raised:
        normalizeOrigin(origin)
    assert str(raised.value) == f"{origin!r} is not an origin such as https://dash.example.com:8443"


def test_a_bad_port_is_refused_saying_why():
    with pytest.raises(ValueError) as raised:
        normalizeOrigin("https://dash.example.com:99999")
    assert str(raised.value).startswith("'https://dash.example.com:99999' is not an origin (Port ")


def test_a_host_header_that_is_no_address_matches_no_origin():
    policy = OriginPolicy(hosts=("dash.example.com",))
    assert not policy.accepts("http://dash.example.com", "dash.example.com:notaport")
    assert not policy.accepts("http://dash.example.com", "user@dash.example.com")
    assert policy.accepts("http://dash.example.com", "DASH.example.com:80")
    assert policy.accepts("http://[::1]:8080", "[::1]:8080")
