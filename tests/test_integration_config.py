"""
C{--config FILE} and C{RESMON_BROKER} with real C{twistd resmon} processes
and the real broker.
"""

import os
import subprocess
import uuid

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, readBody

from privatebroker import RABBITMQCTL
from resmon.bus.brokerurl import parseBrokerURL
from support import TWISTD, freePort, uniqueName


def _writeConfig(tmp_path, text, mode=0o600):
    path = tmp_path / "resmon.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


@pytest_twisted.inlineCallbacks
def test_a_web_role_configured_by_a_file(twistd, broker, amqp, tmp_path):
    port, other = freePort(), freePort()
    path = _writeConfig(tmp_path, f"""
role = "web"
broker = "{broker}"
exchange = "{amqp.names['exchange']}"
port = {other}
interface = "127.0.0.1"
stats-interval = 3600
""")
    # The command line wins over the file.
    web = twistd("web", f"--config={path}", f"--port={port}")
    yield web.waitForOutput(b"dashboard listening on tcp:%d:interface=127.0.0.1" % port)
    yield web.waitForOutput(b"connected to ")
    assert b"exchange " + amqp.names["exchange"].encode() in web.output
    response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/".encode())
    assert response.code == 200
    yield readBody(response)


def test_a_bad_file_stops_twistd_with_one_line(tmp_path):
    for text, expected in [
        ("prot = 8080\n", "{path}: unknown key 'prot' (did you mean 'port'?)"),
        ("port = 70000\n", "{path}: port: must be between 0 and 65535, not '70000'"),
        ("port = [1]\n", "{path}: port: expected a string or a number"),
    ]:
        path = _writeConfig(tmp_path, text)
        result = subprocess.run([TWISTD, "-n", "--pidfile=", "resmon", f"--config={path}"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, result
        lines = (result.stdout + result.stderr).strip().splitlines()
        assert len(lines) == 1 and expected.format(path=path) in lines[0], lines


@pytest_twisted.async_yield_fixture
async def secretBroker(broker):
    """
    The URL of the test broker with a user of its own whose password is
    unique to this test (so no other process on this machine can hold it),
    made with C{rabbitmqctl}; deleted afterwards.
    """
    user, password = uniqueName("resmon-secret"), "pw-" + uuid.uuid4().hex
    await _ctl("add_user", user, password)
    try:
        await _ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        parsed = parseBrokerURL(broker)
        yield f"amqp://{user}:{password}@{parsed.host}:{parsed.port}/", user, password
    finally:
        await _ctl("delete_user", user)


async def _ctl(*args):
    out, err, code = await getProcessOutputAndValue(RABBITMQCTL, args, env=dict(os.environ))
    assert code == 0, (args, out, err)


def _commandLinesHolding(secret):
    """
    The command lines, among every process's on this machine, that hold
    C{secret}.
    """
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    line = f.read()
            except OSError:
                continue
            if secret.encode() in line:
                found.append((pid, line))
    return found


@pytest_twisted.inlineCallbacks
def test_a_password_in_the_file_or_the_environment_stays_off_command_lines(
        twistd, secretBroker, amqp, tmp_path):
    url, user, password = secretBroker
    exchange = amqp.names["exchange"]
    path = _writeConfig(tmp_path, f'broker = "{url}"\nexchange = "{exchange}"\n', mode=0o644)
    web = twistd("web", "--role=web", f"--config={path}", f"--port={freePort()}",
                 "--interface=127.0.0.1")
    agent = twistd("agent", "--role=agent", f"--exchange={exchange}", "--name=secretive",
                   env={"RESMON_BROKER": url})
    for process, source in [(web, path), (agent, "RESMON_BROKER")]:
        # The password was accepted: the process is connected.
        yield process.waitForOutput(b"connected to amqp://" + user.encode())
        yield process.waitForOutput(b" started: ")
        masked = f"broker amqp://{user}:***@"
        line = [x for x in process.output.decode().splitlines() if " started: " in x][0]
        assert masked in line and f"(from {source})" in line and f"exchange {exchange}" in line
        assert password.encode() not in process.output
    assert _commandLinesHolding(password) == []
    # The search does see the test's processes: the agent's --exchange is there.
    assert [pid for pid, _ in _commandLinesHolding(exchange)] == [str(agent.transport.pid)]
    # The file is readable by others: warned about, naming it.
    assert (path + " holds the broker password and other users may read it (mode 0644)").encode() \
        in web.output
    assert b"holds the broker password" not in agent.output
    assert b"started: dashboard at http://127.0.0.1:" in web.output
