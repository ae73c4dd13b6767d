"""
The Host-header check of the web role (--allowed-host, resmon.webserver.origins) and
the rate-limited warnings (resmon.ratelimit.LimitedLog), pinned down where
mutation testing (.ci/mutation.sh) found them reached by no unit test: the
Host headers accepted and refused, the 421 answer, its count and its log line.
"""

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.web import resource
from twisted.web.test.requesthelper import DummyRequest

from resmon.webserver import origins
from resmon.webserver.origins import (HostCheckedSite, MisdirectedRequest, OriginPolicy, hostOfHeader,
                            machineHostNames, normalizeHostName)
from resmon.ratelimit import LimitedLog


@pytest.mark.parametrize("header, host", [
    ("Dash.Example.com:8080", "dash.example.com"), ("dash.example.com.", "dash.example.com"),
    (" 10.0.0.1:80 ", "10.0.0.1"), ("[::1]:8080", "::1"), ("[FE80::1]", "fe80::1"),
    ("dash.example.com", "dash.example.com"), ("h:1", "h"), ("h:12345", "h"),
])
def test_the_host_of_a_host_header(header, host):
    assert hostOfHeader(header) == host


@pytest.mark.parametrize("header", [
    "[::1]x", "[::1]:", "[::1]:123456", "[::1", "[dash.example.com]", "*", "*:80", "bad host",
    "dash.example.com:123456", "", "a..b",
])
def test_a_malformed_host_header_has_no_host(header):
    assert hostOfHeader(header) is None


def test_a_host_name_is_normalized_or_refused_saying_what_one_is():
    assert normalizeHostName(" Dash.Example.COM. ") == "dash.example.com"
    assert normalizeHostName("[FE80::1]") == "fe80::1" and normalizeHostName("*") == "*"
    label = "a" * 63
    assert normalizeHostName(f"{label}.{label}") == f"{label}.{label}"
    long = ".".join(["a" * 50] * 5)[:253]
    assert normalizeHostName(long) == long
    for bad in ("a" * 64, long + "a", "https://dash.example.com", "dash.example.com:80", "-a"):
        with pytest.raises(ValueError) as raised:
            normalizeHostName(bad)
        assert str(raised.value) == (f"{bad!r} is not a host name or address such as "
                                     "dash.example.com (no scheme, port or path)")


def test_the_machines_names_are_its_host_name_and_fqdn_normalized(monkeypatch):
    monkeypatch.setattr(origins.socket, "gethostname", lambda: "Box")
    monkeypatch.setattr(origins.socket, "getfqdn", lambda: "box.example.com.")
    assert machineHostNames() == ["box", "box.example.com"]
    monkeypatch.setattr(origins.socket, "getfqdn", lambda: "not a name")
    assert machineHostNames() == ["box"]


def siteAndLog(**kwargs):
    root = resource.Resource()
    page = resource.Resource()
    root.putChild(b"ws", page)
    site = HostCheckedSite(root, OriginPolicy(**kwargs), Clock())
    events = []
    site.eventLog = Logger(observer=events.append)
    return site, page, events


def requestFor(host, path=b"ws"):
    request = DummyRequest([path])
    request.uri = b"/" + path
    request.client = IPv4Address("TCP", "203.0.113.9", 5555)
    if host is not None:
        request.requestHeaders.setRawHeaders(b"host", [host])
    return request


def test_a_request_for_another_name_is_answered_421_counted_and_logged():
    site, page, events = siteAndLog(hosts=["dash.example.com"])
    for host in (b"dash.example.com:8080", b"localhost", b"127.0.0.1:8080", None):
        assert site.getResourceFor(requestFor(host)) is page
    assert site.hostsRefused == 0 and events == []
    request = requestFor(b"evil.example:8080")
    refused = site.getResourceFor(request)
    assert isinstance(refused, MisdirectedRequest) and refused.host == "evil.example:8080"
    assert site.hostsRefused == 1
    assert [formatEvent(e) for e in events] == [
        "refused a request for /ws from 203.0.113.9: 'evil.example:8080' is not a name the "
        "dashboard is served under (see --allowed-host)"]
    body = refused.render(request)
    assert (request.responseCode, request.responseMessage) == (421, b"Misdirected Request")
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"text/plain; charset=utf-8"]
    assert body == (b"resmon is not served under the name 'evil.example:8080'. If this is the "
                    b"dashboard's name, start the web role with --allowed-host=<name> (a page of "
                    b"another site that made its name resolve to this address is refused this way).\n")
    assert site.getResourceFor(requestFor(b"x" * 300, b"p" * 300)) is not page
    assert formatEvent(events[-1]) == (
        f"refused a request for /{'p' * 199} from 203.0.113.9: {'x' * 200!r} is not a name the "
        "dashboard is served under (see --allowed-host)")
    assert MisdirectedRequest("\u00e9" * 150).render(DummyRequest([b""])) == (
        f"resmon is not served under the name {chr(233) * 100!r}. If this is the ".encode("utf-8")
        + body[len(b"resmon is not served under the name 'evil.example:8080'. If this is the "):])
    assert siteAndLog(hosts=["*"])[0].getResourceFor(requestFor(b"evil.example")) is not None


def test_refusals_are_logged_ten_at_once_then_one_every_six_seconds_saying_how_many_were_not():
    clock = Clock()
    log, events = LimitedLog(clock), []
    logger = Logger(observer=events.append)
    assert log.suppressed == 0
    assert [log.warn(logger, "refused {n}", n=n) for n in range(12)] == [True] * 10 + [False] * 2
    assert log.suppressed == 2
    clock.advance(6)
    assert log.warn(logger, "refused {n}", n=12) is True and log.suppressed == 0
    assert [formatEvent(e) for e in events] == [f"refused {n}" for n in range(10)] + [
        "refused 12 (2 similar warnings not logged before this one)"]


def test_held_back_errors_are_called_errors():
    clock = Clock()
    log, events = LimitedLog(clock, burst=1), []
    logger = Logger(observer=events.append)
    assert [log.error(logger, "failed {n}", n=n) for n in range(3)] == [True, False, False]
    clock.advance(6)
    assert log.error(logger, "failed {n}", n=3)
    assert [formatEvent(e) for e in events] == [
        "failed 0", "failed 3 (2 similar errors not logged before this one)"]
    assert events[-1]["log_level"].name == "error"


def test_a_half_bracketed_address_is_no_host_name():
    for bad in ("[::1", "::1]", "[10.0.0.1"):
        with pytest.raises(ValueError):
            normalizeHostName(bad)


def test_a_page_of_another_origin_is_refused_when_the_request_names_no_host():
    policy = OriginPolicy(allowed=["https://dash.example.com"])
    assert policy.accepts("https://dash.example.com", None) is True
    assert policy.accepts("https://evil.example", None) is False
    assert policy.accepts(None, None) is True


def test_the_site_runs_on_the_clock_and_with_the_settings_it_is_given():
    clock = Clock()
    site = HostCheckedSite(resource.Resource(), OriginPolicy(), clock, timeout=5)
    assert site.reactor is clock and site.timeOut == 5
