"""
AMQP over TLS (amqps://) with real twistd processes and a private RabbitMQ
node that has a TLS listener and asks every client for a certificate.
"""

import pytest
import pytest_twisted

from certificates import authority, issue
from privatebroker import PrivateBroker
from support import connectWebSocket, freePort


class TLSBroker:
    def __init__(self):
        self.ca = authority("resmon test CA")
        self.otherCA = authority("someone else's CA")
        # Valid for the name localhost only: amqps://127.0.0.1 does not match it.
        server = issue(self.ca, "localhost", dnsNames=["localhost"])
        client = issue(self.ca, "resmon agent", client=True)
        self.tlsPort = freePort()
        self.node = PrivateBroker(config=[
            f"listeners.ssl.default = 127.0.0.1:{self.tlsPort}",
            "ssl_options.cacertfile = {base}/ca.pem",
            "ssl_options.certfile = {base}/server.pem",
            "ssl_options.keyfile = {base}/server.key",
            "ssl_options.verify = verify_peer",
            "ssl_options.fail_if_no_peer_cert = true",
        ])
        self.node.writeFile("ca.pem", self.ca.certificatePEM)
        self.node.writeFile("server.pem", server.certificatePEM)
        self.node.writeFile("server.key", server.keyPEM)
        # What a client is given: the CA, its certificate and key, and someone else's CA.
        self.caFile = self.node.writeFile("client-ca.pem", self.ca.certificatePEM)
        self.otherCAFile = self.node.writeFile("other-ca.pem", self.otherCA.certificatePEM)
        self.certFile = self.node.writeFile("client.pem", client.certificatePEM)
        self.keyFile = self.node.writeFile("client.key", client.keyPEM)
        self.url = f"amqps://guest:guest@localhost:{self.tlsPort}/"


@pytest.fixture(scope="module")
def tlsBroker():
    broker = TLSBroker()
    broker.node.start()
    assert broker.node.accepts(broker.tlsPort), f"no TLS listener on {broker.tlsPort}"
    yield broker
    broker.node.stop()


@pytest_twisted.inlineCallbacks
def test_every_role_over_amqps_with_a_client_certificate(tlsBroker, twistd):
    port = freePort()
    standalone = twistd(
        "tls-standalone", f"--broker={tlsBroker.url}", f"--tls-ca={tlsBroker.caFile}",
        f"--tls-cert={tlsBroker.certFile}", f"--tls-key={tlsBroker.keyFile}",
        f"--port={port}", "--interface=127.0.0.1", "--name=tls-host", "--interval=0.2")
    yield standalone.waitForOutput(b"connected to amqps://guest@localhost:")
    yield standalone.waitForOutput(b"dashboard listening")
    client, _ = yield connectWebSocket(port)
    yield client.waitFor(
        lambda m: m.get("kind") == "analysis" and m.get("host") == "tls-host" and m["seq"] >= 3, 15,
        "analyses of the agent, over the broker's TLS listener")
    connections = tlsBroker.node.ctlOutput(
        "list_connections", "ssl", "peer_cert_subject", "--no-table-headers", "--quiet")
    lines = [line.split("\t") for line in connections.splitlines() if line.strip()]
    assert lines and all(ssl == "true" and "resmon agent" in subject for ssl, subject in lines), connections
    assert b"Traceback" not in standalone.output


@pytest_twisted.inlineCallbacks
def test_a_broker_the_process_cannot_trust_is_refused_and_tried_again(tlsBroker, twistd):
    # Signed by another authority; then valid, but not for the host of the URL.
    for label, url, ca in [
            ("tls-other-ca", tlsBroker.url, tlsBroker.otherCAFile),
            ("tls-wrong-name", tlsBroker.url.replace("localhost", "127.0.0.1"), tlsBroker.caFile)]:
        agent = twistd(label, "--role=agent", f"--broker={url}", f"--tls-ca={ca}",
                       f"--tls-cert={tlsBroker.certFile}", f"--tls-key={tlsBroker.keyFile}")
        yield agent.waitForOutput(b"certificate verify failed")
        # Retried with the backoff, never connected, never exited.
        failures = agent.output.count(b"AMQP handshake with amqps://")
        yield agent.waitForOutputCount(b"AMQP handshake with amqps://", failures + 1, timeout=10)
        assert not agent.ended_ and b"connected to amqps" not in agent.output, agent.output[-2000:]


@pytest_twisted.inlineCallbacks
def test_without_a_client_certificate_a_broker_that_asks_for_one_refuses_the_connection(
        tlsBroker, twistd):
    agent = twistd("tls-no-cert", "--role=agent", f"--broker={tlsBroker.url}",
                   f"--tls-ca={tlsBroker.caFile}")
    yield agent.waitForOutput(b"AMQP handshake with amqps://guest@localhost:")
    assert b"failed: TLS: tlsv13 alert certificate required" in agent.output, agent.output[-2000:]
    yield agent.waitForOutputCount(b"AMQP handshake with amqps://", 2, timeout=10)
    assert not agent.ended_ and b"connected to amqps" not in agent.output
