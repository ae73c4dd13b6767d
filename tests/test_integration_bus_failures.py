"""
The RabbitMQ bus when the broker says no: it keeps retrying with backoff,
logs why, and never trips Twisted's ClientService state machine.
"""

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher

from resmon.bus.brokerurl import parseBrokerURL
from resmon.bus.amqp import AMQPBus
from support import uniqueName, withTimeout


@pytest_twisted.inlineCallbacks
def test_refused_credentials_are_retried_and_logged_without_errors(broker):
    url = parseBrokerURL(broker)
    wrong = parseBrokerURL(f"amqp://{url.username}:not-the-password@{url.host}:{url.port}/")
    events = []
    failedTwice = defer.Deferred()

    def observe(event):
        events.append(event)
        failures = [e for e in events if "handshake" in str(e.get("log_format", ""))]
        if len(failures) >= 2 and not failedTwice.called:
            failedTwice.callback(None)
    globalLogPublisher.addObserver(observe)
    bus = AMQPBus(wrong, uniqueName("resmon.test"), reactor, handshakeTimeout=5, maxRetryDelay=0.5)
    try:
        bus.startService()
        yield withTimeout(failedTwice, 20, "two failed handshakes")
    finally:
        yield bus.stopService()
        globalLogPublisher.removeObserver(observe)
    assert not bus.connected
    errors = [e for e in events if e.get("log_failure") is not None or e.get("isError")]
    assert errors == [], [str(e.get("log_failure") or e) for e in errors]
