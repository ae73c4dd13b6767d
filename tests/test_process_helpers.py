"""
The process helpers judge how a real twistd process ended: the C{twistd}
fixture fails a test on anything but a clean shutdown on SIGTERM.
"""

import signal

import pytest_twisted

from support import TwistdProcess, freePort


def standaloneArgs():
    return [f"--port={freePort()}", "--interface=127.0.0.1", "--name=helper", "--interval=0.5"]


@pytest_twisted.inlineCallbacks
def test_a_clean_shutdown_is_no_problem():
    process = TwistdProcess("helpers-clean", standaloneArgs()).start()
    yield process.waitForOutput(b"dashboard listening")
    assert (yield process.stopAndCheck()) is None
    assert process.exitSignal == signal.SIGTERM


@pytest_twisted.inlineCallbacks
def test_a_process_that_exits_on_its_own_is_a_problem_naming_its_log():
    process = TwistdProcess("helpers-exits", ["--interval=fast"]).start()
    yield process.ended
    problem = yield process.stopAndCheck()
    assert "ended without a clean shutdown (exit code 1)" in problem, problem
    assert process.logPath in problem and "--interval: expected a number" in problem


@pytest_twisted.inlineCallbacks
def test_a_killed_process_is_a_problem_unless_expected():
    killed = TwistdProcess("helpers-killed", standaloneArgs()).start()
    expected = TwistdProcess("helpers-killed-on-purpose", standaloneArgs()).start()
    for process in (killed, expected):
        yield process.waitForOutput(b"dashboard listening")
    expected.expectUncleanExit()
    for process in (killed, expected):
        process.signal("KILL")
        yield process.ended
    problem = yield killed.stopAndCheck()
    assert f"killed by signal {signal.SIGKILL}" in problem, problem
    assert (yield expected.stopAndCheck()) is None


@pytest_twisted.inlineCallbacks
def test_a_process_that_hangs_on_sigterm_is_a_problem():
    process = TwistdProcess("helpers-hangs", standaloneArgs()).start()
    yield process.waitForOutput(b"dashboard listening")
    process.signal("STOP")  # a stopped process cannot act on SIGTERM
    problem = yield process.stopAndCheck(timeout=1)
    assert "hung: still running 1 s after SIGTERM, killed" in problem, problem
    assert process.exitSignal == signal.SIGKILL
