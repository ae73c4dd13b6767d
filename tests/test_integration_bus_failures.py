"""
The RabbitMQ bus when the broker says no: it keeps retrying with backoff,
logs why, and never trips Twisted's ClientService state machine.
"""

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.logger import formatEvent, globalLogPublisher

from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.amqp import AMQPBus
from support import uniqueName, withTimeout


@pytest_twisted.inlineCallbacks
def test_refused_credentials_are_said_in_one_line_and_retried_slowly_without_errors(broker):
    url = parseBrokerURL(broker)
    wrong = parseBrokerURL(f"amqp://{url.username}:not-the-password@{url.host}:{url.port}/")
    events = []
    refused = defer.Deferred()

    def observe(event):
        events.append(event)
        if "refused the credentials" in formatEvent(event) and not refused.called:
            refused.callback(formatEvent(event))
    globalLogPublisher.addObserver(observe)
    bus = AMQPBus(wrong, uniqueName("resmon.test"), reactor, handshakeTimeout=5, maxRetryDelay=0.5)
    try:
        bus.startService()
        line = yield withTimeout(refused, 20, "the refused credentials said")
    finally:
        yield bus.stopService()
        globalLogPublisher.removeObserver(observe)
    assert f"user {url.username!r} on vhost '/'" in line and "retrying every 30 s" in line, line
    assert not bus.connected
    # Said once, not a line (or a handshake warning) per attempt.
    assert sum("refused the credentials" in formatEvent(e) for e in events) == 1
    assert not [e for e in events if "handshake" in str(e.get("log_format", ""))]
    errors = [e for e in events if e.get("log_failure") is not None or e.get("isError")]
    assert errors == [], [str(e.get("log_failure") or e) for e in errors]
