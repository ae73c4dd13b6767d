"""
Connection failures said in one line with the retry delay
(L{resmon.bus.errors}), the role table of options
(L{resmon.operations.roles}), the port-in-use line
(L{resmon.services.listening}) and the non-zero exit
(L{resmon.operations.exitstatus}), beside their real-process tests in
C{test_integration_errors}.
"""

import socket

import pytest
from twisted.application import strports
from twisted.internet import defer
from twisted.internet import error as netError
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from txamqp.client import Closed, ConnectionClosed

from resmon.bus import errors
from resmon.bus.brokerurl import parseBrokerURL
from resmon.operations import exitstatus
from resmon.operations.roles import OPTION_PARTS, misplacedOption
from resmon.services.listening import ListeningService, cannotListen
from resmon.tap import ROLES, Options

BROKER = parseBrokerURL("amqp://alice:secret@rabbit.example:5673/prod")


class _Reply:
    def __init__(self, code, text):
        self.reply_code, self.reply_text = code, text


@pytest.mark.parametrize("error, why", [
    (netError.ConnectionRefusedError(), "connection refused (is RabbitMQ running there, on that port?)"),
    (netError.DNSLookupError(), "cannot resolve host name 'rabbit.example'"),
    (netError.TimeoutError(), "no answer (timed out; a firewall, or the wrong host?)"),
    (OSError("no route\nmore"), "no route"),
])
def test_a_failed_connection_names_host_port_and_the_quick_retry(error, why):
    assert errors.connectFailure(error, BROKER, 2.0) == (
        f"cannot connect to the broker at rabbit.example:5673: {why}; retrying every 2 s "
        "(--broker sets host and port)")


def test_refused_credentials_a_missing_vhost_and_no_permission_are_slow_retries():
    refused = Closed(_Reply(403, "ACCESS_REFUSED - Login was refused"))
    assert errors.handshakeFailure(refused, BROKER) == (
        "the broker at rabbit.example:5673 refused the credentials of user 'alice' on vhost "
        "'prod' (ACCESS_REFUSED); check the user and password of --broker; retrying every 30 s",
        30.0)
    missing = ConnectionClosed(_Reply(530, "NOT_ALLOWED - vhost prod not found"))
    line, delay = errors.handshakeFailure(missing, BROKER)
    assert line.startswith("vhost 'prod' does not exist on the broker at rabbit.example:5673")
    assert "secret" not in line and delay == errors.SLOW_RETRY
    denied = ConnectionClosed(_Reply(530, "NOT_ALLOWED - access to vhost 'prod' refused for user 'alice'"))
    assert errors.handshakeFailure(denied, BROKER)[0].startswith("user 'alice' may not use vhost 'prod'")
    for other in (ConnectionClosed(_Reply(320, "CONNECTION_FORCED")), defer.TimeoutError(), Closed()):
        assert errors.handshakeFailure(other, BROKER) is None


@pytest.mark.parametrize("text", [
    "COMMAND_INVALID - unknown exchange type 'x-consistent-hash'",  # never enabled
    "COMMAND_INVALID - invalid exchange type 'x-consistent-hash'",  # enabled, then disabled
])
def test_a_broker_without_the_consistent_hash_plugin_says_how_to_enable_it(text):
    refused = ConnectionClosed(_Reply(503, text))
    assert errors.handshakeFailure(refused, BROKER) == (
        "the broker at rabbit.example:5673 has no consistent-hash exchange, which --partitions "
        "needs (COMMAND_INVALID); enable its plugin (rabbitmq-plugins enable "
        "rabbitmq_consistent_hash_exchange) or run without --partitions; retrying every 30 s", 30.0)
    other = ConnectionClosed(_Reply(503, "COMMAND_INVALID - unknown exchange type 'x-foo'"))
    assert errors.handshakeFailure(other, BROKER) is None


def test_the_retry_is_slow_only_after_a_refusal_and_each_failure_is_said_once():
    clock = Clock()
    events = []
    failures = errors.ConnectionFailures(BROKER, lambda attempt: 0.5, 2.0, clock,
                                         Logger(observer=events.append))
    failures.connectFailed(netError.ConnectionRefusedError())
    failures.connectFailed(netError.ConnectionRefusedError())
    assert failures.retryDelay(1) == 0.5 and len(events) == 1
    assert failures.handshakeFailed(Closed(_Reply(403, "ACCESS_REFUSED"))) is True
    assert failures.retryDelay(2) == 30.0 and len(events) == 2
    failures.handshakeFailed(Closed(_Reply(403, "ACCESS_REFUSED")))
    assert len(events) == 2
    clock.advance(errors.REPEAT_AFTER)
    failures.handshakeFailed(Closed(_Reply(403, "ACCESS_REFUSED")))
    assert len(events) == 3 and "ACCESS_REFUSED" in formatEvent(events[-1])
    assert failures.handshakeFailed(defer.TimeoutError()) is False
    assert failures.retryDelay(3) == 0.5
    failures.handshakeFailed(Closed(_Reply(403, "ACCESS_REFUSED")))
    failures.connected()
    assert failures.retryDelay(1) == 0.5
    failures.connectFailed(netError.ConnectionRefusedError())
    assert len(events) == 4  # said again after a connection


def test_the_reporting_endpoint_says_a_failed_connect_and_passes_the_failure_on():
    class Refusing:
        def connect(self, factory):
            return defer.fail(netError.ConnectionRefusedError())
    events = []
    failures = errors.ConnectionFailures(BROKER, lambda attempt: 1.0, 2.0, Clock(),
                                         Logger(observer=events.append))
    d = failures.endpoint(Refusing()).connect(None)
    failure = []
    d.addErrback(failure.append)
    assert failure[0].check(netError.ConnectionRefusedError)
    assert "connection refused" in formatEvent(events[0])


@pytest.mark.parametrize("cancelled", [
    netError.ConnectingCancelledError(None), defer.CancelledError()])
def test_an_attempt_cancelled_by_stopping_is_not_said_to_have_failed(cancelled):
    class Cancelled:
        def connect(self, factory):
            return defer.fail(cancelled)
    events = []
    failures = errors.ConnectionFailures(BROKER, lambda attempt: 1.0, 2.0, Clock(),
                                         Logger(observer=events.append))
    failure = []
    failures.endpoint(Cancelled()).connect(None).addErrback(failure.append)
    assert failure[0].value is cancelled and events == []


def test_a_port_in_use_names_the_option_that_sets_it():
    error = CannotListenError("127.0.0.1", 8080, OSError(98, "Address already in use"))
    assert cannotListen(error, {8080: "--port"}) == (
        "cannot listen on 127.0.0.1:8080: Address already in use; choose another port with --port")
    error = CannotListenError("", 9100, OSError(13, "Permission denied"))
    assert cannotListen(error, {8080: "--port", 9100: "--metrics-port"}) == (
        "cannot listen on port 9100: Permission denied; choose another port with --metrics-port")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        top = ListeningService({port: "--metrics-port"})
        strports.service(f"tcp:{port}:interface=127.0.0.1", Factory()).setServiceParent(top)
        with pytest.raises(SystemExit) as raised:
            top.privilegedStartService()
    assert str(raised.value) == (f"twistd resmon: error: cannot listen on 127.0.0.1:{port}: "
                                 "Address already in use; choose another port with --metrics-port")


def test_every_option_in_the_role_table_exists_and_every_part_is_a_roles():
    options = Options()
    names = {long.rstrip("=") for long in options.longOpt}
    assert set(OPTION_PARTS) <= names
    parts = {part for role in ROLES.values() for part in role}
    assert set().union(*OPTION_PARTS.values()) <= parts
    for role, roleParts in ROLES.items():
        if set(roleParts) == parts:
            assert misplacedOption(role, roleParts, sorted(OPTION_PARTS)) is None


def test_stopping_with_a_status_needs_a_running_reactor():
    clock = Clock()
    exitstatus.stopWithStatus(clock, 1)
    assert exitstatus.pendingStatus() is None and not clock.getDelayedCalls()
