"""
The broker closes a channel under resmon: the exchange is deleted while an
agent and a server publish to it. Both notice (404 closes their channel),
log it, reconnect, declare the exchange and their bindings again, and the
analyses keep coming: never a silent stall.
"""

import pytest_twisted

from support import connectWebSocket, freePort


@pytest_twisted.inlineCallbacks
def test_a_deleted_exchange_is_noticed_redeclared_and_the_stream_resumes(broker, amqp, twistd):
    exchange, port, host = amqp.names["exchange"], freePort(), "chan-err"
    common = [f"--broker={broker}", f"--exchange={exchange}"]
    server = twistd("chanerr-server", "--role=server", *common, f"--queue={amqp.names['queue']}",
                    f"--dead-letter-queue={amqp.names['deadletter']}", f"--port={port}",
                    "--interface=127.0.0.1")
    yield server.waitForOutput(b"(connection #1)")
    agent = twistd("chanerr-agent", "--role=agent", *common, f"--name={host}", "--interval=0.2")
    client, _ = yield connectWebSocket(port)
    analyses = lambda: [m for m in client.events() if m.get("host") == host and m["kind"] == "analysis"]
    yield client.waitFor(lambda m: len(analyses()) >= 3, 15, "3 analyses before the deletion")

    yield amqp.channel.exchange_delete(exchange=exchange)
    # The agent publishes into the void and gets a 404 at once: it logs it,
    # reconnects and declares the exchange again.
    yield agent.waitForOutput(b"broker closed channel", timeout=10)
    yield agent.waitForOutput(b"(connection #2)", timeout=10)
    # The server only consumes: its queues lost their bindings with the
    # exchange and receive nothing until its next check (every 10 s) renews
    # them (or, had the exchange stayed away, found the 404 and reconnected).
    before = analyses()[-1]["seq"]
    yield client.waitFor(lambda m: analyses()[-1]["seq"] >= before + 5, 20,
                         "5 more analyses after the exchange came back")
    assert not agent.ended_ and not server.ended_
