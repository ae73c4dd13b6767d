import pytest
import pytest_twisted
from twisted.internet import defer

from privatebroker import PrivateBroker
from support import (
    PlainAMQPClient,
    TwistdProcess,
    brokerUnreachableReason,
    brokerURL,
    uniqueName,
)


# The browser tests' fixtures (browser, processes).
pytest_plugins = ["browsersupport"]


@pytest.fixture(scope="session")
def broker():
    """
    The URL of the real RabbitMQ the integration tests use. Fails (never
    skips) when it is not reachable, saying how to start one.
    """
    url = brokerURL()
    reason = brokerUnreachableReason(url)
    if reason is not None:
        pytest.fail(reason, pytrace=False)
    return url


@pytest.fixture(scope="module")
def privateBroker():
    """
    A RabbitMQ node of the test module's own (L{PrivateBroker}), for tests
    that stop, restart or reconfigure a broker.
    """
    broker = PrivateBroker()
    broker.start()
    yield broker
    broker.stop()


@pytest_twisted.async_yield_fixture
async def amqp(broker):
    """
    A plain txAMQP client, plus a fresh exchange and queue names for this
    test; both are deleted afterwards.
    """
    client = await defer.ensureDeferred(_connect(broker))
    names = {"exchange": uniqueName("resmon.test"), "queue": uniqueName("resmon.test.analyzer"),
             "deadletter": uniqueName("resmon.test.rejected")}
    client.names = names
    yield client
    try:
        await client.cleanUp(exchanges=[names["exchange"], names["deadletter"]],
                             queues=[names["queue"], names["deadletter"],
                                     names["queue"] + ".rules"])
    finally:
        await client.close()


async def _connect(url):
    return await PlainAMQPClient(url).connect()


@pytest_twisted.async_yield_fixture
async def twistd():
    """
    Starts real C{twistd resmon} processes: C{twistd(label, *args)}. Every
    process still running at the end gets SIGTERM (SIGKILL if it hangs), and
    the test fails if any process did not shut down cleanly (exited on its
    own, crashed, hung on SIGTERM, logged a traceback while stopping), unless
    the test called its C{expectUncleanExit()}.
    """
    started = []

    def start(label, *args, env=None):
        process = TwistdProcess(label, args, env).start()
        started.append(process)
        return process

    yield start
    problems = await defer.gatherResults([process.stopAndCheck() for process in started])
    problems = [problem for problem in problems if problem is not None]
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
