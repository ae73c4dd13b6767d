"""
C{--config FILE} and C{RESMON_BROKER} with real C{twistd resmon} processes
and the real broker.
"""

import os
import subprocess

import pytest_twisted
from twisted.internet import reactor
from twisted.web.client import Agent, readBody

from support import TWISTD, freePort


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
