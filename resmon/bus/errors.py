"""
Connection failures a person can act on: each is said in one line naming
what to check (host and port, user and vhost), with how soon resmon tries
again.

A broker that refuses connections may come back any second: resmon
retries quickly (about every L{fastEvery} seconds). A broker that refuses
the credentials, or a vhost it does not have, will refuse the same way
until someone changes the broker or resmon's configuration: resmon then
retries only every L{SLOW_RETRY} seconds, and says so.
"""

from twisted.internet import defer
from twisted.internet import error as netError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

# Seconds between two attempts after the broker refused the credentials or
# the vhost: nothing changes until someone fixes one side.
SLOW_RETRY = 30.0
# Seconds after which a failure said before is said again.
REPEAT_AFTER = 300.0
ACCESS_REFUSED = 403
NOT_ALLOWED = 530
COMMAND_INVALID = 503
# What RabbitMQ answers to a declaration of an exchange of a type no
# enabled plugin provides ("unknown exchange type ...", or "invalid ..."
# once the plugin was disabled): --partitions needs the consistent-hash
# exchange.
CONSISTENT_HASH_MISSING = "exchange type 'x-consistent-hash'"


def _reply(error):
    """
    The C{(reply code, reply text)} of a txAMQP C{Closed} carrying the
    broker's connection.close, or C{(None, None)}.
    """
    for argument in getattr(error, "args", ()):
        code = getattr(argument, "reply_code", None)
        if code is not None:
            return code, str(getattr(argument, "reply_text", ""))
    return None, None


def _place(broker):
    return f"{broker.host}:{broker.port}"


def connectFailure(error, broker, fastEvery):
    """
    The line for a TCP connection to the broker that failed.

    @param error: the exception (from the endpoint's C{connect}).
    @param broker: the L{resmon.bus.brokerurl.BrokerURL}.
    @param fastEvery: seconds between two attempts, at most.
    @return: the line.
    """
    if isinstance(error, netError.ConnectionRefusedError):
        why = "connection refused (is RabbitMQ running there, on that port?)"
    elif isinstance(error, netError.DNSLookupError):
        why = f"cannot resolve host name {broker.host!r}"
    elif isinstance(error, (netError.TimeoutError, netError.TCPTimedOutError)):
        why = "no answer (timed out; a firewall, or the wrong host?)"
    else:
        why = (str(error) or type(error).__name__).splitlines()[0][:200]
    return (f"cannot connect to the broker at {_place(broker)}: {why}; "
            f"retrying every {fastEvery:g} s (--broker sets host and port)")


def handshakeFailure(error, broker):
    """
    The line and the retry delay for a handshake the broker refused
    because of the credentials or the vhost, or because the consistent-hash
    exchange of C{--partitions} is not enabled on it.

    @param error: the exception the handshake failed with.
    @return: C{(line, seconds until the next attempt)}, or L{None} for
        another failure (the usual backoff applies).
    """
    code, text = _reply(error)
    if code == ACCESS_REFUSED:
        what = (f"the broker at {_place(broker)} refused the credentials of user "
                f"{broker.username!r} on vhost {broker.vhost!r} (ACCESS_REFUSED); "
                "check the user and password of --broker")
    elif code == NOT_ALLOWED and "not found" in text:
        what = (f"vhost {broker.vhost!r} does not exist on the broker at {_place(broker)} "
                f"(NOT_ALLOWED); create it (rabbitmqctl add_vhost) or fix the vhost of --broker")
    elif code == NOT_ALLOWED and "refused for user" in text:
        what = (f"user {broker.username!r} may not use vhost {broker.vhost!r} on the broker at "
                f"{_place(broker)} (NOT_ALLOWED); grant it (rabbitmqctl set_permissions) or "
                "fix --broker")
    elif code == COMMAND_INVALID and CONSISTENT_HASH_MISSING in text:
        what = (f"the broker at {_place(broker)} has no consistent-hash exchange, which "
                "--partitions needs (COMMAND_INVALID); enable its plugin "
                "(rabbitmq-plugins enable rabbitmq_consistent_hash_exchange) or run without "
                "--partitions")
    else:
        return None
    return f"{what}; retrying every {SLOW_RETRY:g} s", SLOW_RETRY


class ConnectionFailures:
    """
    Says why the bus cannot connect, once per kind of failure (again after
    L{REPEAT_AFTER} seconds), and chooses the delay before the next
    attempt: the C{fast} backoff, or L{SLOW_RETRY} after a refusal no
    retry will change.

    @param broker: the L{resmon.bus.brokerurl.BrokerURL}.
    @param fast: the usual retry policy (attempts -> seconds).
    @param fastEvery: the longest delay of C{fast}, for the line.
    @param clock: an L{IReactorTime}.
    @param log: the L{Logger} to say it with.
    """

    def __init__(self, broker, fast, fastEvery, clock, log=None):
        self.broker = broker
        self.fast = fast
        self.fastEvery = fastEvery
        self.clock = clock
        self.log = log if log is not None else Logger()
        self._delay = None
        self._said = None
        self._saidAt = None

    def retryDelay(self, attempt):
        """
        The retry policy to give L{ClientService}.
        """
        if self._delay is not None:
            return self._delay
        return self.fast(attempt)

    def endpoint(self, endpoint):
        """
        C{endpoint}, with its connection failures said (see
        L{connectFailed}).
        """
        return _ReportingEndpoint(endpoint, self)

    def connectFailed(self, error):
        self._delay = None
        self._say(connectFailure(error, self.broker, self.fastEvery))

    def handshakeFailed(self, error):
        """
        The handshake failed with C{error}: say it if it is a refusal of
        the credentials or the vhost, and retry slowly.

        @return: whether it was said (else the caller says the failure).
        """
        known = handshakeFailure(error, self.broker)
        if known is None:
            self._delay = None
            return False
        line, self._delay = known
        self._say(line)
        return True

    def connected(self):
        self._delay = None
        self._said = self._saidAt = None

    def _say(self, line):
        now = self.clock.seconds()
        if line == self._said and now - self._saidAt < REPEAT_AFTER:
            return
        self._said, self._saidAt = line, now
        self.log.warn("{line}", line=line)


@implementer(IStreamClientEndpoint)
class _ReportingEndpoint:
    def __init__(self, endpoint, failures):
        self._endpoint = endpoint
        self._failures = failures

    def __repr__(self):
        return repr(self._endpoint)

    def connect(self, factory):
        def failed(failure):
            # An attempt cancelled (the process stopping) did not fail.
            if not failure.check(defer.CancelledError, netError.ConnectingCancelledError):
                self._failures.connectFailed(failure.value)
            return failure
        return self._endpoint.connect(factory).addErrback(failed)
