"""
The web role on Twisted endpoint descriptions, with real C{twistd}
processes: HTTPS and C{wss://} on an C{ssl:} endpoint with a certificate
made for the test, several listeners on one site, and the loopback default
without authentication.
"""

import json

import psutil
import pytest_twisted
from autobahn.twisted.websocket import connectWS
from twisted.internet import defer, reactor, ssl
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, ResponseNeverReceived, readBody

from certificates import authority, issue
from support import WebSocketRecorder, freePort, waitUntil, withTimeout


def _writeServerCertificate(tmp_path):
    ca = authority("resmon dashboard test CA")
    server = issue(ca, "localhost", dnsNames=["localhost"], ipAddresses=["127.0.0.1"])
    (tmp_path / "key.pem").write_bytes(server.keyPEM)
    (tmp_path / "cert.pem").write_bytes(server.certificatePEM)
    return ssl.Certificate.loadPEM(ca.certificatePEM)


def _listeningAddresses(process):
    """
    The (address, port) pairs the twistd process C{process} listens on.
    """
    found = psutil.Process(process.transport.pid)
    # net_connections since psutil 6; connections before.
    connections = getattr(found, "net_connections", None) or found.connections
    connections = connections(kind="inet")
    return {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}


@defer.inlineCallbacks
def _getJSON(agent, url):
    response = yield withTimeout(agent.request(b"GET", url.encode()), 10, f"GET {url}")
    body = yield readBody(response)
    return response.code, json.loads(body) if response.code == 200 else body


@pytest_twisted.inlineCallbacks
def test_https_and_wss_on_an_ssl_endpoint_beside_plain_http(twistd, tmp_path):
    trusted = _writeServerCertificate(tmp_path)
    tlsPort, plainPort = freePort(), freePort()
    standalone = twistd(
        "https", f"--listen=ssl:{tlsPort}:privateKey={tmp_path}/key.pem:certKey={tmp_path}/cert.pem",
        f"--port={plainPort}", "--name=tls-web", "--interval=0.2")
    yield standalone.waitForOutput(b"dashboard listening on ssl:%d:" % tlsPort)
    yield standalone.waitForOutput(b"started: dashboard at https://127.0.0.1:%d/" % tlsPort)
    assert b"no --users: the dashboard serves this machine only (127.0.0.1)" in standalone.output
    # Both listeners, on loopback only.
    assert _listeningAddresses(standalone) >= {("127.0.0.1", tlsPort), ("127.0.0.1", plainPort)}
    assert not {a for a in _listeningAddresses(standalone) if a[1] in (tlsPort, plainPort)} - {
        ("127.0.0.1", tlsPort), ("127.0.0.1", plainPort)}

    agent = Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trusted))
    hosts = {}

    @defer.inlineCallbacks
    def seen():
        code, body = yield _getJSON(agent, f"https://localhost:{tlsPort}/api/hosts")
        assert code == 200, body
        hosts.update({h["host"]: h for h in body["hosts"]})
        return "tls-web" in hosts

    yield waitUntil(seen, 15, "tls-web in /api/hosts over HTTPS")
    # The same site over plain HTTP on the other listener.
    code, body = yield _getJSON(Agent(reactor), f"http://127.0.0.1:{plainPort}/api/hosts")
    assert code == 200 and "tls-web" in {h["host"] for h in body["hosts"]}

    # A client that does not trust the test's authority gets no answer.
    untrusting = Agent(reactor)
    try:
        yield withTimeout(untrusting.request(b"GET", f"https://localhost:{tlsPort}/".encode()),
                          10, "a request over TLS by a client not trusting the certificate")
    except ResponseNeverReceived as e:
        assert any("certificate verify failed" in str(r.value) for r in e.reasons), e.reasons
    else:
        raise AssertionError("a client not trusting the test's CA was answered")

    # The WebSocket over TLS: wss://, with a context factory trusting the CA.
    recorder = WebSocketRecorder(f"wss://localhost:{tlsPort}/ws")
    connectWS(recorder, ssl.optionsForClientTLS("localhost", trustRoot=trusted))
    protocol = yield withTimeout(recorder.opened, 10, "the wss:// handshake")
    yield recorder.waitFor(
        lambda m: m.get("kind") == "analysis" and m.get("host") == "tls-web", 15,
        "an analysis of tls-web over wss://")
    protocol.sendClose()

    # The dashboard's own origin over TLS is https://: a page of it may open
    # the WebSocket, a page of the same name over plain http may not.
    own = WebSocketRecorder(f"wss://localhost:{tlsPort}/ws")
    own.origin = f"https://localhost:{tlsPort}"
    connectWS(own, ssl.optionsForClientTLS("localhost", trustRoot=trusted))
    protocol = yield withTimeout(own.opened, 10, "the wss:// handshake from the https:// origin")
    protocol.sendClose()
    other = WebSocketRecorder(f"wss://localhost:{tlsPort}/ws")
    other.origin = f"http://localhost:{tlsPort}"
    connectWS(other, ssl.optionsForClientTLS("localhost", trustRoot=trusted))
    yield waitUntil(lambda: other.closed, 10, "the handshake from an http:// origin to be refused")
    assert not other.opened.called
    yield standalone.waitForOutput(b"refused a WebSocket handshake from")
    assert b"Traceback" not in standalone.output


@pytest_twisted.inlineCallbacks
def test_insecure_no_auth_listens_on_every_interface_and_warns(twistd):
    port = freePort()
    standalone = twistd("insecure", f"--port={port}", "--insecure-no-auth", "--name=open",
                        "--interval=0.5")
    yield standalone.waitForOutput(b"dashboard listening on tcp:%d" % port)
    yield standalone.waitForOutput(b" started: ")
    assert b"--insecure-no-auth: serving the whole fleet without authentication" in standalone.output
    assert b"no --users: the dashboard serves this machine only" not in standalone.output
    addresses = {a for a in _listeningAddresses(standalone) if a[1] == port}
    assert addresses and all(ip in ("0.0.0.0", "::") for ip, _ in addresses), addresses


@pytest_twisted.inlineCallbacks
def test_another_interface_without_users_stops_twistd_with_one_line(twistd):
    web = twistd("exposed", "--role=web", f"--port={freePort()}", "--interface=0.0.0.0",
                 "--broker=amqp://guest:guest@127.0.0.1:1/").expectUncleanExit()
    yield withTimeout(web.ended, 30, "twistd to stop")
    assert web.exitCode == 1
    lines = [l for l in bytes(web.output).decode().splitlines() if not l.startswith("$ ")]
    assert len(lines) == 1 and lines[0].startswith("twistd resmon: error: --interface: "), lines
    assert "--insecure-no-auth" in lines[0]
