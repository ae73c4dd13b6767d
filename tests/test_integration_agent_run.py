"""
C{resmon-agent}, the agent without C{twistd} (L{resmon.agentrunner}): real
processes of the installed console script on the real broker. It publishes
what C{twistd resmon --role=agent} publishes, under C{python -OO} and
without the C{ssl} module for a plain C{amqp://} broker, starts itself again
with TLS for C{amqps://}, refuses other roles' options in one line, stops
cleanly on SIGTERM and exits non-zero when it gives up.
"""

import os
import subprocess
import sys
import textwrap
import time
import urllib.request

import psutil

import pytest_twisted
from twisted.internet import defer, reactor, threads

from pocclients import declareExchange
from resmon import topics, wire
from resmon.agentrunner import (
    KEEP_DOCSTRINGS_ENVIRONMENT, PROGRAM, TLS_ENVIRONMENT, WARM_UP, WARM_UP_PARENT_ENVIRONMENT)
from support import TwistdProcess, freePort, uniqueName, waitUntil
from test_integration_systemd import NotifyRecorder, ready

AGENT = os.path.join(os.path.dirname(sys.executable), PROGRAM)


class AgentProcess(TwistdProcess):
    """
    A real C{resmon-agent} process, in C{cwd} if given.
    """

    def __init__(self, label, args, env=None, cwd=None, python=None):
        TwistdProcess.__init__(self, label, args, env)
        self.cwd = cwd
        # Interpreter flags to run the script with (python FLAGS resmon-agent ...).
        self.python = python

    def start(self):
        argv = [AGENT] + self.args
        if self.python is not None:
            argv = [sys.executable] + self.python + argv
        self._log.write(("$ " + " ".join(argv) + "\n").encode())
        reactor.spawnProcess(self, argv[0], argv, env=self.env, path=self.cwd)
        return self

    def cleanExit(self):
        return b"Main loop terminated." in self.output and self.exitCode == 0


@pytest_twisted.async_yield_fixture
async def agents():
    started = []

    def start(label, *args, env=None, cwd=None, python=None):
        process = AgentProcess(label, args, env, cwd, python).start()
        started.append(process)
        return process
    yield start
    problems = []
    for process in started:
        problem = await defer.ensureDeferred(process.stopAndCheck())
        if problem:
            problems.append(problem)
    assert not problems, "\n\n".join(problems)


def mapped(pid, fragment):
    """
    Whether a file whose path holds C{fragment} is mapped in process C{pid}.
    """
    with open(f"/proc/{pid}/maps") as maps:
        return any(fragment in line for line in maps)


def commandLine(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")


def environment(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(entry.split(b"=", 1) for entry in f.read().split(b"\0") if b"=" in entry)


@pytest_twisted.inlineCallbacks
def test_the_agent_without_twistd_publishes_measures_under_OO_without_ssl(broker, amqp, agents):
    exchange, queue = amqp.names["exchange"], amqp.names["queue"]
    yield amqp.declareExchange(exchange)
    host = uniqueName("lean")
    yield amqp.channel.queue_declare(queue=queue, durable=False, auto_delete=False)
    yield amqp.channel.queue_bind(queue=queue, exchange=exchange,
                                  routing_key=f"{topics.hostWord(host)}.measure")
    agent = agents("lean-agent", f"--broker={broker}", f"--exchange={exchange}", f"--name={host}",
                   "--interval=0.2")
    yield agent.waitForOutput(b"publishing", timeout=20)
    received = []

    @defer.inlineCallbacks
    def take():
        received.extend((yield amqp.drain(queue)))
        return len(received) >= 3
    yield waitUntil(take, 15, "three measures of the agent")
    measure = wire.decodeMeasure(f"{topics.hostWord(host)}.measure", received[-1])
    assert measure.host == host and measure.metrics["cpu"]["percent"] is not None
    assert [m.seq for m in (wire.decodeMeasure(f"{topics.hostWord(host)}.measure", body)
                            for body in received[:3])] == [0, 1, 2]
    pid = agent.transport.pid
    assert b"-OO" in commandLine(pid)
    # No TLS for a plain broker: neither the ssl module nor pyOpenSSL is loaded.
    assert not mapped(pid, "_ssl.cpython") and not mapped(pid, "OpenSSL")
    assert TLS_ENVIRONMENT.encode() not in environment(pid)
    yield agent.stop()
    assert agent.cleanExit()
    assert b"measures sampled" in agent.output
    assert b"Traceback" not in agent.output


@pytest_twisted.inlineCallbacks
def test_an_amqps_broker_starts_the_agent_again_with_tls(agents):
    # Nothing listens there: the agent retries, with TLS loaded.
    agent = agents("lean-agent-tls", "--broker=amqps://guest:guest@127.0.0.1:1/",
                   "--name=tls-host")
    yield agent.waitForOutput(b"cannot connect to the broker at 127.0.0.1:1", timeout=20)
    pid = agent.transport.pid
    assert environment(pid).get(TLS_ENVIRONMENT.encode()) == b"1"
    assert b"-OO" in commandLine(pid)
    assert mapped(pid, "_ssl.cpython")
    assert b"connecting to amqps://guest@127.0.0.1:1/" in agent.output
    assert b"Traceback" not in agent.output


@pytest_twisted.inlineCallbacks
def test_another_roles_option_or_a_bad_one_stops_it_in_one_line(agents):
    for args, line in [
            (["--port=9000"], b"resmon-agent: error: --port: means nothing for --role=agent"),
            (["--role=web"], b"resmon-agent: error: --role: resmon-agent runs the agent alone"),
            (["--interval=0"], b"resmon-agent: error: --interval"),
            (["--bogus"], b"resmon-agent: error: option --bogus not recognized")]:
        agent = agents("lean-agent-bad", *args).expectUncleanExit()
        yield agent.ended
        assert agent.exitCode == 1, agent.output
        lines = agent.output.decode().splitlines()
        assert len(lines) == 1 and lines[0].encode().startswith(line), lines


@pytest_twisted.inlineCallbacks
def test_help_is_whole_and_names_the_program(agents):
    agent = agents("lean-agent-help", "--help").expectUncleanExit()
    yield agent.ended
    assert agent.exitCode == 0
    assert b"Usage: resmon-agent [options]" in agent.output
    assert b"--interval=" in agent.output and b"--broker=" in agent.output
    assert b"Run the resmon agent alone, without twistd" in agent.output


@pytest_twisted.inlineCallbacks
def test_an_unusable_exchange_stops_it_with_a_non_zero_status(broker, amqp, agents):
    exchange = amqp.names["exchange"]
    declareExchange(broker, exchange, "direct", durable=False)
    agent = agents("lean-agent-unusable", f"--broker={broker}", f"--exchange={exchange}",
                   "--name=unusable").expectUncleanExit()
    yield agent.waitForOutput(b"cannot be used", timeout=20)
    yield agent.ended
    assert agent.exitCode == 1
    assert b"Main loop terminated." in agent.output
    assert b"Traceback" not in agent.output


@pytest_twisted.inlineCallbacks
def test_systemd_is_told_it_is_ready_then_stopping_as_under_twistd(broker, amqp, agents):
    """
    The agent's unit runs C{resmon-agent} (C{Type=notify}): started again
    under C{-OO} by C{execve}, it keeps its pid, so the notifications come
    from the unit's main process.
    """
    notify = NotifyRecorder()
    try:
        agent = agents("lean-agent-notify", f"--broker={broker}",
                       f"--exchange={amqp.names['exchange']}", "--name=notified",
                       env={"NOTIFY_SOCKET": notify.path})
        yield notify.waitFor(ready, "READY=1")
        assert b"-OO" in commandLine(agent.transport.pid)
        message = [m for m in notify.received if ready(m)][0]
        assert "publishing" in message["STATUS"]
        assert (yield agent.stop())
        assert notify.received[-1] == {"STOPPING": "1", "STATUS": "stopping"}
    finally:
        yield defer.maybeDeferred(notify.close)


@pytest_twisted.inlineCallbacks
def test_a_config_read_from_a_pipe_is_read_once(broker, agents, tmp_path):
    """
    A C{--config} that cannot be read twice (a pipe, as C{/dev/stdin}):
    started again, the agent would find it empty and run on defaults. It
    runs in the first process instead, and says why.
    """
    config = tmp_path / "agent.toml"
    config.write_text(f'broker = "{broker}"\nname = "from-the-pipe"\n')
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo, 0o600)
    agent = agents("lean-agent-pipe", f"--config={fifo}")
    yield threads.deferToThread(fifo.write_text, config.read_text())
    yield agent.waitForOutput(b"(from " + str(fifo).encode() + b")", timeout=20)
    assert b"sampling from-the-pipe" in agent.output
    assert b"is not a regular file, so it cannot be read again" in agent.output
    assert b"-OO" not in commandLine(agent.transport.pid)


@pytest_twisted.inlineCallbacks
def test_the_interpreters_flags_are_kept_when_it_starts_again(agents):
    agent = agents("lean-agent-flags", "--broker=amqp://guest:guest@127.0.0.1:1/", "--name=flags",
                   python=["-s", "-X", "faulthandler"])
    yield agent.waitForOutput(b"sampling flags", timeout=20)
    argv = commandLine(agent.transport.pid)
    assert b"-OO" in argv and b"-s" in argv and b"faulthandler" in argv


def _printed(*args, **extra):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RESMON_")}
    done = subprocess.run([AGENT, *args], capture_output=True, text=True, timeout=60,
                          env=dict(environ, **extra))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_what_prints_and_exits_does_so_with_its_docstrings():
    """
    The options are read before the agent starts again under C{-OO}: the
    help (abbreviated too, as getopt takes it) and the plugin listings,
    made of docstrings, are whole.
    """
    whole = _printed("--help")
    assert "--listen=" in whole and "Usage: resmon-agent [options]" in whole
    assert _printed("--hel") == whole
    listing = _printed("--list-analyzers")
    assert "usage" in listing and "(no description)" not in listing


@pytest_twisted.inlineCallbacks
def test_keeping_docstrings_holds_for_an_amqps_broker_too(agents):
    agent = agents("lean-agent-keep", "--broker=amqps://guest:guest@127.0.0.1:1/", "--name=keep",
                   env={KEEP_DOCSTRINGS_ENVIRONMENT: "1"})
    yield agent.waitForOutput(b"sampling keep", timeout=20)
    assert b"-OO" not in commandLine(agent.transport.pid)


@pytest_twisted.inlineCallbacks
def test_the_working_directory_shadows_no_module(agents, tmp_path):
    """
    C{python -m} would put the working directory first on C{sys.path}
    (the unit's is writable): started again, the agent does not.
    """
    (tmp_path / "psutil.py").write_text("raise SystemExit('psutil from the working directory')\n")
    agent = agents("lean-agent-cwd", "--broker=amqp://guest:guest@127.0.0.1:1/", "--name=cwd",
                   cwd=str(tmp_path))
    yield agent.waitForOutput(b"sampling cwd", timeout=20)
    assert b"-OO" in commandLine(agent.transport.pid)
    assert b"working directory" not in agent.output


@pytest_twisted.inlineCallbacks
def test_metrics_port_works_with_a_plain_broker(agents):
    # The Prometheus client imports ssl: the agent starts again with it.
    port = freePort()
    agent = agents("lean-agent-metrics", "--broker=amqp://guest:guest@127.0.0.1:1/",
                   "--name=metrics", f"--metrics-port={port}", "--interface=127.0.0.1")
    yield agent.waitForOutput(b"sampling metrics", timeout=20)

    def scrape():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.status, response.read()
    status, body = yield threads.deferToThread(scrape)
    assert status == 200 and b"resmon_" in body
    assert environment(agent.transport.pid).get(TLS_ENVIRONMENT.encode()) == b"1"
    assert b"Traceback" not in agent.output


def test_a_service_that_fails_to_start_ends_it_with_status_1(tmp_path):
    """
    As under twistd, the services start before the reactor runs: one that
    raises ends the process with status 1 (systemd restarts it), not a
    process that runs on doing nothing.
    """
    inject = tmp_path / "inject.py"
    inject.write_text(textwrap.dedent("""
        import sys
        from resmon.services import agent
        def fail(self):
            raise RuntimeError("cannot start")
        agent.TrackerService.startService = fail
        from resmon.agentrunner import main
        sys.exit(main(sys.argv[1:]))
    """))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RESMON_")}
    done = subprocess.run([sys.executable, str(inject), "--broker=amqp://guest:guest@127.0.0.1:1/",
                           "--name=x"], capture_output=True, text=True, timeout=60,
                          env=dict(environ, **{KEEP_DOCSTRINGS_ENVIRONMENT: "1"}))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the agent could not start" in done.stdout and "cannot start" in done.stdout


def _byteCode(prefix):
    """
    The C{-OO} byte code files under C{prefix}: path -> modification time.
    """
    return {str(path.relative_to(prefix)): path.stat().st_mtime_ns
            for path in prefix.rglob("*.opt-2.pyc")}


def _scriptInterpreter():
    """
    The interpreter the installed C{resmon-agent} script runs with.
    """
    with open(AGENT, "rb") as script:
        return script.readline()[2:].decode().strip()


@pytest_twisted.inlineCallbacks
def test_the_first_start_writes_the_agents_byte_code_before_it_starts(broker, amqp, agents,
                                                                       tmp_path):
    """
    pip writes no C{-OO} byte code, and a process compiling what it imports
    holds more memory: when the byte code of a module the agent loads is
    missing or out of date, C{resmon-agent} has a child write it, with the
    list of those modules, before it starts again (in the
    C{PYTHONPYCACHEPREFIX} the shipped unit sets). The agent then compiles
    nothing itself, and the next start finds it all up to date.
    """
    exchange = amqp.names["exchange"]
    yield amqp.declareExchange(exchange)
    prefix = tmp_path / "pycache"
    # PYTHONDONTWRITEBYTECODE may be set where the tests run: empty is unset.
    env = {"PYTHONPYCACHEPREFIX": str(prefix), "PYTHONDONTWRITEBYTECODE": ""}
    args = (f"--broker={broker}", f"--exchange={exchange}", "--name=first-start",
            "--interval=0.2")

    @defer.inlineCallbacks
    def runOnce(label, *more):
        agent = agents(label, *args, *more, env=env)
        yield agent.waitForOutput(b"connected to ", timeout=60)
        yield agent.waitForOutput(b"publishing", timeout=20)
        assert (yield agent.stop())
        return bytes(agent.output)

    def wroteBeforeStarting(output):
        return [line for line in output.splitlines() if b"wrote the -OO byte code" in line]

    def writtenByTheChildOnly(flavor="plain"):
        # The child lists the modules last, once it has imported them all:
        # byte code written after that was the agent's own compiling.
        [manifest] = prefix.rglob(f"agentrunner.*.opt-2.{flavor}.modules")
        written = _byteCode(prefix)
        late = [path for path, mtime in written.items() if mtime > manifest.stat().st_mtime_ns]
        assert not late, late
        return written, manifest

    output = yield runOnce("lean-agent-first-start")
    [line] = wroteBeforeStarting(output)
    assert f"are up to date in {prefix}".encode() in line
    written, manifest = writtenByTheChildOnly()
    for module in ("resmon/services/agent", "resmon/agentrunner", "twisted/internet/epollreactor",
                   "txamqp/protocol", "psutil/__init__"):
        assert any(f"/{module}.cpython-" in f"/{path}" for path in written), module
    # The standard library's ssl is not loaded by an agent of a plain broker.
    assert not any(path.endswith(("/ssl.cpython-%d%d.opt-2.pyc" % sys.version_info[:2]))
                   and "/twisted/" not in path for path in written)
    # Listed: the modules left loaded (an import that failed, as
    # twisted.internet.ssl's without ssl, still wrote its byte code).
    listed = set(manifest.read_text().splitlines())
    assert len(written) - 10 < len(listed) <= len(written)
    assert f"the {len(listed)} modules it loads".encode() in line

    # What the child writes alone is all the agent of the first start had.
    alone = tmp_path / "alone"
    from resmon.agentrunner import WARM_UP
    done = subprocess.run([_scriptInterpreter(), "-OO", "-c", WARM_UP, *args], capture_output=True,
                          timeout=120, env=dict(os.environ, PYTHONPYCACHEPREFIX=str(alone),
                                                PYTHONDONTWRITEBYTECODE=""))
    assert done.returncode == 0, done.stderr
    assert set(_byteCode(alone)) == set(written)

    # Started again, it finds it all up to date: nothing written, nothing compiled.
    output = yield runOnce("lean-agent-second-start")
    assert not wroteBeforeStarting(output)
    assert _byteCode(prefix) == written

    # A package the agent uses but this process does not load to read the
    # options (as after an upgrade of psutil): written again, before.
    for path in prefix.rglob("psutil/*.opt-2.pyc"):
        path.unlink()
    output = yield runOnce("lean-agent-after-an-upgrade")
    assert len(wroteBeforeStarting(output)) == 1
    assert set(writtenByTheChildOnly()[0]) == set(written)

    # Other options load other modules (--metrics-port: the Prometheus
    # client, twisted.web, ssl): their own list, written before.
    output = yield runOnce("lean-agent-metrics", "--metrics-port=0")
    assert len(wroteBeforeStarting(output)) == 1
    assert len(writtenByTheChildOnly("metrics")[0]) > len(written)

    # A list made unreadable (zeros, as a crash may leave it) stops nothing.
    [manifest] = prefix.rglob("agentrunner.*.opt-2.plain.modules")
    manifest.write_bytes(b"\0" * 200 + b"\n/no/such/file.py\n\xff\xfe")
    output = yield runOnce("lean-agent-bad-list")
    assert b"Traceback" not in output


@pytest_twisted.inlineCallbacks
def test_no_byte_code_is_written_where_python_is_told_not_to(broker, amqp, agents, tmp_path):
    exchange = amqp.names["exchange"]
    yield amqp.declareExchange(exchange)
    prefix = tmp_path / "pycache"
    agent = agents("lean-agent-no-byte-code", f"--broker={broker}", f"--exchange={exchange}",
                   "--name=no-byte-code",
                   env={"PYTHONPYCACHEPREFIX": str(prefix), "PYTHONDONTWRITEBYTECODE": "1"})
    yield agent.waitForOutput(b"publishing", timeout=20)
    assert b"-OO" in commandLine(agent.transport.pid)
    assert b"byte code" not in agent.output
    assert _byteCode(prefix) == {}


@pytest_twisted.inlineCallbacks
def test_no_child_runs_where_no_byte_code_can_be_written(broker, amqp, agents, tmp_path):
    """
    Where the byte code would go cannot be written (here a prefix under a
    regular file; as well a read-only site-packages), no child is started
    at every start for nothing: the agent compiles what it loads.
    """
    exchange = amqp.names["exchange"]
    yield amqp.declareExchange(exchange)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    agent = agents("lean-agent-unwritable", f"--broker={broker}", f"--exchange={exchange}",
                   "--name=unwritable", env={"PYTHONPYCACHEPREFIX": str(blocker / "pycache"),
                                             "PYTHONDONTWRITEBYTECODE": ""})
    yield agent.waitForOutput(b"publishing", timeout=20)
    assert b"-OO" in commandLine(agent.transport.pid)
    assert b"byte code" not in agent.output


@pytest_twisted.inlineCallbacks
def test_byte_code_that_cannot_be_written_is_a_warning(broker, amqp, agents, tmp_path):
    """
    Where some of the byte code cannot be written (here the standard
    library's, as for a user who may not write there), the child writes the
    rest and the agent's first line is a warning saying how much it
    compiles at each start.
    """
    from resmon.operations import bytecode
    exchange = amqp.names["exchange"]
    yield amqp.declareExchange(exchange)
    prefix = tmp_path / "pycache"
    # Where the byte code of the standard library's os.py goes under the
    # prefix, blocked by a regular file where its path leaves resmon's.
    stdlib = os.path.dirname(os.__file__).lstrip(os.sep).split(os.sep)
    ours = os.path.dirname(bytecode.__file__).lstrip(os.sep).split(os.sep)
    common = 0
    while stdlib[common] == ours[common]:
        common += 1
    blocker = prefix.joinpath(*stdlib[:common + 1])
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("")
    agent = agents("lean-agent-partly-unwritable", f"--broker={broker}", f"--exchange={exchange}",
                   "--name=partly", env={"PYTHONPYCACHEPREFIX": str(prefix),
                                         "PYTHONDONTWRITEBYTECODE": ""})
    yield agent.waitForOutput(b"publishing", timeout=60)
    [line] = [l for l in bytes(agent.output).splitlines() if b"byte code" in l]
    assert b"#warn] could not write the -OO byte code of " in line
    assert b" of the modules the agent loads" in line
    assert _byteCode(prefix)  # resmon's and the venv's were written


# A process started as resmon-agent starts its warm-up child: the child's
# pid on the first line, then it waits for the child.
_PARENT = textwrap.dedent("""
    import os, subprocess, sys
    child = subprocess.Popen(
        [sys.executable, "-c", sys.argv[1], sys.argv[2]],
        env=dict(os.environ, RESMON_AGENT_WARM_UP_PARENT=str(os.getpid())))
    print(child.pid, flush=True)
    child.wait()
""")
# The child: ends with its parent, says so in a file, then would run a minute.
_CHILD = textwrap.dedent("""
    import os, sys, time
    from resmon.agentrunner import endWithParent
    endWithParent(os.environ["RESMON_AGENT_WARM_UP_PARENT"])
    open(sys.argv[1], "w").close()
    time.sleep(60)
""")


def waitUntilTrue(condition, why, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, why
        time.sleep(0.01)


def test_the_warm_up_child_ends_with_an_agent_killed(tmp_path):
    ready = tmp_path / "ready"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, _CHILD, str(ready)],
                              stdout=subprocess.PIPE)
    child = None
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        waitUntilTrue(ready.exists, "the child never called endWithParent")
        parent.kill()  # SIGKILL: the parent can end nothing itself
        parent.wait()
        # Without endWithParent the child sleeps on for a minute. (Killed but
        # not reaped, where no process reaps orphans, counts as ended.)
        waitUntilTrue(lambda: not _running(child), "the child outlived its parent")
    finally:
        parent.kill()
        parent.stdout.close()
        if child is not None and _running(child):
            child.kill()


def _running(process):
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_warm_up_child_whose_agent_is_already_gone_exits_saying_so(tmp_path):
    ready = tmp_path / "ready"
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ready)], timeout=30, capture_output=True,
        env=dict(os.environ, RESMON_AGENT_WARM_UP_PARENT=str(os.getpid() + 1_000_000)))
    assert (done.returncode, ready.exists()) == (1, False)
    assert done.stderr.decode().strip().endswith(f"(pid {os.getpid() + 1_000_000}) is gone")


def test_the_real_warm_up_ends_at_once_without_its_agent(tmp_path):
    # The child as resmon-agent starts it: it writes nothing once its agent is gone.
    done = subprocess.run(
        [sys.executable, "-OO", "-c", WARM_UP], timeout=30, capture_output=True,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="", PYTHONPYCACHEPREFIX=str(tmp_path),
                 **{WARM_UP_PARENT_ENVIRONMENT: str(os.getpid() + 1_000_000)}))
    assert done.returncode == 1, done.stderr
    assert b"is gone" in done.stderr
    # Only what importing resmon.agentrunner compiled: not the agent's
    # modules (Twisted's), nor their list.
    written = [str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file()]
    assert written and not [path for path in written if "twisted" in path or path.endswith(".modules")]


def test_the_agent_gives_its_warm_up_child_its_own_pid(monkeypatch, tmp_path):
    from resmon import agentrunner
    from resmon.operations import bytecode
    started = []

    class Child:
        returncode = 0

        def __init__(self, argv, env, **kwargs):
            started.append(env)

        def communicate(self, timeout):
            return b"350 0\n", b""

    monkeypatch.setattr(subprocess, "Popen", Child)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(bytecode, "manifestPath", lambda anchor, flavor: str(tmp_path / "list"))
    environ = agentrunner._checkAndWriteByteCode(
        [], {"NOTIFY_SOCKET": "/x"}, {"broker": None, "metrics-port": None})
    assert [env.get(WARM_UP_PARENT_ENVIRONMENT) for env in started] == [str(os.getpid())]
    assert "NOTIFY_SOCKET" not in started[0]
    assert environ[agentrunner.WARMED_ENVIRONMENT] == "350 0"
